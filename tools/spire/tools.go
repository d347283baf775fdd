//go:build tools

// Package spire pins the SPIRE server and agent that weft's tests and
// examples/spire run against (the tool directives of go.mod). It is its
// own module so that SPIRE's dependencies stay out of weft's. `make
// tools` builds both into .bin/.
package spire
