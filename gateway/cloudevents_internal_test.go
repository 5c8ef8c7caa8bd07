package gateway

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// TestStructuredEvent: a structured-mode envelope becomes the payload,
// Content-Type and Ce-* metadata; a bad one is refused with 400.
func TestStructuredEvent(t *testing.T) {
	const attrs = `"specversion":"1.0","id":"1","source":"/s","type":"t"`
	cases := []struct {
		name, body, data, ctype string
		meta                    map[string]string
		err                     error
	}{
		{name: "json data", body: `{` + attrs + `,"data":{"a":1}}`, data: `{"a":1}`, ctype: "application/json"},
		{name: "json data, json type", body: `{` + attrs + `,"datacontenttype":"application/vnd.x+json","data":"s"}`, data: `"s"`, ctype: "application/vnd.x+json"},
		{name: "text data", body: `{` + attrs + `,"datacontenttype":"text/plain","data":"héllo\n"}`, data: "héllo\n", ctype: "text/plain"},
		{name: "base64 data", body: `{` + attrs + `,"datacontenttype":"application/octet-stream","data_base64":"AAEC"}`, data: "\x00\x01\x02", ctype: "application/octet-stream"},
		{name: "no data", body: `{` + attrs + `,"subject":"x"}`, meta: map[string]string{"Ce-Subject": "x"}},
		{name: "extensions", body: `{` + attrs + `,"n":42,"ok":true,"s":"v","nil":null,"data":1}`, data: "1", ctype: "application/json",
			meta: map[string]string{"Ce-N": "42", "Ce-Ok": "true", "Ce-S": "v", "Ce-Id": "1", "Ce-Source": "/s", "Ce-Type": "t", "Ce-Specversion": "1.0"}},
		{name: "no id", body: `{"specversion":"1.0","source":"/s","type":"t"}`, err: errMalformed},
		{name: "unknown specversion", body: `{"specversion":"2.0","id":"1","source":"/s","type":"t"}`, err: errMalformed},
		{name: "object extension", body: `{` + attrs + `,"x":{"a":1}}`, err: errMalformed},
		{name: "upper-case attribute", body: `{` + attrs + `,"Xy":"v"}`, err: errMalformed},
		{name: "both data", body: `{` + attrs + `,"data":1,"data_base64":"AA=="}`, err: errMalformed},
		{name: "bad base64", body: `{` + attrs + `,"data_base64":"%%"}`, err: errMalformed},
		{name: "two values", body: `{` + attrs + `} {}`, err: errMalformed},
		{name: "not json", body: `id=1`, err: errMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := nats.NewMsg("x")
			msg.Header.Set(sluice.HeaderContentType, ceStructured)
			err := structuredEvent([]byte(c.body), msg)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(msg.Data) != c.data || msg.Header.Get(sluice.HeaderContentType) != c.ctype {
				t.Fatalf("data %q type %q, want %q %q", msg.Data, msg.Header.Get(sluice.HeaderContentType), c.data, c.ctype)
			}
			for k, v := range c.meta {
				if got := msg.Header.Get(sluice.HeaderMetaPrefix + k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if msg.Header.Get(sluice.HeaderMetaPrefix+"Ce-Data") != "" || msg.Header.Get(sluice.HeaderMetaPrefix+"Ce-Datacontenttype") != "" {
				t.Errorf("data or datacontenttype kept as metadata: %v", msg.Header)
			}
		})
	}
}

// TestCloudEventModeAndKey: how a request is taken, and the derived key:
// within the key grammar whatever source and id hold, scoped by source.
func TestCloudEventModeAndKey(t *testing.T) {
	req := func(h map[string]string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, "/", http.NoBody)
		for k, v := range h {
			r.Header.Set(k, v)
		}
		return r
	}
	for _, c := range []struct {
		h    map[string]string
		mode string
		err  error
	}{
		{map[string]string{"Content-Type": "application/json"}, "", nil},
		{map[string]string{"ce-specversion": "1.0"}, "binary", nil},
		{map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"}, "structured", nil},
		{map[string]string{"Content-Type": "application/cloudevents+json", "ce-specversion": "1.0"}, "structured", nil},
		{map[string]string{"Content-Type": "application/cloudevents-batch+json"}, "", errMediaType},
	} {
		mode, err := cloudEventMode(req(c.h))
		if mode != c.mode || !errors.Is(err, c.err) {
			t.Errorf("%v: mode %q, %v; want %q, %v", c.h, mode, err, c.mode, c.err)
		}
	}
	h := nats.Header{}
	if err := binaryEvent(req(map[string]string{"ce-specversion": "1.0", "ce-id": "a b/é.*>", "ce-source": "urn:x", "ce-type": "t"}), h); err != nil {
		t.Fatal(err)
	}
	key := cloudEventKey(h)
	if err := validateID(key); err != nil || !strings.HasPrefix(key, "ce:") {
		t.Fatalf("key %q: %v", key, err)
	}
	other := nats.Header{}
	for k, v := range h {
		other[k] = v
	}
	other.Set(ceMetaPrefix+"Source", "urn:y")
	if cloudEventKey(other) == key {
		t.Fatal("the same id from another source has the same key")
	}
	if err := binaryEvent(req(map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-bad-name": "v"}), nats.Header{}); !errors.Is(err, errMalformed) {
		t.Fatalf("ce-bad-name: %v", err)
	}
	if cloudEventKey(nats.Header{}) != "" {
		t.Fatal("a key for a message that is no event")
	}
}
