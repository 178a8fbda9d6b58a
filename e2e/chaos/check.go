package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/dcs"
)

// The invariants, checked after every fault and its healing:
//
//  1. split brain: no write acknowledged by a member after a newer primary
//     acknowledged one, beyond the bound of the fencing mode (0 with
//     fencing required);
//  2. loss: synchronous mode, no acknowledged write missing; asynchronous,
//     the WAL distance between a lost write and the point where its
//     timeline ended is within maximum_lag_on_failover;
//  3. recovery: one writable primary (the leader key's holder, reached
//     through HAProxy) and every replica streaming from it within a bound;
//  4. explained: a member that is not back says why in `steward list`;
//  5. audited: every primary that took writes (member, timeline) is in the
//     DCS history (rule 8), and with fencing required every failover was
//     preceded by a fencing of the former primary that a hook confirmed
//     (rule 2).
//
// 1, 2 and 5 are pure functions of the recorded history, so that tests feed
// them histories with a known violation.

// Violation is one broken invariant.
type Violation struct {
	Invariant int    `json:"invariant"`
	What      string `json:"what"`
}

func (v Violation) String() string { return fmt.Sprintf("invariant %d: %s", v.Invariant, v.What) }

// CheckSplitBrain returns a violation for each timeline whose primary
// acknowledged a write that it received (Start) more than bound after a
// member on a newer timeline had acknowledged one (End), and for each
// timeline on which two different members acknowledged writes (two
// promotions to the same timeline number: forked histories).
//
// Timelines order the primaries: every promotion moves to a new, higher
// timeline. Start and End are on one monotonic clock, and a write's commit
// happened between them, so a hit is a proof, not a guess: the old
// primary committed after the new one had.
func CheckSplitBrain(ops []Op, bound time.Duration) []Violation {
	var out []Violation
	byTL := map[int64][]Op{}
	for _, o := range ops {
		byTL[o.Timeline] = append(byTL[o.Timeline], o)
	}
	tls := make([]int64, 0, len(byTL))
	for tl := range byTL {
		tls = append(tls, tl)
	}
	sort.Slice(tls, func(i, j int) bool { return tls[i] < tls[j] })
	for _, tl := range tls {
		members := map[string]bool{}
		for _, o := range byTL[tl] {
			members[o.Member] = true
		}
		if len(members) > 1 {
			names := make([]string, 0, len(members))
			for n := range members {
				names = append(names, n)
			}
			sort.Strings(names)
			out = append(out, Violation{1, fmt.Sprintf("members %s all acknowledged writes on timeline %d: two primaries on one timeline (forked history)", strings.Join(names, ", "), tl)})
		}
	}
	// firstNewer[i]: the earliest acknowledgement on any timeline above
	// tls[i].
	type ack struct {
		at time.Duration
		op Op
	}
	firstNewer := make([]*ack, len(tls))
	var best *ack
	for i := len(tls) - 1; i >= 0; i-- {
		firstNewer[i] = best
		for _, o := range byTL[tls[i]] {
			if best == nil || o.End < best.at {
				best = &ack{at: o.End, op: o}
			}
		}
	}
	for i, tl := range tls {
		fn := firstNewer[i]
		if fn == nil {
			continue
		}
		var worst *Op
		n := 0
		for _, o := range byTL[tl] {
			if o.Start > fn.at+bound {
				n++
				if worst == nil || o.End > worst.End {
					o := o
					worst = &o
				}
			}
		}
		if worst != nil {
			out = append(out, Violation{1, fmt.Sprintf("split brain: %s (timeline %d) acknowledged %d write(s) sent after %s (timeline %d) had acknowledged write %d at %v; the last, id %d via %s, was sent at %v and acknowledged at %v, %v after the newer primary's first (bound %v)",
				worst.Member, tl, n, fn.op.Member, fn.op.Timeline, fn.op.ID, fmtOffset(fn.at), worst.ID, worst.Writer, fmtOffset(worst.Start), fmtOffset(worst.End),
				(worst.Start - fn.at).Round(time.Millisecond), bound)})
		}
	}
	return out
}

// Lineage is the final primary's history: its timeline, and for every
// ancestor timeline the WAL position where it ended (the switch point).
type Lineage struct {
	Timeline int64
	Ends     map[int64]uint64
}

