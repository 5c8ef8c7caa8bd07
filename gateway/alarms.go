package gateway

import (
	"errors"
	"net"
	"net/http"
	"os"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/tenant"
)

// HeaderAlarm on a 429 or 503 names the alarm its refusal raised or
// belongs to; the problem's "alarm" field says the same.
const HeaderAlarm = "Sluice-Alarm"

// nodeName is cfg.Name, else the host name and the listen port.
func nodeName(cfg Config) string {
	if cfg.Name != "" {
		return cfg.Name
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "gateway"
	}
	if _, port, err := net.SplitHostPort(cfg.Listen); err == nil {
		return host + ":" + port
	}
	return host
}

// Alarms is the gateway's alarm manager (`sluice dev` shares it with its
// broker).
func (g *Gateway) Alarms() *alarm.Manager { return g.alarms }

// alarmFor raises the alarm a refusal belongs to, if any, and returns its
// id: a refusal at an in-flight bound means the gateway is shedding; one by
// admission or the stream's bound means the topic is throttled; no broker
// connection means the bus is unreachable.
func (g *Gateway) alarmFor(topic string, err error) string {
	var rf *refusal
	if errors.As(err, &rf) {
		switch rf.reason {
		case "in_flight", "body_bytes", "publish_window":
			return g.alarms.Raise(alarm.Shedding, g.node, "refusing requests at the "+rf.reason+" bound")
		case "admission", "topic_full", "stream_busy":
			if topic != "" {
				return g.alarms.Raise(alarm.TopicThrottled, topic, "refusing messages: "+rf.reason)
			}
		case "family_missing":
			if c := g.commits[topic]; c != nil {
				return g.raiseFamiliesMissing(topic, c.interest.peek())
			}
		}
		return ""
	}
	if errors.Is(err, errBusUnavailable) {
		if !g.nc.IsConnected() {
			return g.raiseBusUnreachable()
		}
		if id, ok := g.alarms.Active(alarm.NoQuorum, topic); ok && topic != "" {
			return id
		}
	}
	return ""
}

// raiseFamiliesMissing raises family_missing for each family of topic
// that r found without a consumer, and clears it for the others; it returns
// the last raised alarm's id.
func (g *Gateway) raiseFamiliesMissing(topic string, r *reading) string {
	if r == nil || r.err != nil {
		return ""
	}
	id := ""
	for _, f := range g.cfg.Topics[topic].FamilyNames() {
		subject := topic + "/" + f
		if _, ok := r.created[f]; ok {
			g.alarms.Clear(alarm.FamilyMissing, subject)
			continue
		}
		id = g.alarms.Raise(alarm.FamilyMissing, subject, "the family has no consumer on the bus: this gateway refuses the topic's messages with 503 until a broker recreates it")
	}
	return id
}

func (g *Gateway) raiseBusUnreachable() string {
	return g.alarms.Raise(alarm.BusUnreachable, g.node, "not connected to any broker: "+g.nc.Status().String())
}

// listAlarms handles GET /v1/alarms: this gateway's active alarms and the
// recently cleared ones.
func (g *Gateway) listAlarms(w http.ResponseWriter, _ *http.Request, _ tenant.Caller) error {
	writeJSON(w, http.StatusOK, g.alarms.View())
	return nil
}
