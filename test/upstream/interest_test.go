package upstream

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestFollowerConsumerAheadKeepsOthersMessages: a follower starts with one
// family's consumer state past its stream's last message, what a follower
// stopped under load is left with (its consumer Raft groups applied acks
// its stream group had not stored yet; nats-server warns "ack floor ... is
// ahead of stream's last sequence"). The other family's messages must
// stay on it: made that family's leader, it must deliver them all.
// nats-server v2.15.2 compacts the follower's stream to the first
// family's check floor, still 0, which purges it (stream.go
// checkInterestState, filestore.go compact), and the family's leader
// there skips what is gone: shipping gets 0 of 10 (fixed in v2.15.3).
// This is TestRollingRestartUnderLoad's family-lost in 20 s.
func TestFollowerConsumerAheadKeepsOthersMessages(t *testing.T) {
	base := t.TempDir()
	cports := []int{freePort(t), freePort(t), freePort(t)}
	var nodes []*node
	var urls []string
	for i := range 3 {
		cp := freePort(t)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", cp))
		var rs []string
		for j, p := range cports {
			if j != i {
				rs = append(rs, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		nodes = append(nodes, &node{opts: &server.Options{
			ServerName: fmt.Sprintf("s%d", i+1), Host: "127.0.0.1", Port: cp,
			JetStream: true, StoreDir: filepath.Join(base, fmt.Sprintf("s%d", i+1)), SyncAlways: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "ahead", Host: "127.0.0.1", Port: cports[i]},
			Routes:  server.RoutesFromStr(strings.Join(rs, ",")),
		}})
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() { n.start(t) })
	}
	wg.Wait()
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic := harness.Topic("orders", "billing", "shipping")
	topic.Replicas = 3
	stream := sluice.StreamName("orders")
	harness.Eventually(t, 60*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := js.CreateStream(c, broker.StreamConfig(topic))
		return err == nil
	}, "create stream")
	for _, f := range []string{"billing", "shipping"} {
		harness.Eventually(t, 60*time.Second, func() bool {
			c, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err := js.CreateOrUpdateConsumer(c, stream, broker.ConsumerConfig(topic, topic.Families[f]))
			return err == nil
		}, "create consumer")
	}
	const n = 10
	for i := range n {
		if _, err := js.Publish(ctx, sluice.Subject("orders"), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := js.Consumer(ctx, stream, "billing")
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second) // every replica applies the acks
	st, _ := js.Stream(ctx, stream)
	v := -1
	for i, nd := range nodes {
		if nd.opts.ServerName != st.CachedInfo().Cluster.Leader {
			v = i
			break
		}
	}
	name := nodes[v].opts.ServerName
	nodes[v].stop()
	// billing on the follower: acked and delivered 3 past the stream's last.
	buf := []byte{22, 2}
	for _, x := range []uint64{n + 3, n + 3, n + 3, n + 3, 0, 0} {
		buf = binary.AppendUvarint(buf, x)
	}
	if err := os.WriteFile(filepath.Join(nodes[v].opts.StoreDir, "jetstream", "$G", "streams", stream, "obs", "billing", "o.dat"), buf, 0o640); err != nil {
		t.Fatal(err)
	}
	nodes[v].start(t)
	time.Sleep(15 * time.Second) // past the stream's interest checks after its recovery (5-10 s)
	if info, err := nodes[v].server().Jsz(&server.JSzOptions{Accounts: true, Streams: true}); err == nil {
		for _, ad := range info.AccountDetails {
			for _, sd := range ad.Streams {
				if sd.Name == stream {
					t.Logf("%s's replica: %+v", name, sd.State)
				}
			}
		}
	}
	// Make the follower shipping's leader, then read shipping's messages.
	harness.Eventually(t, 30*time.Second, func() bool {
		ci, err := js.Consumer(ctx, stream, "shipping")
		if err == nil && ci.CachedInfo().Cluster != nil && ci.CachedInfo().Cluster.Leader == name {
			return true
		}
		_, _ = nc.Request("$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+".shipping", []byte(`{"placement":{"preferred":"`+name+`"}}`), 3*time.Second)
		time.Sleep(500 * time.Millisecond)
		return false
	}, "shipping led by %s", name)
	c, _ = js.Consumer(ctx, stream, "shipping")
	got := 0
	for try := 0; try < 3 && got < n; try++ {
		batch, err = c.Fetch(n-got, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			got++
			_ = m.Ack()
		}
	}
	ci, _ := js.Consumer(ctx, stream, "shipping")
	if got != n {
		t.Errorf("shipping, led by %s, got %d of the %d messages it had never seen (its ack floor now %+v)", name, got, n, ci.CachedInfo().AckFloor)
	}
}

// freePort is a free TCP port on loopback.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// node is one nats-server of the cluster, stopped and started again with
// the same options.
type node struct {
	opts *server.Options
	mu   sync.Mutex
	srv  *server.Server
}

func (n *node) start(t *testing.T) {
	t.Helper()
	o := *n.opts
	s, err := server.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(time.Minute) {
		t.Fatalf("%s not ready", n.opts.ServerName)
	}
	n.mu.Lock()
	n.srv = s
	n.mu.Unlock()
}

func (n *node) stop() {
	n.mu.Lock()
	s := n.srv
	n.srv = nil
	n.mu.Unlock()
	if s == nil {
		return
	}
	s.Shutdown()
	s.WaitForShutdown()
}

func (n *node) server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}
