package gateway

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluicebus/sluice/gateway/internal/admit"
	"github.com/sluicebus/sluice/internal/tenant"
)

// overflowClient is the bucket shared by new clients once maxClients are
// tracked and none is idle: a flood of new identities stays limited.
const overflowClient = "overflow"

// clients holds one token bucket per client (API key, else address).
type clients struct {
	mu      sync.Mutex
	rate    float64
	burst   int
	max     int
	buckets map[string]*admit.Bucket
	swept   time.Time // last scan for idle buckets
}

func newClients(cfg Config) *clients {
	if cfg.ClientRate <= 0 {
		return nil
	}
	return &clients{rate: cfg.ClientRate, burst: cfg.ClientBurst, max: cfg.MaxClients, buckets: map[string]*admit.Bucket{}}
}

// clientKey identifies the caller: its tenant's key when authenticated
// (not the raw header, which has many spellings of one key), else its
// address. An unauthenticated caller's headers are not an identity: were
// the Authorization header hashed into the key, a client in open mode would
// send a new one with each request and never meet its rate.
func clientKey(r *http.Request, c tenant.Caller) string {
	if c.Tenant != nil {
		return "tenant:" + c.Tenant.Name + "/" + c.KeyID
	}
	return addrKey(r)
}

// addrKey is the caller's address (its host: the port changes with every
// connection).
func addrKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "addr:" + strings.ToLower(host)
}

// newReaders is the read rate's buckets: one per tenant (all its keys
// together), else one per address (see clientKey for why not per header).
func newReaders(cfg Config) *clients {
	return &clients{rate: cfg.ReadRate, burst: cfg.ReadBurst, max: cfg.MaxClients, buckets: map[string]*admit.Bucket{}}
}

// readerKey is the caller's read rate bucket.
func readerKey(r *http.Request, c tenant.Caller) string {
	if c.Tenant != nil {
		return "tenant:" + c.Tenant.Name
	}
	return addrKey(r)
}

// take takes n tokens from key's bucket; when refused it says how long
// until they would be there.
func (c *clients) take(key string, n float64, now time.Time) (bool, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.buckets[key]
	if !ok {
		if len(c.buckets) >= c.max && now.Sub(c.swept) >= time.Second {
			c.evictIdle(now) // at most once a second: a flood of new keys must not scan every time
			c.swept = now
		}
		if len(c.buckets) >= c.max {
			key = overflowClient
			b = c.buckets[key]
		}
		if b == nil {
			b = admit.NewBucket(c.rate, c.burst, now)
			c.buckets[key] = b
		}
	}
	if b.Take(now, n) {
		return true, 0
	}
	return false, b.Wait(now, n)
}

// evictIdle forgets clients whose buckets are full: they have been idle
// long enough that forgetting them changes nothing.
func (c *clients) evictIdle(now time.Time) {
	for k, b := range c.buckets {
		if k != overflowClient && b.Full(now) {
			delete(c.buckets, k)
		}
	}
}

func (c *clients) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buckets)
}
