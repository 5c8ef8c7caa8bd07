package broker

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/minio/highwayhash"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/sluicebus/sluice/internal/alarm"
)

// streamStoreWith runs a nats-server on a fresh store, publishes n
// messages to a stream and shuts it down cleanly (its index.db then saw
// every message); it returns the stream's store directory and the data
// directory.
func streamStoreWith(t *testing.T, n int) (streamDir, dataDir string) {
	t.Helper()
	dataDir = t.TempDir()
	srv, err := server.NewServer(&server.Options{JetStream: true, StoreDir: dataDir, DontListen: true, NoSigs: true, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, "s", fmt.Appendf(nil, "message %04d", i), jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	// A consumer that acked some and holds some: its state file has a
	// floor, pending and redelivered entries.
	c, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(n/2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		if i%3 != 2 {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		i++
	}
	nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()
	return filepath.Join(dataDir, "jetstream", "$G", "streams", "S"), dataDir
}

// lastBlock is the stream's last message block and its bytes.
func lastBlock(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	blocks, err := messageBlocks(dir)
	if err != nil || len(blocks) == 0 {
		t.Fatalf("blocks of %s: %v %v", dir, blocks, err)
	}
	path := blocks[len(blocks)-1].path
	buf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, buf
}

// recordStarts are the offsets of the records in a block.
func recordStarts(buf []byte) []int {
	var at []int
	for i := 0; i+recordHeaderSize <= len(buf); i += int(binary.LittleEndian.Uint32(buf[i:]) &^ recordHeadersBit) {
		at = append(at, i)
	}
	return at
}

func write(t *testing.T, path string, buf []byte) {
	t.Helper()
	if err := os.WriteFile(path, buf, 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestCheckStreamStore: damage in a store's blocks is found (a record's
// bytes changed, records the index saw cut off), what a crash leaves (a
// torn last record after what the index saw) and a lost or garbled index
// are not.
func TestCheckStreamStore(t *testing.T) {
	cases := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		damaged bool
	}{
		{"intact", func(*testing.T, string) {}, false},
		{"a payload byte flipped in the middle", func(t *testing.T, dir string) {
			path, buf := lastBlock(t, dir)
			at := recordStarts(buf)
			next := at[len(at)/2+1]
			buf[next-recordHashSize-2] ^= 0x01 // "message 0|1|00"
			write(t, path, buf)
		}, true},
		{"a headers length changed in the middle", func(t *testing.T, dir string) {
			path, buf := lastBlock(t, dir)
			at := recordStarts(buf)
			buf[at[len(at)/2]+recordHeaderSize+1] ^= 0x01 // subject "s", then the headers length
			write(t, path, buf)
		}, true},
		{"the last record's payload flipped", func(t *testing.T, dir string) {
			path, buf := lastBlock(t, dir)
			buf[len(buf)-recordHashSize-1] ^= 0x01
			write(t, path, buf)
		}, true},
		{"the last block cut mid-record", func(t *testing.T, dir string) {
			path, buf := lastBlock(t, dir)
			write(t, path, buf[:len(buf)*2/3])
		}, true},
		{"the last block cut mid-record, index.db lost", func(t *testing.T, dir string) {
			path, buf := lastBlock(t, dir)
			write(t, path, buf[:len(buf)*2/3])
			if err := os.Remove(filepath.Join(dir, "msgs", "index.db")); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"a torn record after what index.db saw", func(t *testing.T, dir string) {
			path, buf := lastBlock(t, dir)
			at := recordStarts(buf)
			last := buf[at[len(at)-1]:]
			write(t, path, append(buf, last[:len(last)/2]...))
		}, false},
		{"zeros after what index.db saw", func(t *testing.T, dir string) {
			path, buf := lastBlock(t, dir)
			write(t, path, append(buf, make([]byte, 4096)...))
		}, false},
		{"a consumer's state garbled", func(t *testing.T, dir string) {
			files, _ := filepath.Glob(filepath.Join(dir, "obs", "*", "o.dat"))
			if len(files) != 1 {
				t.Fatalf("consumer state files: %v", files)
			}
			buf, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			for i := 2; i < len(buf); i++ {
				buf[i] ^= 0x5a
			}
			write(t, files[0], buf)
		}, true},
		{"meta.inf garbled (the server would recreate the stream over its blocks)", func(t *testing.T, dir string) {
			f := filepath.Join(dir, "meta.inf")
			buf, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			buf[len(buf)/2] ^= 0xff
			write(t, f, buf)
		}, true},
		{"meta.sum lost", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "meta.sum")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"meta.inf rewritten with its meta.sum", func(t *testing.T, dir string) { setReplicas(t, dir, 3) }, false},
		{"index.db garbled", func(t *testing.T, dir string) {
			f := filepath.Join(dir, "msgs", "index.db")
			buf, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			buf[len(buf)/2] ^= 0xff
			write(t, f, buf)
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, _ := streamStoreWith(t, 200)
			c.damage(t, dir)
			_, err := checkStreamStore(dir)
			if got := errors.Is(err, ErrStoreDamaged); got != c.damaged {
				t.Fatalf("damaged = %v (%v), want %v", got, err, c.damaged)
			}
			if err != nil && !errors.Is(err, ErrStoreDamaged) {
				t.Fatal(err)
			}
		})
	}
}

// setReplicas makes the stream's meta.inf say it has n replicas (what the
// check reads; the server is not started on it again).
func setReplicas(t *testing.T, dir string, n int) {
	t.Helper()
	f := filepath.Join(dir, "meta.inf")
	raw, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	meta["num_replicas"] = n
	raw, _ = json.Marshal(meta)
	write(t, f, raw)
	key := sha256.Sum256([]byte(filepath.Base(dir)))
	hh, err := highwayhash.New64(key[:])
	if err != nil {
		t.Fatal(err)
	}
	hh.Write(raw)
	write(t, filepath.Join(dir, "meta.sum"), []byte(hex.EncodeToString(hh.Sum(nil))))
}

// TestGuardStores: a damaged store of a replicated stream in a cluster is
// moved aside, for the server to rebuild the replica from the others; one
// with no other replica is kept. Both raise store_quarantined.
func TestGuardStores(t *testing.T) {
	for _, c := range []struct {
		name      string
		clustered bool
		replicas  int
		moved     bool
	}{
		{"replicated in a cluster", true, 3, true},
		{"one replica in a cluster", true, 1, false},
		{"a single broker", false, 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, data := streamStoreWith(t, 50)
			setReplicas(t, dir, c.replicas)
			path, buf := lastBlock(t, dir)
			write(t, path, buf[:len(buf)/2])
			cfg := DefaultConfig()
			cfg.Name = "b1"
			if c.clustered {
				cfg.Cluster = Cluster{Name: "c"}
			}
			cfg.DataDir = data
			b := &Broker{cfg: cfg, log: zaptest.NewLogger(t), alarms: alarm.New("b1", 0, zaptest.NewLogger(t), nil)}
			b.guardStores(data)
			_, err := os.Stat(dir)
			moved, _ := filepath.Glob(filepath.Join(data, QuarantineDir, "$G", "S-*", "msgs", "*.blk"))
			if c.moved != os.IsNotExist(err) || c.moved != (len(moved) > 0) {
				t.Errorf("store left: %v, quarantined: %v; want moved %v", err, moved, c.moved)
			}
			subject := "b1"
			if !c.moved {
				subject = "b1/S"
			}
			raised := func() bool {
				return slices.ContainsFunc(b.alarms.View().Active, func(a alarm.Alarm) bool { return a.Name == alarm.StoreQuarantined && a.Subject == subject })
			}
			if !raised() {
				t.Errorf("alarms %+v: want %s for %s", b.alarms.View().Active, alarm.StoreQuarantined, subject)
			}
			// The watcher keeps it while the quarantine holds the store,
			// and clears it once the operator removed it.
			b.quarantineAlarm(b.alarms)
			b.alarms.Tick()
			if c.moved && !raised() {
				t.Errorf("alarms %+v: the quarantine holds a store, want %s", b.alarms.View().Active, alarm.StoreQuarantined)
			}
			if c.moved {
				if err := os.RemoveAll(filepath.Join(data, QuarantineDir)); err != nil {
					t.Fatal(err)
				}
				b.quarantineAlarm(b.alarms)
				b.alarms.Tick()
				if raised() {
					t.Errorf("alarms %+v: the quarantine is empty, want %s cleared", b.alarms.View().Active, alarm.StoreQuarantined)
				}
			}
			// Checked again, nothing is left to find.
			if damaged, err := checkStreamStores(data); err != nil || (c.moved && len(damaged) > 0) {
				t.Errorf("after the guard: %v %v", damaged, err)
			}
		})
	}
}

// TestCheckRaftSnapshots: a Raft snapshot that fails its checksum is
// damage (the layout is the server's; TestCorruptedStore garbles a real
// one).
func TestCheckRaftSnapshots(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "S-R3F-abcdefgh")
	if err := os.MkdirAll(filepath.Join(dir, "snapshots"), 0o750); err != nil {
		t.Fatal(err)
	}
	key := sha256.Sum256([]byte(filepath.Base(dir)))
	hh, _ := highwayhash.New64(key[:])
	body := []byte("a snapshot's term, index, peers and state")
	hh.Write(body)
	snap := filepath.Join(dir, "snapshots", "snap.1.10")
	write(t, snap, hh.Sum(body))
	if err := checkRaftSnapshots(dir); err != nil {
		t.Fatalf("intact snapshot: %v", err)
	}
	buf, _ := os.ReadFile(snap)
	buf[3] ^= 0x01
	write(t, snap, buf)
	if err := checkRaftSnapshots(dir); !errors.Is(err, ErrStoreDamaged) {
		t.Fatalf("garbled snapshot: %v, want ErrStoreDamaged", err)
	}
}

// consumerState is a version 2 consumer state file (o.dat) with nothing
// pending or redelivered.
func consumerState(ackC, ackS, delC, delS uint64) []byte {
	buf := []byte{consumerMagic, 2}
	for _, v := range []uint64{ackC, ackS, delC, delS, 0, 0} {
		buf = binary.AppendUvarint(buf, v)
	}
	return buf
}

// TestCheckStreamStoreFollowerConsumerAhead: a consumer state past the
// stream's last message is damage for a stream with one replica, but not
// for a replicated one: a follower applies its consumers' Raft groups
// apart from its stream's, and stopped under load it is found so (a
// rolling restart of a cluster under load). Moving that store aside had
// the replica rebuilt without its consumers, and nats-server 2.15.2 then
// purged the messages it held (family-lost in TestRollingRestartUnderLoad).
func TestCheckStreamStoreFollowerConsumerAhead(t *testing.T) {
	for _, c := range []struct {
		replicas int
		damaged  bool
	}{{1, true}, {3, false}} {
		t.Run(fmt.Sprintf("R%d", c.replicas), func(t *testing.T) {
			dir, _ := streamStoreWith(t, 50)
			setReplicas(t, dir, c.replicas)
			files, _ := filepath.Glob(filepath.Join(dir, "obs", "*", "o.dat"))
			if len(files) != 1 {
				t.Fatalf("consumer state files: %v", files)
			}
			// The consumer acked and delivered 3 past the 50 stored.
			write(t, files[0], consumerState(53, 53, 53, 53))
			_, err := checkStreamStore(dir)
			if got := errors.Is(err, ErrStoreDamaged); got != c.damaged {
				t.Fatalf("damaged = %v (%v), want %v", got, err, c.damaged)
			}
			// A garbled state stays damage either way.
			write(t, files[0], append(consumerState(53, 53, 53, 53), 0xff))
			if _, err := checkStreamStore(dir); !errors.Is(err, ErrStoreDamaged) {
				t.Fatalf("garbled consumer state not found damaged: %v", err)
			}
		})
	}
}
