//go:build fuse

package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicebus/sluice/gateway"
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
			rows = append(rows, r.Row(sc.name))
			if r.Acked == 0 {
				t.Fatal("nothing was acked")
			}
			if p := r.Problems(); len(p) > 0 {
				t.Errorf("%s: %v\n%+v", sc.name, p, r)
			}
		})
	}
	t.Log("\n" + strings.Join(rows, "\n"))
}
