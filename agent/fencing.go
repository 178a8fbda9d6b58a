package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// fenceRetry is how long a required fencing that failed waits before the
// next attempt (each attempt already retries every hook with backoff).
const fenceRetry = 5 * time.Second

// fenceJob is what the fence job needs, copied from the loop's observation.
type fenceJob struct {
	term    int64
	target  string
	member  dcs.Member // the target's last published record, if still present
	timeout time.Duration
}

// fence is the ActFence job: before a failover promotion, make the former
// primary stop taking writes — through its database when it answers, then
// with the configured hooks (STONITH). The outcome gates the promotion
// (fenceGate) and is recorded in history.
func (a *Agent) fence(ctx context.Context, job fenceJob) error {
	target, term := job.target, job.term
	a.mu.Lock()
	kp := a.known[target]
	a.mu.Unlock()
	m := kp.member
	if job.member.Name != "" {
		m = job.member
	}
	host, port, _ := splitHostPort(m.DBURL)
	apiURL := m.APIURL
	if apiURL == "" {
		apiURL = kp.apiURL
	}
	var steps []string

	// 1. Through the database itself, when it answers.
	if pf, ok := a.db.(PeerFencer); ok && host != "" {
		fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := pf.FencePeer(fctx, backends.Upstream{Name: target, Host: host, Port: port})
		cancel()
		if err != nil {
			steps = append(steps, "database of "+target+" not fenced directly: "+err.Error())
			a.opts.Metrics.FencingAttempt("failure")
		} else {
			steps = append(steps, "database of "+target+" made to stop taking writes through SQL")
			a.opts.Metrics.FencingAttempt("success")
		}
		a.log.Info("fencing the former primary through its database", "target", target, "err", err)
	}

	// 2. The hooks.
	confirmed := false
	if a.opts.Fencer != nil {
		ok, attempts := a.opts.Fencer.Fence(ctx, FenceTarget{Name: target, Host: host, APIURL: apiURL})
		confirmed = ok
		for _, at := range attempts {
			steps = append(steps, at.String())
			a.opts.Metrics.FencingAttempt(at.Result)
		}
		if len(attempts) == 0 {
			steps = append(steps, "no fencing hooks configured")
		}
	} else {
		steps = append(steps, "no fencing hooks configured")
	}
	summary := strings.Join(steps, "; ")
	result := "confirmed by a hook"
	if !confirmed {
		result = "not confirmed by any hook"
	}
	a.log.Info("fencing done", "target", target, "term", term, "confirmed", confirmed, "mode", a.opts.FencingMode, "steps", summary)
	hctx, cancel := context.WithTimeout(ctx, job.timeout)
	if _, err := a.store.AppendHistory(hctx, dcs.HistoryRecord{Kind: "fencing", OldLeader: target, NewLeader: a.name, Member: target, Term: term,
		Reason: fmt.Sprintf("fencing %s before promotion (fencing.mode %s): %s; %s", target, a.opts.FencingMode, result, summary)}); err != nil {
		a.opts.Metrics.DCSError("history")
		a.log.Warn("recording the fencing in history failed", "err", err)
	}
	cancel()
	a.mu.Lock()
	a.mem.Fence = &FenceState{Term: term, Target: target, Confirmed: confirmed, Summary: summary, RetryAt: a.now().Add(fenceRetry)}
	a.mu.Unlock()
	if !confirmed && a.opts.FencingMode == FencingRequired {
		return fmt.Errorf("fencing %s was not confirmed by any hook; promotion waits (fencing.mode required): %s", target, summary)
	}
	return nil
}

// armWatchdog arms the watchdog before this member takes writes. An error
// (watchdog.mode required and no working device) means: do not lead; it is
// remembered for ttl so that the member neither re-takes the key nor races
// meanwhile.
func (a *Agent) armWatchdog() error {
	if a.opts.Watchdog == nil {
		return nil
	}
	a.mu.Lock()
	ttl := a.leaseTTL
	a.mu.Unlock()
	err := a.opts.Watchdog.Arm(ttl - a.opts.SafetyMargin(ttl))
	a.mu.Lock()
	if err != nil {
		a.mem.WatchdogBroken, a.mem.WatchdogBrokenUntil = err.Error(), a.now().Add(ttl)
	} else {
		a.mem.WatchdogBroken = ""
	}
	a.mu.Unlock()
	return err
}

// disarmWatchdog closes the watchdog: only once the database no longer takes
// writes.
func (a *Agent) disarmWatchdog() {
	if a.opts.Watchdog == nil {
		return
	}
	if err := a.opts.Watchdog.Disarm(); err != nil {
		a.log.Warn("disarming the watchdog failed", "err", err)
	}
}

