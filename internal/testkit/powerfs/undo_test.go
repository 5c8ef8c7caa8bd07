package powerfs

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestUndoLogRestoresSyncedContent drives an undo log the way the file
// system does (save, then change the backing file) with random writes,
// truncates and extensions, and checks that restore puts back the synced
// content byte for byte. It needs no FUSE.
func TestUndoLogRestoresSyncedContent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		path := filepath.Join(t.TempDir(), "f")
		synced := make([]byte, rng.IntN(64))
		for i := range synced {
			synced[i] = byte('a' + rng.IntN(26))
		}
		if err := os.WriteFile(path, synced, 0o644); err != nil {
			t.Fatal(err)
		}
		fd, err := syscall.Open(path, syscall.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		u := &undoLog{fd: fd, synced: int64(len(synced))}
		for range rng.IntN(12) {
			off := int64(rng.IntN(80))
			switch rng.IntN(3) {
			case 0, 1:
				data := bytes.Repeat([]byte{byte('0' + rng.IntN(10))}, 1+rng.IntN(20))
				if err := u.save(off, off+int64(len(data))); err != nil {
					t.Fatal(err)
				}
				if _, err := syscall.Pwrite(fd, data, off); err != nil {
					t.Fatal(err)
				}
			case 2:
				if err := u.save(off, u.synced); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Ftruncate(fd, off); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := u.restore(); err != nil {
			t.Fatal(err)
		}
		syscall.Close(fd)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, synced) {
			t.Fatalf("round %d: restored %q, synced %q", round, got, synced)
		}
	}
}

// TestMergeJoinsAdjacentSpans: saved spans stay sorted, disjoint and
// joined, however they were saved.
func TestMergeJoinsAdjacentSpans(t *testing.T) {
	tests := []struct {
		name        string
		saved, gaps []span
		want        []span
	}{
		{"into nothing", nil, []span{{3, []byte("ab")}}, []span{{3, []byte("ab")}}},
		{"before, apart", []span{{5, []byte("x")}}, []span{{1, []byte("ab")}}, []span{{1, []byte("ab")}, {5, []byte("x")}}},
		{"between, adjacent to both", []span{{0, []byte("ab")}, {4, []byte("ef")}}, []span{{2, []byte("cd")}}, []span{{0, []byte("abcdef")}}},
		{"nothing to add", []span{{0, []byte("a")}}, nil, []span{{0, []byte("a")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := merge(tt.saved, tt.gaps)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].off != tt.want[i].off || !bytes.Equal(got[i].data, tt.want[i].data) {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}
