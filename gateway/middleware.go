package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/sluicebus/sluice/pkg/sluice"
)

// instrument counts requests by route and status, times them, and turns a
// panic into a logged 500 problem (a 500 is always a bug).
func (g *Gateway) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				g.log.Error("handler panic", zap.Any("panic", v), zap.String("path", r.URL.Path), zap.Stack("stack"))
				if sw.status == 0 {
					writeError(sw, fmt.Errorf("panic: %v", v), 0)
				}
			}
			route := r.Pattern // a registered pattern, never the raw path
			if route == "" || route == "/" {
				route = "unmatched"
			}
			g.metrics.requests.WithLabelValues(route, methodLabel(r.Method), codeLabel(sw.status)).Inc()
			g.metrics.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
	})
}

// methodLabel is the method's metric label: one of the methods HTTP
// defines, else "other". The method is the client's own bytes, counted
// before authentication: as a label, every new one would add series (and
// hold its bytes) for good.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// codeLabel is the status's metric label: the code for the statuses HTTP
// names (the gateway answers no other), else "other".
func codeLabel(status int) string {
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
	}
	if http.StatusText(status) == "" {
		return "other"
	}
	return strconv.Itoa(status)
}

// statusWriter records the status for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// announceLameDuck tells clients of a stopping gateway to go elsewhere: the
// connection closes after the response and the SDK moves to another gateway
// before this one stops listening.
func (g *Gateway) announceLameDuck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.stopping.Load() {
			w.Header().Set("Connection", "close")
			w.Header().Set(sluice.HeaderLameDuck, "true")
		}
		next.ServeHTTP(w, r)
	})
}

// guardHeaders refuses a request with more header fields or bytes than the
// gateway takes, with a 431 problem. The HTTP server's own bound is set
// higher (see Run), so up to twice the limit the client gets a problem
// JSON; past that the server's plain 431.
func (g *Gateway) guardHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, size := 0, 0
		for k, vs := range r.Header {
			n += len(vs)
			for _, v := range vs {
				size += len(k) + len(v) + 4 // ": " and CRLF
			}
		}
		switch {
		case n > g.cfg.MaxHeaderCount:
			writeError(w, fmt.Errorf("%w: %d header fields, at most %d are taken", errHeaderTooLarge, n, g.cfg.MaxHeaderCount), 0)
		case size > int(g.cfg.MaxHeaderBytes):
			writeError(w, fmt.Errorf("%w: %d bytes of header fields, at most %v are taken", errHeaderTooLarge, size, g.cfg.MaxHeaderBytes), 0)
		default:
			next.ServeHTTP(w, r)
		}
	})
}
