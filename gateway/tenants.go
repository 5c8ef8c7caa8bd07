package gateway

import (
	"sync"
	"time"

	"github.com/sluicebus/sluice/gateway/internal/admit"
	"github.com/sluicebus/sluice/internal/tenant"
)

// tenantLimits holds each tenant's rate bucket, at this gateway, over all
// its topics.
type tenantLimits struct {
	mu      sync.Mutex
	buckets map[string]*admit.Bucket
}

func newTenantLimits(keys *tenant.Keys, now time.Time) *tenantLimits {
	tl := &tenantLimits{buckets: map[string]*admit.Bucket{}}
	for name, t := range keys.Tenants() {
		if t.Rate > 0 {
			tl.buckets[name] = admit.NewBucket(t.Rate, t.Burst, now)
		}
	}
	return tl
}

// take takes n messages of t's rate, or says how long until they are there.
func (tl *tenantLimits) take(t *tenant.Tenant, n float64, now time.Time) (bool, time.Duration) {
	b := tl.buckets[t.Name]
	if b == nil {
		return true, 0
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if b.Take(now, n) {
		return true, 0
	}
	return false, b.Wait(now, n)
}
