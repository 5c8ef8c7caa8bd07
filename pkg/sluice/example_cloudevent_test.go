package sluice_test

import (
	"fmt"
	"sort"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// A gateway stores a CloudEvent's attributes as metadata Ce-<Name>; a
// handler reads them back by their own names.
func ExampleMessage_CloudEvent() {
	m := &sluice.Message{Header: nats.Header{
		"Content-Type":               {"application/json"},
		"Sluice-Meta-Ce-Specversion": {"1.0"},
		"Sluice-Meta-Ce-Id":          {"A-234-1234"},
		"Sluice-Meta-Ce-Source":      {"/shop/eu"},
		"Sluice-Meta-Ce-Type":        {"com.example.order.placed"},
	}, Data: []byte(`{"order":1}`)}
	attrs := m.CloudEvent()
	names := make([]string, 0, len(attrs))
	for name := range attrs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Printf("%s=%s\n", name, attrs[name])
	}
	// Output:
	// datacontenttype=application/json
	// id=A-234-1234
	// source=/shop/eu
	// specversion=1.0
	// type=com.example.order.placed
}
