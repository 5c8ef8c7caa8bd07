//go:build fuse

package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicebus/sluice/broker"
	"github.com/sluicebus/sluice/gateway"
	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/testkit/harness"
	"github.com/sluicebus/sluice/internal/testkit/history"
	"github.com/sluicebus/sluice/internal/testkit/powerfs"
	"github.com/sluicebus/sluice/internal/topology"
)

// powerEnv is the fault environment of TestFaults with each broker's store
// on a file system that can lose power: every write not yet fsynced is
// thrown away when it does (powerfs).
type powerEnv struct {
	*faultEnv
	disks []*powerfs.FS
}

// startPowerEnv mounts a power-loss file system per broker and starts the
// fault environment on them; atomic makes R3 commits atomic batches.
func startPowerEnv(t *testing.T, atomic bool) *powerEnv {
	t.Helper()
	pe := &powerEnv{}
	base := t.TempDir()
	dirs := make([]string, 3)
	for i := range dirs {
		backing, mnt := filepath.Join(base, fmt.Sprintf("disk%d", i+1)), filepath.Join(base, fmt.Sprintf("b%d", i+1))
		if err := os.MkdirAll(backing, 0o755); err != nil {
			t.Fatal(err)
		}
		fs, err := powerfs.Mount(backing, mnt)
		if err != nil {
			t.Fatalf("mount %s: %v", mnt, err)
		}
		t.Cleanup(func() {
			fs.PowerOn()
			if err := fs.Unmount(); err != nil {
				t.Errorf("unmount %s: %v", mnt, err)
			}
		})
		pe.disks, dirs[i] = append(pe.disks, fs), mnt
	}
	var gw func(*gateway.Config)
	if atomic {
		gw = func(c *gateway.Config) { c.CommitAtomicReplicated = true }
	}
	pe.faultEnv = startFaultEnvWith(t, false, false, gw, func(topics map[string]topology.Topic) *harness.Cluster {
		return harness.StartClusterOn(t, dirs, topics)
	})
	return pe
}

