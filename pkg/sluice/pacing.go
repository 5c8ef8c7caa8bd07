package sluice

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// rateLimitRE reads the gateway's RateLimit field (IETF httpapi
// ratelimit-headers draft): `"topic";r=<remaining>;t=<seconds>`.
var rateLimitRE = regexp.MustCompile(`(?:^|,)\s*"[^"]*";r=(\d+);t=(\d+)`)

// pacer remembers, per topic, until when a gateway said no credit is left,
// so the producer waits instead of spending a request on a sure refusal.
type pacer struct {
	mu        sync.Mutex
	notBefore map[string]time.Time
}

// observe reads the RateLimit field of an answer about topic.
func (p *pacer) observe(topic string, h http.Header) {
	m := rateLimitRE.FindStringSubmatch(h.Get("RateLimit"))
	if m == nil || m[1] != "0" {
		return
	}
	secs, _ := strconv.Atoi(m[2])
	until := time.Now().Add(time.Duration(secs) * time.Second)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.notBefore == nil {
		p.notBefore = map[string]time.Time{}
	}
	if until.After(p.notBefore[topic]) {
		p.notBefore[topic] = until
	}
}

// wait blocks until topic may be sent to again. If ctx would end first it
// waits until lastTry before the deadline (the advertised time is an
// estimate) and lets the request go; with less than half of lastTry left
// (too little for an answer) it returns ErrThrottled at once, without
// sending.
func (p *pacer) wait(ctx context.Context, topic string) error {
	p.mu.Lock()
	until := p.notBefore[topic]
	p.mu.Unlock()
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		left := time.Until(dl)
		if left < lastTry/2 {
			return fmt.Errorf("%w: the gateway advertised no credit for %s for another %v", ErrThrottled, topic, d.Round(time.Millisecond))
		}
		d = left - lastTry // at most 0: send now, the retry loop waited already
	}
	if !sleep(ctx.Done(), d) {
		return ctx.Err()
	}
	return nil
}
