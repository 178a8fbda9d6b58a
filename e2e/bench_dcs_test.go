package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/dcstest"
	"github.com/stewardha/steward/dcs/etcd"
)

// simulatedDB is a SIMULATED database for BenchmarkDCSScale only: it lets
// hundreds of real agents (the real HA loop and the real etcd DCS layer) run
// on one machine without hundreds of PostgreSQL servers. It keeps a role and
// a position in memory: the primary's position moves on every loop (as the
// heartbeat commit moves a real primary's WAL), a replica streams and
// replays up to its leader's position. It is never used to test a rule.
type simulatedDB struct {
	mu       sync.Mutex
	init     bool // bootstrapped or cloned (uninitialized before)
	writable bool
	lsn      uint64
	upstream string
	cluster  *simCluster
}

type simCluster struct {
	mu      sync.Mutex
	primary *simulatedDB
}

func (d *simulatedDB) Kind() string { return "postgres" }
func (d *simulatedDB) Observe(context.Context) backends.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.init {
		return backends.Status{State: backends.StateUninitialized}
	}
	if d.writable {
		d.lsn += 200
		return backends.Status{State: backends.StateRunning, Writable: true, Timeline: 1, Position: backends.Position{LSN: d.lsn}, SystemID: "7000000000000000001"}
	}
	d.cluster.mu.Lock()
	p := d.cluster.primary
	d.cluster.mu.Unlock()
	if p != nil && p != d {
		p.mu.Lock()
		d.lsn = p.lsn
		p.mu.Unlock()
	}
	pos := backends.Position{LSN: d.lsn}
	return backends.Status{State: backends.StateRunning, InRecovery: true, Timeline: 1, Position: pos, Received: pos, Replayed: pos,
		Streaming: d.upstream != "", ReceiverState: "streaming", Upstream: d.upstream, SystemID: "7000000000000000001"}
}
func (d *simulatedDB) Bootstrap(context.Context) (string, error) {
	d.mu.Lock()
	d.init, d.writable, d.lsn = true, true, 0x3000000
	d.mu.Unlock()
	d.cluster.mu.Lock()
	d.cluster.primary = d
	d.cluster.mu.Unlock()
	return "7000000000000000001", nil
}
func (d *simulatedDB) Clone(context.Context, backends.Upstream) error {
	d.mu.Lock()
	d.init = true
	d.mu.Unlock()
	return nil
}
func (d *simulatedDB) Start(_ context.Context, role backends.Role, up *backends.Upstream) error {
	return d.Follow(context.Background(), up)
}
func (d *simulatedDB) Stop(context.Context, backends.StopMode) error { return nil }
func (d *simulatedDB) FenceWrites(context.Context) error {
	d.mu.Lock()
	d.writable = false
	d.mu.Unlock()
	return nil
}
func (d *simulatedDB) Promote(context.Context) error {
	d.mu.Lock()
	d.writable, d.upstream = true, ""
	d.mu.Unlock()
	d.cluster.mu.Lock()
	d.cluster.primary = d
	d.cluster.mu.Unlock()
	return nil
}
func (d *simulatedDB) Follow(_ context.Context, up *backends.Upstream) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.upstream = ""
	if up != nil {
		d.upstream = fmt.Sprintf("%s:%d", up.Host, up.Port)
	}
	return nil
}
func (d *simulatedDB) Divergence(context.Context, backends.Upstream) (backends.Divergence, error) {
	return backends.Divergence{}, nil
}
func (d *simulatedDB) Rewind(context.Context, backends.Upstream) error { return nil }
func (d *simulatedDB) Wipe(context.Context) error                      { return nil }
func (d *simulatedDB) EnsureSlots(context.Context, []string) error     { return nil }
func (d *simulatedDB) Heartbeat(context.Context, string) error         { return nil }
func (d *simulatedDB) Lag(l, p backends.Position) int64 {
	if p.LSN >= l.LSN {
		return 0
	}
	return int64(l.LSN - p.LSN)
}
func (d *simulatedDB) Compare(a, b backends.Position) int {
	switch {
	case a.LSN < b.LSN:
		return -1
	case a.LSN > b.LSN:
		return 1
	}
	return 0
}

// timedStore records how long the agent's etcd calls take, from the
// agent's side (client library included).
type timedStore struct {
	agent.Store
	lat *latencies
}

type latencies struct {
	mu   sync.Mutex
	vals map[string][]time.Duration
}

