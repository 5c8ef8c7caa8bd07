package gateway

import (
	"fmt"
	"net/http"
	"time"

	"github.com/sluicebus/sluice/internal/tenant"
)

// entrance is one message at the admission door: who sends it, to which
// topic, how large it is, and which of the door's optional steps apply.
type entrance struct {
	caller tenant.Caller
	topic  string
	size   int64
	// req is the publish request, which names the caller's client rate
	// bucket; nil: no client rate (a redrive, see redrive).
	req *http.Request
	// pace, if set, runs after the rates and before the topic credit is
	// taken: a redrive waits there for the gateway's redrive rate, so a
	// refusal by the rates costs it no place in that pace.
	pace func() error
	// header, if set, gets the topic's RateLimit headers once its credit was
	// asked for, taken or not. A batch sets them itself, once, after its
	// last line; a redrive answers with its own result instead.
	header http.Header
}

// settlement is the admission credit a message took at the door; the zero
// value holds none. A value, not a closure: the door allocates nothing.
type settlement struct {
	adm   *admission
	topic string
	size  int64
}

// settle settles the credit from how the message's request ended
// (admission.finish). Whoever passes the door calls it once.
func (s settlement) settle(outcome error) {
	if s.adm != nil {
		s.adm.finish(s.topic, s.size, outcome)
	}
}

// chargeBody corrects the bytes a message was charged at the door to the
// size of its body once read: a body of unknown length was charged the most
// it may be. The credit of this refill stays charged that much (refusing a
// little early until the next refill); what the gateway counts as held, and
// so the next refill, uses the real size.
func (s settlement) chargeBody(size int64) settlement {
	if s.adm == nil || size == s.size {
		return s
	}
	s.adm.resize(s.topic, s.size, size)
	s.size = size
	return s
}

// held reports whether the message passed the door and holds credit.
func (s settlement) held() bool { return s.adm != nil }

// admit is the one admission door of publish, each batch line and
// redrive, in this order: the tenant's rate, the client's rate, the
// entrance's pace, then one message of the topic's admission credit (and
// the RateLimit headers). A refusal at any step is that step's error, and
// nothing later is taken; past the door the message holds credit until the
// settlement is called. A redrive skips the client rate and the headers
// (see redrive for why).
func (g *Gateway) admit(in entrance) (settlement, error) {
	if err := g.admitTenant(in.caller); err != nil {
		return settlement{}, err
	}
	if err := g.admitClient(in.req, in.caller); err != nil {
		return settlement{}, err
	}
	if in.pace != nil {
		if err := in.pace(); err != nil {
			return settlement{}, err
		}
	}
	if err := g.takeCredit(in.topic, in.size, in.caller, in.header); err != nil {
		return settlement{}, err
	}
	return settlement{adm: g.adm, topic: in.topic, size: in.size}, nil
}

// admitTenant takes one message of the caller's tenant rate, if it has one.
func (g *Gateway) admitTenant(c tenant.Caller) error {
	if c.Tenant == nil {
		return nil
	}
	ok, wait := g.tenants.take(c.Tenant, 1, time.Now())
	if ok {
		return nil
	}
	g.metrics.tenantRefusals.WithLabelValues(c.Tenant.Name, "tenant_rate").Inc()
	return refuse("tenant_rate", g.rateWait(wait),
		fmt.Errorf("%w: tenant %s is over its quota of %v messages/s (burst %d)", errRateLimited, c.Tenant.Name, c.Tenant.Rate, c.Tenant.Burst))
}

// admitClient takes one message from the caller's rate bucket for the
// request's topic, if per-client limits are on and there is a request: each
// client has a bucket per topic route, so a noisy topic does not use up its
// quota on the others.
func (g *Gateway) admitClient(r *http.Request, c tenant.Caller) error {
	if g.clients == nil || r == nil {
		return nil
	}
	ok, wait := g.clients.take(clientKey(r, c)+"|"+r.PathValue("topic"), 1, time.Now())
	if ok {
		return nil
	}
	return refuse("client_rate", g.rateWait(wait),
		fmt.Errorf("%w: over %v messages/s (burst %d) for this client", errRateLimited, g.cfg.ClientRate, g.cfg.ClientBurst))
}

// takeCredit takes one message of size bytes of topic's admission credit
// for the caller, or refuses with the advertised wait; h (if not nil) gets
// the RateLimit headers as the decision left the credit.
func (g *Gateway) takeCredit(topic string, size int64, c tenant.Caller, h http.Header) error {
	ok, wait, shareFull := g.adm.take(topic, size, c.Tenant, h)
	switch {
	case ok:
		return nil
	case shareFull:
		g.metrics.tenantRefusals.WithLabelValues(c.Tenant.Name, "tenant_share").Inc()
		return refuse("tenant_share", wait, fmt.Errorf("%w: tenant %s took its admission share (%v of this gateway's credit) of topic %s "+
			"until the next refill", errRateLimited, c.Tenant.Name, c.Tenant.AdmissionShare, topic))
	}
	return refuse("admission", wait, fmt.Errorf("%w: no admission credit left for topic %s at this gateway: "+
		"its workers have not yet made room; retry after the advertised time", errTopicFull, topic))
}

// rateWait is the Retry-After of a rate refusal: the bucket's wait within
// the gateway's Retry-After bounds.
func (g *Gateway) rateWait(wait time.Duration) time.Duration {
	return min(g.cfg.RetryAfterMax, max(g.cfg.RetryAfterMin, wait))
}
