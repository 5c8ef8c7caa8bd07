package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/busstats"
	"github.com/sluicebus/sluice/internal/status"
	"github.com/sluicebus/sluice/internal/topology"
)

// DiskUse is the share of the file system holding dir that is in use.
func DiskUse(dir string) (float64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("disk use of %s: %w", dir, err)
	}
	total := float64(st.Blocks) * float64(st.Bsize)
	if total <= 0 {
		return 0, nil
	}
	return 1 - float64(st.Bavail)*float64(st.Bsize)/total, nil
}

// Alarms is the broker's alarm manager, which New registered and Run
// evaluates; nil with cfg.SharedAlarms.
func (b *Broker) Alarms() *alarm.Manager { return b.alarms }

// WatchAlarms evaluates the broker's own conditions on m every
// alarms.interval until ctx ends: its data directory's disk use, a store
// that failed (store_failed), damaged stores it moved aside at start
// (store_quarantined, while the quarantine holds any), and
// family_missing for each declared family that the topology checks found
// missing or unusable since the last evaluation, recreated or not (it
// clears once they find it in place). Run calls it on Alarms(); a program
// that set cfg.SharedAlarms calls it on the manager the broker shares.
func (b *Broker) WatchAlarms(ctx context.Context, m *alarm.Manager) {
	cfg := b.cfg.Alarms
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		use, err := DiskUse(b.cfg.DataDir)
		switch {
		case err != nil:
			m.Raise(alarm.DiskUse, b.cfg.Name, err.Error())
		default:
			m.Set(use > cfg.DiskUseMax, alarm.DiskUse, b.cfg.Name,
				fmt.Sprintf("%s: %.0f%% of its file system used, over %.0f%%", b.cfg.DataDir, use*100, cfg.DiskUseMax*100))
		}
		m.Set(b.storeFailed(), alarm.StoreFailed, b.cfg.Name,
			"the server stopped JetStream after a store error (disk full, a write or fsync error; see its log): restart the broker once its disk is healthy")
		b.quarantineAlarm(m)
		missing := b.topo.missingFamilies()
		for _, topic := range topology.Names(b.cfg.Topics) {
			for _, family := range b.cfg.Topics[topic].FamilyNames() {
				subject := topic + "/" + family
				cause, ok := missing[subject]
				m.Set(ok, alarm.FamilyMissing, subject, cause)
			}
		}
		m.Tick()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Status is the cluster as this broker sees it: the JetStream meta
// group's members, every declared topic, and alarms' active ones. The bus
// reads are bounded like a scrape's.
func (b *Broker) Status(ctx context.Context, alarms *alarm.Manager) status.Status {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	st := status.Status{Node: b.cfg.Name, Role: "broker", Time: time.Now(), Members: []status.Member{}, Topics: []status.Topic{}}
	st.AddTopics(topology.Names(b.cfg.Topics), func(name string) (status.Topic, error) {
		ts, err := busstats.Read(ctx, b.js, b.cfg.Topics[name])
		return status.Topic{Topic: ts}, err
	})
	st.Members = status.MembersFromTopics(st.Topics, b.cfg.Name)
	if jsz, err := b.srv.Jsz(&server.JSzOptions{}); err == nil && jsz.Meta != nil {
		// The meta group knows every broker, also those leading nothing.
		meta := jsz.Meta
		known := map[string]bool{}
		for _, m := range st.Members {
			known[m.Name] = true
		}
		add := func(name, health, detail string) {
			if name != "" && !known[name] {
				known[name] = true
				st.Members = append(st.Members, status.Member{Name: name, Health: health, Leads: []string{}, Detail: detail})
			}
		}
		add(meta.Leader, "ok", "")
		add(b.cfg.Name, "ok", "")
		for _, p := range meta.Replicas {
			switch {
			case p.Offline:
				add(p.Name, "offline", fmt.Sprintf("meta group: offline, last seen %s ago", p.Active.Round(time.Millisecond)))
			case meta.Leader == b.cfg.Name && !p.Current && (p.Lag > 0 || p.Active > busstats.StaleAfter):
				// Only the meta leader knows how far a follower is.
				add(p.Name, "lagging", fmt.Sprintf("meta group: %d behind", p.Lag))
			default:
				add(p.Name, "ok", "")
			}
		}
		slices.SortFunc(st.Members, func(a, b status.Member) int { return strings.Compare(a.Name, b.Name) })
	}
	if alarms != nil {
		st.Alarms, _ = alarms.List()
	}
	return st
}

// storeFailed: the server reported a store write that failed, or runs but
// has stopped JetStream under the broker. nats-server does either after a
// store error (ENOSPC, EIO on a write or an fsync) and undoes neither by
// itself: the failed file store refuses every later write, a stopped
// JetStream stays stopped. Not while the broker leaves (a lame duck stops
// JetStream too).
func (b *Broker) storeFailed() bool {
	if b.leaving.Load() || !b.srv.Running() {
		return false
	}
	return b.storeErr.Load() || !b.srv.JetStreamEnabled()
}