func (l *latencies) add(op string, d time.Duration) {
	l.mu.Lock()
	l.vals[op] = append(l.vals[op], d)
	l.mu.Unlock()
}

func (t timedStore) Load(ctx context.Context) (*dcs.Cluster, error) {
	s := time.Now()
	cl, err := t.Store.Load(ctx)
	if err == nil {
		t.lat.add("load", time.Since(s))
	}
	return cl, err
}
func (t timedStore) KeepAlive(ctx context.Context) (time.Time, error) {
	s := time.Now()
	sent, err := t.Store.KeepAlive(ctx)
	if err == nil {
		t.lat.add("keepalive", time.Since(s))
	}
	return sent, err
}
func (t timedStore) PutMember(ctx context.Context, m dcs.Member) error {
	s := time.Now()
	err := t.Store.PutMember(ctx, m)
	if err == nil {
		t.lat.add("put member", time.Since(s))
	}
	return err
}
func (t timedStore) PutStatus(ctx context.Context, st dcs.Status, term int64) error {
	s := time.Now()
	err := t.Store.PutStatus(ctx, st, term)
	if err == nil {
		t.lat.add("put status", time.Since(s))
	}
	return err
}

type leaderChanges struct{ n atomic.Int64 }

func (c *leaderChanges) LoopDone(time.Duration) {}
func (c *leaderChanges) LeaderChange(reason string) {
	if reason != "bootstrap" {
		c.n.Add(1)
	}
}
func (c *leaderChanges) DCSError(string)       {}
func (c *leaderChanges) FencingAttempt(string) {}

// BenchmarkDCSScale: how etcd's load grows with the number of agents sharing
// it. N real agents (the real HA loop and DCS layer, in this process) in
// clusters of two (a leader and a replica) run against one etcd (Debian's
// etcd 3.4, a separate process) at the default timing (ttl 10 s, loop_wait
// 1 s); their databases are SIMULATED (simulatedDB). For 10, 100 and 300
// agents (STEWARD_BENCH_AGENTS=10,100,300) over 60 s each
// (STEWARD_BENCH_SCALE_WINDOW): etcd's CPU, requests/s (grpc calls handled),
// the agents' p99 call latency, and leader changes (every leader must keep
// its lease: 0). Run by `make bench`.
func BenchmarkDCSScale(b *testing.B) {
	points := []int{10, 100, 300}
	if s := os.Getenv("STEWARD_BENCH_AGENTS"); s != "" {
		points = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 {
				b.Fatalf("STEWARD_BENCH_AGENTS=%q: expected a comma-separated list of agent counts >= 2", s)
			}
			points = append(points, n)
		}
	}
	window := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("STEWARD_BENCH_SCALE_WINDOW")); err == nil && d > 0 {
		window = d
	}
	for i := 0; i < b.N; i++ {
		fmt.Printf("\nMEASURED DCS load at scale: agents in clusters of 2 (leader + replica), ttl 10s, loop_wait 1s, databases SIMULATED, one etcd 3.4 (Debian, separate process), %v per point:\n", window)
		fmt.Printf("  %-7s %-9s %-12s %-14s %-38s %s\n", "agents", "etcd CPU", "etcd req/s", "req/agent/loop", "agent call p50 / p99 (load, keepalive)", "leader changes")
		for _, n := range points {
			runDCSScale(b, n, window)
		}
	}
}

