package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sluicebus/sluice/internal/busstats"
	"github.com/sluicebus/sluice/internal/status"
	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/topology"
)

// statsTimeout bounds the bus reads behind one stats, status or dead-letter
// request, and each bus read of the alarm watcher.
const statsTimeout = 2 * time.Second

// listTopics handles GET /v1/topics: the topics the caller may read.
func (g *Gateway) listTopics(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	ctx, cancel := context.WithTimeout(r.Context(), statsTimeout)
	defer cancel()
	out := struct {
		Topics []status.Topic `json:"topics"`
	}{Topics: []status.Topic{}}
	for _, name := range topology.Names(g.cfg.Topics) {
		if c.Tenant != nil && c.Tenant.Allowed(tenant.Read, name) != nil {
			continue
		}
		v, err := g.topicView(ctx, name)
		if err != nil {
			return err
		}
		out.Topics = append(out.Topics, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getTopic handles GET /v1/topics/{topic}.
func (g *Gateway) getTopic(w http.ResponseWriter, r *http.Request, _ tenant.Caller) error {
	t, err := g.topic(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), statsTimeout)
	defer cancel()
	v, err := g.topicView(ctx, t.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// topicView is a topic's state on the bus and its admission at this gateway.
// The topic's state is the last reading if fresh (see topicViews).
func (g *Gateway) topicView(ctx context.Context, name string) (status.Topic, error) {
	if !g.nc.IsConnected() {
		return status.Topic{}, fmt.Errorf("%w: not connected to any broker", errBusUnavailable)
	}
	st, err := g.views.get(ctx, name, func(ctx context.Context) (busstats.Topic, error) { return g.readStats(ctx, g.cfg.Topics[name]) })
	if err != nil {
		return status.Topic{}, err
	}
	a := g.adm.state(name)
	return status.Topic{Topic: st, Admission: &a}, nil
}

func (g *Gateway) readStats(ctx context.Context, t topology.Topic) (busstats.Topic, error) {
	if !g.nc.IsConnected() {
		return busstats.Topic{}, fmt.Errorf("%w: not connected to any broker", errBusUnavailable)
	}
	st, err := busstats.Read(ctx, g.js, t)
	if err != nil {
		if errors.Is(err, busstats.ErrTopicMissing) {
			return busstats.Topic{}, fmt.Errorf("%w: %v (has a broker provisioned the topology?)", errBusUnavailable, err)
		}
		return busstats.Topic{}, fmt.Errorf("%w: reading topic state: %v", errBusUnavailable, err)
	}
	return st, nil
}

// getStatus handles GET /v1/status: the cluster as this gateway sees it,
// for `sluice status`. A topic that cannot be read is named with why; the
// answer is still 200, since a status view is most needed when parts fail.
func (g *Gateway) getStatus(w http.ResponseWriter, r *http.Request, _ tenant.Caller) error {
	ctx, cancel := context.WithTimeout(r.Context(), statsTimeout)
	defer cancel()
	st := status.Status{Node: g.node, Role: "gateway", Time: g.clock.Now(), Gateways: int(g.adm.gateways.Load()),
		Members: []status.Member{}, Topics: []status.Topic{}}
	lone := ""
	if g.nc.IsConnected() {
		lone = g.nc.ConnectedServerName()
		st.Bus = "connected to " + lone
	} else {
		st.Bus = "not connected: " + g.nc.Status().String()
	}
	st.AddTopics(topology.Names(g.cfg.Topics), func(name string) (status.Topic, error) { return g.topicView(ctx, name) })
	st.Members = status.MembersFromTopics(st.Topics, lone)
	st.Alarms, _ = g.alarms.List()
	writeJSON(w, http.StatusOK, st)
	return nil
}
