package powerfs

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"syscall"
)

// fileID names a backing inode: the undo log belongs to the inode, not to
// a handle or a name, because fsync through any handle syncs the inode and
// a rename keeps it.
type fileID struct{ dev, ino uint64 }

// undoLog is what a backing file held at its last fsync, kept from the
// first change after it until the next one: its size then, and the synced
// bytes that have been overwritten (by a write, a truncate or a hole
// punched) since, as they were. Bytes past the synced size need no copy:
// cutting the file back to that size throws them away.
//
// Invariant: every byte of [0, synced) that may differ from its synced
// value lies in a saved span. A file without a log holds its synced
// content.
type undoLog struct {
	mu     sync.Mutex
	id     fileID
	fd     int    // own read-write descriptor: restores the inode whatever it is named now
	synced int64  // size at the last fsync
	saved  []span // sorted, disjoint, not adjacent
	closed bool   // synced or restored: a writer that waited for mu must take a fresh log
}

// span is a run of synced bytes as they were before being overwritten.
type span struct {
	off  int64
	data []byte
}

func (s span) end() int64 { return s.off + int64(len(s.data)) }

// save copies the synced bytes of [off, end) not saved yet from the backing
// file, before the caller changes them. The caller holds mu.
func (u *undoLog) save(off, end int64) error {
	end = min(end, u.synced)
	if off >= end {
		return nil
	}
	var gaps []span
	at := off
	for _, s := range u.saved {
		if s.end() <= at {
			continue
		}
		if s.off >= end {
			break
		}
		if s.off > at {
			gaps = append(gaps, span{off: at, data: make([]byte, s.off-at)})
		}
		at = s.end()
		if at >= end {
			break
		}
	}
	if at < end {
		gaps = append(gaps, span{off: at, data: make([]byte, end-at)})
	}
	for _, g := range gaps {
		if err := preadFull(u.fd, g.data, g.off); err != nil {
			return fmt.Errorf("powerfs: save synced bytes [%d, %d): %w", g.off, g.end(), err)
		}
	}
	u.saved = merge(u.saved, gaps)
	return nil
}

// merge inserts gaps (disjoint from saved) and joins adjacent spans, so the
// list stays as short as the overwritten regions are few.
func merge(saved, gaps []span) []span {
	if len(gaps) == 0 {
		return saved
	}
	all := append(saved, gaps...)
	slices.SortFunc(all, func(a, b span) int { return cmp.Compare(a.off, b.off) })
	out := all[:1]
	for _, s := range all[1:] {
		last := &out[len(out)-1]
		if last.end() == s.off {
			last.data = append(last.data, s.data...)
			continue
		}
		out = append(out, s)
	}
	return out
}

// restore puts the synced content back: the size at the last fsync, then
// the saved bytes. It returns the number of bytes thrown away: those past
// the synced size and those restored. The caller holds mu.
func (u *undoLog) restore() (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(u.fd, &st); err != nil {
		return 0, err
	}
	lost := max(st.Size-u.synced, 0)
	if err := syscall.Ftruncate(u.fd, u.synced); err != nil {
		return 0, err
	}
	for _, s := range u.saved {
		if _, err := syscall.Pwrite(u.fd, s.data, s.off); err != nil {
			return 0, err
		}
		lost += int64(len(s.data))
	}
	return lost, nil
}

// preadFull reads len(buf) bytes at off; bytes past the end of the file read
// as zeros (a truncate that extends the file again would give them).
func preadFull(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := syscall.Pread(fd, buf, off)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			clear(buf)
			return nil
		}
		buf, off = buf[n:], off+int64(n)
	}
	return nil
}
