// Command pause is the sandbox image's process: PID 1 of every pod, holding the pod's
// namespaces while its containers come and go. It reaps the orphans a shared PID namespace
// hands it and exits on SIGTERM or SIGINT, like Kubernetes' own pause (which is C; ours is
// built from this module with the other node tools, so no compiler or registry is needed).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
