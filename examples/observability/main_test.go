package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"
)

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRun runs the example with each exporter; the OTLP ones point at a
// loopback port where nothing listens, and must still finish in time.
func TestRun(t *testing.T) {
	leaktest.Check(t)
	for _, exporter := range []string{"stdout", "none", "otlp-grpc", "otlp-http"} {
		t.Run(exporter, func(t *testing.T) {
			var out syncBuilder
			start := time.Now()
			endpoint := ""
			if strings.HasPrefix(exporter, "otlp") {
				endpoint = "127.0.0.1:1"
			}
			if err := run(exporter, endpoint, "127.0.0.1:0", 3, time.Second, 0, &out, nil); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
			text := out.String()
			if strings.Count(text, "200 OK") != 3 {
				t.Errorf("want 3 answered calls:\n%s", text)
			}
			if !strings.Contains(text, `scraped: http_client_request_duration_seconds_count{`) ||
				!strings.Contains(text, `weft_service="hello"`) || !strings.Contains(text, `http_route="/hello/{name}"`) {
				t.Errorf("the Prometheus endpoint lacks weft's series:\n%s", text)
			}
		})
	}
	if err := run("bogus", "", "127.0.0.1:0", 1, time.Second, 0, &syncBuilder{}, nil); err == nil {
		t.Error("unknown exporter accepted")
	}
}
