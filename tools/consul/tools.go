//go:build tools

// Package consul pins the Consul agent that weft's tests run against.
// It is its own module so that Consul's dependencies stay out of weft's.
// Build it with `make consul` (README's test command does so when needed).
package consul

import _ "github.com/hashicorp/consul"
