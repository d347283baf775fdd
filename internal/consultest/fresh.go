package consultest

import (
	"os"
	"path/filepath"
)

// RestartFresh stops the agent, deletes its data directory and starts it
// again on the same ports, as an agent whose disk was wiped comes back: it
// no longer knows the services and checks registered through it. It waits
// for a leader, as [Agent.Restart] does.
func (a *Agent) RestartFresh() {
	a.t.Helper()
	a.Stop()
	if err := os.RemoveAll(filepath.Join(a.dir, "data")); err != nil {
		a.t.Fatalf("consultest: wipe %s: %v", a.name, err)
	}
	a.Restart()
}
