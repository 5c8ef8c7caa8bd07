package gateway

import (
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
)

// queued is an entry whose id is key, with size bytes of payload.
func queued(key string, size int) *entry {
	var wg sync.WaitGroup
	e := newEntry(key, strings.Repeat("x", size), time.Now().Add(time.Minute), &wg)
	e.id = key
	return e
}

// TestCommitQueueNext: commits start while fewer than maxInFlight are in
// flight and something queued may go; the end of a commit frees its slot
// and its keys, so what waited behind them goes next, oldest first.
func TestCommitQueueNext(t *testing.T) {
	type step struct {
		op   string // "push <keys>", "next", "done <n>" (the n-th batch taken, from 0)
		want string // next: the batch taken ("" none)
	}
	for _, tc := range []struct {
		name     string
		inFlight int
		max      int
		steps    []step
	}{
		{"nothing queued", 2, 10, []step{
			{"next", ""},
		}},
		{"one commit in flight at most", 1, 10, []step{
			{"push a b", ""},
			{"next", "a,b"},
			{"push c", ""},
			{"next", ""},
			{"done 0", ""},
			{"next", "c"},
		}},
		{"a second commit while one flies", 2, 1, []step{
			{"push a b c", ""},
			{"next", "a"},
			{"next", "b"},
			{"next", ""},
			{"done 1", ""},
			{"next", "c"},
		}},
		{"a key in flight waits, with room for a commit", 2, 10, []step{
			{"push k", ""},
			{"next", "k"},
			{"push k o", ""},
			{"next", "o"},
			{"next", ""},
			{"done 0", ""},
			{"next", "k"},
		}},
		{"every queued key in flight: no commit counted", 3, 10, []step{
			{"push k", ""},
			{"next", "k"},
			{"push k", ""},
			{"next", ""},
			{"done 0", ""},
			{"next", "k"},
			{"done 1", ""},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newCommitQueue(tc.inFlight, tc.max, 1<<20)
			var batches [][]*entry
			ended := map[int]bool{}
			for i, s := range tc.steps {
				op, arg, _ := strings.Cut(s.op, " ")
				switch op {
				case "push":
					for _, k := range strings.Fields(arg) {
						q.push(queued(k, 1))
					}
				case "next":
					b := q.next()
					if got := ids(b); got != s.want {
						t.Fatalf("step %d (%s): took %q, want %q", i, s.op, got, s.want)
					}
					if b != nil {
						batches = append(batches, b)
					}
				case "done":
					n := int(arg[0] - '0')
					q.done(batches[n])
					ended[n] = true
				}
				// In flight: exactly the batches taken and not ended,
				// and their keys.
				want := map[string]int{}
				for n, b := range batches {
					if !ended[n] {
						for _, e := range b {
							want[e.id]++
						}
					}
				}
				if q.inFlight != len(batches)-len(ended) || !maps.Equal(q.flying, want) {
					t.Fatalf("step %d (%s): %d commits and keys %v in flight, want %d and %v",
						i, s.op, q.inFlight, q.flying, len(batches)-len(ended), want)
				}
			}
		})
	}
}
