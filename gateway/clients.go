package gateway

import (
	"crypto/sha256"
	"encoding/hex"
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
// (not the raw header, which has many spellings of one key), else a hash of
// its bearer credentials when it sends them, else its address.
func clientKey(r *http.Request, c tenant.Caller) string {
	if c.Tenant != nil {
		return "tenant:" + c.Tenant.Name + "/" + c.KeyID
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		sum := sha256.Sum256([]byte(auth))
		return "key:" + hex.EncodeToString(sum[:8])
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "addr:" + strings.ToLower(host)
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
