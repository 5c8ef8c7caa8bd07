package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// profiling fetches a process's CPU and allocation profiles over a span of
// time from its /debug/pprof endpoint (see internal/debugpprof).
type profiling struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

// startProfiles asks base for a CPU profile and an allocation delta
// profile of d each, written to prefix+".cpu.pprof" and ".allocs.pprof".
func startProfiles(ctx context.Context, base string, d time.Duration, prefix string) *profiling {
	p := &profiling{}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	for kind, path := range map[string]string{"cpu": "/debug/pprof/profile", "allocs": "/debug/pprof/allocs"} {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			err := fetch(ctx, fmt.Sprintf("%s%s?seconds=%d", base, path, secs), prefix+"."+kind+".pprof", d+30*time.Second)
			if err != nil {
				p.mu.Lock()
				p.errs = append(p.errs, fmt.Errorf("%s profile: %w", kind, err))
				p.mu.Unlock()
			}
		}()
	}
	return p
}

func (p *profiling) wait() error {
	p.wg.Wait()
	return errors.Join(p.errs...)
}

func fetch(ctx context.Context, url, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
