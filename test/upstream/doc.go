// Package upstream holds regression tests of nats-server behaviours that
// Sluice's promises rest on, each found by Sluice's own fault tests and
// pinned here on a bare embedded cluster with Sluice's stream and consumer
// configs: a nats-server upgrade that brings a behaviour back fails here
// first, in seconds rather than in one run of a chaos test in five.
package upstream
