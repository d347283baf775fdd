package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/jaegertest"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// TestJaegerTraceTree sends a call along client → A → B over mutual TLS,
// with every process exporting its spans over OTLP to a real Jaeger, and
// B failing A's first attempt so that A retries. It reads the trace back
// from Jaeger's query API and checks its tree: the client's attempt span,
// A's server span, A's call span with its two attempt spans, and B's two
// server spans, each under the span that caused it, with the mesh's
// attributes.
func TestJaegerTraceTree(t *testing.T) {
	leaktest.Check(t)
	j := jaegertest.Start(t)
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	disc := &discovery.Static{}

	// process returns the mesh options of one process: its identity and
	// its telemetry, exporting to Jaeger as service name.
	var flushes []func(context.Context) error
	process := func(name string) []mesh.Option {
		exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(j.OTLPGRPC), otlptracegrpc.WithInsecure())
		if err != nil {
			t.Fatal(err)
		}
		tp := trace.NewTracerProvider(trace.WithBatcher(exp), trace.WithResource(resource.NewSchemaless(semconv.ServiceName(name))))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = tp.Shutdown(ctx)
		})
		flushes = append(flushes, tp.ForceFlush)
		tel, err := telemetry.New(telemetry.WithTracerProvider(tp))
		if err != nil {
			t.Fatal(err)
		}
		src, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/" + name))
		if err != nil {
			t.Fatal(err)
		}
		return []mesh.Option{mesh.WithIdentity(src), mesh.WithTelemetry(tel)}
	}
	serve := func(service string, opts []mesh.Option, h http.Handler) {
		var sopts []mesh.ServerOption
		for _, o := range opts {
			sopts = append(sopts, o)
		}
		srv, err := mesh.NewServer(h, sopts...)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(ln) }()
		t.Cleanup(func() { srv.Close(); <-done })
		if err := disc.Set(service, discovery.Endpoint{ID: service + "-1", Addr: ln.Addr().String()}); err != nil {
			t.Fatal(err)
		}
	}
	client := func(opts []mesh.Option, more ...mesh.ClientOption) *http.Client {
		copts := []mesh.ClientOption{mesh.WithDiscovery(disc)}
		for _, o := range opts {
			copts = append(copts, o)
		}
		c, err := mesh.NewClient(append(copts, more...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.HTTPClient()
	}

	var calls atomic.Int32
	serve("b", process("weft-b"), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "b")
	}))
	aOpts := process("weft-a")
	toB := client(aOpts, mesh.WithRetry(mesh.RetryPolicy{Backoff: time.Millisecond, MaxBackoff: time.Millisecond}))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /chain", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://b/leaf", nil)
		resp, err := toB.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	serve("a", aOpts, mux)
	toA := client(process("weft-client"))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://a/chain", nil)
	resp, err := toA.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "b" {
		t.Fatalf("chain answered %s %q", resp.Status, body)
	}
	for _, flush := range flushes {
		if err := flush(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Jaeger stores spans a batch at a time: poll until all seven are in.
	var tr jaegertest.Trace
	for {
		traces, err := j.Traces(ctx, "weft-client")
		if err == nil && len(traces) == 1 && len(traces[0].Spans) >= 7 {
			tr = traces[0]
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the trace never reached Jaeger whole: %v %+v\n%s", err, traces, j.Log())
		case <-time.After(100 * time.Millisecond): // polling interval
		}
	}

	// Index the spans by ID; describe each as "service kind name".
	byID := map[string]jaegertest.Span{}
	for _, s := range tr.Spans {
		byID[s.SpanID] = s
	}
	describe := func(s jaegertest.Span) string {
		return tr.Processes[s.ProcessID].ServiceName + " " + s.Tag("span.kind") + " " + s.OperationName
	}
	var edges []string
	for _, s := range tr.Spans {
		parent := "root"
		if p, ok := byID[s.Parent()]; ok {
			parent = describe(p)
		}
		edges = append(edges, parent+" → "+describe(s))
	}
	sort.Strings(edges)
	want := []string{
		"root → weft-client client GET",
		"weft-a client GET → weft-b server GET",
		"weft-a client GET → weft-b server GET",
		"weft-a internal GET b → weft-a client GET",
		"weft-a internal GET b → weft-a client GET",
		"weft-a server GET /chain → weft-a internal GET b",
		"weft-client client GET → weft-a server GET /chain",
	}
	if strings.Join(edges, "\n") != strings.Join(want, "\n") {
		t.Fatalf("trace tree:\n%s\nwant:\n%s", strings.Join(edges, "\n"), strings.Join(want, "\n"))
	}

	// The mesh's attributes: the destination on the client's one span
	// and on A's call span, the attempt number, retry flag, endpoint and
	// status on A's attempts, the caller's identity on the server spans.
	for _, s := range tr.Spans {
		got := func(key string) string { return s.Tag(key) }
		switch d := describe(s); d {
		case "weft-client client GET":
			if got("weft.service") != "a" || got("weft.endpoint") != "a-1" || got("http.response.status_code") != "200" {
				t.Errorf("%s: tags %v", d, s.Tags)
			}
		case "weft-a internal GET b":
			if got("weft.service") != "b" || got("weft.balancer.policy") != "round_robin" {
				t.Errorf("%s: tags %v", d, s.Tags)
			}
		case "weft-a client GET":
			attempt, status := got("weft.attempt"), got("http.response.status_code")
			retry := fmt.Sprint(attempt == "2")
			if got("weft.retry") != retry || got("weft.endpoint") != "b-1" ||
				(attempt == "1") != (status == "503") || (attempt == "2") != (status == "200") {
				t.Errorf("%s: tags %v", d, s.Tags)
			}
		case "weft-a server GET /chain":
			if got("weft.peer.spiffe_id") != "spiffe://example.org/weft-client" {
				t.Errorf("%s: tags %v", d, s.Tags)
			}
		case "weft-b server GET":
			if got("weft.peer.spiffe_id") != "spiffe://example.org/weft-a" || got("weft.authorization.decision") != "allow" {
				t.Errorf("%s: tags %v", d, s.Tags)
			}
		}
	}
}
