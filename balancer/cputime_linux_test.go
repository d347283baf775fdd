package balancer_test

import (
	"syscall"
	"time"
)

// threadCPU returns the CPU time of the calling OS thread, so benchmarks
// can report the cost of a pick apart from time spent descheduled on a
// shared machine.
func threadCPU() (time.Duration, bool) {
	const rusageThread = 1 // RUSAGE_THREAD
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
