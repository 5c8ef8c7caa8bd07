package gateway

// commitQueue is a topic's group-commit queue and its batch-selection
// rule: which queued messages the next commit takes. A plain value with no
// locks, clocks or I/O of its own (etcd raft's tracker.Inflights is the
// model); the committer holds it under its mutex.
//
// The rule: oldest first; one message per key in a commit, since the
// server refuses a batch holding a key twice; a message whose key is in a
// commit in flight, or behind one left queued, stays queued, so the first
// message with a key is stored first; at most maxMsgs messages and maxBytes
// of payload (a larger message alone); at most maxInFlight commits.
type commitQueue struct {
	maxInFlight int
	maxMsgs     int
	maxBytes    int

	// queue is bounded by the publish window: each entry holds a slot.
	queue    []*entry
	inFlight int
	// flying counts the keys of the messages in commits in flight.
	flying map[string]int
}

func newCommitQueue(maxInFlight, maxMsgs, maxBytes int) commitQueue {
	return commitQueue{maxInFlight: maxInFlight, maxMsgs: maxMsgs, maxBytes: maxBytes, flying: map[string]int{}}
}

// push queues es behind what is queued.
func (q *commitQueue) push(es ...*entry) { q.queue = append(q.queue, es...) }

// next takes the next commit's batch and counts the commit in flight; nil
// when maxInFlight commits are in flight, nothing is queued, or every
// queued key is in flight (the end of a commit, done, makes room).
func (q *commitQueue) next() []*entry {
	if q.inFlight >= q.maxInFlight || len(q.queue) == 0 {
		return nil
	}
	batch := q.take()
	if len(batch) == 0 {
		return nil
	}
	q.inFlight++
	return batch
}

// take removes the next batch from the queue by the rule, counting its
// keys in flight.
func (q *commitQueue) take() []*entry {
	batch := make([]*entry, 0, min(len(q.queue), q.maxMsgs))
	var left map[string]struct{} // keys of entries left queued in this pass
	rest := q.queue[:0]
	size := 0
	for _, e := range q.queue {
		_, behind := left[e.id]
		if behind || q.flying[e.id] > 0 || len(batch) == q.maxMsgs || (len(batch) > 0 && size+len(e.msg.Data) > q.maxBytes) {
			if left == nil {
				left = map[string]struct{}{}
			}
			left[e.id] = struct{}{}
			rest = append(rest, e)
			continue
		}
		q.flying[e.id]++ // taken: later entries with this key stay queued
		batch = append(batch, e)
		size += len(e.msg.Data)
	}
	clear(q.queue[len(rest):]) // let answered entries go
	q.queue = rest
	return batch
}

// done ends batch's commit, acked or failed: its slot and its keys are free.
func (q *commitQueue) done(batch []*entry) {
	q.inFlight--
	for _, e := range batch {
		if q.flying[e.id]--; q.flying[e.id] <= 0 {
			delete(q.flying, e.id)
		}
	}
}
