package powerfs

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a mounted pass-through file system whose unsynced writes a
// PowerOff throws away.
type FS struct {
	backing    string
	mountpoint string
	server     *fuse.Server

	// gate is held shared by every operation for its whole run and
	// exclusively by PowerOff, PowerOn and Unmount: an operation either
	// completes before the undo or sees the power off.
	gate  sync.RWMutex
	off   bool   // under gate
	epoch uint64 // under gate: power cycles so far; a handle from an earlier one is dead

	mu   sync.Mutex // guards logs (each log's content is under its own mu)
	logs map[fileID]*undoLog

	failSync   atomic.Uintptr // syscall.Errno fsync returns, 0 for none
	failWrites atomic.Uintptr // syscall.Errno writes return, 0 for none
	slowSync   atomic.Int64   // time.Duration added to every fsync

	unmountOnce sync.Once
	unmountErr  error
}

// Lost is what a PowerOff threw away.
type Lost struct {
	// Files are the backing files whose unsynced changes were undone,
	// relative to the backing directory, sorted. A file unlinked since
	// ends in " (deleted)".
	Files []string
	// Bytes counts the bytes undone: those past each file's synced size,
	// and the synced bytes put back after an overwrite or a truncate.
	Bytes int64
}

// Mount mounts a pass-through view of the backing directory on mountpoint,
// created if missing. Mounting needs root (or CAP_SYS_ADMIN) and /dev/fuse.
func Mount(backing, mountpoint string) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("powerfs: %w", err)
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("powerfs: %w", err)
	}
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return nil, fmt.Errorf("powerfs: %w", err)
	}
	root, err := fusefs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("powerfs: backing %s: %w", backing, err)
	}
	f := &FS{backing: backing, mountpoint: mountpoint, logs: map[fileID]*undoLog{}}
	// No kernel caching of names and attributes: a PowerOff changes the
	// backing files behind the kernel's back.
	var zero time.Duration
	opts := &fusefs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount: true,
			FsName:      backing,
			Name:        "powerfs",
			// Kernel passthrough would send reads and writes to the
			// backing file without us; the undo log must see each write.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
	}
	server, err := fusefs.Mount(mountpoint, &node{LoopbackNode: root.(*fusefs.LoopbackNode), fs: f}, opts)
	if err != nil {
		return nil, fmt.Errorf("powerfs: mount %s: %w", mountpoint, err)
	}
	f.server = server
	return f, nil
}

// Mountpoint is where the file system is mounted.
func (f *FS) Mountpoint() string { return f.mountpoint }

// Backing is the directory the file system passes through to.
func (f *FS) Backing() string { return f.backing }

// PowerOff cuts the power at once: it waits for the operations in flight,
// then every later operation fails with EIO, as on a dead disk, and every
// change not fsynced since is undone on the backing directory. Files
// opened before stay dead after PowerOn (their process died with the
// power). PowerOff on a file system already off returns nothing lost.
func (f *FS) PowerOff() (Lost, error) {
	f.gate.Lock()
	defer f.gate.Unlock()
	if f.off {
		return Lost{}, nil
	}
	f.off = true
	f.epoch++
	f.mu.Lock()
	logs := f.logs
	f.logs = map[fileID]*undoLog{}
	f.mu.Unlock()
	var lost Lost
	var errs []error
	for _, u := range logs {
		u.mu.Lock()
		name := f.nameOf(u.fd)
		n, err := u.restore()
		u.closed = true
		syscall.Close(u.fd)
		u.mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("powerfs: undo %s: %w", name, err))
		}
		if n > 0 {
			lost.Files = append(lost.Files, name)
			lost.Bytes += n
		}
	}
	slices.SortFunc(lost.Files, cmp.Compare)
	return lost, errors.Join(errs...)
}

// PowerOn makes operations work again; the backing directory now holds
// what was fsynced before the PowerOff.
func (f *FS) PowerOn() {
	f.gate.Lock()
	defer f.gate.Unlock()
	f.off = false
}

// FailSync makes every fsync fail with errno, the data staying unsynced,
// until called with 0.
func (f *FS) FailSync(errno syscall.Errno) { f.failSync.Store(uintptr(errno)) }

// FailWrites makes every write (and fallocate) fail with errno, as EIO or
// ENOSPC, until called with 0.
func (f *FS) FailWrites(errno syscall.Errno) { f.failWrites.Store(uintptr(errno)) }

// SlowSync makes every fsync take d longer, as on a slow disk; 0 restores.
func (f *FS) SlowSync(d time.Duration) { f.slowSync.Store(int64(d)) }

