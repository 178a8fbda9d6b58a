package chaos

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Bounds are the limits the invariants are checked against.
type Bounds struct {
	// SplitBrain: how long after a newer primary's first acknowledged write
	// an older one may still acknowledge (0 with fencing required).
	SplitBrain time.Duration
	// Recovery: from the heal to one writable primary with every replica
	// streaming (invariant 3).
	Recovery time.Duration
}

// StepResult is what one step did and found.
type StepResult struct {
	Step
	Member       string        `json:"member,omitempty"` // the member (or etcd node) hit
	LeaderBefore string        `json:"leader_before"`
	LeaderAfter  string        `json:"leader_after"`
	Injected     time.Duration `json:"injected"` // on the workload clock
	Healed       time.Duration `json:"healed"`
	Recovery     time.Duration `json:"recovery"`      // heal -> healthy (invariant 3)
	WriteGap     time.Duration `json:"max_write_gap"` // longest gap between acknowledged writes through HAProxy in the step
	Acked        int           `json:"acked"`         // writes acknowledged during the step
	Lost         int           `json:"lost"`
	LostBytes    uint64        `json:"lost_bytes"`
	Violations   []Violation   `json:"violations,omitempty"`
	Note         string        `json:"note,omitempty"`
}

// Runner runs a schedule against a cluster with the workload on.
type Runner struct {
	C    *Cluster
	W    *Workload
	B    Bounds
	Log  *slog.Logger
	seen map[string]bool // split-brain findings already reported
	from time.Duration   // start of the ops not yet loss-checked
	// OnInject and OnHeal, when set, run right after the fault is
	// injected on a member and right after it is healed (tests use them
	// to turn the agent's fault points on and off).
	OnInject func(target *Member)
	OnHeal   func(target *Member)
	// SaveDir, when set, receives a copy of every log (agents,
	// PostgreSQL, etcd, HAProxy) of a step that broke an invariant, in
	// SaveDir/step-<n>/.
	SaveDir string
	// txBytes: MariaDB, the measured binary-log bytes of one workload
	// transaction (loss distances are counted in transactions).
	txBytes float64
}

// NewRunner starts the workload on c (the test table first).
func NewRunner(c *Cluster, b Bounds, log *slog.Logger) (*Runner, error) {
	leader, err := c.WaitHealthy(60 * time.Second)
	if err != nil {
		return nil, err
	}
	r := &Runner{C: c, B: b, Log: log, seen: map[string]bool{}}
	var targets []writerTarget
	if c.S.IsMySQL() {
		if r.txBytes, err = c.myCalibrate(c.Member(leader)); err != nil {
			return nil, fmt.Errorf("creating the test table and measuring a transaction's binlog size: %w", err)
		}
		log.Info("workload transaction size measured", "binlog_bytes_per_transaction", int(r.txBytes))
		targets = append(targets, writerTarget{name: "haproxy", dsn: c.HAProxyDSN(), mysql: true})
		for _, m := range c.Members {
			targets = append(targets, writerTarget{name: "direct-" + m.Name, dsn: myDSN(appUser, appPass, fmt.Sprintf("%s:%d", m.Host.IP, myPort)), mysql: true})
		}
	} else {
		if err := c.Member(leader).Exec("CREATE TABLE IF NOT EXISTS chaos(id bigint PRIMARY KEY, writer text, at timestamptz DEFAULT clock_timestamp())"); err != nil {
			return nil, err
		}
		targets = append(targets, writerTarget{name: "haproxy", dsn: c.HAProxyDSN()})
		for _, m := range c.Members {
			targets = append(targets, writerTarget{name: "direct-" + m.Name, dsn: m.DSN()})
		}
	}
	r.W = StartWorkload(time.Now(), targets, 25*time.Millisecond)
	return r, nil
}

