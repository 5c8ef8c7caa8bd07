package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/tenant"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

const (
	// defaultDeadPage and maxDeadPage bound one list of dead letters.
	defaultDeadPage, maxDeadPage = 50, 500
	// maxDeadScan bounds the dead letters one list reads: a tenant's page
	// skips other tenants' (at least maxDeadPage, so an operator's page
	// is never cut short).
	maxDeadScan = 2 * maxDeadPage
	// defaultRedrive and maxRedrive bound one redrive request.
	defaultRedrive, maxRedrive = 100, 10000
	// redriveBudget bounds the time one redrive request runs; what is
	// left is reported as remaining.
	redriveBudget = 20 * time.Second
)

// errRedriveTime: a redrive request used up redriveBudget.
var errRedriveTime = errors.New("redrive time budget used up")

// deadLetters is one family's dead-letter stream.
type deadLetters struct {
	t topology.Topic
	f topology.Family
	s jetstream.Stream
}

// openDead resolves the {topic} and {family} path values to the family's
// dead-letter stream on the bus (its info as of now).
func (g *Gateway) openDead(ctx context.Context, r *http.Request) (*deadLetters, error) {
	t, err := g.topic(r)
	if err != nil {
		return nil, err
	}
	name := r.PathValue("family")
	f, ok := t.Families[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q in topic %s", errFamilyNotFound, clip(name), t.Name)
	}
	if !g.nc.IsConnected() {
		return nil, fmt.Errorf("%w: not connected to any broker", errBusUnavailable)
	}
	s, err := g.js.Stream(ctx, sluice.DeadLetterStream(t.Name, f.Name))
	if err != nil {
		return nil, fmt.Errorf("%w: dead letters of %s/%s: %v", errBusUnavailable, t.Name, f.Name, err)
	}
	return &deadLetters{t: t, f: f, s: s}, nil
}

// seqParam parses the {seq} path value or a query parameter.
func seqParam(v, what string) (uint64, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q is not a sequence number", errMalformed, what, v)
	}
	return n, nil
}

// intParam parses an optional positive query parameter bounded by hi.
func intParam(r *http.Request, name string, def, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > hi {
		return 0, fmt.Errorf("%w: %s must be 1..%d, got %q", errMalformed, name, hi, v)
	}
	return n, nil
}

