package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

type switchoverOpts struct {
	candidate string
	at        string
	force     bool
	dryRun    bool
	cancel    bool
	timeout   time.Duration
}

func newSwitchoverCmd(e *env, g *globals) *cobra.Command {
	var o switchoverOpts
	cmd := &cobra.Command{
		Use:   "switchover [--candidate M] [--at TIME] [--force] [--dry-run] [--cancel]",
		Short: "Move the primary role to a replica without losing a write (planned maintenance)",
		Long: `Move the primary role from the leader to a replica, losing nothing: the leader
stops taking writes, waits until the candidate has replayed its last
position, and hands the leader key over; the candidate promotes and the old
primary follows it as a replica.

Without --candidate the best eligible replica is chosen (highest position,
then failover_priority, then name). The members, their lag and the choice
are shown and confirmed first, unless --force. A candidate that lags beyond
maximum_lag_on_failover, is tagged nofailover, does not answer or is not
healthy is refused with the reason; nothing changes then.

The command prints each step as it happens and waits (--timeout) for the
outcome: exit 0 when the candidate leads, 1 when the switchover was refused
or failed (the old leader keeps leading), 3 when the outcome is not known
yet.

--at schedules it instead (stored in etcd, shown by steward list, carried
out by the leader at that time, cancelled with --cancel).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			at, err := o.check(time.Now())
			if err != nil {
				return err
			}
			c, err := openCtl(e, g, true)
			if err != nil {
				return err
			}
			defer c.close()
			if o.cancel {
				return c.cancelSwitchover()
			}
			return c.switchover(o, at)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.candidate, "candidate", "", "the replica to promote (default: the best eligible one)")
	f.StringVar(&o.at, "at", "", "schedule it: RFC 3339 (2026-11-22T03:00:00+01:00), local '2026-11-22 03:00', today's '03:00', or '+10m'")
	f.BoolVarP(&o.force, "force", "f", false, "do not ask for confirmation (for scripts); the candidate's checks still apply")
	f.BoolVar(&o.dryRun, "dry-run", false, "only show which candidate would be chosen and why the others would not; change nothing")
	f.BoolVar(&o.cancel, "cancel", false, "cancel the scheduled (or pending) switchover")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "how long to wait for the outcome")
	return cmd
}

// check validates the flags (usage errors, exit 2) and parses --at.
func (o switchoverOpts) check(now time.Time) (time.Time, error) {
	if o.cancel && (o.candidate != "" || o.at != "" || o.dryRun) {
		return time.Time{}, usageErr(errors.New("--cancel takes no --candidate, --at or --dry-run: it cancels whatever switchover is pending"))
	}
	if o.timeout <= 0 {
		return time.Time{}, usageErr(fmt.Errorf("--timeout %v: expected a positive duration such as 60s", o.timeout))
	}
	if o.at == "" {
		return time.Time{}, nil
	}
	return parseAt(o.at, now)
}

// parseAt parses --at: RFC 3339, a local date and time, a local time of
// today, "+duration", or "now" (zero: at once). It must be in the future.
func parseAt(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "now" {
		return time.Time{}, nil
	}
	var t time.Time
	var err error
	switch {
	case strings.HasPrefix(s, "+"):
		var d time.Duration
		d, err = time.ParseDuration(s[1:])
		t = now.Add(d)
	default:
		if t, err = time.Parse(time.RFC3339, s); err == nil {
			break
		}
		for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04"} {
			if t, err = time.ParseInLocation(layout, s, now.Location()); err == nil {
				break
			}
		}
		if err == nil {
			break
		}
		for _, layout := range []string{"15:04:05", "15:04"} {
			var hm time.Time
			if hm, err = time.ParseInLocation(layout, s, now.Location()); err == nil {
				y, m, d := now.Date()
				t = time.Date(y, m, d, hm.Hour(), hm.Minute(), hm.Second(), 0, now.Location())
				break
			}
		}
	}
	if err != nil {
		return time.Time{}, usageErr(fmt.Errorf("--at %q: not a time: use RFC 3339 (2026-11-22T03:00:00+01:00), a local date and time ('2026-11-22 03:00'), a time of today ('03:00'), '+10m' or 'now'", s))
	}
	if !t.After(now) {
		return time.Time{}, usageErr(fmt.Errorf("--at %q: %s is in the past (now %s); give a later time (with a date for tomorrow)",
			s, t.Format(time.RFC3339), now.Format(time.RFC3339)))
	}
	return t, nil
}

// cancelSwitchover is --cancel: DELETE /switchover on a member.
func (c *ctl) cancelSwitchover() error {
	ctx, cancel := context.WithTimeout(c.e.context(), 30*time.Second)
	defer cancel()
	cl, err := c.load(ctx)
	if err != nil {
		return err
	}
	if cl.Switchover == nil {
		return errors.New("no switchover is pending: nothing to cancel")
	}
	var res api.ActionResult
	var code int
	var who apiTarget
	err = c.firstAnswer(cl, nil, func(t apiTarget) error {
		var err error
		who = t
		res, code, err = c.api.CancelSwitchover(ctx, t.url)
		return err
	})
	if err != nil {
		return err
	}
	switch code {
	case http.StatusOK:
		fmt.Fprintf(c.e.stdout, "cancelled: switchover %s\n", describeSwitchover(*res.Request))
		return nil
	case http.StatusNotFound:
		return errors.New("no switchover is pending: nothing to cancel")
	}
	return fmt.Errorf("cancel refused: %w", apiRefusal(who, code, res.Error))
}

// pausedNow reports whether the DCS config says maintenance mode.
func pausedNow(cl *dcs.Cluster) bool {
	if cl.Config == nil {
		return false
	}
	d, err := config.ParseDynamicJSON(cl.Config.Value)
	return err == nil && d.Paused
}

func (c *ctl) switchover(o switchoverOpts, at time.Time) error {
	ctx, cancel := context.WithTimeout(c.e.context(), 30*time.Second)
	defer cancel()
	cl, err := c.load(ctx)
	if err != nil {
		return err
	}
	if cl.Leader == nil {
		return errors.New("the cluster has no leader: a switchover hands over from a running leader; to promote a replica now, use steward failover --candidate M")
	}
	leader := cl.Leader.Name
	if o.candidate != "" {
		if _, err := c.member(cl, o.candidate); err != nil {
			return err
		}
		if o.candidate == leader {
			return usageErr(fmt.Errorf("--candidate %s: %s is already the leader; name a replica (steward list)", o.candidate, leader))
		}
	}
	if !o.dryRun {
		if pausedNow(cl) {
			return errors.New("the cluster is paused (maintenance mode): no member takes the leader key while paused, so the switchover is refused; run steward resume first")
		}
		if cl.Switchover != nil {
			return fmt.Errorf("a switchover is already pending (%s): cancel it first with steward switchover --cancel", describeSwitchover(cl.Switchover.Value))
		}
	}
	body := api.SwitchoverBody{Leader: leader, Candidate: o.candidate, DryRun: true}
	if !at.IsZero() {
		body.ScheduledAt = at.Format(time.RFC3339)
	}
	res, code, via, err := c.postSwitchover(ctx, cl, body, false, []string{leader})
	if err != nil {
		return err
	}
	if res.Plan != nil {
		c.printPlan(cl, res.Plan, code == http.StatusOK)
	}
	if code != http.StatusOK {
		return fmt.Errorf("switchover refused, nothing was changed: %w", refusalReason(via, code, res, o.candidate))
	}
	chosen := res.Plan.Candidate
	when := "now"
	if !at.IsZero() {
		when = "at " + at.Format(time.RFC3339) + " (in " + time.Until(at).Round(time.Second).String() + ")"
	}
	target := chosen
	if chosen == "" {
		// A scheduled switchover that is not possible right now (agent.Deferrable):
		// the leader checks again at the scheduled time.
		target = o.candidate
		if target == "" {
			target = "the best eligible replica then"
		}
		fmt.Fprintf(c.e.stdout, "Note: %s.\n", res.Message)
	}
	if o.dryRun {
		fmt.Fprintf(c.e.stdout, "Dry run: would switch over from %s to %s %s. Nothing was changed.\n", leader, target, when)
		if pausedNow(cl) {
			fmt.Fprintln(c.e.stdout, "Note: the cluster is paused (maintenance mode); steward switchover refuses to run until steward resume.")
		}
		if cl.Switchover != nil {
			fmt.Fprintf(c.e.stdout, "Note: a switchover is already pending (%s); cancel it first.\n", describeSwitchover(cl.Switchover.Value))
		}
		return nil
	}
	if !o.force {
		q := fmt.Sprintf("Switch over from %s to %s %s?", leader, target, when)
		if !at.IsZero() && o.candidate == "" && chosen != "" {
			q = fmt.Sprintf("Schedule a switchover from %s %s (to the best eligible replica then; %s now)?", leader, when, chosen)
		}
		if err := c.confirm(q, "--force"); err != nil {
			return err
		}
	}
	body.DryRun = false
	if at.IsZero() {
		body.Candidate = chosen
	}
	c.start = time.Now()
	h, err := c.history(ctx)
	if err != nil {
		return err
	}
	res, code, via, err = c.postSwitchover(ctx, cl, body, false, []string{via.name})
	if err != nil {
		return err
	}
	switch code {
	case http.StatusAccepted, http.StatusOK:
	case http.StatusServiceUnavailable:
		return unknownErr(fmt.Errorf("storing the switchover request may have failed (%s): check steward list", res.Error))
	default:
		return fmt.Errorf("switchover refused, nothing was changed: %w", refusalReason(via, code, res, o.candidate))
	}
	if res.Request == nil {
		return unknownErr(fmt.Errorf("%s accepted the request but did not return it: check steward list", via.name))
	}
	req := *res.Request
	if !req.ScheduledAt.IsZero() {
		c.say("scheduled: switchover %s (stored in etcd; steward list shows it; steward switchover --cancel cancels it)", describeSwitchover(req))
		return nil
	}
	c.say("requested: switchover from %s to %s (stored in etcd through %s's API)", leader, req.Candidate, via.name)
	w := newHandoverWatch(leader, req.Candidate, cl.Leader.Term, lastIndex(h), req.RequestedAt)
	return c.follow(w, o.timeout)
}

// postSwitchover sends a switchover (or failover) request to the first
// member's API that answers.
func (c *ctl) postSwitchover(ctx context.Context, cl *dcs.Cluster, b api.SwitchoverBody, failover bool, prefer []string) (api.ActionResult, int, apiTarget, error) {
	var res api.ActionResult
	var code int
	var via apiTarget
	err := c.firstAnswer(cl, prefer, func(t apiTarget) error {
		var err error
		via = t
		res, code, err = c.api.Switchover(ctx, t.url, b, failover, false)
		return err
	})
	return res, code, via, err
}

// refusalReason explains a refused request. A named candidate that is not
// eligible is explained by its own reasons (the agent's message would offer
// --force, which for a switchover only skips the confirmation).
func refusalReason(via apiTarget, code int, res api.ActionResult, candidate string) error {
	if res.Plan != nil && candidate != "" {
		for _, m := range res.Plan.Members {
			if m.Name == candidate && !m.Eligible && len(m.Reasons) > 0 && !strings.HasPrefix(m.Reasons[0], "unreachable:") {
				return fmt.Errorf("candidate %s is not eligible: %s", candidate, strings.Join(m.Reasons, "; "))
			}
		}
	}
	return apiRefusal(via, code, res.Error)
}

// printPlan shows the members as the plan judged them: role, state, lag
// and whether each could be the candidate.
func (c *ctl) printPlan(cl *dcs.Cluster, p *agent.SwitchoverPlan, ok bool) {
	leader := "no leader"
	if cl.Leader != nil {
		leader = fmt.Sprintf("leader %s (term %d)", cl.Leader.Name, cl.Leader.Term)
	}
	fmt.Fprintf(c.e.stdout, "Cluster %s, %s. Candidates, as their agents answer now (LAG: replay lag behind the leader's last position):\n", c.cfg.Cluster, leader)
	tw := tabwriter.NewWriter(c.e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tSTATE\tTL\tLAG\tCANDIDATE")
	if p.Leader != "" {
		m := cl.Members[p.Leader]
		fmt.Fprintf(tw, "%s\tleader\t%s\t%s\t-\tcurrent leader, at %s\n", p.Leader, orDash(m.State), tl(m.Timeline), posText(m.Position))
	}
	var chosenPos string
	for _, mc := range p.Members {
		if mc.Name == p.Candidate {
			chosenPos = posText(mc.Position)
		}
	}
	for _, mc := range p.Members {
		m := cl.Members[mc.Name] // absent when its key expired: shown as "-"
		role := orDash(m.Role)
		var verdict string
		switch {
		case ok && mc.Name == p.Candidate && mc.Eligible:
			verdict = "eligible <- chosen"
		case ok && mc.Name == p.Candidate:
			verdict = "forced <- chosen (not eligible: " + strings.Join(mc.Reasons, "; ") + ")"
		case mc.Eligible && ok && p.Candidate != "":
			verdict = fmt.Sprintf("eligible, not chosen: at %s; %s at %s (highest position, then failover_priority, then name)", posText(mc.Position), p.Candidate, chosenPos)
		case mc.Eligible:
			verdict = "eligible"
		default:
			verdict = "no: " + strings.Join(mc.Reasons, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", mc.Name, role, orDash(m.State), tl(m.Timeline), lagText(dcs.RoleReplica, mc.LagBytes), verdict)
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func lastIndex(h []dcs.HistoryRecord) int64 {
	if len(h) == 0 {
		return -1
	}
	return h[len(h)-1].Index
}

// ---------------------------------------------------------------------------
// Following a switchover or manual failover in the DCS.

type watchStatus int

const (
	watching watchStatus = iota
	watchDone
	watchFailed
)

// handoverWatch turns successive DCS views into the steps of a switchover
// or manual failover, each reported once: the old leader demoting, the
// candidate caught up at the final position, the key taken, the promotion,
// the other members following.
type handoverWatch struct {
	from        string // the leader that carries the request out ("": none)
	to          string // the candidate
	term        int64  // from's term when the request was made (0: no leader)
	hist        int64  // the newest history index before the request (-1: none)
	requestedAt time.Time
	seen        map[string]bool
	following   map[string]bool
	goneAt      time.Time // when the request was first seen gone without a new leader
	demotingAt  time.Time
	promotedAt  time.Time
}

func newHandoverWatch(from, to string, term, hist int64, requestedAt time.Time) *handoverWatch {
	return &handoverWatch{from: from, to: to, term: term, hist: hist, requestedAt: requestedAt,
		seen: map[string]bool{}, following: map[string]bool{}}
}

// requestGrace is how long a vanished request without a new leader is
// given for its failure to reach the history before the watch reports it.
const requestGrace = time.Second

// observe reports the new steps seen in cl, and whether the request is
// done, failed (with the reason) or still going.
func (w *handoverWatch) observe(cl *dcs.Cluster, now time.Time) ([]string, watchStatus, string) {
	var out []string
	once := func(key, line string) {
		if !w.seen[key] {
			w.seen[key] = true
			out = append(out, line)
		}
	}
	var ours *dcs.Switchover
	if sw := cl.Switchover; sw != nil && sw.Value.RequestedAt.Equal(w.requestedAt) {
		v := sw.Value
		ours = &v
	}
	if ours != nil && w.from != "" {
		switch ours.Phase {
		case agent.PhaseDemoting:
			once("demoting", fmt.Sprintf("demoting: %s stopped taking writes; waiting for %s to replay its final position", w.from, w.to))
		case agent.PhaseHandover:
			once("demoting", fmt.Sprintf("demoting: %s stopped taking writes", w.from))
			once("handover", fmt.Sprintf("%s caught up at %s, %s's final position: %s hands the leader key over", w.to, posText(ours.FinalPosition), w.from, w.from))
		}
	}
	if w.seen["demoting"] && w.demotingAt.IsZero() {
		w.demotingAt = now
	}
	newLeader := cl.Leader != nil && cl.Leader.Name == w.to && cl.Leader.Term != w.term
	if newLeader {
		if w.from != "" {
			once("demoting", fmt.Sprintf("demoting: %s stopped taking writes", w.from))
			once("handover", fmt.Sprintf("%s handed the leader key over", w.from))
		}
		once("took", fmt.Sprintf("%s took the leader key (term %d)", w.to, cl.Leader.Term))
		if m, ok := cl.Members[w.to]; ok && m.Writable {
			once("promoted", fmt.Sprintf("promoted: %s accepts writes (timeline %d)", w.to, m.Timeline))
			if w.promotedAt.IsZero() {
				w.promotedAt = now
			}
		}
	}
	if w.seen["promoted"] {
		for _, n := range sortedNames(cl) {
			m := cl.Members[n]
			if n == w.to || w.following[n] || m.State != agent.StateStreaming || m.Following != w.to {
				continue
			}
			w.following[n] = true
			who := n
			if n == w.from {
				who = n + ", the old primary,"
			}
			out = append(out, fmt.Sprintf("%s streams from %s", who, w.to))
		}
		if w.from == "" || w.following[w.from] {
			return out, watchDone, ""
		}
		return out, watching, ""
	}
	if newLeader {
		return out, watching, ""
	}
	// Not (yet) the candidate's: did it fail?
	newer := func() *dcs.HistoryRecord {
		if h := cl.LastHistory; h != nil && h.Index > w.hist {
			return h
		}
		return nil
	}
	if cl.Leader != nil && cl.Leader.Name != w.to && cl.Leader.Name != w.from {
		reason := fmt.Sprintf("%s took the leader key instead of %s", cl.Leader.Name, w.to)
		if h := newer(); h != nil && h.Reason != "" {
			reason += ": " + h.Reason
		}
		return out, watchFailed, reason
	}
	if ours != nil {
		w.goneAt = time.Time{}
		return out, watching, ""
	}
	if cl.Leader == nil {
		return out, watching, "" // between the handover and the candidate taking the key
	}
	// The request is gone and the old leader still leads.
	if h := newer(); h != nil && h.Kind == "switchover-failed" {
		return out, watchFailed, h.Reason
	}
	if w.goneAt.IsZero() {
		w.goneAt = now
	}
	if now.Sub(w.goneAt) < requestGrace {
		return out, watching, ""
	}
	return out, watchFailed, "the request was removed (cancelled?) before it was carried out"
}

// follow polls etcd and prints the steps until the request is done, has
// failed, or the timeout passes.
func (c *ctl) follow(w *handoverWatch, timeout time.Duration) error {
	ctx, cancel := c.waitContext(timeout)
	defer cancel()
	what := "switchover"
	if w.from == "" {
		what = "failover"
	}
	var lastErr string
	var failure string
	err := poll(ctx, 50*time.Millisecond, func() (bool, error) {
		cl, err := c.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if msg := err.Error(); msg != lastErr {
				c.say("reading etcd failed (retrying): %v", err)
				lastErr = msg
			}
			return false, nil
		}
		lines, st, reason := w.observe(cl, time.Now())
		for _, l := range lines {
			c.say("%s", l)
		}
		switch st {
		case watchDone:
			return true, nil
		case watchFailed:
			failure = reason
			return true, nil
		}
		return false, nil
	})
	if failure != "" {
		if w.from != "" {
			return fmt.Errorf("%s failed: %s; %s still leads", what, failure, w.from)
		}
		return fmt.Errorf("%s failed: %s", what, failure)
	}
	if err == nil {
		c.say("%s done in %.2fs: %s leads%s", what, time.Since(c.start).Seconds(), w.to, followSummary(w))
		return nil
	}
	if w.seen["promoted"] {
		// It happened; the old primary has not come back (yet).
		c.say("%s done: %s leads; warning: %s does not stream from %s yet (check steward list)", what, w.to, w.from, w.to)
		return nil
	}
	if w.from == "" || w.seen["handover"] {
		c.explainCandidate(w.to)
	}
	return waitErr(ctx, what+" to "+w.to, timeout)
}

func followSummary(w *handoverWatch) string {
	s := ""
	if w.from != "" {
		s = ", " + w.from + " follows"
	}
	if !w.demotingAt.IsZero() && !w.promotedAt.IsZero() {
		s += fmt.Sprintf("; writes stopped for about %.2fs (as seen in etcd)", w.promotedAt.Sub(w.demotingAt).Seconds())
	}
	return s
}

// explainCandidate prints what the candidate's agent is doing (its last
// decision), when its API answers.
func (c *ctl) explainCandidate(name string) {
	ctx, cancel := context.WithTimeout(c.e.context(), 3*time.Second)
	defer cancel()
	cl, err := c.load(ctx)
	if err != nil {
		return
	}
	m, ok := cl.Members[name]
	if !ok || m.APIURL == "" {
		c.say("%s has no member key (its agent is not running?)", name)
		return
	}
	st, err := c.api.StatusBody(ctx, m.APIURL)
	if err != nil {
		c.say("%s's API does not answer: %s", name, shortErr(err))
		return
	}
	c.say("%s's agent says: %s", name, st.Decision)
}

// ---------------------------------------------------------------------------
// steward failover

type failoverOpts struct {
	candidate string
	force     bool
	yes       bool
	timeout   time.Duration
}

func newFailoverCmd(e *env, g *globals) *cobra.Command {
	var o failoverOpts
	cmd := &cobra.Command{
		Use:   "failover --candidate M [--force] [--yes]",
		Short: "Promote a named replica when there is no healthy leader (manual failover)",
		Long: `Promote the named member now, when the cluster has no leader (for example
while automatic failover could not choose, or after a pause). The candidate
must be healthy and within maximum_lag_on_failover of the last leader
position, or the failover is refused with the reason; --force overrides
these checks (transactions the candidate has not received are then lost)
and, when the cluster still has a leader, makes that leader hand over
to the candidate.

The plan is shown and confirmed first, unless --force or --yes. The command
prints each step and waits (--timeout): exit 0 when the candidate leads, 1
when refused or failed, 3 when the outcome is not known yet.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.candidate == "" {
				return usageErr(errors.New("--candidate is required: name the member to promote (steward list shows them)"))
			}
			if o.timeout <= 0 {
				return usageErr(fmt.Errorf("--timeout %v: expected a positive duration such as 60s", o.timeout))
			}
			c, err := openCtl(e, g, true)
			if err != nil {
				return err
			}
			defer c.close()
			return c.failover(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.candidate, "candidate", "", "the member to promote (required)")
	f.BoolVarP(&o.force, "force", "f", false, "override the candidate's lag and health checks (and a running leader), and do not ask")
	f.BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation; the candidate's checks still apply")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "how long to wait for the outcome")
	return cmd
}

func (c *ctl) failover(o failoverOpts) error {
	ctx, cancel := context.WithTimeout(c.e.context(), 30*time.Second)
	defer cancel()
	cl, err := c.load(ctx)
	if err != nil {
		return err
	}
	if _, err := c.member(cl, o.candidate); err != nil {
		return err
	}
	from := ""
	var term int64
	if cl.Leader != nil {
		from, term = cl.Leader.Name, cl.Leader.Term
		if from == o.candidate {
			return usageErr(fmt.Errorf("--candidate %s: %s is already the leader", o.candidate, from))
		}
		if !o.force {
			return fmt.Errorf("%s leads the cluster: use steward switchover --candidate %s (planned, loses nothing), or steward failover --force to hand over without the checks", from, o.candidate)
		}
	}
	if pausedNow(cl) {
		return errors.New("the cluster is paused (maintenance mode): no member takes the leader key while paused, so the failover is refused; run steward resume first")
	}
	if cl.Switchover != nil {
		return fmt.Errorf("a switchover is already pending (%s): cancel it first with steward switchover --cancel", describeSwitchover(cl.Switchover.Value))
	}
	body := api.SwitchoverBody{Candidate: o.candidate, Force: o.force, DryRun: true}
	res, code, via, err := c.postSwitchover(ctx, cl, body, true, []string{o.candidate})
	if err != nil {
		return err
	}
	if res.Plan != nil {
		c.printPlan(cl, res.Plan, code == http.StatusOK)
	}
	if code != http.StatusOK {
		reason := refusalReason(via, code, res, o.candidate)
		hint := ""
		if !o.force && strings.Contains(reason.Error(), "not eligible") {
			hint = " (--force promotes it anyway; what it has not received is lost)"
		}
		return fmt.Errorf("failover refused, nothing was changed: %w%s", reason, hint)
	}
	if !o.force && !o.yes {
		q := fmt.Sprintf("Promote %s now (manual failover; the cluster has no leader)?", o.candidate)
		if from != "" {
			q = fmt.Sprintf("Make %s hand over to %s now?", from, o.candidate)
		}
		if err := c.confirm(q, "--yes"); err != nil {
			return err
		}
	}
	body.DryRun = false
	c.start = time.Now()
	h, err := c.history(ctx)
	if err != nil {
		return err
	}
	res, code, via, err = c.postSwitchover(ctx, cl, body, true, []string{via.name})
	if err != nil {
		return err
	}
	switch code {
	case http.StatusAccepted, http.StatusOK:
	case http.StatusServiceUnavailable:
		return unknownErr(fmt.Errorf("storing the failover request may have failed (%s): check steward list", res.Error))
	default:
		return fmt.Errorf("failover refused, nothing was changed: %w", refusalReason(via, code, res, o.candidate))
	}
	if res.Request == nil {
		return unknownErr(fmt.Errorf("%s accepted the request but did not return it: check steward list", via.name))
	}
	forced := ""
	if o.force {
		forced = ", forced"
	}
	if from != "" {
		c.say("requested: %s hands over to %s (manual failover%s; stored in etcd through %s's API)", from, o.candidate, forced, via.name)
	} else {
		c.say("requested: promote %s (manual failover%s, no leader; stored in etcd through %s's API)", o.candidate, forced, via.name)
	}
	w := newHandoverWatch(from, o.candidate, term, lastIndex(h), res.Request.RequestedAt)
	return c.follow(w, o.timeout)
}
