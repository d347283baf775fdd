package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"
)

// envPromtool names the variable that holds the path of Prometheus's
// promtool; `make tools` builds it into .bin/promtool and the Makefile
// exports it.
const envPromtool = "WEFT_PROMTOOL"

// TestPromtoolCheckMetrics runs `promtool check metrics` (Prometheus's
// own linter of expositions) on the whole /metrics output of the
// example, weft's series included, and wants no problem reported. It
// skips when promtool is not built, unless $WEFT_PROMTOOL names it.
func TestPromtoolCheckMetrics(t *testing.T) {
	leaktest.Check(t)
	bin := os.Getenv(envPromtool)
	if bin == "" {
		bin = filepath.Join("..", "..", ".bin", "promtool")
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("no promtool (run `make tools` to build .bin/promtool): %v", err)
		}
	}
	var exposition bytes.Buffer
	if err := run("none", "", "127.0.0.1:0", 3, time.Second, 0, &syncBuilder{}, &exposition); err != nil {
		t.Fatal(err)
	}
	for _, series := range []string{"http_client_request_duration_seconds_bucket{", "http_server_request_duration_seconds_bucket{", "weft_endpoints{"} {
		if !strings.Contains(exposition.String(), series) {
			t.Fatalf("the exposition lacks %s:\n%s", series, exposition.String())
		}
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = &exposition
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
