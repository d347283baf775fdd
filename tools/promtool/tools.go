//go:build tools

// Package promtool pins Prometheus's promtool, which weft's tests run
// (`promtool check metrics`) on the Prometheus exposition of
// examples/observability (the tool directive of go.mod). It is its own
// module so that Prometheus's dependencies stay out of weft's. `make
// tools` builds it into .bin/.
package promtool
