package sluice

import "context"

// Handler handles one message. A nil error acks it; an error retries it after
// the family's backoff, until the family's max attempts, then dead-letters it;
// an error wrapped with Permanent dead-letters it at once.
type Handler interface {
	Handle(ctx context.Context, m *Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m *Message) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, m *Message) error { return f(ctx, m) }

// Middleware wraps a Handler with behaviour of its own (logging, tracing,
// deduplication, ...).
type Middleware func(Handler) Handler

// Chain wraps h in mw; the first middleware is the outermost.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}
