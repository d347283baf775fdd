//go:build !linux

package benchmarks

import "os/exec"

// setParentDeath does nothing where the kernel cannot kill children with
// their parent; the benchmarks stop their processes themselves.
func setParentDeath(*exec.Cmd) {}