// powerOff cuts the power of the brokers in nodes at once: their disks
// lose every write not fsynced and fail every later operation, then the
// processes stop (what they still do on the dead disks reaches nothing).
// After down, the power comes back and the brokers start on what their
// disks kept.
func (pe *powerEnv) powerOff(t *testing.T, down time.Duration, nodes ...int) {
	t.Helper()
	var lost []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, i := range nodes {
		wg.Go(func() {
			l, err := pe.disks[i].PowerOff()
			if err != nil {
				t.Errorf("power off b%d: %v", i+1, err)
			}
			mu.Lock()
			lost = append(lost, fmt.Sprintf("b%d %+v", i+1, l))
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, i := range nodes {
		wg.Go(func() { pe.c.Stop(i) })
	}
	wg.Wait()
	t.Logf("power off %v: unsynced writes thrown away: %s", nodes, strings.Join(lost, "; "))
	time.Sleep(down)
	for _, i := range nodes {
		pe.disks[i].PowerOn()
	}
	if len(nodes) == 1 {
		pe.c.Restart(nodes[0])
	} else {
		pe.c.RestartAll()
	}
	harness.Eventually(t, time.Minute, pe.current, "replicas current again after the power came back")
}

// TestPowerLoss: brokers lose power under load through both gateways; every
// 202 must survive on what the disks kept (each was fsynced on a quorum
// before its ack), and the checker must find nothing lost in any family,
// stored twice or unsettled.
func TestPowerLoss(t *testing.T) {
	scenarios := []struct {
		name   string
		atomic bool
		fault  func(t *testing.T, pe *powerEnv, l *publisher)
	}{
		{"power off one follower", false, func(t *testing.T, pe *powerEnv, l *publisher) {
			leader := pe.c.Leader(t, pe.js, "orders")
			l.busy(t)
			pe.powerOff(t, time.Second, (leader+1)%3)
		}},
		{"power off the stream leader", false, func(t *testing.T, pe *powerEnv, l *publisher) {
			leader := pe.c.Leader(t, pe.js, "orders")
			l.busy(t)
			pe.powerOff(t, time.Second, leader)
		}},
		{"power off all three at once", false, func(t *testing.T, pe *powerEnv, l *publisher) {
			l.busy(t)
			pe.powerOff(t, time.Second, 0, 1, 2)
		}},
		{"power off the leader mid atomic batch", true, func(t *testing.T, pe *powerEnv, l *publisher) {
			leader := pe.c.Leader(t, pe.js, "orders")
			l.busy(t)
			pe.powerOff(t, time.Second, leader)
		}},
	}
	rows := []string{history.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			pe := startPowerEnv(t, sc.atomic)
			r := pe.run(t, func(l *publisher) { sc.fault(t, pe, l) })
			rows = append(rows, judge(t, sc.name, r))
		})
	}
	t.Log("\n" + strings.Join(rows, "\n"))
}

// diskFault makes the disks of nodes fail as set says for d, then heals
// them; the brokers are left running: service must come back by itself.
func (pe *powerEnv) diskFault(t *testing.T, d time.Duration, set func(fs *powerfs.FS, on bool), nodes ...int) {
	t.Helper()
	for _, i := range nodes {
		set(pe.disks[i], true)
	}
	time.Sleep(d)
	for _, i := range nodes {
		set(pe.disks[i], false)
	}
	// A broker whose store failed is stopped by its Run (ErrStoreFailed)
	// and restarted by its supervisor: here, the test, all such brokers
	// at once (one alone may find no quorum to be ready with).
	time.Sleep(2 * time.Second) // a broker merely catching up gets ready
	var failed []int
	for _, i := range nodes {
		if b := pe.c.Nodes[i].Broker(); b != nil && !b.Ready() {
			failed = append(failed, i)
		}
	}
	if len(failed) > 0 {
		t.Logf("brokers %v are not ready after their disks healed (their stores failed): restarted, as their supervisors would once sluice broker exits", failed)
		for _, i := range failed {
			pe.c.Stop(i)
		}
		if len(failed) == 1 {
			pe.c.Restart(failed[0])
		} else {
			pe.c.RestartAll()
		}
	}
	harness.Eventually(t, 2*time.Minute, pe.current, "replicas current again after the disks healed")
}

// TestStoreFailedStopsTheBroker: a store error makes nats-server stop
// JetStream for good; Run raises store_failed, stops the broker and returns
// ErrStoreFailed, so that sluice broker exits for its supervisor to
// restart it; restarted on the healed disk it serves again.
func TestStoreFailedStopsTheBroker(t *testing.T) {
	base := t.TempDir()
	if err := os.Mkdir(filepath.Join(base, "disk"), 0o755); err != nil {
		t.Fatal(err)
	}
	fs, err := powerfs.Mount(filepath.Join(base, "disk"), filepath.Join(base, "b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fs.Unmount() })
	topics := harness.Topics(harness.Topic("orders", "billing"))
	b := harness.StartBrokerIn(t, fs.Mountpoint(), topics)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	nc := harness.Connect(t, b)
	js, _ := jetstream.New(nc)
	fs.FailWrites(syscall.ENOSPC)
	var runErr error
	harness.Eventually(t, time.Minute, func() bool {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		defer pcancel()
		_, _ = js.Publish(pctx, "sluice.topic.orders", []byte("x"))
		select {
		case runErr = <-done:
			return true
		default:
			return false
		}
	}, "Run did not stop after the store failed")
	if !errors.Is(runErr, broker.ErrStoreFailed) {
		t.Fatalf("Run returned %v, want ErrStoreFailed", runErr)
	}
	if !slices.ContainsFunc(b.Alarms().View().Active, func(a alarm.Alarm) bool { return a.Name == alarm.StoreFailed }) {
		t.Errorf("alarms %+v: want store_failed", b.Alarms().View())
	}
	fs.FailWrites(0)
	again := harness.StartBrokerIn(t, fs.Mountpoint(), topics)
	if !again.Ready() {
		t.Fatal("the broker restarted on the healed disk is not ready")
	}
}

func failSync(fs *powerfs.FS, on bool) {
	if on {
		fs.FailSync(syscall.EIO)
		return
	}
	fs.FailSync(0)
}

func diskFull(fs *powerfs.FS, on bool) {
	if on {
		fs.FailWrites(syscall.ENOSPC)
		return
	}
	fs.FailWrites(0)
}

func slowDisk(fs *powerfs.FS, on bool) {
	if on {
		fs.SlowSync(100 * time.Millisecond)
		return
	}
	fs.SlowSync(0)
}

// TestDiskFaults: fsync errors, a full disk and a slow disk under load,
// on one broker and on all of them, the brokers left running. No 202 for
// a message not stored (the checker), no 500, every 429 and 503 with
// Retry-After, and service back by itself once the disks heal.
func TestDiskFaults(t *testing.T) {
	scenarios := []struct {
		name  string
		fault func(t *testing.T, pe *powerEnv, l *publisher)
	}{
		{"fsync errors on one follower 5 s", func(t *testing.T, pe *powerEnv, l *publisher) {
			f := (pe.c.Leader(t, pe.js, "orders") + 1) % 3
			l.busy(t)
			pe.diskFault(t, 5*time.Second, failSync, f)
		}},
		{"fsync errors on the stream leader 5 s", func(t *testing.T, pe *powerEnv, l *publisher) {
			leader := pe.c.Leader(t, pe.js, "orders")
			l.busy(t)
			pe.diskFault(t, 5*time.Second, failSync, leader)
		}},
		{"disk full on one follower 5 s", func(t *testing.T, pe *powerEnv, l *publisher) {
			f := (pe.c.Leader(t, pe.js, "orders") + 1) % 3
			l.busy(t)
			pe.diskFault(t, 5*time.Second, diskFull, f)
		}},
		{"disk full on all three 5 s", func(t *testing.T, pe *powerEnv, l *publisher) {
			l.busy(t)
			pe.diskFault(t, 5*time.Second, diskFull, 0, 1, 2)
		}},
		{"slow disk on the stream leader 5 s", func(t *testing.T, pe *powerEnv, l *publisher) {
			leader := pe.c.Leader(t, pe.js, "orders")
			l.busy(t)
			pe.diskFault(t, 5*time.Second, slowDisk, leader)
		}},
	}
	rows := []string{history.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			pe := startPowerEnv(t, false)
			r := pe.run(t, func(l *publisher) { sc.fault(t, pe, l) })
			rows = append(rows, judge(t, sc.name, r))
			checkAnswers(t, sc.name, pe.http)
		})
	}
	t.Log("\n" + strings.Join(rows, "\n"))
}
