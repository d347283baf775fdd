// Package jaegertest runs a real Jaeger (all-in-one, memory storage) for
// tests: it receives OTLP on free loopback ports and answers its query
// API, which the tests read traces back from.
package jaegertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvBinary names the environment variable that holds the path of the
// Jaeger binary; `make tools` builds it into .bin/jaeger and the Makefile
// exports it.
const EnvBinary = "WEFT_JAEGER"

// ErrNoBinary is wrapped by [Binary] when no Jaeger binary can be found.
var ErrNoBinary = errors.New("jaegertest: no jaeger binary (run `make tools` to build .bin/jaeger)")

// Binary returns the path of the Jaeger binary: $WEFT_JAEGER when set,
// else .bin/jaeger in the nearest directory above the working directory
// that has one. It fails, wrapping [ErrNoBinary], when there is none.
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %v", ErrNoBinary, EnvBinary, p, err)
		}
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoBinary, err)
	}
	for {
		p := filepath.Join(dir, ".bin", "jaeger")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoBinary
		}
		dir = parent
	}
}

// Jaeger is a running Jaeger process.
type Jaeger struct {
	// OTLPGRPC and OTLPHTTP are the host:port of its OTLP receivers.
	OTLPGRPC, OTLPHTTP string
	// Query is the base URL of its query API ("http://127.0.0.1:port").
	Query string

	log  *lockedBuffer
	http *http.Client
}

// config is Jaeger's configuration: OTLP in, memory storage, the query
// API, and nothing else listening (its own metrics are off).
const config = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// Start runs Jaeger on free loopback ports, waits until its query API
// answers, and stops it when the test ends. It skips the test when no
// binary is installed, and fails it when $WEFT_JAEGER names one that is
// missing.
func Start(t testing.TB) *Jaeger {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(EnvBinary) != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ports := freePorts(t, 4)
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, ports[0], ports[1], ports[2], ports[3]), 0o600); err != nil {
		t.Fatal(err)
	}
	j := &Jaeger{
		Query:    fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		OTLPGRPC: fmt.Sprintf("127.0.0.1:%d", ports[2]),
		OTLPHTTP: fmt.Sprintf("127.0.0.1:%d", ports[3]),
		log:      &lockedBuffer{},
		http:     &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second},
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = j.log, j.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		j.http.CloseIdleConnections()
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(60 * time.Second) // a cold start on a loaded machine
	for {
		var services struct{ Data []string }
		if err := j.get(context.Background(), "/api/services", &services); err == nil {
			return j
		}
		select {
		case <-exited:
			t.Fatalf("jaegertest: jaeger exited:\n%s", j.log)
		case <-time.After(100 * time.Millisecond): // polling interval
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaegertest: query API not up after 60s:\n%s", j.log)
		}
	}
}

// Log returns what Jaeger has written so far.
func (j *Jaeger) Log() string { return j.log.String() }

// Trace is a trace as Jaeger's query API returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is a span of a [Trace].
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	Tags          []Tag       `json:"tags"`
	ProcessID     string      `json:"processID"`
}

// Reference links a span to another, its parent for "CHILD_OF".
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Tag is an attribute of a span.
type Tag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Process is the emitter of spans: its service name.
type Process struct {
	ServiceName string `json:"serviceName"`
}

// Parent returns the ID of s's parent span, "" for a root.
func (s Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Tag returns the value of the tag key of s as text ("" when absent).
func (s Span) Tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

// Traces returns the traces that have spans of service.
func (j *Jaeger) Traces(ctx context.Context, service string) ([]Trace, error) {
	var out struct{ Data []Trace }
	err := j.get(ctx, "/api/traces?limit=100&lookback=1h&service="+url.QueryEscape(service), &out)
	return out.Data, err
}

func (j *Jaeger) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.Query+path, nil)
	if err != nil {
		return err
	}
	resp, err := j.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jaegertest: GET %s: %s: %s", path, resp.Status, strings.TrimSpace(body.String()))
	}
	return json.Unmarshal(body.Bytes(), v)
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