// next reads the family's first dead letter at or after seq; nil when none.
func (d *deadLetters) next(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	m, err := d.s.GetMsg(ctx, max(seq, 1), jetstream.WithGetMsgSubject(sluice.DeadLetterSubjects(d.t.Name, d.f.Name)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading dead letters: %v", errBusUnavailable, err)
	}
	return m, nil
}

// one reads the dead letter at seq.
func (d *deadLetters) one(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	m, err := d.next(ctx, seq)
	if err != nil {
		return nil, err
	}
	if m == nil || m.Sequence != seq {
		return nil, fmt.Errorf("%w: %d in %s/%s", errDeadNotFound, seq, d.t.Name, d.f.Name)
	}
	return m, nil
}

// sees reports whether c may see and act on the dead letter with headers
// h: in open mode (no tenant) and as an ops tenant every one; else only
// its tenant's own (sluice.HeaderTenant, stamped by the gateway that
// stored the message). A dead letter without a tenant (its message stored
// before gateways stamped one, or published on the bus directly) is an
// operator's.
func sees(c tenant.Caller, h nats.Header) bool {
	return seesAll(c) || h.Get(sluice.HeaderTenant) == c.Tenant.Name
}

// seesAll: c sees every dead letter (open mode, or an ops tenant).
func seesAll(c tenant.Caller) bool { return c.Tenant == nil || c.Tenant.Ops }

// deadView is what the API shows of a dead letter; full adds the payload.
func deadView(m *jetstream.RawStreamMsg, full bool) sluice.DeadLetter {
	h := m.Header
	d := sluice.DeadLetter{Seq: m.Sequence, ID: sluice.KeyOf(h.Get(sluice.HeaderOriginalID)), Reason: h.Get(sluice.HeaderDeadReason),
		Error: h.Get(sluice.HeaderDeadError), Size: len(m.Data)}
	d.OriginalSeq, _ = strconv.ParseUint(h.Get(sluice.HeaderOriginalSeq), 10, 64)
	d.Attempts, _ = strconv.Atoi(h.Get(sluice.HeaderDeadAttempts))
	// When the bus stored the dead letter, by its clock: the same clock as
	// the message's store time, whatever the worker's clock said (a worker
	// older than the bus-clock stamp wrote its own into the header).
	d.DeadAt = m.Time
	if !full {
		return d
	}
	d.ContentType = h.Get(sluice.HeaderContentType)
	for k, v := range h {
		if meta, ok := strings.CutPrefix(k, sluice.HeaderMetaPrefix); ok && len(v) > 0 {
			if d.Meta == nil {
				d.Meta = map[string]string{}
			}
			d.Meta[meta] = v[0] // as stored (and as a worker sees it), not lower-cased
		}
	}
	if utf8.Valid(m.Data) {
		s := string(m.Data)
		d.Data = &s
	} else {
		d.DataBase64 = m.Data
	}
	return d
}

// listDeadLetters handles GET .../families/{family}/dead-letters?after=&limit=.
// A tenant's page holds its own dead letters only (sees); a page may then
// be short of limit with a Next to go on from, as one list reads at most
// maxDeadScan of them. Total and Bytes are the family's, as its topic's
// stats show them.
func (g *Gateway) listDeadLetters(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	limit, err := intParam(r, "limit", defaultDeadPage, maxDeadPage)
	if err != nil {
		return err
	}
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		if after, err = seqParam(v, "after"); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), statsTimeout)
	defer cancel()
	d, err := g.openDead(ctx, r)
	if err != nil {
		return err
	}
	st := d.s.CachedInfo().State
	page := sluice.DeadLetterPage{Topic: d.t.Name, Family: d.f.Name, Total: st.Msgs, Bytes: st.Bytes, DeadLetters: []sluice.DeadLetter{}}
	next, scanned, more := after+1, 0, false
	for {
		if len(page.DeadLetters) == limit || scanned == maxDeadScan {
			more = true
			break
		}
		m, err := d.next(ctx, next)
		if err != nil {
			if ctx.Err() != nil && scanned > 0 {
				more = true // out of time while skipping others': go on later
				break
			}
			return err
		}
		if m == nil {
			break
		}
		scanned++
		next = m.Sequence + 1
		if sees(c, m.Header) {
			page.DeadLetters = append(page.DeadLetters, deadView(m, false))
		}
	}
	if more && next <= st.LastSeq {
		page.Next = next - 1
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// oneDead resolves the family's dead letter named by {seq}; another
// tenant's is not found, as if it were not there.
func (g *Gateway) oneDead(ctx context.Context, r *http.Request, c tenant.Caller) (*deadLetters, *jetstream.RawStreamMsg, error) {
	seq, err := seqParam(r.PathValue("seq"), "dead letter")
	if err != nil {
		return nil, nil, err
	}
	d, err := g.openDead(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	m, err := d.one(ctx, seq)
	if err == nil && !sees(c, m.Header) {
		return nil, nil, fmt.Errorf("%w: %d in %s/%s", errDeadNotFound, seq, d.t.Name, d.f.Name)
	}
	return d, m, err
}

// peekDeadLetter handles GET .../dead-letters/{seq}.
func (g *Gateway) peekDeadLetter(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	ctx, cancel := context.WithTimeout(r.Context(), statsTimeout)
	defer cancel()
	_, m, err := g.oneDead(ctx, r, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, deadView(m, true))
	return nil
}

// purgeDeadLetters handles DELETE .../dead-letters: all of the family's
// (open mode, an ops tenant), or a tenant's own (purgeOwn).
func (g *Gateway) purgeDeadLetters(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	if !seesAll(c) {
		return g.purgeOwn(w, r, c)
	}
	ctx, cancel := context.WithTimeout(r.Context(), statsTimeout)
	defer cancel()
	d, err := g.openDead(ctx, r)
	if err != nil {
		return err
	}
	n := d.s.CachedInfo().State.Msgs
	if err := d.s.Purge(ctx); err != nil {
		return fmt.Errorf("%w: purging dead letters: %v", errBusUnavailable, err)
	}
	g.log.Info("dead letters purged", zap.String("topic", d.t.Name), zap.String("family", d.f.Name), zap.Uint64("count", n))
	writeJSON(w, http.StatusOK, sluice.PurgeResult{Purged: n})
	return nil
}

// purgeOwn deletes a tenant's own dead letters of the family, one by one,
// among those there when the request came, for at most redriveBudget;
// other tenants' stay. What a purge cut short by its time left is deleted
// by the next one.
func (g *Gateway) purgeOwn(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	ctx, cancel := context.WithTimeout(r.Context(), redriveBudget)
	defer cancel()
	d, err := g.openDead(ctx, r)
	if err != nil {
		return err
	}
	last := d.s.CachedInfo().State.LastSeq
	var n uint64
	for next := uint64(1); next <= last; {
		m, err := d.next(ctx, next)
		if err != nil {
			if ctx.Err() != nil && n > 0 {
				break // out of time: report what was deleted
			}
			return err
		}
		if m == nil || m.Sequence > last {
			break
		}
		next = m.Sequence + 1
		if !sees(c, m.Header) {
			continue
		}
		if err := d.s.DeleteMsg(ctx, m.Sequence); err != nil {
			if n > 0 && ctx.Err() != nil {
				break
			}
			return fmt.Errorf("%w: deleting dead letter %d: %v", errBusUnavailable, m.Sequence, err)
		}
		n++
	}
	g.log.Info("dead letters purged", zap.String("topic", d.t.Name), zap.String("family", d.f.Name),
		zap.String("tenant", c.Tenant.Name), zap.Uint64("count", n))
	writeJSON(w, http.StatusOK, sluice.PurgeResult{Purged: n})
	return nil
}

// deleteDeadLetter handles DELETE .../dead-letters/{seq}.
func (g *Gateway) deleteDeadLetter(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	ctx, cancel := context.WithTimeout(r.Context(), statsTimeout)
	defer cancel()
	d, m, err := g.oneDead(ctx, r, c)
	if err != nil {
		return err
	}
	if err := d.s.DeleteMsg(ctx, m.Sequence); err != nil {
		return fmt.Errorf("%w: deleting dead letter %d: %v", errBusUnavailable, m.Sequence, err)
	}
	g.log.Info("dead letter purged", zap.String("topic", d.t.Name), zap.String("family", d.f.Name), zap.Uint64("seq", m.Sequence))
	writeJSON(w, http.StatusOK, sluice.PurgeResult{Purged: 1})
	return nil
}

// redriveDeadLetters handles POST .../dead-letters/redrive?limit=: the
// family's oldest dead letters, one by one, each through the topic's
// admission and the redrive rate, for at most redriveBudget.
func (g *Gateway) redriveDeadLetters(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	limit, err := intParam(r, "limit", defaultRedrive, maxRedrive)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), redriveBudget)
	defer cancel()
	d, err := g.openDead(ctx, r)
	if err != nil {
		return err
	}
	res := sluice.RedriveResult{Seqs: []sluice.RedrivenSeq{}}
	// Only what was dead when the request came: a redriven message that
	// dies again meanwhile is not redriven again by the same request.
	last := d.s.CachedInfo().State.LastSeq
	next := uint64(1)
	for res.Redriven < limit && next <= last {
		m, err := d.next(ctx, next)
		if err != nil {
			if ctx.Err() != nil {
				res.Stopped = "time"
				break
			}
			return g.redriveEnd(w, d, res, err)
		}
		if m == nil || m.Sequence > last {
			break
		}
		if !sees(c, m.Header) {
			next = m.Sequence + 1 // another tenant's
			continue
		}
		seq, err := g.redrive(ctx, d, m, c)
		if errors.Is(err, errRedriveTime) {
			res.Stopped = "time"
			break
		}
		if err != nil {
			return g.redriveEnd(w, d, res, err)
		}
		res.Redriven++
		res.Seqs = append(res.Seqs, sluice.RedrivenSeq{DeadLetter: m.Sequence, TopicSeq: seq})
		next = m.Sequence + 1
	}
	return g.redriveEnd(w, d, res, nil)
}

