// Package debugpprof serves Go's runtime profiles (net/http/pprof) on a
// listener of their own, for profiling a node under load: `sluice
// --pprof-listen 127.0.0.1:6060 gateway`, used by `sluice bench compare
// --profile`. It is never on the API or ops listener and is off unless asked.
package debugpprof

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/sluicebus/sluice/internal/opshttp"
)

// Start listens on addr (a loopback address is expected) and serves the
// profiles until ctx ends. It returns once the listener is open; serving
// errors after that go to errc, which gets one value when serving stops.
func Start(ctx context.Context, addr string) (<-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// Profiles take as long as asked (?seconds=N): no write timeout.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- opshttp.Serve(ctx, srv, ln) }()
	return errc, nil
}
