package perf

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sluicebus/sluice/internal/opshttp"
)

// ServeFloor serves the HTTP floor on ln until ctx ends: a bare net/http
// handler that reads the body and answers 202, with the gateway's server
// settings (keep-alive HTTP/1.1 and h2c). It is what any HTTP ingest costs
// before it does anything with a message.
func ServeFloor(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet { // readiness
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusAccepted)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		Protocols:         ServerProtocols(),
	}
	return opshttp.Serve(ctx, srv, ln)
}

// ServerProtocols: HTTP/1.1 and HTTP/2 over cleartext (h2c).
func ServerProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}
