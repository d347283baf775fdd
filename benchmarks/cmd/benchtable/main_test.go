package main

import (
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkHTTP/mode=seq/path=plain-2   100  1000 ns/op  1000 cpu-ns/op  100 B/op  10 allocs/op
BenchmarkHTTP/mode=seq/path=mtls-2    100  2000 ns/op  2000 cpu-ns/op  200 B/op  12 allocs/op
BenchmarkHTTP/mode=seq/path=weft-2    100  2100 ns/op  2200 cpu-ns/op  300 B/op  14 allocs/op
BenchmarkHTTP/mode=seq/path=haproxy-2hop-2  100  6000 ns/op  11000 cpu-ns/op  100 B/op  10 allocs/op
BenchmarkHTTP/mode=seq/path=weft-2    100  9999 ns/op  2200 cpu-ns/op  300 B/op  14 allocs/op
BenchmarkHTTP/mode=seq/path=weft-2    100  2000 ns/op  2200 cpu-ns/op  300 B/op  14 allocs/op
BenchmarkTail/policy=rr/slow=none-2   100  1 ns/op  1 p50-ms  2 p99-ms  0 slow-share
BenchmarkTail/policy=rr/slow=one-2    100  1 ns/op  1 p50-ms  10 p99-ms  0.2 slow-share
BenchmarkAuthorize/authorizer=id-2  100  24 ns/op  0 B/op  0 allocs/op
`

// TestRun checks the medians and ratios of a small, known input.
func TestRun(t *testing.T) {
	var out strings.Builder
	if err := run(nil, strings.NewReader(sample), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		// weft: median of 2100, 9999, 2000 is 2100; ×mtls 1.05; CPU
		// (2200-1000)/(11000-1000) = 12% of what the proxies add.
		"weft  3  2100  2200  300  14  1.05x  1.10x  +2  +100  0.35x  12%",
		"haproxy-2hop  1  6000  11000  100  10  3.00x  5.50x  -2  -100  1.00x  100%",
		"rr   one  1  1.00  10.00  20.0%  5.00x",
		"authorizer=id  1  24  0  0",
	} {
		if !strings.Contains(strings.Join(strings.Fields(got), "  "), strings.Join(strings.Fields(want), "  ")) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

// TestRunEmpty checks that input without results is an error.
func TestRunEmpty(t *testing.T) {
	if err := run(nil, strings.NewReader("goos: linux\nPASS\n"), &strings.Builder{}); err == nil {
		t.Error("no error for input without results")
	}
}