// AcceptFailsafe answers a leader's POST /failsafe while the DCS is
// unreachable: this member accepts `leader` (and promises not to race for
// ttl) unless it is itself a writable primary or the leader.
func (a *Agent) AcceptFailsafe(leader string, term int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	switch {
	case leader == a.name:
		return errors.New("that is this member's own name")
	case a.lead.Valid(now):
		return fmt.Errorf("%s holds the leader lease itself", a.name)
	case a.view.DB.Writable:
		return fmt.Errorf("%s runs a writable database itself", a.name)
	}
	if a.mem.FailsafeLeader != leader || now.After(a.mem.FailsafeUntil) {
		a.log.Info("accepted a leader over the DCS failsafe", "leader", leader, "term", term)
	}
	a.mem.FailsafeLeader = leader
	a.mem.FailsafeUntil = now.Add(a.dyn.TTL.D())
	return nil
}

// failsafeHeld: the last failsafe round (within ttl) confirmed us.
func (a *Agent) failsafeHeld() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.failsafeSince.IsZero() && a.now().Sub(a.failsafeSince) < a.leaseTTL
}

// failsafeRound: the DCS is unreachable and failsafe_mode is on. The leader
// keeps its lease only while every member of the last known membership
// answers and accepts it; one refusal or silence and the deadline stands
// (rule 1 then fences the database).
func (a *Agent) failsafeRound(ctx context.Context, dcsErr error) {
	a.mu.Lock()
	var targets = map[string]string{}
	if cl := a.view.Cluster; cl != nil {
		for n, m := range cl.Members {
			if n != a.name && m.APIURL != "" {
				targets[n] = m.APIURL
			}
		}
	}
	term, timeout := a.lead.Term, a.dyn.RetryTimeout.D()
	a.mu.Unlock()
	if timeout > 2*time.Second {
		timeout = 2 * time.Second
	}
	sent := a.now()
	var mu sync.Mutex
	var refused []string
	var wg sync.WaitGroup
	for n, u := range targets {
		wg.Add(1)
		go func(n, u string) {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var err error
			if a.opts.Peers == nil {
				err = errors.New("no peer client")
			} else {
				err = a.opts.Peers.Failsafe(pctx, u, a.name, term)
			}
			if err != nil {
				mu.Lock()
				refused = append(refused, n+": "+err.Error())
				mu.Unlock()
			}
		}(n, u)
	}
	wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.lead.Held || a.lead.Term != term {
		return
	}
	if len(refused) > 0 {
		msg := "DCS unreachable and not every member confirmed this leader (failsafe): the lease deadline stands"
		if a.failsafeLog != msg {
			a.log.Warn(msg, "dcs_err", dcsErr, "refused", strings.Join(refused, "; "))
			a.failsafeLog = msg
		}
		return
	}
	a.extendDeadline(sent)
	a.failsafeSince = sent
	msg := "DCS unreachable; every member confirmed this leader (failsafe): keeping the primary"
	if a.failsafeLog != msg {
		a.log.Warn(msg, "members", len(targets), "dcs_err", dcsErr)
		a.failsafeLog = msg
	}
	if a.opts.Watchdog != nil {
		_ = a.opts.Watchdog.Keepalive()
	}
}

// retakeAfterFailsafe: the DCS answers again but our lease expired during the
// outage. The leader kept writing under the failsafe; it takes a new key if
// nobody else holds one, instead of fencing itself.
func (a *Agent) retakeAfterFailsafe(ctx context.Context) bool {
	l, sent, err := a.store.AcquireLeader(ctx)
	if err != nil {
		a.log.Warn("the DCS is back but the leader key could not be re-created after the failsafe period", "err", err)
		return false
	}
	a.mu.Lock()
	old := a.lead.Term
	a.lead = LeadState{Held: true, Term: l.Term}
	a.extendDeadline(sent)
	a.failsafeSince = time.Time{}
	a.mu.Unlock()
	a.signalLease()
	a.opts.Metrics.LeaderChange("reacquire")
	a.log.Info("role change: the DCS is back; re-created the leader key after the failsafe period", "old_term", old, "term", l.Term)
	hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := a.store.AppendHistory(hctx, dcs.HistoryRecord{Kind: "reacquire", OldLeader: a.name, NewLeader: a.name, Term: l.Term,
		Reason: "the DCS was unreachable and every member confirmed this leader (failsafe); its lease expired meanwhile and the key was re-created"}); err == nil {
		a.setHistoryTerm(l.Term)
	}
	return true
}