// Run runs one step: inject, hold, heal, wait for recovery, check.
func (r *Runner) Run(s Step) StepResult {
	c := r.C
	res := StepResult{Step: s}
	leader, err := c.WaitHealthy(r.B.Recovery)
	if err != nil {
		res.Violations = append(res.Violations, Violation{3, "before the fault: " + err.Error()})
		return res
	}
	res.LeaderBefore = leader
	start := r.W.Now()
	res.Injected = start
	heal, note, err := r.inject(s, leader, &res)
	if err != nil {
		// The faults that wait on the cluster (a compound fault's new
		// primary, the etcd leader) fail here when it does not recover.
		res.Violations = append(res.Violations, Violation{3, "during the fault: " + err.Error()})
		if heal != nil {
			heal()
		}
		_ = c.Lab.Heal()
		r.saveLogs(fmt.Sprintf("step-%d", s.N))
		return res
	}
	res.Note = note
	target := c.Member(res.Member)
	if r.OnInject != nil {
		r.OnInject(target)
	}
	r.Log.Info("fault injected", "step", s.N, "kind", s.Kind, "variant", s.Variant, "target", s.Target, "member", res.Member,
		"leader", leader, "hold", s.Hold.Round(100*time.Millisecond), "note", note)
	r.hold(s, leader, &res)
	heal()
	if r.OnHeal != nil {
		r.OnHeal(target)
	}
	res.Healed = r.W.Now()
	_ = c.Lab.Heal() // belt and braces: no rule outlives its step

	// Invariant 3, then 4 when 3 failed.
	healedAt := time.Now()
	bound := r.B.Recovery
	if c.S.IsMySQL() && s.Kind == WALDiskFull {
		// mariadbd blocked on a full disk looks for free space again only
		// once a minute ("Waiting for someone to free space... Expect up
		// to 60 secs delay"), restarting included: MariaDB's own bound.
		bound += time.Minute
	}
	after, err := c.WaitHealthy(bound)
	res.Recovery = time.Since(healedAt)
	if err != nil {
		res.Violations = append(res.Violations, Violation{3, fmt.Sprintf("%s: no recovery within %v after the heal: %v", s.Kind, bound, err)})
		res.Violations = append(res.Violations, c.CheckExplained()...)
		res.Violations = append(res.Violations, r.unexpectedExits()...)
		r.saveLogs(fmt.Sprintf("step-%d", s.N))
		return res
	}
	res.LeaderAfter = after
	res.Violations = append(res.Violations, r.unexpectedExits()...)
	// Let the writers' in-flight requests finish, then check 1 and 2.
	time.Sleep(300 * time.Millisecond)
	end := r.W.Now()
	ops := r.W.Ops()
	hist, herr := c.History()
	var audit []Violation
	switch {
	case herr != nil:
		audit = []Violation{{5, "reading the DCS history: " + herr.Error()}}
	case c.S.IsMySQL():
		// Eras from the history take the timelines' place; a write no
		// era covers is the audit's finding.
		ops, _, audit = MyEras(ops, hist)
		audit = append(audit, CheckFencedFailovers(hist, c.S.FencingMode)...)
	default:
		audit = CheckAudit(ops, hist, c.S.FencingMode)
	}
	if herr == nil {
		for _, v := range CheckSplitBrain(ops, r.B.SplitBrain) {
			if !r.seen[v.What] {
				r.seen[v.What] = true
				res.Violations = append(res.Violations, v)
			}
		}
	}
	for _, v := range audit {
		if !r.seen[v.What] {
			r.seen[v.What] = true
			res.Violations = append(res.Violations, v)
		}
	}
	var window []Op
	var gapFrom = start
	for _, o := range ops {
		if o.End >= r.from && o.End < end {
			window = append(window, o)
		}
		if o.Writer == "haproxy" && o.End >= start && o.End < end {
			if g := o.End - gapFrom; g > res.WriteGap {
				res.WriteGap = g
			}
			gapFrom = o.End
		}
	}
	res.Acked = len(window)
	loss, vs := r.checkLoss(after, window)
	res.Lost, res.LostBytes = loss.Lost, loss.MaxBytes
	res.Violations = append(res.Violations, vs...)
	r.from = end
	// The workload writes a few MB a minute, so many failovers happen
	// within one 16 MB WAL segment, and every timeline keeps its own copy
	// of that segment until the segment number moves on: on the small WAL
	// disk a long run would fill it with copies (it did, see
	// docs/reliability.md). Real traffic moves on by itself; here a switch
	// and a checkpoint let PostgreSQL drop the old copies.
	if l := c.Member(after); l != nil && !c.S.IsMySQL() {
		_ = l.Exec("SELECT pg_switch_wal()")
		_ = l.Exec("CHECKPOINT")
	}
	if len(res.Violations) > 0 {
		r.saveLogs(fmt.Sprintf("step-%d", s.N))
	}
	return res
}

