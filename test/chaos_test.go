//go:build chaos

package test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicebus/sluice/internal/checker"
)

// TestChaos (make chaos) runs the fault scenarios against the process
// cluster with real SIGKILL and SIGSTOP, for minutes, and prints the
// checker table; each scenario must show lost = 0, unexpected = 0 and
// stored twice = 0.
func TestChaos(t *testing.T) {
	settle := 10 * time.Second

	scenarios := []struct {
		name  string
		slow  bool
		fault func(p *processCluster)
	}{
		{"SIGKILL a broker, restart after 10 s", false, func(p *processCluster) {
			p.signal("broker-2", syscall.SIGKILL)
			time.Sleep(10 * time.Second)
			p.do("restart", "broker-2")
		}},
		{"SIGKILL the stream leader, 3 times", false, func(p *processCluster) {
			for range 3 {
				l := p.leader()
				p.signal(l, syscall.SIGKILL)
				time.Sleep(5 * time.Second)
				p.do("restart", l)
				time.Sleep(5 * time.Second)
			}
		}},
		{"SIGSTOP a broker for 15 s", false, func(p *processCluster) {
			p.signal("broker-3", syscall.SIGSTOP)
			time.Sleep(15 * time.Second)
			p.signal("broker-3", syscall.SIGCONT)
		}},
		{"SIGKILL all brokers, restart", false, func(p *processCluster) {
			for i := 1; i <= 3; i++ {
				p.signal(fmt.Sprintf("broker-%d", i), syscall.SIGKILL)
			}
			time.Sleep(3 * time.Second)
			for i := 1; i <= 3; i++ {
				cmd := p.script("restart", fmt.Sprintf("broker-%d", i))
				cmd.Env = append(cmd.Env, "WAIT=0") // a lone broker waits for a quorum
				if out, err := cmd.CombinedOutput(); err != nil {
					p.t.Fatalf("restart: %v\n%s", err, out)
				}
			}
		}},
		{"SIGKILL a gateway mid-load, restart", false, func(p *processCluster) {
			p.signal("gateway-1", syscall.SIGKILL)
			time.Sleep(5 * time.Second)
			p.do("restart", "gateway-1")
		}},
		{"slow family while another is fast", true, func(p *processCluster) {
			time.Sleep(20 * time.Second)
		}},
	}
	rows := []string{checker.Header}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			chk := checker.New("billing", "shipping")
			p := startProcessCluster(t, 700, chk, sc.slow)
			r := drive(t, chk, p.gateways(), settle, func() { sc.fault(p) })
			rows = append(rows, r.Row(sc.name))
			t.Log(r.Row(sc.name))
			if r.Acked == 0 || r.Lost != 0 || r.Unexpected != 0 || r.StoredTwice != 0 {
				t.Errorf("%s: %+v", sc.name, r)
			}
		})
	}
	fmt.Println("\n" + strings.Join(rows, "\n"))
}
