package benchmarks

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests and
// benchmarks, then removes the files the benchmarks wrote (certificates,
// the server binary, HAProxy configurations).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		cleanupEnv()
		os.Exit(code)
	}))
}
