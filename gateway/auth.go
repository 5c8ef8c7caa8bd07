package gateway

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// authorize checks what a request names and who sends it, before any bound
// is taken or byte of body read: names in the path against the grammar (a
// name never reaches a NATS subject unchecked), then the API key (401),
// then the tenant's grant for the topic (403). With auth open every caller
// is let in, without a tenant.
func (g *Gateway) authorize(w http.ResponseWriter, r *http.Request, act tenant.Action) (tenant.Caller, error) {
	topic, family := r.PathValue("topic"), r.PathValue("family")
	// Declared names were checked when the config was loaded: only an
	// undeclared one is matched against the grammar (not the hot path).
	t, declared := g.cfg.Topics[topic]
	if topic != "" && !declared {
		if err := sluice.ValidateName(topic); err != nil {
			return tenant.Caller{}, fmt.Errorf("%w: topic %v", errMalformed, err)
		}
	}
	if _, ok := t.Families[family]; family != "" && !ok {
		if err := sluice.ValidateName(family); err != nil {
			return tenant.Caller{}, fmt.Errorf("%w: family %v", errMalformed, err)
		}
	}
	if act == tenant.Public || g.keys.Open() {
		return tenant.Caller{}, nil
	}
	c, err := g.keys.Authenticate(r.Header.Get("Authorization"), g.clock.Now()) // expiry is an operator's date: kept by the bus's clock
	if err != nil {
		reason := "invalid"
		desc := `, error="invalid_token"`
		switch {
		case errors.Is(err, tenant.ErrNoKey):
			reason, desc = "missing", ""
		case errors.Is(err, tenant.ErrExpired):
			reason = "expired"
		}
		g.metrics.authFailures.WithLabelValues(reason).Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`+desc)
		return tenant.Caller{}, fmt.Errorf("%w: %w; send \"Authorization: Bearer <key>\" with a key of your tenant", errUnauthorized, err)
	}
	if err := c.Tenant.Allowed(act, topic); err != nil {
		g.metrics.authFailures.WithLabelValues("forbidden").Inc()
		return tenant.Caller{}, fmt.Errorf("%w: %w", errForbidden, err)
	}
	return c, nil
}
