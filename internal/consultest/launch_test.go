package consultest_test

import (
	"os"
	"testing"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// TestLaunch runs an agent outside the test's cleanup, as the examples
// do: it has a leader when Launch returns, and Close stops it.
func TestLaunch(t *testing.T) {
	leaktest.Check(t)
	if _, err := consultest.Binary(); err != nil && os.Getenv(consultest.EnvBinary) == "" {
		t.Skip(err)
	}
	a, err := consultest.Launch(consultest.WithDNS())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if leader, err := a.Client().Status().Leader(); err != nil || leader == "" {
		t.Fatalf("leader %q, %v", leader, err)
	}
	if a.DNSAddr() == "" {
		t.Error("DNSAddr empty with WithDNS")
	}
	a.Close()
	if a.Running() {
		t.Error("the agent runs after Close")
	}
	if _, err := a.Client().Status().Leader(); err == nil {
		t.Error("the agent answers after Close")
	}
}
