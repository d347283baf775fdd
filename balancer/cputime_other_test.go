//go:build !linux

package balancer_test

import "time"

func threadCPU() (time.Duration, bool) { return 0, false }