// ParseHistory reads a PostgreSQL timeline history file ("parent
// switchpoint reason" lines) of timeline tl.
func ParseHistory(tl int64, text string) Lineage {
	l := Lineage{Timeline: tl, Ends: map[int64]uint64{}}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		parent, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		l.Ends[parent] = parseLSN(f[1])
	}
	return l
}

// Loss is what the loss check found.
type Loss struct {
	Lost     int    `json:"lost"`      // acknowledged writes missing from the final primary
	MaxBytes uint64 `json:"max_bytes"` // the largest WAL distance from a lost write to its timeline's end
}

// CheckLoss compares the acknowledged writes with the ids present on the
// final primary. Synchronous mode: any missing write is a violation.
// Asynchronous: a missing write must come after the point where its
// timeline ended in the final history (it was on the discarded tail of a
// former primary), and within maxLag bytes of that point.
func CheckLoss(ops []Op, present map[int64]bool, lin Lineage, syncMode string, maxLag int64) (Loss, []Violation) {
	var l Loss
	var out []Violation
	type agg struct {
		n     int
		first Op
		bytes uint64
	}
	bad := map[string]*agg{}
	note := func(key string, o Op, bytes uint64) {
		a := bad[key]
		if a == nil {
			a = &agg{first: o}
			bad[key] = a
		}
		a.n++
		if bytes > a.bytes {
			a.bytes = bytes
		}
	}
	for _, o := range ops {
		if present[o.ID] {
			continue
		}
		l.Lost++
		end, onLineage := lin.Ends[o.Timeline]
		switch {
		case o.Timeline == lin.Timeline:
			note(fmt.Sprintf("lost on the current timeline %d (acknowledged by %s)", o.Timeline, o.Member), o, 0)
		case !onLineage:
			note(fmt.Sprintf("acknowledged by %s on timeline %d, which is not in the final primary's history (timeline %d)", o.Member, o.Timeline, lin.Timeline), o, 0)
		case o.LSN < end:
			note(fmt.Sprintf("acknowledged by %s on timeline %d before its switch point %s, yet missing", o.Member, o.Timeline, formatLSN(end)), o, 0)
		default:
			b := o.LSN - end
			if b > l.MaxBytes {
				l.MaxBytes = b
			}
			if syncMode != "off" && syncMode != "" {
				note(fmt.Sprintf("synchronous_mode %s: acknowledged by %s on timeline %d, lost in the failover", syncMode, o.Member, o.Timeline), o, b)
			} else if int64(b) > maxLag {
				note(fmt.Sprintf("acknowledged by %s on timeline %d, lost %d bytes after the switch point %s: more than maximum_lag_on_failover (%d)", o.Member, o.Timeline, b, formatLSN(end), maxLag), o, b)
			}
		}
	}
	keys := make([]string, 0, len(bad))
	for k := range bad {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a := bad[k]
		out = append(out, Violation{2, fmt.Sprintf("%d acknowledged write(s) lost: %s (first: id %d via %s at %v, lsn %s)", a.n, k, a.first.ID, a.first.Writer, fmtOffset(a.first.End), formatLSN(a.first.LSN))})
	}
	return l, out
}

func fmtOffset(d time.Duration) string { return "+" + d.Round(time.Millisecond).String() }

// Health is the outcome of one look at the cluster for invariant 3.
type Health struct {
	Leader  string
	Problem string // empty: healthy
}

