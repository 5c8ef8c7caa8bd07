package powerfs

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dir is an open directory behind the gate: listing it and fsyncing it fail
// while the power is off. (A directory's fsync passes through: names are
// durable at once anyway.)
type dir struct {
	fs    *FS
	inner fusefs.FileHandle // go-fuse's loopback directory stream
}

var (
	_ = (fusefs.FileReaddirenter)((*dir)(nil))
	_ = (fusefs.FileSeekdirer)((*dir)(nil))
	_ = (fusefs.FileFsyncdirer)((*dir)(nil))
	_ = (fusefs.FileReleasedirer)((*dir)(nil))
)

func (d *dir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !d.fs.enter() {
		return nil, syscall.EIO
	}
	defer d.fs.leave()
	r, ok := d.inner.(fusefs.FileReaddirenter)
	if !ok {
		return nil, syscall.ENOTSUP
	}
	return r.Readdirent(ctx)
}

func (d *dir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if !d.fs.enter() {
		return syscall.EIO
	}
	defer d.fs.leave()
	s, ok := d.inner.(fusefs.FileSeekdirer)
	if !ok {
		return syscall.ENOTSUP
	}
	return s.Seekdir(ctx, off)
}

func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if !d.fs.enter() {
		return syscall.EIO
	}
	defer d.fs.leave()
	s, ok := d.inner.(fusefs.FileFsyncdirer)
	if !ok {
		return syscall.ENOTSUP
	}
	return s.Fsyncdir(ctx, flags)
}

// Releasedir closes the directory, power or not.
func (d *dir) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.inner.(fusefs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}