// saveLogs copies the run's logs to SaveDir/sub (PostgreSQL's live on the
// members' tmpfs, which goes away with the cluster).
func (r *Runner) saveLogs(sub string) {
	if r.SaveDir == "" {
		return
	}
	dst := filepath.Join(r.SaveDir, sub)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return
	}
	logs, _ := filepath.Glob(filepath.Join(r.C.Dir, "*.log"))
	for _, m := range r.C.Members {
		logs = append(logs, m.DataDir+".log")
		if b, err := os.ReadFile(filepath.Join(m.Mount, "mariadb.err")); err == nil {
			_ = os.WriteFile(filepath.Join(dst, m.Name+".mariadb.err"), b, 0o644)
		}
	}
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		name := filepath.Base(l)
		if name == "data.log" {
			name = filepath.Base(filepath.Dir(l)) + ".postgres.log"
		}
		_ = os.WriteFile(filepath.Join(dst, name), b, 0o644)
	}
	r.Log.Warn("logs saved", "dir", dst)
}

// Final re-checks every acknowledged write of the run against the final
// primary.
func (r *Runner) Final() (Loss, []Violation) {
	leader, err := r.C.WaitHealthy(r.B.Recovery)
	if err != nil {
		return Loss{}, []Violation{{3, "at the end of the run: " + err.Error()}}
	}
	return r.checkLoss(leader, r.W.Ops())
}

func (r *Runner) checkLoss(leader string, ops []Op) (Loss, []Violation) {
	m := r.C.Member(leader)
	if r.C.S.IsMySQL() {
		return r.myCheckLoss(m, ops)
	}
	ids := make([]int64, len(ops))
	for i, o := range ops {
		ids[i] = o.ID
	}
	present, err := m.PresentIDs(ids)
	if err != nil {
		return Loss{}, []Violation{{2, fmt.Sprintf("reading the acknowledged ids from %s: %v", leader, err)}}
	}
	lin, err := m.Lineage()
	if err != nil {
		return Loss{}, []Violation{{2, fmt.Sprintf("reading the timeline history of %s: %v", leader, err)}}
	}
	return CheckLoss(ops, present, lin, r.C.S.SynchronousMode, r.C.S.MaxLag)
}

// myCheckLoss is checkLoss for MariaDB: eras for timelines, GTID sequence
// numbers for LSNs, the bound in transactions of the measured size.
func (r *Runner) myCheckLoss(m *Member, ops []Op) (Loss, []Violation) {
	present, err := m.myPresentIDs()
	if err != nil {
		return Loss{}, []Violation{{2, fmt.Sprintf("reading the acknowledged ids from %s: %v", m.Name, err)}}
	}
	hist, err := r.C.History()
	if err != nil {
		return Loss{}, []Violation{{2, "reading the DCS history: " + err.Error()}}
	}
	ops, lin, _ := MyEras(ops, hist)
	maxTx := int64(float64(r.C.S.MaxLag) / max(r.txBytes, 1))
	l, vs := CheckLoss(ops, present, lin, r.C.S.SynchronousMode, maxTx)
	l.MaxBytes = uint64(float64(l.MaxBytes) * r.txBytes)
	for i := range vs {
		vs[i].What = fmt.Sprintf("(MariaDB: timeline = era, lsn = GTID sequence number, distances in transactions of ~%d bytes) %s", int(r.txBytes), vs[i].What)
	}
	return l, vs
}

