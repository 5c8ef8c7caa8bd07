//go:build fuse

package powerfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const recSize = 64

// record is the content of record rec of a file at version v.
func record(file string, rec, v int) []byte {
	b := bytes.Repeat([]byte{'.'}, recSize)
	copy(b, fmt.Sprintf("%s r%d v%d ", file, rec, v))
	b[recSize-1] = '\n'
	return b
}

// recordState is what a writer knows of one record: the last version whose
// fsync returned success before the PowerOff began, and the last version
// written at all (its fsync may or may not have taken effect).
type recordState struct{ confirmed, written int }

// writer appends records to its file, sometimes overwriting an earlier one
// with a new version, each change followed by an fsync, until an error
// (the power cut) or max changes. Two writers may share a file: writer
// part of parts writes the records with rec%parts == part.
type writer struct {
	file        string
	part, parts int
	recs        map[int]*recordState
}

func (w *writer) run(path string, began *atomic.Bool, synced *atomic.Int64, max int) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	next := w.part
	for i := range max {
		rec := next
		if done := (next - w.part) / w.parts; i%4 == 3 && done > 0 {
			rec = w.part + (i/2)%done*w.parts // overwrite one of ours
		} else {
			next += w.parts
		}
		st := w.recs[rec]
		if st == nil {
			st = &recordState{}
			w.recs[rec] = st
		}
		st.written++
		if _, err := f.WriteAt(record(w.file, rec, st.written), int64(rec)*recSize); err != nil {
			return
		}
		if err := f.Sync(); err != nil {
			return
		}
		if !began.Load() {
			st.confirmed = st.written
			synced.Add(1)
		}
	}
}

// check reads the file (from the backing directory) and returns what
// breaks the promise: a record confirmed synced must hold its confirmed
// version or a later one.
func (w *writer) check(data []byte) []string {
	var bad []string
	for rec, st := range w.recs {
		if st.confirmed == 0 {
			continue
		}
		off := rec * recSize
		if off+recSize > len(data) {
			bad = append(bad, fmt.Sprintf("%s record %d (v%d synced): file is %d bytes", w.file, rec, st.confirmed, len(data)))
			continue
		}
		got := data[off : off+recSize]
		ok := false
		for v := st.confirmed; v <= st.written; v++ {
			ok = ok || bytes.Equal(got, record(w.file, rec, v))
		}
		if !ok {
			bad = append(bad, fmt.Sprintf("%s record %d: %q, want v%d..v%d", w.file, rec, bytes.TrimRight(got, ".\n"), st.confirmed, st.written))
		}
	}
	return bad
}

// TestConcurrentWritersAcrossPowerCuts: goroutines write and fsync
// concurrently (some sharing a file) while the power is cut; every record
// whose fsync returned before the PowerOff began holds its synced version
// or a later one, in that cycle and in every later one. Run with -race.
func TestConcurrentWritersAcrossPowerCuts(t *testing.T) {
	const (
		cycles      = 3
		soloWriters = 6
		maxChanges  = 3000
		cutAfter    = 150 // confirmed fsyncs before the power cut, or
		cutDeadline = 10 * time.Second
	)
	f := mount(t)
	var all []*writer
	for c := range cycles {
		var ws []*writer
		for i := range soloWriters {
			ws = append(ws, &writer{file: fmt.Sprintf("c%d-w%d", c, i), parts: 1, recs: map[int]*recordState{}})
		}
		for part := range 2 {
			ws = append(ws, &writer{file: fmt.Sprintf("c%d-shared", c), part: part, parts: 2, recs: map[int]*recordState{}})
		}
		var began atomic.Bool
		var synced atomic.Int64
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Go(func() { w.run(filepath.Join(f.Mountpoint(), w.file), &began, &synced, maxChanges) })
		}
		deadline := time.Now().Add(cutDeadline)
		for synced.Load() < cutAfter && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		began.Store(true)
		lost, err := f.PowerOff()
		if err != nil {
			t.Fatalf("cycle %d: PowerOff: %v", c, err)
		}
		wg.Wait()
		t.Logf("cycle %d: %d fsyncs confirmed before the cut; lost %d bytes in %d files", c, synced.Load(), lost.Bytes, len(lost.Files))
		if synced.Load() == 0 {
			t.Errorf("cycle %d: no fsync returned before the cut", c)
		}
		all = append(all, ws...)
		for _, w := range all {
			data, err := os.ReadFile(filepath.Join(f.Backing(), w.file))
			if errors.Is(err, os.ErrNotExist) && len(w.recs) == 0 {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range w.check(data) {
				t.Errorf("cycle %d: %s", c, b)
			}
		}
		f.PowerOn()
	}
	// The mount shows what the backing directory holds.
	for _, w := range all {
		want, err := os.ReadFile(filepath.Join(f.Backing(), w.file))
		mustDo(t, err)
		got, err := os.ReadFile(filepath.Join(f.Mountpoint(), w.file))
		mustDo(t, err)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the mount reads %d bytes unlike the backing file's %d", w.file, len(got), len(want))
		}
	}
}
