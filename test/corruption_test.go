//go:build chaos

package test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// corruptEnv is the fault environment of TestFaults on store directories
// the test can reach into while a broker is stopped.
type corruptEnv struct {
	*faultEnv
	dirs []string
	nc   *nats.Conn // JetStream API requests (step-downs, pauses)
}

func startCorruptEnv(t *testing.T) *corruptEnv {
	t.Helper()
	base := t.TempDir()
	ce := &corruptEnv{}
	for i := range 3 {
		ce.dirs = append(ce.dirs, filepath.Join(base, fmt.Sprintf("b%d", i+1)))
	}
	ce.faultEnv = startFaultEnvWith(t, false, false, nil, func(topics map[string]topology.Topic) *harness.Cluster {
		return harness.StartClusterOn(t, ce.dirs, topics)
	})
	ce.nc = ce.c.Connect(t)
	return ce
}

// stream is the topic's stream name.
var ordersStream = sluice.StreamName("orders")

// store is where a broker keeps a stream or a Raft group: what a damage
// takes its files from.
type store struct {
	dir    string // the broker's data directory
	stream string // .../jetstream/$G/streams/SLUICE_orders
	raft   string // .../jetstream/$SYS/_js_/<the stream's Raft group>
	meta   string // .../jetstream/$SYS/_js_/_meta_
}

// storeOf finds the stream's and its Raft group's directories under dir.
func storeOf(t *testing.T, dir, group string) store {
	t.Helper()
	streams, _ := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams", ordersStream))
	if len(streams) != 1 {
		t.Fatalf("stream directory of %s under %s: %v", ordersStream, dir, streams)
	}
	js := filepath.Join(dir, "jetstream", "$SYS", "_js_")
	return store{dir: dir, stream: streams[0], raft: filepath.Join(js, group), meta: filepath.Join(js, "_meta_")}
}

// blocks are the .blk files under dir/msgs, in block order.
func blocks(t *testing.T, dir string) []string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "msgs", "*.blk"))
	index := func(name string) int {
		n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(name), ".blk"))
		return n
	}
	slices.SortFunc(names, func(a, b string) int { return index(a) - index(b) })
	if len(names) == 0 {
		t.Fatalf("no message blocks under %s", dir)
	}
	return names
}