// CheckHealth looks once: the leader key's holder answers /primary 200,
// takes a write through HAProxy, is the only member out of recovery; every
// other member streams from it (its own key says so and the leader's
// pg_stat_replication agrees); in a synchronous mode the sync key names at
// least one standby of this leader.
func (c *Cluster) CheckHealth() Health {
	cl := c.Load()
	if cl == nil {
		return Health{Problem: "the DCS cannot be read"}
	}
	if cl.Leader == nil {
		return Health{Problem: "no leader key"}
	}
	h := Health{Leader: cl.Leader.Name}
	leader := c.Member(cl.Leader.Name)
	if leader == nil {
		h.Problem = "the leader key names an unknown member " + cl.Leader.Name
		return h
	}
	if code := leader.HTTPCode("/primary"); code != 200 {
		h.Problem = fmt.Sprintf("%s holds the key but /primary answers %d", leader.Name, code)
		return h
	}
	for _, m := range c.Members {
		mm, ok := cl.Members[m.Name]
		if !ok {
			h.Problem = m.Name + " has no member key"
			return h
		}
		if m == leader {
			if !mm.Writable || mm.State != agent.StateRunning {
				h.Problem = fmt.Sprintf("leader %s is %s (writable %v)", m.Name, mm.State, mm.Writable)
				return h
			}
		} else if mm.State != agent.StateStreaming || mm.Following != leader.Name {
			h.Problem = fmt.Sprintf("%s is %s following %q, not streaming from %s", m.Name, mm.State, mm.Following, leader.Name)
			return h
		}
	}
	// Synchronous modes: back to synchronous, not only streaming. A leader
	// that fell back to asynchronous (mode on, no standby during the fault)
	// has emptied the sync key, and until it names a standby again nobody
	// may be promoted (rule 6, as in Patroni): a fault injected in that
	// window rightly finds no successor. Found by step 165 of seed 20261208.
	if m := c.S.SynchronousMode; m != "" && m != "off" {
		// Quorum 0 with members listed promises nothing either (a MariaDB
		// leader waiting for a former acknowledger to report off; found by
		// step 9 of seed 20261212).
		if cl.Sync == nil || cl.Sync.Value.Leader != leader.Name || len(cl.Sync.Value.Members) == 0 || cl.Sync.Value.Quorum < 1 {
			h.Problem = fmt.Sprintf("synchronous_mode %s: the sync key names no synchronous standby of %s yet", m, leader.Name)
			return h
		}
	}
	if c.S.IsMySQL() {
		h.Problem = c.myHealth(leader)
		return h
	}
	ctx := context.Background()
	for _, m := range c.Members {
		var inRecovery bool
		if err := m.Query(ctx, "SELECT pg_is_in_recovery()", &inRecovery); err != nil {
			h.Problem = fmt.Sprintf("%s: %v", m.Name, err)
			return h
		}
		if inRecovery == (m == leader) {
			h.Problem = fmt.Sprintf("%s: pg_is_in_recovery() = %v", m.Name, inRecovery)
			return h
		}
	}
	var streaming int64
	if err := leader.Query(ctx, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", &streaming); err != nil || streaming != int64(len(c.Members)-1) {
		h.Problem = fmt.Sprintf("%s streams to %d replicas (%v), want %d", leader.Name, streaming, err, len(c.Members)-1)
		return h
	}
	var via string
	if err := queryRow(ctx, c.HAProxyDSN(), "SELECT current_setting('cluster_name') FROM (SELECT txid_current()) t", &via); err != nil || via != leader.Name {
		h.Problem = fmt.Sprintf("a write through HAProxy went to %q (%v), not to the leader %s", via, err, leader.Name)
		return h
	}
	return h
}

