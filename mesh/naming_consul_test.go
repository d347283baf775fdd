package mesh

import (
	"errors"
	"net/http"
	"testing"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// TestSecureNamingConsul: with services named by Consul's Connect naming,
// a client sends to "payments" only when the server presents the Connect
// ID of payments, not any other ID the Consul CA issued.
func TestSecureNamingConsul(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	disc := &discovery.Static{}
	payments := startConsulService(t, agent.Client(), "payments", disc)
	impostor := startConsulService(t, agent.Client(), "impostor", disc)
	web := startConsulService(t, agent.Client(), "web", disc)
	paymentsEPs, _ := disc.Endpoints("payments")
	impostorEPs, _ := disc.Endpoints("impostor")
	for _, tt := range []struct {
		name    string
		ep      discovery.Endpoint
		wantErr error
	}{
		{"the payments server", paymentsEPs[0], nil},
		{"the server of another service", impostorEPs[0], ErrUnexpectedPeer},
	} {
		// A client of its own per case, which reads the set at its start.
		named := &discovery.Static{}
		if err := named.Set("payments", tt.ep); err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(WithDiscovery(discovery.WithNaming(named, web.src.ServiceNaming("dc1"))), WithIdentity(web.src))
		if err != nil {
			t.Fatal(err)
		}
		code, _, err := call(t, c.HTTPClient(), http.MethodGet, "http://payments/", "", nil)
		c.Close()
		if !errors.Is(err, tt.wantErr) || (err == nil && code != http.StatusOK) {
			t.Errorf("%s: %d %v, want %v", tt.name, code, err, tt.wantErr)
		}
	}
	if payments.served.Load() != 1 || impostor.served.Load() != 0 {
		t.Errorf("served: payments %d, impostor %d; want 1 and 0", payments.served.Load(), impostor.served.Load())
	}
}
