package powerfs

import (
	"context"
	"path/filepath"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a file or directory: go-fuse's LoopbackNode behind the power
// gate. Every operation go-fuse's loopback implements is overridden here,
// so none runs while the power is off; those that change file data go
// through the undo log.
type node struct {
	*fusefs.LoopbackNode
	fs *FS
}

var (
	_ = (fusefs.NodeWrapChilder)((*node)(nil))
	_ = (fusefs.NodeLookuper)((*node)(nil))
	_ = (fusefs.NodeGetattrer)((*node)(nil))
	_ = (fusefs.NodeStatxer)((*node)(nil))
	_ = (fusefs.NodeSetattrer)((*node)(nil))
	_ = (fusefs.NodeOpener)((*node)(nil))
	_ = (fusefs.NodeCreater)((*node)(nil))
	_ = (fusefs.NodeTmpfiler)((*node)(nil))
	_ = (fusefs.NodeUnlinker)((*node)(nil))
	_ = (fusefs.NodeRenamer)((*node)(nil))
	_ = (fusefs.NodeCopyFileRanger)((*node)(nil))
)

// WrapChild puts each node go-fuse's loopback makes behind the gate.
func (n *node) WrapChild(ctx context.Context, ops fusefs.InodeEmbedder) fusefs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fusefs.LoopbackNode), fs: n.fs}
}

// backingPath is the node's path in the backing directory.
func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(nil))
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Lookup(ctx, name, out)
}

// Getattr reads through the file handle go-fuse passes, if any, but never
// through file's own (gated) methods: entering twice could deadlock.
func (n *node) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	if h, ok := f.(*file); ok {
		return h.lf.Getattr(ctx, out)
	}
	return n.LoopbackNode.Getattr(ctx, nil, out)
}

func (n *node) Statx(ctx context.Context, f fusefs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	if h, ok := f.(*file); ok {
		return h.lf.Statx(ctx, flags, mask, out)
	}
	return n.LoopbackNode.Statx(ctx, nil, flags, mask, out)
}

// Setattr truncates through the undo log; mode, owner and times pass
// through (metadata is durable at once).
func (n *node) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	h, _ := f.(*file)
	if h != nil {
		if !n.fs.enterFile(h.epoch) {
			return syscall.EIO
		}
	} else if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	if size, ok := in.GetSize(); ok {
		if errno := n.truncate(h, int64(size)); errno != 0 {
			return errno
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	if h != nil {
		return h.lf.Setattr(ctx, in, out)
	}
	return n.LoopbackNode.Setattr(ctx, nil, in, out)
}

// truncate cuts the file through its handle or, for truncate(2) by name,
// through a descriptor of its own. The caller has entered.
func (n *node) truncate(h *file, size int64) syscall.Errno {
	if h != nil {
		return n.fs.truncate(h.fd, size)
	}
	fd, err := syscall.Open(n.backingPath(), syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fusefs.ToErrno(err)
	}
	defer syscall.Close(fd)
	return n.fs.truncate(fd, size)
}

// Open opens without O_TRUNC and truncates through the undo log (the
// kernel sends O_TRUNC as a Setattr anyway: go-fuse does not ask for
// atomic O_TRUNC). Reads and writes bypass the kernel's page cache, which
// a PowerOff would leave stale.
func (n *node) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if !n.fs.enter() {
		return nil, 0, syscall.EIO
	}
	defer n.fs.leave()
	fh, _, errno := n.LoopbackNode.Open(ctx, flags&^syscall.O_TRUNC)
	if errno != 0 {
		return nil, 0, errno
	}
	h, errno := n.fs.openedFile(ctx, fh, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// Create makes the file at once (names are durable); its data is not
// until an fsync.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	if !n.fs.enter() {
		return nil, nil, 0, syscall.EIO
	}
	defer n.fs.leave()
	ch, fh, _, errno := n.LoopbackNode.Create(ctx, name, flags&^syscall.O_TRUNC, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	h, errno := n.fs.openedFile(ctx, fh, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, h, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	if !n.fs.enter() {
		return nil, nil, 0, syscall.EIO
	}
	defer n.fs.leave()
	ch, fh, _, errno := n.LoopbackNode.Tmpfile(ctx, flags&^syscall.O_TRUNC, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	h, errno := n.fs.openedFile(ctx, fh, flags&^syscall.O_TRUNC)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, h, fuse.FOPEN_DIRECT_IO, 0
}

// openedFile wraps a handle just opened with flags, truncating it first if
// they ask. The caller has entered.
func (f *FS) openedFile(ctx context.Context, fh fusefs.FileHandle, flags uint32) (*file, syscall.Errno) {
	h, errno := f.newFile(fh, flags)
	if errno != 0 {
		return nil, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		if errno := f.truncate(h.fd, 0); errno != 0 {
			h.lf.Release(ctx)
			return nil, errno
		}
	}
	return h, 0
}

// Unlink drops the undo log of a file it removes the last name of.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	id, isFile := idOf(filepath.Join(n.backingPath(), name))
	errno := n.LoopbackNode.Unlink(ctx, name)
	if errno == 0 && isFile {
		n.fs.forgetIfGone(id)
	}
	return errno
}

// Rename drops the undo log of a file it replaces for good.
func (n *node) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	var id fileID
	var isFile bool
	if np, ok := newParent.(*node); ok {
		id, isFile = idOf(filepath.Join(np.backingPath(), newName))
	}
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	if errno == 0 && isFile {
		n.fs.forgetIfGone(id)
	}
	return errno
}

// CopyFileRange is refused, so that the kernel copies by reads and
// writes, which the undo log sees.
func (n *node) CopyFileRange(ctx context.Context, fhIn fusefs.FileHandle, offIn uint64, out *fusefs.Inode, fhOut fusefs.FileHandle, offOut uint64, size uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOTSUP
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Readlink(ctx)
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if !n.fs.enter() {
		return nil, 0, syscall.EIO
	}
	defer n.fs.leave()
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dir{fs: n.fs, inner: fh}, fuseFlags, 0
}

func (n *node) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Readdir(ctx)
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Statfs(ctx, out)
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !n.fs.enter() {
		return 0, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Getxattr(ctx, attr, dest)
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Removexattr(ctx, attr)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if !n.fs.enter() {
		return 0, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Listxattr(ctx, dest)
}
