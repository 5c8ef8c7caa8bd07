package sluice_test

import (
	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// A worker of your own on a bus whose brokers authenticate clients signs in
// with its nkey and uses its identity's own inbox prefix (README, Security).
func ExampleIdentity() {
	opts, err := sluice.Identity("billing.nk")
	if err != nil {
		return
	}
	nc, err := nats.Connect("tls://broker-1:4222", append(opts, nats.RootCAs("certs/ca.pem"))...)
	if err != nil {
		return
	}
	defer nc.Close()
	// sluice.NewWorker(nc, "orders", "billing", handler)
}
