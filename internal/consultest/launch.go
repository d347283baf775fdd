package consultest

import (
	"fmt"
	"os"
)

// Launch runs a `consul agent -dev` on 127.0.0.1 with free ports, as
// [Start] does, for a program that is not a test (the examples): it
// returns an error instead of failing a test, and the caller stops the
// agent with [Agent.Close]. The binary is found by [Binary]. The agent is
// killed if the program dies first. [Agent.Restart] and
// [Agent.RestartFresh] are for the agents of tests only.
func Launch(opts ...Option) (*Agent, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "weft-consul-")
	if err != nil {
		return nil, fmt.Errorf("consultest: %w", err)
	}
	a := &Agent{bin: bin, name: "dev", dir: dir, dev: true, cfg: newConfig(opts)}
	if err := a.pickPorts(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := a.startRetrying(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return a, nil
}

// Close stops the agent as [Agent.Stop] does; for an agent of [Launch],
// it also removes its data directory (a test's agent's directory goes
// with the test).
func (a *Agent) Close() {
	a.Stop()
	if a.t == nil {
		os.RemoveAll(a.dir)
	}
}
