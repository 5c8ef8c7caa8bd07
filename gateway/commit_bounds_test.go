package gateway

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCommitQueueTakeBounds: what one commit takes from the queue, oldest
// first: at most CommitBatchMax messages and CommitBatchBytes of payload (a
// larger message alone), one message per key, none whose key is in flight,
// and nothing of a key behind one left queued.
func TestCommitQueueTakeBounds(t *testing.T) {
	msg := func(key string, size int) *entry {
		var wg sync.WaitGroup
		e := newEntry(key, strings.Repeat("x", size), time.Now().Add(time.Minute), &wg)
		e.id = key // one key, one id, whatever the payload
		return e
	}
	for _, tc := range []struct {
		name       string
		max, bytes int
		flying     []string
		queue      []*entry
		take, left []string
	}{
		{"bytes: up to the bound", 10, 10, nil, []*entry{msg("a", 5), msg("b", 5), msg("c", 5)}, []string{"a", "b"}, []string{"c"}},
		{"bytes: a message larger than the bound alone", 10, 4, nil, []*entry{msg("a", 8), msg("b", 1)}, []string{"a"}, []string{"b"}},
		{"count", 2, 100, nil, []*entry{msg("a", 1), msg("b", 1), msg("c", 1)}, []string{"a", "b"}, []string{"c"}},
		{"a key once per commit", 10, 100, nil, []*entry{msg("a", 1), msg("a", 1), msg("b", 1)}, []string{"a", "b"}, []string{"a"}},
		{"a key in flight waits", 10, 100, []string{"a"}, []*entry{msg("a", 1), msg("b", 1)}, []string{"b"}, []string{"a"}},
		{"behind its key left queued", 10, 5, nil, []*entry{msg("a", 1), msg("k", 8), msg("k", 1)}, []string{"a"}, []string{"k", "k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCommitQueue(DefaultConfig().CommitsInFlight, tc.max, tc.bytes)
			c.push(tc.queue...)
			for _, k := range tc.flying {
				c.flying[k] = 1
			}
			batch := c.take()
			if got, want := ids(batch), strings.Join(tc.take, ","); got != want {
				t.Errorf("taken %s, want %s", got, want)
			}
			if got, want := ids(c.queue), strings.Join(tc.left, ","); got != want {
				t.Errorf("left queued %s, want %s", got, want)
			}
			for _, e := range batch {
				if n := c.flying[e.id]; n != 1 {
					t.Errorf("key %s taken: in flight %d times, want 1", e.id, n)
				}
			}
		})
	}
}

func ids(es []*entry) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.id
	}
	return strings.Join(s, ",")
}

// TestCommitsInFlightBoundAndKeyOrder: with commits_in_flight 1 and the
// first commit's ack held, the next message waits in the queue, and a
// message with a key in flight waits even with room for another commit;
// once every commit has ended no key is left counted in flight.
func TestCommitsInFlightBoundAndKeyOrder(t *testing.T) {
	for _, inFlight := range []int{1, 2} {
		t.Run(fmt.Sprintf("commits_in_flight %d", inFlight), func(t *testing.T) {
			g, proxy, _, _ := heldEnv(t, func(cfg *Config) { cfg.CommitsInFlight = inFlight })
			c := g.commits["orders"]
			proxy.hold()
			var done sync.WaitGroup
			first := newEntry("k", "m", time.Now().Add(time.Minute), &done)
			c.submit(first)
			// Same key and payload: the same deduplication id.
			again := newEntry("k", "m", time.Now().Add(time.Minute), &done)
			c.submit(again)
			var other *entry
			if inFlight == 1 {
				other = newEntry("other", "o", time.Now().Add(time.Minute), &done)
				c.submit(other)
			}
			c.mu.Lock()
			queued, n := ids(c.q.queue), c.q.inFlight
			c.mu.Unlock()
			want := first.id
			if other != nil {
				want += "," + other.id
			}
			if n != 1 || queued != want {
				t.Errorf("in flight %d, queued %q; want 1 commit in flight and %q queued", n, queued, want)
			}
			proxy.release()
			done.Wait()
			if first.err != nil || first.seq != 2 || again.err != nil || !again.dup || again.seq != 2 {
				t.Errorf("first seq %d err %v, again seq %d dup %v err %v; want seq 2 and its duplicate", first.seq, first.err, again.seq, again.dup, again.err)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if len(c.q.flying) != 0 || len(c.q.queue) != 0 || c.q.inFlight != 0 {
				t.Errorf("after every commit: flying %v, queued %d, in flight %d; want none", c.q.flying, len(c.q.queue), c.q.inFlight)
			}
		})
	}
}

// TestAtomicFromAtomicMin: on a single-replica topic a commit of
// atomicMinR1 messages is one atomic batch, one fewer is published one by
// one.
func TestAtomicFromAtomicMin(t *testing.T) {
	g, _, _, reg := heldEnv(t, func(*Config) {})
	c := g.commits["orders"]
	for _, n := range []int{atomicMinR1 - 1, atomicMinR1} {
		var done sync.WaitGroup
		es := make([]*entry, n)
		for i := range es {
			es[i] = newEntry(fmt.Sprintf("n%d-%d", n, i), "m", time.Now().Add(time.Minute), &done)
		}
		c.submit(es...)
		done.Wait()
		for i, e := range es {
			if e.err != nil || e.seq == 0 {
				t.Fatalf("%d messages: entry %d seq %d err %v", n, i, e.seq, e.err)
			}
		}
	}
	if n := atomicCommits(t, reg); n != 1 {
		t.Fatalf("atomic commits: %d, want 1 (of %d messages, none of %d)", n, atomicMinR1, atomicMinR1-1)
	}
}