// unexpectedExits finds agents that exited although no step killed them
// (a crash is a bug), and starts them again.
func (r *Runner) unexpectedExits() []Violation {
	var v []Violation
	for _, m := range r.C.Members {
		if !m.AgentRunning() {
			v = append(v, Violation{4, fmt.Sprintf("the agent of %s exited by itself; last log lines:\n%s", m.Name, tailFile(m.LogPath, 30))})
			_ = m.Start()
		}
	}
	return v
}

// Stop ends the workload.
func (r *Runner) Stop() { r.W.Stop() }

// replicaOf picks a non-leader member by pick.
func (r *Runner) replicaOf(leader string, pick int) *Member {
	var rs []*Member
	for _, m := range r.C.Members {
		if m.Name != leader {
			rs = append(rs, m)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return rs[pick%len(rs)]
}

// othersOf: every host of the lab but m's and the client.
func (r *Runner) othersOf(m *Member) []*Host {
	var others []*Host
	for _, o := range r.C.Members {
		if o != m {
			others = append(others, o.Host)
		}
	}
	for _, e := range r.C.Etcd {
		others = append(others, e.Host)
	}
	return append(others, r.C.HAProxy)
}

// waitNewPrimary waits until a member other than old holds the leader key
// and answers /primary 200.
func (r *Runner) waitNewPrimary(old string, within time.Duration) (*Member, error) {
	var m *Member
	err := waitFor(within, func() bool {
		cl := r.C.Load()
		if cl == nil || cl.Leader == nil || cl.Leader.Name == old {
			return false
		}
		m = r.C.Member(cl.Leader.Name)
		return m != nil && m.HTTPCode("/primary") == 200
	})
	if err != nil {
		return nil, fmt.Errorf("no new primary after %s within %v", old, within)
	}
	return m, nil
}

// inject starts the fault and returns how to heal it.
func (r *Runner) inject(s Step, leader string, res *StepResult) (func(), string, error) {
	c := r.C
	target := c.Member(leader)
	if s.Target == "replica" {
		target = r.replicaOf(leader, s.Pick)
	}
	if target != nil {
		res.Member = target.Name
	}
	switch s.Kind {
	case KillAgent:
		target.KillAgent()
		return func() { _ = target.Start() }, "", nil
	case KillDB:
		target.KillPostgres()
		return func() {}, "", nil
	case CrashHost:
		target.KillAgent()
		target.KillPostgres()
		return func() { _ = target.Start() }, "", nil
	case StopAgent:
		target.SignalAgent(syscall.SIGSTOP)
		return func() { target.SignalAgent(syscall.SIGCONT) }, "", nil
	case StopDB:
		pids := target.SignalPostgres(syscall.SIGSTOP)
		return func() {
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGCONT)
			}
		}, fmt.Sprintf("%d processes stopped", len(pids)), nil
	case PartitionPrimary, PartitionReplica:
		return func() { _ = c.Lab.Heal() }, "", c.Lab.Block("partition", target.Host, r.othersOf(target)...)
	case PartitionPrimaryEtcd:
		var others []*Host
		for _, e := range c.Etcd {
			others = append(others, e.Host)
		}
		return func() { _ = c.Lab.Heal() }, "", c.Lab.Block("partition", target.Host, others...)
	case KillEtcdLeader:
		e := c.EtcdLeader()
		if e == nil {
			return nil, "", fmt.Errorf("no etcd leader found")
		}
		res.Member = e.Name
		e.Kill()
		return func() { _ = e.Start() }, "", nil
	case EtcdQuorumLoss:
		first := c.EtcdLeader()
		if first == nil {
			first = c.Etcd[0]
		}
		var rest []*EtcdNode
		for _, e := range c.Etcd {
			if e != first {
				rest = append(rest, e)
			}
		}
		second := rest[s.Pick%len(rest)]
		res.Member = first.Name + "+" + second.Name
		first.Kill()
		second.Kill()
		return func() { _ = first.Start(); _ = second.Start() }, "", nil
	case LatencyLoss:
		target.SetDelay(100 * time.Millisecond)
		err := c.Lab.Loss("loss", target.Host, 10)
		return func() { target.SetDelay(0); _ = c.Lab.Heal() }, "100 ms each way on etcd and PostgreSQL paths, 10% loss", err
	case WALDiskFull:
		p := filepath.Join(target.Mount, "filler")
		n, err := fill(target.Mount, p, 256<<10)
		return func() { _ = os.Remove(p) }, fmt.Sprintf("%d MiB filler", n>>20), err
	case CrashTwice, PartitionThenCrash:
		first := target
		if s.Kind == CrashTwice {
			first.KillAgent()
			first.KillPostgres()
		} else if err := c.Lab.Block("partition", first.Host, r.othersOf(first)...); err != nil {
			return nil, "", err
		}
		second, err := r.waitNewPrimary(first.Name, 2*c.S.TTL+20*time.Second)
		if err != nil {
			return func() { _ = c.Lab.Heal(); _ = first.Start() }, "", err
		}
		res.Member = first.Name + "+" + second.Name
		if s.Kind == PartitionThenCrash {
			_ = c.Lab.Heal()
		}
		second.KillAgent()
		second.KillPostgres()
		return func() {
			if s.Kind == CrashTwice {
				_ = first.Start()
			}
			_ = second.Start()
		}, "", nil
	case RestartCluster:
		res.Member = "all"
		if s.Variant == "clean" {
			for _, m := range c.Members {
				m.SignalAgent(syscall.SIGTERM)
			}
			for _, m := range c.Members {
				if waitFor(30*time.Second, func() bool { return !m.AgentRunning() }) != nil {
					m.KillAgent()
				}
			}
		} else {
			for _, m := range c.Members {
				m.KillAgent()
				m.KillPostgres()
			}
		}
		return func() {
			for _, m := range c.Members {
				_ = m.Start()
			}
		}, "", nil
	}
	return nil, "", fmt.Errorf("unknown fault kind %q", s.Kind)
}

