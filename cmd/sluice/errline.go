package main

import (
	"encoding/json"
	"strings"
)

// jsonEscapes undoes encoding/json's HTML escaping, which problem bodies
// quoted in an error carry ("Bearer \u003ckey\u003e").
var jsonEscapes = strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&")

// errorLine is err as the command prints it after its own "sluice: ":
// without the "sluice: " the SDK's errors start with too (one prefix, not
// "sluice: sluice:"), and with < > & as they are, not JSON-escaped.
func errorLine(err error) string {
	msg := err.Error()
	for {
		rest, ok := strings.CutPrefix(msg, "sluice: ")
		if !ok {
			break
		}
		msg = rest
	}
	return "sluice: " + jsonEscapes.Replace(msg)
}

// answerText is an HTTP answer's body for an error line: a problem's
// title and detail (RFC 9457), else the body, trimmed.
func answerText(body []byte) string {
	var p struct {
		Title  string `json:"title"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &p) == nil && (p.Title != "" || p.Detail != "") {
		switch {
		case p.Detail == "":
			return p.Title
		case p.Title == "":
			return p.Detail
		}
		return p.Title + ": " + p.Detail
	}
	return jsonEscapes.Replace(strings.TrimSpace(string(body)))
}
