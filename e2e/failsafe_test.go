package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// configSeen reports whether the member's agent applied a dynamic setting
// (from its GET /status).
func configSeen(m *Member, key string, want any) bool {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/status", m.APIPort))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st struct {
		Config map[string]any `json:"config"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return false
	}
	return st.Config[key] == want
}

func cutEtcdForAll(c *Cluster) {
	for _, m := range c.Members {
		m.Proxy.Cut()
	}
}

func restoreEtcdForAll(c *Cluster) {
	for _, m := range c.Members {
		m.Proxy.Restore()
	}
}

// lastAckBefore returns the last acknowledged write at or before t.
func lastAck(w *Writer) time.Time {
	a := w.Snapshot()
	if len(a) == 0 {
		return time.Time{}
	}
	return a[len(a)-1].At
}

// etcd unreachable for everyone with failsafe_mode on and every member up:
// the primary keeps accepting writes. Then one member goes down: the primary
// stops before ttl.
func TestFailsafeKeepsPrimaryWhileAllMembersAnswer(t *testing.T) {
	t.Parallel()
	c, leader := bootstrap(t, Fast, nil)
	c.SetDynamic("failsafe_mode", "true")
	Eventually(t, 10*time.Second, "every agent applied failsafe_mode", func() bool {
		for _, m := range c.Members {
			if !configSeen(m, "failsafe_mode", true) {
				return false
			}
		}
		return true
	})
	w := StartWriter(t, []*Member{leader}, 20*time.Millisecond)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Snapshot()) > 10 })
	cutAt := time.Now()
	cutEtcdForAll(c)
	time.Sleep(3 * c.Profile.TTL)
	if age := time.Since(lastAck(w)); age > time.Second {
		t.Fatalf("with failsafe_mode on and every member answering, the primary stopped taking writes %v ago (etcd cut %v ago)", age.Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond))
	}
	t.Logf("MEASURED failsafe on, etcd unreachable for %v: the primary still acknowledges writes (last %v ago)", time.Since(cutAt).Round(time.Millisecond), time.Since(lastAck(w)).Round(time.Millisecond))
	var down *Member
	for _, m := range c.Members {
		if m != leader {
			down = m
			break
		}
	}
	downAt := time.Now()
	down.Crash()
	Eventually(t, c.Profile.TTL+3*time.Second, "the primary stops taking writes", func() bool { return time.Since(lastAck(w)) > time.Second })
	stopped := lastAck(w).Sub(downAt)
	t.Logf("MEASURED failsafe on, etcd unreachable, member %s down: the primary's last write was acknowledged %v after the member went down (ttl %v)", down.Name, stopped.Round(time.Millisecond), c.Profile.TTL)
	if stopped >= c.Profile.TTL {
		t.Fatalf("the primary kept writing %v after a member stopped confirming it, want < ttl (%v)", stopped, c.Profile.TTL)
	}
	restoreEtcdForAll(c)
	down.Start()
	c.WaitHealthy(60 * time.Second)
}

// etcd unreachable for everyone with failsafe_mode off: the primary stops
// taking writes before its ttl is over.
func TestFailsafeOffStopsPrimary(t *testing.T) {
	t.Parallel()
	c, leader := bootstrap(t, Fast, nil)
	w := StartWriter(t, []*Member{leader}, 20*time.Millisecond)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Snapshot()) > 10 })
	cutAt := time.Now()
	cutEtcdForAll(c)
	Eventually(t, c.Profile.TTL+3*time.Second, "the primary stops taking writes", func() bool { return time.Since(lastAck(w)) > time.Second })
	stopped := lastAck(w).Sub(cutAt)
	t.Logf("MEASURED failsafe off, etcd unreachable for everyone: last write acknowledged %v after the cut (ttl %v)", stopped.Round(time.Millisecond), c.Profile.TTL)
	if stopped >= c.Profile.TTL {
		t.Fatalf("the primary kept writing %v after etcd became unreachable, want < ttl", stopped)
	}
	restoreEtcdForAll(c)
	c.WaitHealthy(60 * time.Second)
}
