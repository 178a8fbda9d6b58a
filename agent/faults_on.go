//go:build faultinject

package agent

import (
	"os"
	"path/filepath"
	"time"
)

// Fault injection for the end-to-end and chaos tests, compiled only with
// -tags faultinject: a fault is active while the file
// $STEWARD_FAULTS/<name> exists. Production builds use faults_off.go.

func faultActive(name string) bool {
	dir := os.Getenv("STEWARD_FAULTS")
	if dir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// faultPoint blocks, ignoring every deadline, while the fault is active: a
// database call stuck in the kernel.
func faultPoint(name string) {
	for faultActive(name) {
		time.Sleep(50 * time.Millisecond)
	}
}
