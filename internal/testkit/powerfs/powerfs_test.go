//go:build fuse

package powerfs

import (
	"bytes"
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mount mounts a fresh powerfs for the test, unmounted at cleanup.
func mount(t *testing.T) *FS {
	t.Helper()
	f, err := Mount(t.TempDir(), filepath.Join(t.TempDir(), "mnt"))
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return f
}

// writeSynced creates name on the mount holding data, fsynced.
func writeSynced(t *testing.T, f *FS, name, data string) {
	t.Helper()
	w, err := os.Create(filepath.Join(f.Mountpoint(), name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPowerOffKeepsOnlyWhatWasSynced: each case starts from "0123456789"
// written and fsynced in "f", changes it through the mount, and powers
// off; the backing file (and, after PowerOn, the mount) must hold what the
// last fsync saw.
func TestPowerOffKeepsOnlyWhatWasSynced(t *testing.T) {
	const base = "0123456789"
	tests := []struct {
		name     string
		change   func(t *testing.T, f *FS, w *os.File)
		file     string // where the data is after the change, "f" if empty
		want     string
		wantLost int64
	}{
		{name: "unsynced append is lost", want: base, wantLost: 3,
			change: func(t *testing.T, _ *FS, w *os.File) {
				_, err := w.WriteAt([]byte("abc"), 10)
				mustDo(t, err)
			}},
		{name: "synced append is kept", want: base + "abc",
			change: func(t *testing.T, _ *FS, w *os.File) {
				_, err := w.WriteAt([]byte("abc"), 10)
				mustDo(t, err)
				mustDo(t, w.Sync())
			}},
		{name: "fdatasync keeps too", want: base + "abc",
			change: func(t *testing.T, _ *FS, w *os.File) {
				_, err := w.WriteAt([]byte("abc"), 10)
				mustDo(t, err)
				mustDo(t, syscall.Fdatasync(int(w.Fd())))
			}},
		{name: "an O_SYNC write is kept", want: "S123456789",
			change: func(t *testing.T, f *FS, _ *os.File) {
				s, err := os.OpenFile(filepath.Join(f.Mountpoint(), "f"), os.O_RDWR|os.O_SYNC, 0)
				mustDo(t, err)
				defer s.Close()
				_, err = s.WriteAt([]byte("S"), 0)
				mustDo(t, err)
			}},
		{name: "an O_DSYNC write is kept", want: base + "D",
			change: func(t *testing.T, f *FS, _ *os.File) {
				s, err := os.OpenFile(filepath.Join(f.Mountpoint(), "f"), os.O_WRONLY|os.O_APPEND|syscall.O_DSYNC, 0)
				mustDo(t, err)
				defer s.Close()
				_, err = s.Write([]byte("D"))
				mustDo(t, err)
			}},
		{name: "unsynced overwrite in the middle is undone", want: base, wantLost: 2,
			change: func(t *testing.T, _ *FS, w *os.File) {
				_, err := w.WriteAt([]byte("XY"), 4)
				mustDo(t, err)
			}},
		{name: "only the overwrite after the last fsync is undone", want: "0123XY6789", wantLost: 3,
			change: func(t *testing.T, _ *FS, w *os.File) {
				_, err := w.WriteAt([]byte("XY"), 4)
				mustDo(t, err)
				mustDo(t, w.Sync())
				_, err = w.WriteAt([]byte("ZZZ"), 3)
				mustDo(t, err)
			}},
		{name: "append then truncate below the synced size is undone", want: base, wantLost: 7,
			change: func(t *testing.T, _ *FS, w *os.File) {
				_, err := w.WriteAt([]byte("abc"), 10)
				mustDo(t, err)
				mustDo(t, w.Truncate(3))
			}},
		{name: "truncate, extend and write is undone", want: base, wantLost: 2 + 8, // past the synced size, put back
			change: func(t *testing.T, _ *FS, w *os.File) {
				mustDo(t, w.Truncate(2))
				mustDo(t, w.Truncate(5))
				_, err := w.WriteAt([]byte("QQQQ"), 8)
				mustDo(t, err)
			}},
		{name: "a hole punched is filled again", want: base, wantLost: 8, // saved from the hole on
			change: func(t *testing.T, _ *FS, w *os.File) {
				mustDo(t, unix.Fallocate(int(w.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 2, 4))
			}},
		{name: "truncate by name is undone", want: base, wantLost: 6,
			change: func(t *testing.T, f *FS, _ *os.File) {
				mustDo(t, os.Truncate(filepath.Join(f.Mountpoint(), "f"), 4))
			}},
		{name: "O_TRUNC and rewrite is undone", want: base, wantLost: 10,
			change: func(t *testing.T, f *FS, _ *os.File) {
				mustDo(t, os.WriteFile(filepath.Join(f.Mountpoint(), "f"), []byte("new"), 0o644))
			}},
		{name: "O_TRUNC, rewrite and fsync is kept", want: "new",
			change: func(t *testing.T, f *FS, _ *os.File) {
				writeSynced(t, f, "f", "new")
			}},
		{name: "an unsynced write follows its file through a rename", file: "g", want: base, wantLost: 1,
			change: func(t *testing.T, f *FS, w *os.File) {
				_, err := w.WriteAt([]byte("!"), 0)
				mustDo(t, err)
				mustDo(t, os.Rename(filepath.Join(f.Mountpoint(), "f"), filepath.Join(f.Mountpoint(), "g")))
			}},
		{name: "fsync through another handle syncs the file", want: "X123456789",
			change: func(t *testing.T, f *FS, w *os.File) {
				_, err := w.WriteAt([]byte("X"), 0)
				mustDo(t, err)
				r, err := os.Open(filepath.Join(f.Mountpoint(), "f"))
				mustDo(t, err)
				defer r.Close()
				mustDo(t, r.Sync())
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mount(t)
			writeSynced(t, f, "f", base)
			w, err := os.OpenFile(filepath.Join(f.Mountpoint(), "f"), os.O_RDWR, 0)
			mustDo(t, err)
			tt.change(t, f, w)
			mustDo(t, w.Close())

			lost, err := f.PowerOff()
			mustDo(t, err)
			name := cmp.Or(tt.file, "f")
			if lost.Bytes != tt.wantLost {
				t.Errorf("lost %d bytes, want %d", lost.Bytes, tt.wantLost)
			}
			if wantFiles := wantLostFiles(tt.wantLost, name); !slices.Equal(lost.Files, wantFiles) {
				t.Errorf("lost files %q, want %q", lost.Files, wantFiles)
			}
			got, err := os.ReadFile(filepath.Join(f.Backing(), name))
			mustDo(t, err)
			if string(got) != tt.want {
				t.Errorf("backing file after PowerOff: %q, want %q", got, tt.want)
			}
			f.PowerOn()
			got, err = os.ReadFile(filepath.Join(f.Mountpoint(), name))
			mustDo(t, err)
			if string(got) != tt.want {
				t.Errorf("file on the mount after PowerOn: %q, want %q", got, tt.want)
			}
		})
	}
}

func wantLostFiles(lostBytes int64, name string) []string {
	if lostBytes == 0 {
		return nil
	}
	return []string{name}
}

// TestCreatedFileNeverSyncedIsEmptied: a file created and written but
// never fsynced keeps its name (names are durable at once) and loses its
// data; one fsynced keeps it.
func TestCreatedFileNeverSyncedIsEmptied(t *testing.T) {
	f := mount(t)
	mustDo(t, os.MkdirAll(filepath.Join(f.Mountpoint(), "d"), 0o755))
	mustDo(t, os.WriteFile(filepath.Join(f.Mountpoint(), "d", "new"), []byte("never synced"), 0o644))
	writeSynced(t, f, "d/kept", "synced")

	lost, err := f.PowerOff()
	mustDo(t, err)
	if want := []string{"d/new"}; !slices.Equal(lost.Files, want) || lost.Bytes != 12 {
		t.Errorf("lost %q, %d bytes; want %q, 12 bytes", lost.Files, lost.Bytes, want)
	}
	f.PowerOn()
	for name, want := range map[string]string{"d/new": "", "d/kept": "synced"} {
		got, err := os.ReadFile(filepath.Join(f.Mountpoint(), name))
		mustDo(t, err)
		if string(got) != want {
			t.Errorf("%s after PowerOff: %q, want %q", name, got, want)
		}
	}
}

// TestPowerOffIsADeadDisk: while off every operation fails with EIO, on
// names and on open files; after PowerOn new opens work, and files opened
// before the power cut stay dead.
func TestPowerOffIsADeadDisk(t *testing.T) {
	f := mount(t)
	writeSynced(t, f, "f", "synced")
	path := filepath.Join(f.Mountpoint(), "f")
	old, err := os.OpenFile(path, os.O_RDWR, 0)
	mustDo(t, err)
	defer old.Close()
	oldDir, err := os.Open(f.Mountpoint())
	mustDo(t, err)
	defer oldDir.Close()

	if _, err := f.PowerOff(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	ops := []struct {
		name string
		do   func() error
	}{
		{"stat", func() error { _, err := os.Stat(path); return err }},
		{"open", func() error { r, err := os.Open(path); r.Close(); return err }},
		{"create", func() error {
			_, err := os.Create(filepath.Join(f.Mountpoint(), "new"))
			return err
		}},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(f.Mountpoint(), "dir"), 0o755) }},
		{"readdir", func() error { _, err := os.ReadDir(f.Mountpoint()); return err }},
		{"list an open directory", func() error { _, err := oldDir.ReadDir(-1); return err }},
		{"fsync a directory", oldDir.Sync},
		{"read", func() error { _, err := old.ReadAt(buf, 0); return err }},
		{"write", func() error { _, err := old.WriteAt([]byte("x"), 0); return err }},
		{"fsync", old.Sync},
		{"truncate", func() error { return old.Truncate(0) }},
	}
	for _, op := range ops {
		if err := op.do(); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s while off: %v, want EIO", op.name, err)
		}
	}
	if lost, err := f.PowerOff(); err != nil || len(lost.Files) != 0 {
		t.Errorf("second PowerOff: %v, %v; want nothing lost", lost, err)
	}

	f.PowerOn()
	if _, err := old.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read through a file opened before the power cut: %v, want EIO", err)
	}
	w, err := os.OpenFile(path, os.O_RDWR, 0)
	mustDo(t, err)
	defer w.Close()
	_, err = w.WriteAt([]byte("S"), 0)
	mustDo(t, err)
	mustDo(t, w.Sync())
	got, err := os.ReadFile(path)
	mustDo(t, err)
	if string(got) != "Synced" {
		t.Errorf("after PowerOn: %q, want %q", got, "Synced")
	}
}

// TestFaults: a failing fsync leaves the write unsynced, failing writes
// return their errno, a slow fsync takes at least its delay.
func TestFaults(t *testing.T) {
	t.Run("fsync fails and the write stays unsynced", func(t *testing.T) {
		f := mount(t)
		writeSynced(t, f, "f", "synced")
		w, err := os.OpenFile(filepath.Join(f.Mountpoint(), "f"), os.O_RDWR, 0)
		mustDo(t, err)
		defer w.Close()
		_, err = w.WriteAt([]byte("-lost"), 6)
		mustDo(t, err)
		f.FailSync(syscall.EIO)
		if err := w.Sync(); !errors.Is(err, syscall.EIO) {
			t.Errorf("fsync under FailSync(EIO): %v, want EIO", err)
		}
		lost, err := f.PowerOff()
		mustDo(t, err)
		if lost.Bytes != 5 {
			t.Errorf("lost %d bytes, want 5", lost.Bytes)
		}
		got, err := os.ReadFile(filepath.Join(f.Backing(), "f"))
		mustDo(t, err)
		if string(got) != "synced" {
			t.Errorf("after PowerOff: %q, want %q", got, "synced")
		}
	})
	t.Run("fsync works again once cleared", func(t *testing.T) {
		f := mount(t)
		f.FailSync(syscall.EIO)
		f.FailSync(0)
		writeSynced(t, f, "f", "synced")
		_, err := f.PowerOff()
		mustDo(t, err)
		got, err := os.ReadFile(filepath.Join(f.Backing(), "f"))
		mustDo(t, err)
		if string(got) != "synced" {
			t.Errorf("after PowerOff: %q, want %q", got, "synced")
		}
	})
	t.Run("writes fail with ENOSPC", func(t *testing.T) {
		f := mount(t)
		w, err := os.Create(filepath.Join(f.Mountpoint(), "f"))
		mustDo(t, err)
		defer w.Close()
		f.FailWrites(syscall.ENOSPC)
		if _, err := w.Write([]byte("data")); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("write under FailWrites(ENOSPC): %v, want ENOSPC", err)
		}
		f.FailWrites(0)
		if _, err := w.Write([]byte("data")); err != nil {
			t.Errorf("write after FailWrites(0): %v", err)
		}
	})
	t.Run("fsync takes at least the slow delay", func(t *testing.T) {
		f := mount(t)
		w, err := os.Create(filepath.Join(f.Mountpoint(), "f"))
		mustDo(t, err)
		defer w.Close()
		const d = 100 * time.Millisecond
		f.SlowSync(d)
		start := time.Now()
		mustDo(t, w.Sync())
		if took := time.Since(start); took < d {
			t.Errorf("fsync took %v under SlowSync(%v)", took, d)
		}
	})
}

// TestUnmountWhileBusy: a file still open does not stop Unmount (the
// mount is detached lazily), which is idempotent and keeps what was
// written.
func TestUnmountWhileBusy(t *testing.T) {
	f := mount(t)
	w, err := os.Create(filepath.Join(f.Mountpoint(), "f"))
	mustDo(t, err)
	_, err = w.WriteString("unsynced")
	mustDo(t, err)
	if err := f.Unmount(); err != nil {
		t.Fatalf("unmount while a file is open: %v", err)
	}
	if err := f.Unmount(); err != nil {
		t.Errorf("second unmount: %v", err)
	}
	w.Close()
	mounts, err := os.ReadFile("/proc/self/mounts")
	mustDo(t, err)
	if bytes.Contains(mounts, []byte(f.Mountpoint())) {
		t.Errorf("%s still mounted", f.Mountpoint())
	}
	got, err := os.ReadFile(filepath.Join(f.Backing(), "f"))
	mustDo(t, err)
	if string(got) != "unsynced" {
		t.Errorf("backing file after unmount: %q, want %q", got, "unsynced")
	}
}
