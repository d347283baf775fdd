package benchmarks

import (
	"os/exec"
	"syscall"
)

// setParentDeath has the kernel kill cmd if this process dies first, so a
// crashed benchmark leaves no server or proxy behind.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
