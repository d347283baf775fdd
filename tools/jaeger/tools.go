//go:build tools

// Package jaeger pins the Jaeger all-in-one binary that weft's telemetry
// tests export traces to (the tool directive of go.mod). It is its own
// module so that Jaeger's dependencies stay out of weft's. `make tools`
// builds it into .bin/.
package jaeger
