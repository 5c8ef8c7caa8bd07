// Package sluice is the Go SDK of Sluice, a service-bus message broker.
//
// A [Producer] publishes messages to gateways over HTTP. It gives every
// message one idempotency key and reuses it on every retry, so a retry after
// an unknown outcome is stored once. It retries 429, 503 and network errors
// with full-jitter exponential backoff, honours Retry-After, and fails over
// between gateways. Errors match sentinels such as [ErrTopicNotFound],
// [ErrThrottled] or [ErrOutcomeUnknown] with errors.Is.
//
// A [Worker] is one member of a family: a consumer group that receives every
// message of its topic, sharing them among its workers. A worker pulls only
// as many messages as its credit allows ([WithCredit]), so a slow family
// slows intake instead of filling memory. Its [Handler] acks a message by
// returning nil; an error retries it after the family's backoff; an error
// wrapped with [Permanent], or the family's last attempt failing, moves it to
// the family's dead-letter stream with the reason, attempt count and last
// error. Handlers follow the shape of net/http: [HandlerFunc] and
// [Middleware].
//
// Delivery is at least once: a handler can see a message again after a
// worker crash or a lost ack. [Message.ID] is stable across redeliveries and
// [Message.Attempt] counts them, to make handlers idempotent.
//
// The SDK never imports a server: it talks HTTP to gateways and the NATS
// client protocol to brokers.
package sluice