// WaitHealthy waits until CheckHealth passes; it returns the leader and
// how long it took.
func (c *Cluster) WaitHealthy(within time.Duration) (string, error) {
	start := time.Now()
	var last Health
	for time.Since(start) < within {
		last = c.CheckHealth()
		if last.Problem == "" {
			return last.Leader, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("not healthy after %v: %s", within, last.Problem)
}

// ListMember is a member as `steward list -o json` shows it.
type ListMember struct {
	Name       string   `json:"name"`
	Role       string   `json:"role"`
	State      string   `json:"state"`
	Reason     string   `json:"reason"`
	Ineligible []string `json:"ineligible_reasons"`
}

// List runs `steward list -o json`.
func (c *Cluster) List() (map[string]ListMember, string, error) {
	out, err := c.Steward("list", "-o", "json")
	if err != nil {
		return nil, out, fmt.Errorf("steward list: %v: %s", err, out)
	}
	var v struct {
		Members []ListMember `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, out, err
	}
	res := map[string]ListMember{}
	for _, m := range v.Members {
		res[m.Name] = m
	}
	return res, out, nil
}

// CheckExplained is invariant 4: every member that is not a streaming
// replica or the running leader shows a reason in `steward list`.
func (c *Cluster) CheckExplained() []Violation {
	lm, out, err := c.List()
	if err != nil {
		return []Violation{{4, err.Error()}}
	}
	var v []Violation
	for _, m := range c.Members {
		e, ok := lm[m.Name]
		switch {
		case !ok:
			v = append(v, Violation{4, fmt.Sprintf("%s is missing from steward list although its agent runs:\n%s", m.Name, out)})
		case e.State == agent.StateStreaming || (e.Role == "leader" && e.State == agent.StateRunning):
		case e.Reason == "" && len(e.Ineligible) == 0:
			v = append(v, Violation{4, fmt.Sprintf("%s is %s (%s) with no reason in steward list", m.Name, e.State, e.Role)})
		}
	}
	return v
}

// PresentIDs returns which of ids the member's table holds.
func (m *Member) PresentIDs(ids []int64) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.DSN())
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	out := map[int64]bool{}
	for len(ids) > 0 {
		n := min(len(ids), 20000)
		rows, err := conn.Query(ctx, "SELECT id FROM chaos WHERE id = ANY($1)", ids[:n])
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		ids = ids[n:]
	}
	return out, nil
}

// Lineage reads the member's current timeline and its history file.
func (m *Member) Lineage() (Lineage, error) {
	ctx := context.Background()
	var tl int64
	if err := m.Query(ctx, "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint", &tl); err != nil {
		return Lineage{}, err
	}
	if tl == 1 {
		return Lineage{Timeline: 1, Ends: map[int64]uint64{}}, nil
	}
	var text string
	if err := m.Query(ctx, fmt.Sprintf("SELECT pg_read_file('pg_wal/%08X.history')", tl), &text); err != nil {
		return Lineage{}, err
	}
	return ParseHistory(tl, text), nil
}

// CheckAudit is invariant 5: each (member, timeline) that acknowledged
// writes has a history record naming it the new leader on that timeline
// (bootstrap for timeline 1); with fencing required, each failover from
// another member has, for the same term, a fencing record that a hook
// confirmed.
func CheckAudit(ops []Op, hist []dcs.HistoryRecord, fencingMode string) []Violation {
	var out []Violation
	type key struct {
		member string
		tl     int64
	}
	seen := map[key]Op{}
	for _, o := range ops {
		k := key{o.Member, o.Timeline}
		if _, ok := seen[k]; !ok {
			seen[k] = o
		}
	}
	keys := make([]key, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].tl < keys[j].tl || keys[i].tl == keys[j].tl && keys[i].member < keys[j].member
	})
	for _, k := range keys {
		found := false
		for _, h := range hist {
			if h.NewLeader == k.member && (h.Timeline == k.tl || k.tl == 1 && h.Kind == "bootstrap") && h.Kind != "fencing" && h.Kind != "rewind" && h.Kind != "reinit" {
				found = true
				break
			}
		}
		if !found {
			o := seen[k]
			out = append(out, Violation{5, fmt.Sprintf("%s acknowledged writes on timeline %d (first: id %d at %v) but no history record names it leader on that timeline", k.member, k.tl, o.ID, fmtOffset(o.End))})
		}
	}
	return append(out, CheckFencedFailovers(hist, fencingMode)...)
}

// CheckFencedFailovers is the second half of invariant 5: with fencing
// required, each failover from another member has, for the same term, a
// fencing record that a hook confirmed.
func CheckFencedFailovers(hist []dcs.HistoryRecord, fencingMode string) []Violation {
	var out []Violation
	if fencingMode != "required" {
		return out
	}
	for i, h := range hist {
		if h.Kind != "failover" || h.OldLeader == "" || h.OldLeader == h.NewLeader {
			continue
		}
		fenced := false
		for _, f := range hist[:i] {
			if f.Kind == "fencing" && f.Term == h.Term && f.NewLeader == h.NewLeader && strings.Contains(f.Reason, "confirmed by a hook") && !strings.Contains(f.Reason, "not confirmed") {
				fenced = true
			}
		}
		if !fenced {
			out = append(out, Violation{5, fmt.Sprintf("history record %d: failover %s -> %s (term %d, timeline %d) without a confirmed fencing of %s before it (fencing.mode required)",
				h.Index, h.OldLeader, h.NewLeader, h.Term, h.Timeline, h.OldLeader)})
		}
	}
	return out
}
