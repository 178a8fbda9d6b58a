package chaos

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/e2e"
)

var binaryPath string

func TestMain(m *testing.M) {
	closeInheritedFiles()
	dir, err := os.MkdirTemp("", "steward-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = os.Chmod(dir, 0o755)
	// The agents run without the race detector by default: the suite is
	// about faults, and two cores must carry three agents, three
	// PostgreSQL servers, etcd and the writers. STEWARD_CHAOS_RACE=1 turns
	// it on.
	bin, err := e2e.BuildBinary(dir, os.Getenv("STEWARD_CHAOS_RACE") == "1")
	if err != nil {
		fmt.Fprintln(os.Stderr, "building steward:", err)
		os.Exit(1)
	}
	binaryPath = bin
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// closeInheritedFiles marks every descriptor above stderr close-on-exec.
// The suite is run under flock(1), whose lock descriptor the test process
// inherits; without this, every agent, PostgreSQL and etcd it starts would
// inherit it too, and one left behind would hold the lock for everyone.
func closeInheritedFiles() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// testLogger writes slog records to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// runDir makes the run's directory (traversable by the postgres user);
// on failure its logs are copied to $STEWARD_CHAOS_OUT (default
// .test-output/chaos under the repository) before it is removed.
func runDir(t *testing.T, name string) string {
	dir, err := os.MkdirTemp("/tmp", "stwchaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dst := filepath.Join(outDir(), name)
			_ = os.MkdirAll(dst, 0o755)
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			pglogs, _ := filepath.Glob(filepath.Join(dir, "m*", "data.log"))
			mylogs, _ := filepath.Glob(filepath.Join(dir, "m*", "mariadb.err"))
			for _, l := range append(append(logs, pglogs...), mylogs...) {
				if b, err := os.ReadFile(l); err == nil {
					base := filepath.Base(l)
					switch base {
					case "data.log":
						base = filepath.Base(filepath.Dir(l)) + ".postgres.log"
					case "mariadb.err":
						base = filepath.Base(filepath.Dir(l)) + ".mariadb.err"
					}
					_ = os.WriteFile(filepath.Join(dst, base), b, 0o644)
				}
			}
			t.Logf("logs of the failed run: %s", dst)
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

func outDir() string {
	if d := os.Getenv("STEWARD_CHAOS_OUT"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), ".test-output", "chaos")
}

// plan is what to run, from the environment:
//
//	STEWARD_CHAOS_COUNT  steps in the schedule (unset: the short fixed
//	                     schedule of make test)
//	STEWARD_CHAOS_SEED   the schedule's seed (default: random, printed)
//	STEWARD_CHAOS_FROM, STEWARD_CHAOS_TO  run only steps [FROM, TO) of it
//	STEWARD_CHAOS_KINDS  comma-separated fault kinds (default: all)
//	STEWARD_CHAOS_SYNC   synchronous_mode (default off)
//	STEWARD_CHAOS_FENCING fencing.mode (default required)
//	STEWARD_CHAOS_BACKEND postgres (default) or mysql (MariaDB members)
type plan struct {
	seed          uint64
	count         int
	from, to      int
	steps         []Step
	settings      Settings
	bounds        Bounds
	fixed         bool
	replayCommand string
}

func envInt(t *testing.T, k string, def int) int {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: not a number", k, v)
	}
	return n
}

// fixedPlan is make test's short fixed schedule of the faults most likely
// to produce two writers or a lost write.
func fixedPlan(p plan) plan {
	s := p.settings
	p.fixed = true
	p.steps = []Step{
		{N: 0, Kind: StopAgent, Target: "primary", Hold: 2 * s.TTL},
		{N: 1, Kind: PartitionPrimaryEtcd, Target: "primary", Hold: 2 * s.TTL},
		{N: 2, Kind: CrashHost, Target: "primary", Hold: s.TTL},
		{N: 3, Kind: EtcdQuorumLoss, Target: "etcd", Hold: s.TTL},
	}
	p.count, p.to = len(p.steps), len(p.steps)
	return p
}

func planFromEnv(t *testing.T) plan {
	s := DefaultSettings()
	if v := os.Getenv("STEWARD_CHAOS_SYNC"); v != "" {
		s.SynchronousMode = v
	}
	if v := os.Getenv("STEWARD_CHAOS_FENCING"); v != "" {
		s.FencingMode = v
	}
	if v := os.Getenv("STEWARD_CHAOS_LOG_LEVEL"); v != "" {
		s.LogLevel = v
	}
	if v := os.Getenv("STEWARD_CHAOS_BACKEND"); v != "" {
		s.Backend = v
	}
	switch {
	case s.Backend != "postgres" && s.Backend != "mysql":
		t.Fatalf("STEWARD_CHAOS_BACKEND=%q: want postgres or mysql", s.Backend)
	}
	p := plan{settings: s, bounds: Bounds{Recovery: 60 * time.Second}}
	if s.FencingMode == "off" {
		// Without fencing, a frozen primary's database takes writes until
		// its agent wakes (docs/fencing.md): the documented hole.
		p.bounds.SplitBrain = 3 * s.TTL
	}
	if os.Getenv("STEWARD_CHAOS_COUNT") == "" {
		return fixedPlan(p)
	}
	p.count = envInt(t, "STEWARD_CHAOS_COUNT", 200)
	if v := os.Getenv("STEWARD_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("STEWARD_CHAOS_SEED=%q: not a number", v)
		}
		p.seed = n
	} else {
		p.seed = uint64(time.Now().UnixNano()) % 1_000_000_000
	}
	kindsArg := os.Getenv("STEWARD_CHAOS_KINDS")
	kinds, err := ParseKinds(kindsArg)
	if err != nil {
		t.Fatal(err)
	}
	if kindsArg == "" {
		kindsArg = "all"
	}
	p.from = envInt(t, "STEWARD_CHAOS_FROM", 0)
	p.to = envInt(t, "STEWARD_CHAOS_TO", p.count)
	if p.from < 0 || p.to > p.count || p.from >= p.to {
		t.Fatalf("STEWARD_CHAOS_FROM=%d, STEWARD_CHAOS_TO=%d: want 0 <= FROM < TO <= COUNT (%d)", p.from, p.to, p.count)
	}
	p.steps = Schedule(p.seed, p.count, kinds, s.TTL)[p.from:p.to]
	p.replayCommand = fmt.Sprintf("STEWARD_CHAOS_BACKEND=%s STEWARD_CHAOS_SEED=%d STEWARD_CHAOS_COUNT=%d STEWARD_CHAOS_KINDS=%s STEWARD_CHAOS_SYNC=%s STEWARD_CHAOS_FENCING=%s",
		s.Backend, p.seed, p.count, kindsArg, s.SynchronousMode, s.FencingMode)
	return p
}

// TestChaos runs a fault schedule against a 3-member cluster in network
// namespaces and checks the four invariants after every fault. Under make
// test it is a short fixed schedule; make chaos sets STEWARD_CHAOS_COUNT.
func TestChaos(t *testing.T) {
	runChaos(t, planFromEnv(t))
}

// TestChaosMySQLShort runs the short fixed schedule against MariaDB
// members (make test; make chaos BACKEND=mysql runs the long ones).
func TestChaosMySQLShort(t *testing.T) {
	s := DefaultSettings()
	s.Backend = "mysql"
	runChaos(t, fixedPlan(plan{settings: s, bounds: Bounds{Recovery: 60 * time.Second}}))
}

func runChaos(t *testing.T, p plan) {
	log := testLogger(t)
	if p.fixed {
		t.Logf("CHAOS short fixed schedule: %d steps, backend %s, synchronous_mode %s, fencing %s", len(p.steps), p.settings.Backend, p.settings.SynchronousMode, p.settings.FencingMode)
	} else {
		t.Logf("CHAOS backend=%s seed=%d count=%d steps [%d,%d) synchronous_mode=%s fencing=%s", p.settings.Backend, p.seed, p.count, p.from, p.to, p.settings.SynchronousMode, p.settings.FencingMode)
		t.Logf("CHAOS replay the whole schedule: %s go test -run '^TestChaos$' ./e2e/chaos/", p.replayCommand)
	}
	name := "fixed"
	if !p.fixed {
		name = fmt.Sprintf("seed%d-%d-%d", p.seed, p.from, p.to)
	}
	if p.settings.IsMySQL() {
		name = "mysql-" + name
	}
	dir := runDir(t, name)
	started := time.Now()
	c, err := NewCluster(p.settings, binaryPath, dir, log)
	if err != nil {
		t.Fatalf("building the chaos cluster: %v", err)
	}
	t.Cleanup(c.Close)
	r, err := NewRunner(c, p.bounds, log)
	if err != nil {
		t.Fatalf("starting the workload: %v", err)
	}
	r.SaveDir = filepath.Join(outDir(), name)
	t.Cleanup(func() {
		// STEWARD_CHAOS_KEEP_LOGS=1 keeps them after a passing run too.
		if t.Failed() || os.Getenv("STEWARD_CHAOS_KEEP_LOGS") != "" {
			r.saveLogs("end") // before the cluster (and the tmpfs) goes
		}
	})
	defer r.Stop()
	rep := &Report{Seed: p.seed, Count: p.count, From: p.from, To: p.to, Settings: p.settings, Bounds: p.bounds, Kinds: map[string]int{}}
	deadline, hasDeadline := t.Deadline()
	for _, s := range p.steps {
		if hasDeadline && time.Until(deadline) < 3*time.Minute {
			t.Errorf("stopping before step %d: the test's -timeout is near", s.N)
			break
		}
		if !p.fixed {
			t.Logf("CHAOS step %s (replay this step alone: %s STEWARD_CHAOS_FROM=%d STEWARD_CHAOS_TO=%d)", s, p.replayCommand, s.N, s.N+1)
		}
		res := r.Run(s)
		rep.Steps = append(rep.Steps, res)
		rep.Kinds[s.Kind]++
		t.Logf("CHAOS result %s member=%s leader %s -> %s recovery=%v max_write_gap=%v acked=%d lost=%d (%d bytes) violations=%d",
			s, res.Member, res.LeaderBefore, res.LeaderAfter, res.Recovery.Round(10*time.Millisecond), res.WriteGap.Round(10*time.Millisecond),
			res.Acked, res.Lost, res.LostBytes, len(res.Violations))
		for _, v := range res.Violations {
			t.Errorf("CHAOS VIOLATION step %s: %s", s, v)
		}
		if hasInvariant(res.Violations, 3) {
			break // the cluster is broken: later steps would prove nothing
		}
	}
	rep.Final, rep.FinalViol = r.Final()
	for _, v := range rep.FinalViol {
		t.Errorf("CHAOS VIOLATION at the end of the run: %s", v)
	}
	r.Stop()
	rep.Writes = len(r.W.Ops())
	rep.Elapsed = time.Since(started)
	for _, s := range rep.Steps {
		rep.Violations += len(s.Violations)
	}
	rep.Violations += len(rep.FinalViol)
	t.Logf("CHAOS done: %d steps, %d acknowledged writes, %d lost in all (largest %d bytes past a switch point), %d violations, %v",
		len(rep.Steps), rep.Writes, rep.Final.Lost, rep.Final.MaxBytes, rep.Violations, rep.Elapsed.Round(time.Second))
	if p.fixed {
		var rec []string
		for _, s := range rep.Steps {
			rec = append(rec, fmt.Sprintf("%s %v", s.Kind, s.Recovery.Round(10*time.Millisecond)))
		}
		t.Logf("MEASURED chaos short schedule (fencing %s, synchronous_mode %s): recovery after heal: %s; %d acknowledged writes, %d lost, %d violations",
			p.settings.FencingMode, p.settings.SynchronousMode, strings.Join(rec, ", "), rep.Writes, rep.Final.Lost, rep.Violations)
	}
	if err := os.MkdirAll(outDir(), 0o755); err == nil {
		b, _ := json.MarshalIndent(rep, "", "  ")
		f := filepath.Join(outDir(), name+".json")
		if err := os.WriteFile(f, b, 0o644); err == nil {
			t.Logf("CHAOS report: %s", f)
		}
	}
}

func hasInvariant(vs []Violation, n int) bool {
	for _, v := range vs {
		if v.Invariant == n {
			return true
		}
	}
	return false
}
