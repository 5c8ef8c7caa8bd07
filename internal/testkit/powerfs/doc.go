// Package powerfs is a FUSE pass-through file system that simulates power
// loss, in the spirit of LazyFS (which Jepsen used on NATS in 2025): a
// PowerOff throws away every write not yet fsynced. Tests mount it over a
// backing directory and put a broker's data directory on the mount, in the
// same process: go-fuse serves requests on goroutines of its own, and
// powerfs never holds a lock while it calls into the mount.
//
// # Model
//
// Writes pass through to the backing directory at once, so reads are plain
// reads. Each backing file (inode) changed since its last fsync has an undo
// log: its size at that fsync, and every synced byte range overwritten
// since, as it was (read from the backing file just before the write, a
// truncate or a hole punch passes through). An fsync or fdatasync of the
// file forgets the log, and so does each write to a file opened O_SYNC or
// O_DSYNC (nats-server writes its index and meta files so; the kernel sends
// no fsync for them on a direct I/O mount, powerfs syncs them itself). PowerOff cuts every logged file back to its synced
// size and writes the saved bytes back, so the backing directory holds
// exactly what was fsynced. An undo log rather than a redo cache (LazyFS
// keeps unsynced writes in its own page cache) leaves the backing
// directory a plain, readable copy of the file system at all times, and
// costs nothing for appends, the common case: bytes past the synced size
// need no copy.
//
// A file created and never fsynced keeps its name and loses its data (it
// is cut to 0 bytes) rather than being removed: names are durable at once
// (see Limits), and an empty file is what ext4 and xfs often leave, after
// a crash, of a file created and written but never fsynced. A file
// truncated (O_TRUNC, truncate, ftruncate) since its last fsync gets its
// synced content back.
//
// PowerOff takes the gate every operation holds shared for its whole run:
// an operation in flight either completes before the undo (and counts as
// unsynced unless fsynced) or fails with EIO; no write lands after the
// undo. While off, every operation fails with EIO, as on a dead disk.
// Files opened before a PowerOff stay dead after PowerOn: the process that
// opened them died with the power.
//
// # Limits
//
//   - Directory operations (create, mkdir, rename, unlink, link, symlink)
//     and metadata (mode, owner, times, xattrs) are durable at once; an
//     fsync of a directory passes through and changes nothing here. LazyFS
//     by default also loses file data only.
//   - fsync is all or nothing per file: no torn writes, no reordering of
//     unsynced writes (a PowerOff loses all of a file's unsynced writes,
//     never some).
//   - FailWrites fails write and fallocate, not truncate or create.
//   - A failed fsync (FailSync) leaves the data unsynced, and a later
//     fsync that succeeds syncs it; Linux after a real fsync error may
//     drop the dirty pages instead.
//   - The kernel's page cache is bypassed (direct I/O) and names and
//     attributes are not cached, so that a PowerOff leaves nothing stale:
//     shared writable mmap is not supported, and I/O is slower than on the
//     backing directory.
//   - Unmount, unlike PowerOff, keeps everything written (a clean
//     shutdown).
package powerfs
