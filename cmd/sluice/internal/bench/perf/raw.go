package perf

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/sluicebus/sluice/internal/jsbatch"
)

// Raw is a load of durable JetStream publishes straight to a stream, with
// no gateway: Concurrency publishers for Duration, each publishing one
// message and waiting for its ack (Batch 0) or one atomic batch of Batch
// messages at a time. Every message carries a Nats-Msg-Id, as the
// gateway's do, so the stream does the same deduplication work.
type Raw struct {
	Subject, Stream string
	Concurrency     int
	Duration        time.Duration
	Size            int
	Batch           int
}

// RunRaw runs r over nc. Latency is per publish: a message, or a batch.
func RunRaw(ctx context.Context, nc *nats.Conn, r Raw) (*Result, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.Duration)
	defer cancel()
	start := time.Now()
	payload := bytes.Repeat([]byte("x"), r.Size)
	results := make([]*Result, r.Concurrency)
	var wg sync.WaitGroup
	for i := range r.Concurrency {
		res := &Result{Status: map[int]int64{}}
		results[i] = res
		wg.Go(func() {
			n := max(r.Batch, 1)
			msgs := make([]*nats.Msg, n)
			for ctx.Err() == nil {
				for j := range msgs {
					msgs[j] = &nats.Msg{Subject: r.Subject, Data: payload,
						Header: nats.Header{jetstream.MsgIDHeader: []string{nuid.Next()}}}
				}
				t0 := time.Now()
				var err error
				if r.Batch == 0 {
					_, err = js.PublishMsg(ctx, msgs[0])
				} else {
					_, err = jsbatch.Publish(ctx, nc, r.Stream, msgs)
				}
				if ctx.Err() != nil {
					return
				}
				res.Requests++
				if err != nil {
					res.Failed++
					continue
				}
				res.Latency.Record(time.Since(t0))
				res.Msgs += int64(n)
			}
		})
	}
	wg.Wait()
	return merge(results, min(time.Since(start), r.Duration)), nil
}