// truncateLast cuts the last message block under dir to two thirds of its
// size: the cut lands inside a record, as a torn write leaves it.
func truncateLast(t *testing.T, dir string) string {
	t.Helper()
	bs := blocks(t, dir)
	last := bs[len(bs)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size() * 2 / 3
	if err := os.Truncate(last, size); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s cut from %d to %d bytes", rel(dir, last), fi.Size(), size)
}

// Record layout of a v2.15 message block (server/filestore.go): length
// (uint32, high bit: has headers), sequence (uint64), timestamp (int64),
// subject length (uint16), subject, [headers length (uint32), headers],
// payload, highwayhash (8 bytes).
const (
	recordHeader = 22
	recordHash   = 8
	headersBit   = 1 << 31
)

// flipPayloads inverts the first payload byte of every every-th record of
// every message block under dir: the record's checksum no longer matches,
// but nothing else about the file changes. With headersLength, it flips
// the lowest bit of the record's headers length instead, which the
// checksum does not cover.
func flipPayloads(t *testing.T, dir string, every int, headersLength bool) string {
	t.Helper()
	var flipped, records int
	for _, name := range blocks(t, dir) {
		buf, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+recordHeader <= len(buf); {
			rl := binary.LittleEndian.Uint32(buf[i:])
			hasHeaders := rl&headersBit != 0
			rl &^= headersBit
			if rl < recordHeader+recordHash || i+int(rl) > len(buf) {
				break
			}
			slen := int(binary.LittleEndian.Uint16(buf[i+20:]))
			payload := i + recordHeader + slen
			if hasHeaders {
				payload += 4 + int(binary.LittleEndian.Uint32(buf[payload:]))
			}
			switch {
			case records%every != 0:
			case headersLength && hasHeaders:
				buf[i+recordHeader+slen] ^= 0x01
				flipped++
			case !headersLength && payload < i+int(rl)-recordHash:
				buf[payload] ^= 0xff
				flipped++
			}
			records++
			i += int(rl)
		}
		if err := os.WriteFile(name, buf, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	what := "payload"
	if headersLength {
		what = "headers length"
	}
	return fmt.Sprintf("%s flipped in %d of %d records under %s", what, flipped, records, rel(dir, filepath.Join(dir, "msgs")))
}

// garble overwrites the middle of file with garbage (or makes it empty).
func garble(t *testing.T, file string, empty bool) {
	t.Helper()
	if empty {
		if err := os.Truncate(file, 0); err != nil {
			t.Fatal(err)
		}
		return
	}
	buf, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(buf) / 3; i < len(buf)*2/3; i++ {
		buf[i] ^= 0x5a
	}
	if err := os.WriteFile(file, buf, 0o640); err != nil {
		t.Fatal(err)
	}
}

func rel(base, path string) string {
	if r, err := filepath.Rel(filepath.Dir(filepath.Dir(base)), path); err == nil {
		return r
	}
	return path
}

// jsRequest sends a JetStream API request and fails on an API error.
func (ce *corruptEnv) jsRequest(subject string, body any) error {
	data, _ := json.Marshal(body)
	m, err := ce.nc.Request(subject, data, 5*time.Second)
	if err != nil {
		return err
	}
	var resp struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return fmt.Errorf("%s: %s", subject, resp.Error.Description)
	}
	return nil
}

// pause stops (or resumes) the deliveries of both families, so that the
// messages published meanwhile stay in the stream, unread, on every
// replica: the damage then hits messages that must still be delivered.
func (ce *corruptEnv) pause(t *testing.T, on bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, fam := range families {
		harness.Eventually(t, 30*time.Second, func() bool {
			var err error
			if on {
				_, err = ce.js.PauseConsumer(ctx, ordersStream, fam, time.Now().Add(time.Hour))
			} else {
				_, err = ce.js.ResumeConsumer(ctx, ordersStream, fam)
			}
			if err != nil {
				t.Logf("pause %s %v: %v", fam, on, err)
			}
			return err == nil
		}, "pause %s %v", fam, on)
	}
}

// leaders are the names of the stream's leader and of each family's, and
// the stream's current followers.
func (ce *corruptEnv) leaders() (string, map[string]string, []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stream, current := "", []string{}
	if s, err := ce.js.Stream(ctx, ordersStream); err == nil && s.CachedInfo().Cluster != nil {
		stream = s.CachedInfo().Cluster.Leader
		for _, r := range s.CachedInfo().Cluster.Replicas {
			if r.Current && !r.Offline {
				current = append(current, r.Name)
			}
		}
	}
	fams := map[string]string{}
	for _, fam := range families {
		if c, err := ce.js.Consumer(ctx, ordersStream, fam); err == nil && c.CachedInfo().Cluster != nil {
			fams[fam] = c.CachedInfo().Cluster.Leader
		}
	}
	return stream, fams, current
}

// lead makes node i the leader of the stream and of both families (their
// readers then read what its store holds): step-downs preferring it until
// it leads them all.
func (ce *corruptEnv) lead(t *testing.T, i int) {
	t.Helper()
	name := ce.c.Nodes[i].Name
	prefer := map[string]any{"placement": map[string]string{"preferred": name}}
	harness.Eventually(t, 2*time.Minute, func() bool {
		stream, fams, current := ce.leaders()
		done := stream == name
		if stream != name && !slices.Contains(current, name) {
			// A step-down now would interrupt its catch-up.
			time.Sleep(time.Second)
			return false
		}
		if stream != "" && stream != name {
			if err := ce.jsRequest("$JS.API.STREAM.LEADER.STEPDOWN."+ordersStream, prefer); err != nil {
				t.Logf("stream step-down to %s: %v", name, err)
			}
		}
		for _, fam := range families {
			if fams[fam] == name {
				continue
			}
			done = false
			if fams[fam] != "" {
				if err := ce.jsRequest("$JS.API.CONSUMER.LEADER.STEPDOWN."+ordersStream+"."+fam, prefer); err != nil {
					t.Logf("family %s step-down to %s: %v", fam, name, err)
				}
			}
		}
		if !done {
			time.Sleep(3 * time.Second) // an election, and the new leader settling
		}
		return done
	}, "%s did not become the leader of the stream and both families", name)
}

// damage stops a follower with a backlog of unread messages in its store,
// damages its files, starts it again, waits until it is current, makes it
// the leader of the stream and of both families and lets the families
// read: every message must come with its payload, from the damaged store
// or from what the quorum repaired it with.
func (ce *corruptEnv) damage(t *testing.T, l *publisher, how func(t *testing.T, s store) string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s, err := ce.js.Stream(ctx, ordersStream)
	cancel()
	if err != nil || s.CachedInfo().Cluster == nil {
		t.Fatalf("stream info: %v", err)
	}
	group := s.CachedInfo().Cluster.RaftGroup
	v := (ce.c.Leader(t, ce.js, "orders") + 1) % 3
	l.busy(t)
	ce.pause(t, true)
	time.Sleep(2 * time.Second) // a backlog
	ce.c.WaitCurrent(t, ce.js, "orders", "before the damage")
	ce.c.Stop(v)
	t.Logf("damaged %s (a follower): %s", ce.c.Nodes[v].Name, how(t, storeOf(t, ce.dirs[v], group)))
	ce.c.Restart(v)
	harness.Eventually(t, 2*time.Minute, ce.current, "replicas current again after the damaged broker restarted")
	ce.lead(t, v)
	stream, fams, _ := ce.leaders()
	t.Logf("%s leads the stream (%s) and the families (%v); reading from it", ce.c.Nodes[v].Name, stream, fams)
	ce.pause(t, false)
}

// TestCorruptedStore: the files of one broker (a minority) are damaged
// while it is stopped: a torn last block, flipped payload bytes, a lost or
// garbled index, garbled stream metadata, a torn or garbled Raft log, a
// garbled family state, a torn meta Raft log. Started again and made the
// leader of the stream and of both families, it must serve no wrong
// payload and lose no acknowledged message: the checker compares every
// delivery's payload with what was published.
func TestCorruptedStore(t *testing.T) {
	scenarios := []struct {
		name string
		how  func(t *testing.T, s store) string
	}{
		{"last block torn mid-record", func(t *testing.T, s store) string { return truncateLast(t, s.stream) }},
		{"payload bytes flipped in blocks", func(t *testing.T, s store) string { return flipPayloads(t, s.stream, 7, false) }},
		{"headers length flipped in blocks", func(t *testing.T, s store) string { return flipPayloads(t, s.stream, 7, true) }},
		{"index.db deleted", func(t *testing.T, s store) string {
			f := filepath.Join(s.stream, "msgs", "index.db")
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			return rel(s.stream, f) + " deleted"
		}},
		{"index.db garbled", func(t *testing.T, s store) string {
			f := filepath.Join(s.stream, "msgs", "index.db")
			garble(t, f, false)
			return rel(s.stream, f) + " garbled"
		}},
		{"stream meta.inf and meta.sum garbled", func(t *testing.T, s store) string {
			garble(t, filepath.Join(s.stream, "meta.inf"), false)
			garble(t, filepath.Join(s.stream, "meta.sum"), true)
			return "meta.inf garbled, meta.sum emptied"
		}},
		{"stream Raft log torn", func(t *testing.T, s store) string { return truncateLast(t, s.raft) }},
		{"stream Raft log and snapshot garbled", func(t *testing.T, s store) string {
			files, _ := filepath.Glob(filepath.Join(s.raft, "msgs", "*.blk"))
			snaps, _ := filepath.Glob(filepath.Join(s.raft, "snapshots", "snap.*"))
			for _, f := range append(files, snaps...) {
				garble(t, f, false)
			}
			return fmt.Sprintf("garbled the middle third of %d WAL blocks and %d snapshots under %s", len(files), len(snaps), rel(s.raft, s.raft))
		}},
		{"family state o.dat garbled", func(t *testing.T, s store) string {
			var done []string
			for _, fam := range families {
				f := filepath.Join(s.stream, "obs", fam, "o.dat")
				garble(t, f, false)
				done = append(done, rel(s.stream, f))
			}
			return strings.Join(done, ", ") + " garbled"
		}},
		{"stream store removed", func(t *testing.T, s store) string {
			if err := os.RemoveAll(s.stream); err != nil {
				t.Fatal(err)
			}
			return rel(s.stream, s.stream) + " removed"
		}},
		{"stream store and Raft group removed", func(t *testing.T, s store) string {
			if err := os.RemoveAll(s.stream); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(s.raft); err != nil {
				t.Fatal(err)
			}
			return "stream store and its Raft group removed"
		}},
		{"meta Raft log torn", func(t *testing.T, s store) string { return truncateLast(t, s.meta) }},
	}
	rows := []string{history.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			ce := startCorruptEnv(t)
			r := ce.run(t, func(l *publisher) { ce.damage(t, l, sc.how) })
			rows = append(rows, judge(t, sc.name, r))
			checkAnswers(t, sc.name, ce.http)
		})
	}
	t.Log("\n" + strings.Join(rows, "\n"))
}