// redriveOne handles POST .../dead-letters/{seq}/redrive.
func (g *Gateway) redriveOne(w http.ResponseWriter, r *http.Request, c tenant.Caller) error {
	ctx, cancel := context.WithTimeout(r.Context(), redriveBudget)
	defer cancel()
	d, m, err := g.oneDead(ctx, r, c)
	if err != nil {
		return err
	}
	seq, err := g.redrive(ctx, d, m, c)
	if err != nil {
		return err
	}
	res := sluice.RedriveResult{Redriven: 1, Seqs: []sluice.RedrivenSeq{{DeadLetter: m.Sequence, TopicSeq: seq}}}
	return g.redriveEnd(w, d, res, nil)
}

// redriveEnd answers a redrive: a refusal before anything was redriven is
// the refusal itself (429/503 with Retry-After); after some progress it is
// 200 with what was done, why it stopped and when to go on.
func (g *Gateway) redriveEnd(w http.ResponseWriter, d *deadLetters, res sluice.RedriveResult, err error) error {
	if err != nil {
		if res.Redriven == 0 {
			return err
		}
		p, kind := problemFor(err)
		res.Stopped = strings.TrimPrefix(p.Type, "urn:sluice:problem:")
		if kind.retry {
			ra := g.adm.retryAfter(d.t.Name)
			var rf *refusal
			if errors.As(err, &rf) {
				ra = rf.retryAfter
			}
			res.RetryAfter = int(max(time.Second, ra).Round(time.Second) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(res.RetryAfter))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	if info, ierr := d.s.Info(ctx); ierr == nil {
		res.Remaining = info.State.Msgs
	}
	if res.Redriven > 0 {
		g.log.Info("dead letters redriven", zap.String("topic", d.t.Name), zap.String("family", d.f.Name),
			zap.Int("count", res.Redriven), zap.Uint64("remaining", res.Remaining), zap.String("stopped", res.Stopped))
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// redrive puts one dead letter back in its topic on the family's redrive
// subject (only that family consumes it), through the topic's admission
// and the redrive rate, and then deletes it from the dead letters. The
// publish's deduplication id is the dead letter's, so a redrive repeated
// after a failed delete is stored once within the duplicate window.
func (g *Gateway) redrive(ctx context.Context, d *deadLetters, m *jetstream.RawStreamMsg, c tenant.Caller) (seq uint64, err error) {
	t, f := d.t, d.f
	// A redrive counts against the tenant's quota and the topic's credit
	// like a publish. It skips the client rate and the RateLimit headers:
	// its pace is the gateway's redrive rate, waited for rather than
	// refused, so that one request moves many dead letters; and it answers
	// with its own result and Retry-After (redriveEnd), not publish credit.
	credit, err := g.admit(entrance{caller: c, topic: t.Name, size: int64(len(m.Data)), pace: func() error {
		if err := g.redriveRate.Wait(ctx); err != nil {
			// The request's time is up before the rate allows another.
			return fmt.Errorf("%w: %w: %v", errOverloaded, errRedriveTime, err)
		}
		return nil
	}})
	if err != nil {
		return 0, err
	}
	defer func() { credit.settle(err) }()
	msg := nats.NewMsg(sluice.RedriveSubject(t.Name, f.Name))
	msg.Data = m.Data
	for k, v := range m.Header {
		if k == sluice.HeaderContentType || k == sluice.HeaderOriginalID || k == sluice.HeaderTenant || strings.HasPrefix(k, sluice.HeaderMetaPrefix) {
			msg.Header[k] = v
		}
	}
	// The dead letter's seq and time: unique even if the dead-letter
	// stream were recreated (and its sequence restarted) within the window.
	id := fmt.Sprintf("redrive.%s.%d.%d", f.Name, m.Sequence, m.Time.UnixNano())
	// The redriven message keeps its tenant (and its original id, the
	// key its tenant sent); its own id is unique to the dead letter.
	receipt, err := g.store(ctx, t.Name, f.Name, "", id, msg)
	if err != nil {
		return 0, err
	}
	dctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	if err := d.s.DeleteMsg(dctx, m.Sequence); err != nil {
		// Stored again but still listed: a second redrive of it is a
		// duplicate within the window (and a duplicate delivery after it).
		g.log.Warn("redriven dead letter not deleted", zap.Uint64("seq", m.Sequence), zap.Error(err))
	}
	g.metrics.redriven.WithLabelValues(t.Name, f.Name).Inc()
	return receipt.Seq, nil
}
