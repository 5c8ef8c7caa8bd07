package powerfs

import (
	"context"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open backing file. It wraps go-fuse's LoopbackFile rather
// than embedding it, so that it implements only the operations below: an
// embedded PassthroughFd would let the kernel write to the backing file
// without us, an embedded Writev would bypass Write.
type file struct {
	fs    *FS
	lf    *fusefs.LoopbackFile
	fd    int    // lf's descriptor, valid until Release
	epoch uint64 // the power cycle it was opened in
	// dsync: opened O_SYNC or O_DSYNC, every write is an fsync too. The
	// kernel sends no FSYNC after a direct I/O write, so the file system
	// must (nats-server writes its index and meta files so).
	dsync bool
}

var (
	_ = (fusefs.FileReader)((*file)(nil))
	_ = (fusefs.FileWriter)((*file)(nil))
	_ = (fusefs.FileFsyncer)((*file)(nil))
	_ = (fusefs.FileFlusher)((*file)(nil))
	_ = (fusefs.FileReleaser)((*file)(nil))
	_ = (fusefs.FileLseeker)((*file)(nil))
	_ = (fusefs.FileAllocater)((*file)(nil))
)

// newFile wraps a handle go-fuse's loopback opened with flags. The caller
// has entered.
func (f *FS) newFile(fh fusefs.FileHandle, flags uint32) (*file, syscall.Errno) {
	lf, ok := fh.(*fusefs.LoopbackFile)
	if !ok {
		return nil, syscall.EIO
	}
	// PassthroughFd is the one exported way to the descriptor; the kernel
	// never gets it (file does not implement FilePassthroughFder).
	fd, ok := lf.PassthroughFd()
	if !ok {
		lf.Release(context.Background())
		return nil, syscall.EBADF
	}
	return &file{fs: f, lf: lf, fd: fd, epoch: f.epoch, dsync: flags&syscall.O_DSYNC != 0}, 0
}

// Read reads from the backing file now, while entered: a lazy read (as
// fuse.ReadResultFd) would run after leave, racing a PowerOff.
func (h *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if !h.fs.enterFile(h.epoch) {
		return nil, syscall.EIO
	}
	defer h.fs.leave()
	n, err := syscall.Pread(h.fd, buf, off)
	if err != nil {
		return nil, fusefs.ToErrno(err)
	}
	return fuse.ReadResultData(buf[:n]), 0
}

// Write saves the synced bytes it overwrites, then writes through; on an
// O_SYNC or O_DSYNC file it then syncs as Fsync does.
func (h *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.dsync {
		if errno := h.fs.slowDown(ctx); errno != 0 {
			return 0, errno
		}
	}
	if !h.fs.enterFile(h.epoch) {
		return 0, syscall.EIO
	}
	defer h.fs.leave()
	if errno := syscall.Errno(h.fs.failWrites.Load()); errno != 0 {
		return 0, errno
	}
	u, err := h.fs.lockLog(h.fd)
	if err != nil {
		return 0, fusefs.ToErrno(err)
	}
	defer u.mu.Unlock()
	if err := u.save(off, off+int64(len(data))); err != nil {
		return 0, syscall.EIO
	}
	n, err := syscall.Pwrite(h.fd, data, off)
	if err != nil {
		return 0, fusefs.ToErrno(err)
	}
	if h.dsync {
		if errno := syscall.Errno(h.fs.failSync.Load()); errno != 0 {
			return 0, errno
		}
		if err := syscall.Fsync(h.fd); err != nil {
			return 0, fusefs.ToErrno(err)
		}
		h.fs.dropLocked(u)
	}
	return uint32(n), 0
}

// Fsync (and fdatasync: the size belongs to the data here) makes the
// file's content what a power loss keeps.
func (h *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := h.fs.slowDown(ctx); errno != 0 {
		return errno
	}
	if !h.fs.enterFile(h.epoch) {
		return syscall.EIO
	}
	defer h.fs.leave()
	if errno := syscall.Errno(h.fs.failSync.Load()); errno != 0 {
		return errno
	}
	return fusefs.ToErrno(h.fs.sync(h.fd))
}

// slowDown waits out SlowSync's delay, outside the gate: a PowerOff need
// not wait for a slow disk, the sync then fails.
func (f *FS) slowDown(ctx context.Context) syscall.Errno {
	d := time.Duration(f.slowSync.Load())
	if d <= 0 {
		return 0
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return 0
	case <-ctx.Done():
		return syscall.EINTR
	}
}

// Flush (on each close) makes nothing durable.
func (h *file) Flush(ctx context.Context) syscall.Errno {
	if !h.fs.enterFile(h.epoch) {
		return syscall.EIO
	}
	defer h.fs.leave()
	return h.lf.Flush(ctx)
}

// Release closes the backing file, power or not: the undo log has its own
// descriptor.
func (h *file) Release(ctx context.Context) syscall.Errno {
	return h.lf.Release(ctx)
}

func (h *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if !h.fs.enterFile(h.epoch) {
		return 0, syscall.EIO
	}
	defer h.fs.leave()
	return h.lf.Lseek(ctx, off, whence)
}

// Allocate is a write: it fails as writes do, and a mode that changes
// data (punch a hole, zero, collapse or insert a range) first saves the
// synced bytes from off on. Plain allocation changes no byte of data.
func (h *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if !h.fs.enterFile(h.epoch) {
		return syscall.EIO
	}
	defer h.fs.leave()
	if errno := syscall.Errno(h.fs.failWrites.Load()); errno != 0 {
		return errno
	}
	u, err := h.fs.lockLog(h.fd)
	if err != nil {
		return fusefs.ToErrno(err)
	}
	defer u.mu.Unlock()
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		if err := u.save(int64(off), u.synced); err != nil {
			return syscall.EIO
		}
	}
	return h.lf.Allocate(ctx, off, size, mode)
}

// truncate saves the synced bytes past size, then cuts the backing file
// there through the log's own descriptor (fd may be read-only: O_TRUNC).
// The caller has entered.
func (f *FS) truncate(fd int, size int64) syscall.Errno {
	u, err := f.lockLog(fd)
	if err != nil {
		return fusefs.ToErrno(err)
	}
	defer u.mu.Unlock()
	if err := u.save(size, u.synced); err != nil {
		return syscall.EIO
	}
	return fusefs.ToErrno(syscall.Ftruncate(u.fd, size))
}
