// Package benchmarks measures weft side by side with its baselines (bare
// net/http and grpc-go, grpc-go's own balancers, a sidecar-style proxy
// path) in the same run, and reports ratios. It is its own module, so
// comparison-only dependencies stay out of weft's go.mod.
//
//	make bench
package benchmarks