// hold keeps the fault on for its hold time. A full WAL disk is held until
// the cluster has failed over (or the time a failover needs has passed).
func (r *Runner) hold(s Step, leader string, res *StepResult) {
	switch s.Kind {
	case RestartCluster:
		return // "at once": everything comes back immediately
	case WALDiskFull:
		c := r.C.S
		limit := c.PrimaryUnhealthyTimeout + c.PrimaryStartTimeout + 2*c.TTL + 10*time.Second
		if s.Target != "primary" {
			limit = s.Hold
		}
		if s.Target == "primary" {
			_, _ = r.waitNewPrimary(leader, limit)
		} else {
			time.Sleep(limit)
		}
		return
	}
	time.Sleep(s.Hold)
}

// fill creates path with every free byte of the filesystem at dir but
// leave; it returns the size.
func fill(dir, path string, leave int64) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	n := int64(st.Bavail)*st.Bsize - leave
	if n <= 0 {
		return 0, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		return 0, fmt.Errorf("fallocate %d bytes in %s: %w", n, dir, err)
	}
	return n, nil
}

// Summary of a run, for the report.
type Report struct {
	Seed       uint64         `json:"seed"`
	Count      int            `json:"count"`
	From       int            `json:"from"`
	To         int            `json:"to"`
	Settings   Settings       `json:"settings"`
	Bounds     Bounds         `json:"bounds"`
	Steps      []StepResult   `json:"steps"`
	Final      Loss           `json:"final_loss"`
	FinalViol  []Violation    `json:"final_violations,omitempty"`
	Writes     int            `json:"acknowledged_writes"`
	Kinds      map[string]int `json:"kinds"`
	Violations int            `json:"violations"`
	Elapsed    time.Duration  `json:"elapsed"`
}

// Violated lists every violation of the report, one per line.
func (rp *Report) Violated() string {
	var b strings.Builder
	for _, s := range rp.Steps {
		for _, v := range s.Violations {
			fmt.Fprintf(&b, "step %s: %s\n", s.Step, v)
		}
	}
	for _, v := range rp.FinalViol {
		fmt.Fprintf(&b, "end of run: %s\n", v)
	}
	return b.String()
}
