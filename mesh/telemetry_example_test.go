package mesh_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sort"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// Telemetry on a client and a server: the call and the request it serves
// are one trace, with the mesh's facts on the spans. A real program would
// give telemetry.New its SDK providers (or none: the otel globals).
func ExampleWithTelemetry() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	tel, err := telemetry.New(telemetry.WithTracerProvider(tp))
	if err != nil {
		log.Fatal(err)
	}

	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	serverSrc, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/payments"))
	clientSrc, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/web"))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /charge/{id}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "charged") })
	srv, err := mesh.NewServer(mux, mesh.WithIdentity(serverSrc), mesh.WithTelemetry(tel))
	if err != nil {
		log.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	d := &discovery.Static{}
	_ = d.Set("payments", discovery.Endpoint{ID: "payments-1", Addr: ln.Addr().String()})
	client, err := mesh.NewClient(mesh.WithDiscovery(d), mesh.WithIdentity(clientSrc), mesh.WithTelemetry(tel))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	resp, err := client.HTTPClient().Post("http://payments/charge/42", "text/plain", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()

	var lines []string
	for _, s := range spans.Ended() {
		line := s.SpanKind().String() + " " + s.Name()
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case telemetry.ServiceKey, telemetry.EndpointKey, telemetry.PeerIDKey, "http.route":
				line += fmt.Sprintf(" %s=%s", kv.Key, kv.Value.String())
			}
		}
		lines = append(lines, line)
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// client POST weft.service=payments weft.endpoint=payments-1
	// server POST /charge/{id} weft.peer.spiffe_id=spiffe://example.org/web http.route=/charge/{id}
}
