package main

import (
	"errors"
	"fmt"
	"testing"
)

// TestErrorLine: one "sluice: " prefix, and < > & as written, not as
// encoding/json escapes them in a quoted problem body.
func TestErrorLine(t *testing.T) {
	sdk := errors.New("sluice: unauthorized")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("config x.yaml: gateway.listne: unknown key"), "sluice: config x.yaml: gateway.listne: unknown key"},
		{fmt.Errorf("sluice: publish orders id 1: %w", sdk), "sluice: publish orders id 1: sluice: unauthorized"},
		{sdk, "sluice: unauthorized"},
		{errors.New(`status: 401 Unauthorized: {"detail":"send \"Authorization: Bearer \u003ckey\u003e\" \u0026 retry"}`),
			`sluice: status: 401 Unauthorized: {"detail":"send \"Authorization: Bearer <key>\" & retry"}`},
	} {
		if got := errorLine(tc.err); got != tc.want {
			t.Errorf("errorLine(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestAnswerText(t *testing.T) {
	for body, want := range map[string]string{
		`{"type":"x","title":"Unauthorized","status":401,"detail":"send \"Authorization: Bearer \u003ckey\u003e\""}`: `Unauthorized: send "Authorization: Bearer <key>"`,
		`{"title":"Not Ready"}`:        "Not Ready",
		"  not ready: bus down \n":     "not ready: bus down",
		`{"ready":false,"x":"\u003c"}`: `{"ready":false,"x":"<"}`,
	} {
		if got := answerText([]byte(body)); got != want {
			t.Errorf("answerText(%q) = %q, want %q", body, got, want)
		}
	}
}
