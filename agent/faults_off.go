//go:build !faultinject

package agent

// faultActive and faultPoint are no-ops in production builds (see
// faults_on.go).
func faultActive(string) bool { return false }

func faultPoint(string) {}
