package broker

import "errors"

// SyncAlways reports whether b's running nats-server fsyncs every write
// before it acks one: sync_always in its active JetStream configuration,
// as its /varz shows it.
func SyncAlways(b *Broker) (bool, error) {
	v, err := b.srv.Varz(nil)
	if err != nil {
		return false, err
	}
	if v.JetStream.Config == nil {
		return false, errors.New("broker: JetStream is not enabled")
	}
	return v.JetStream.Config.SyncAlways, nil
}