// Unmount unmounts the file system, lazily if it is busy, and keeps what
// the backing directory holds (a clean shutdown: nothing is undone).
// Idempotent.
func (f *FS) Unmount() error {
	f.unmountOnce.Do(func() {
		if err := f.server.Unmount(); err != nil {
			// Busy: detach the mount now; the kernel lets go of it when
			// the last file on it is closed.
			if derr := syscall.Unmount(f.mountpoint, syscall.MNT_DETACH); derr != nil {
				f.unmountErr = fmt.Errorf("powerfs: unmount %s: %w", f.mountpoint, errors.Join(err, derr))
			}
		}
		f.gate.Lock()
		defer f.gate.Unlock()
		f.off = true
		f.epoch++
		f.mu.Lock()
		defer f.mu.Unlock()
		for id, u := range f.logs {
			u.mu.Lock()
			u.closed = true
			syscall.Close(u.fd)
			u.mu.Unlock()
			delete(f.logs, id)
		}
	})
	return f.unmountErr
}

// enter admits an operation: it holds the gate shared until leave, unless
// the power is off (then it returns false and holds nothing).
//
// An operation never enters twice: a shared hold taken while PowerOff
// waits for the gate would deadlock (sync.RWMutex lets no reader in once a
// writer waits).
func (f *FS) enter() bool {
	f.gate.RLock()
	if f.off {
		f.gate.RUnlock()
		return false
	}
	return true
}

// enterFile admits an operation on a file opened in power cycle epoch.
func (f *FS) enterFile(epoch uint64) bool {
	if !f.enter() {
		return false
	}
	if epoch != f.epoch {
		f.gate.RUnlock()
		return false
	}
	return true
}

func (f *FS) leave() { f.gate.RUnlock() }

// lockLog returns the backing inode's undo log, locked, creating it before
// the first change since the last fsync. The caller has entered.
func (f *FS) lockLog(fd int) (*undoLog, error) {
	for {
		u, err := f.logFor(fd)
		if err != nil {
			return nil, err
		}
		u.mu.Lock()
		if !u.closed {
			return u, nil
		}
		// An fsync closed it while we waited: what we would change is
		// synced content, under a new log.
		u.mu.Unlock()
	}
}

func (f *FS) logFor(fd int) (*undoLog, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, err
	}
	id := fileID{dev: st.Dev, ino: st.Ino}
	if u := f.logs[id]; u != nil {
		return u, nil
	}
	// No log: the file holds its synced content, and nothing changes it
	// until this log exists (every change takes the log first), so its
	// size now is its synced size. The log opens the inode afresh, read
	// and write, whatever the handle's mode and wherever it moves.
	own, err := syscall.Open("/proc/self/fd/"+strconv.Itoa(fd), syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	u := &undoLog{id: id, fd: own, synced: st.Size}
	f.logs[id] = u
	return u, nil
}

// sync fsyncs the backing file and, on success, forgets its undo log: its
// content is now what a power loss keeps. The caller has entered.
func (f *FS) sync(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	id := fileID{dev: st.Dev, ino: st.Ino}
	for {
		f.mu.Lock()
		u := f.logs[id]
		f.mu.Unlock()
		if u == nil {
			// Nothing unsynced here; a change that starts meanwhile
			// takes a log and stays unsynced (it may: it raced the fsync).
			return syscall.Fsync(fd)
		}
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			continue
		}
		// Holding the log, no change runs: the fsync covers every change
		// the log has saved for.
		err := syscall.Fsync(fd)
		if err == nil {
			f.dropLocked(u)
		}
		u.mu.Unlock()
		return err
	}
}

// dropLocked forgets a log the caller holds.
func (f *FS) dropLocked(u *undoLog) {
	u.closed = true
	syscall.Close(u.fd)
	f.mu.Lock()
	if f.logs[u.id] == u {
		delete(f.logs, u.id)
	}
	f.mu.Unlock()
}

// forgetIfGone drops the log of an inode no name links to any more: after
// a power loss it is gone whatever it held (names are durable at once), so
// its log would only hold its space. The caller has entered.
func (f *FS) forgetIfGone(id fileID) {
	f.mu.Lock()
	u := f.logs[id]
	f.mu.Unlock()
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	var st syscall.Stat_t
	if u.closed || syscall.Fstat(u.fd, &st) != nil || st.Nlink > 0 {
		return
	}
	f.dropLocked(u)
}

// nameOf is the backing file's name relative to the backing directory.
func (f *FS) nameOf(fd int) string {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return fmt.Sprintf("fd %d", fd)
	}
	if rel, err := filepath.Rel(f.backing, p); err == nil {
		return rel
	}
	return p
}

// idOf names the inode at path (not following a symlink).
func idOf(path string) (fileID, bool) {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fileID{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino}, true
}
