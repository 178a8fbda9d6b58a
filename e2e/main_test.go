package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "steward-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The agents run as another user when the tests run as root: the
	// binary must be reachable by them.
	_ = os.Chmod(dir, 0o755)
	// STEWARD_E2E_RACE=0 builds the agents without the race detector (for
	// benchmarks); tests run them with it.
	race := os.Getenv("STEWARD_E2E_RACE") != "0"
	bin, err := BuildBinary(dir, race)
	if err != nil {
		fmt.Fprintln(os.Stderr, "building steward:", err)
		os.Exit(1)
	}
	binaryPath = bin
	code := m.Run()
	os.RemoveAll(filepath.Dir(bin))
	os.Exit(code)
}