func runDCSScale(b *testing.B, n int, window time.Duration) {
	srv := dcstest.StartBinary(b)
	defer srv.Stop()
	dyn := config.DefaultDynamic()
	dyn.TTL = config.Duration(10 * time.Second)
	dyn.LoopWait = config.Duration(time.Second)
	dyn.RetryTimeout = config.Duration(3 * time.Second)
	lat := &latencies{vals: map[string][]time.Duration{}}
	changes := &leaderChanges{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var stores []*etcd.Store
	defer func() {
		cancel()
		wg.Wait()
		for _, s := range stores {
			s.Close()
		}
	}()
	clusters := n / 2
	for c := 0; c < clusters; c++ {
		sc := &simCluster{}
		for m := 0; m < 2; m++ {
			name := fmt.Sprintf("m%d", m+1)
			st, err := etcd.New(etcd.Options{Endpoints: srv.Endpoints(), Namespace: "/steward", Cluster: fmt.Sprintf("c%03d", c),
				Member: name, RequestTimeout: dyn.RetryTimeout.D(), TTL: dyn.TTL.D()})
			if err != nil {
				b.Fatal(err)
			}
			stores = append(stores, st)
			a := agent.New(agent.Options{
				Self: agent.Self{Name: name, Priority: 1}, Store: timedStore{Store: st, lat: lat}, Backend: &simulatedDB{cluster: sc},
				Logger: simLogger(c), APIURL: "http://127.0.0.1:1", DBAddress: fmt.Sprintf("10.0.%d.%d:5432", c/250, m),
				Bootstrap: dyn, Metrics: changes, Cluster: fmt.Sprintf("c%03d", c),
			})
			wg.Add(1)
			go func() { defer wg.Done(); _ = a.Run(ctx) }()
			if m == 0 {
				// Let the first member bootstrap its cluster first.
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	// Every cluster has a leader and a streaming replica.
	probe, err := etcd.New(etcd.Options{Endpoints: srv.Endpoints(), Namespace: "/steward", Cluster: "c000", RequestTimeout: 5 * time.Second, TTL: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer probe.Close()
	terms := map[int]int64{}
	Eventually(b, 120*time.Second, fmt.Sprintf("%d clusters each have a leader", clusters), func() bool {
		for c := 0; c < clusters; c++ {
			if _, ok := terms[c]; ok {
				continue
			}
			st, err := etcd.New(etcd.Options{Endpoints: srv.Endpoints(), Namespace: "/steward", Cluster: fmt.Sprintf("c%03d", c), RequestTimeout: 5 * time.Second, TTL: 10 * time.Second})
			if err != nil {
				return false
			}
			cl, err := st.Load(context.Background())
			st.Close()
			if err == nil && cl.Leader != nil && len(cl.Members) == 2 {
				terms[c] = cl.Leader.Term
			}
		}
		return len(terms) == clusters
	})
	time.Sleep(5 * time.Second) // settle
	url := srv.Endpoints()[0] + "/metrics"
	callsBefore, err := grpcCallsByMethod(url)
	if err != nil {
		b.Fatal(err)
	}
	lat.mu.Lock()
	lat.vals = map[string][]time.Duration{}
	lat.mu.Unlock()
	changesBefore := changes.n.Load()
	cpu0 := readProc(srv.PID())
	self0 := readProc(os.Getpid())
	time.Sleep(window)
	cpu1 := readProc(srv.PID())
	self1 := readProc(os.Getpid())
	callsAfter, err := grpcCallsByMethod(url)
	if err != nil {
		b.Fatal(err)
	}
	var calls float64
	for m, v := range callsAfter {
		calls += v - callsBefore[m]
	}
	// Every leader kept its key: same term as before the window.
	lost := 0
	for c := 0; c < clusters; c++ {
		st, err := etcd.New(etcd.Options{Endpoints: srv.Endpoints(), Namespace: "/steward", Cluster: fmt.Sprintf("c%03d", c), RequestTimeout: 5 * time.Second, TTL: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		cl, err := st.Load(context.Background())
		st.Close()
		if err != nil || cl.Leader == nil || cl.Leader.Term != terms[c] {
			lost++
		}
	}
	secs := cpu1.at.Sub(cpu0.at).Seconds()
	q := func(op string, p float64) time.Duration {
		lat.mu.Lock()
		defer lat.mu.Unlock()
		v := append([]time.Duration(nil), lat.vals[op]...)
		if len(v) == 0 {
			return 0
		}
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		return v[int(p*float64(len(v)-1))]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
	fmt.Printf("  %-7d %-9s %-12.0f %-14.2f %-38s %d (leaders whose key changed: %d of %d)\n", clusters*2,
		fmt.Sprintf("%.1f%%", (cpu1.cpu-cpu0.cpu).Seconds()/secs*100), calls/secs, calls/secs/float64(clusters*2),
		fmt.Sprintf("%s / %s, %s / %s", ms(q("load", 0.5)), ms(q("load", 0.99)), ms(q("keepalive", 0.5)), ms(q("keepalive", 0.99))),
		changes.n.Load()-changesBefore, lost, clusters)
	fmt.Printf("          (the agents' own process: %.1f%% CPU; etcd RSS %.0f MiB)\n", (self1.cpu-self0.cpu).Seconds()/secs*100, float64(cpu1.rssKiB)/1024)
	if lost > 0 {
		b.Errorf("%d of %d leaders lost their key at %d agents", lost, clusters, clusters*2)
	}
}

// simLogger: cluster c000's agents log to stderr when STEWARD_BENCH_DEBUG is
// set; every other agent is silent.
func simLogger(c int) *slog.Logger {
	if c == 0 && os.Getenv("STEWARD_BENCH_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
