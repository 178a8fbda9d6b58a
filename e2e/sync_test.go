package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/backends/postgres"
	"github.com/stewardha/steward/dcs"
)

// Synchronous replication end to end (issue 7, DESIGN rule 6): real
// PostgreSQL 15, real etcd, agents as separate processes.

// setDynamic sets one dynamic setting in the DCS to a JSON value (numbers
// stay numbers, unlike Cluster.SetDynamic).
func setDynamic(t testing.TB, c *Cluster, key string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 10 {
		raw, ver, err := c.Store().GetConfig(ctx)
		if err != nil {
			t.Fatalf("reading config: %v", err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m[key] = v
		b, _ := json.Marshal(m)
		if _, err := c.Store().CASConfig(ctx, b, ver); err == nil {
			return
		}
	}
	t.Fatalf("could not set %s=%v", key, v)
}

// syncState reads the DCS sync key (nil: none).
func syncState(c *Cluster) *dcs.SyncState {
	cl := c.LoadCluster()
	if cl == nil || cl.Sync == nil {
		return nil
	}
	s := cl.Sync.Value
	return &s
}

// waitSyncKey waits until the sync key satisfies cond and returns it.
func waitSyncKey(t testing.TB, c *Cluster, within time.Duration, what string, cond func(s dcs.SyncState) bool) dcs.SyncState {
	t.Helper()
	var got dcs.SyncState
	Eventually(t, within, what, func() bool {
		s := syncState(c)
		if s == nil || !cond(*s) {
			return false
		}
		got = *s
		return true
	})
	return got
}

// ackWriter inserts ids from several client sessions at once, as fast as
// the primary acknowledges them, into whichever member is the writable
// primary, and records every id whose COMMIT returned success. It never
// cancels a statement: PostgreSQL turns a commit whose wait for a
// synchronous standby is cancelled into a local success, which no
// synchronous mode protects; stopping closes the sessions instead.
type ackWriter struct {
	c        *Cluster
	next     atomic.Int64
	stopping atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	acked    []int64
	ackedAt  []time.Time
	conns    map[int]*pgx.Conn
}

func startAckWriter(c *Cluster, clients int) *ackWriter {
	w := &ackWriter{c: c, conns: map[int]*pgx.Conn{}}
	for i := range clients {
		w.wg.Add(1)
		go w.client(i)
	}
	return w
}

func (w *ackWriter) primaryConn() *pgx.Conn {
	ms := w.c.Members
	start := rand.Intn(len(ms))
	for i := range ms {
		m := ms[(start+i)%len(ms)]
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, m.DSN())
		if err != nil {
			cancel()
			continue
		}
		var rec bool
		err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec)
		cancel()
		if err == nil && !rec {
			return conn
		}
		conn.Close(context.Background())
	}
	return nil
}

func (w *ackWriter) client(i int) {
	defer w.wg.Done()
	for !w.stopping.Load() {
		conn := w.primaryConn()
		if conn == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		w.mu.Lock()
		w.conns[i] = conn
		w.mu.Unlock()
		for !w.stopping.Load() {
			id := w.next.Add(1)
			_, err := conn.Exec(context.Background(), "INSERT INTO steward_test(id, member) VALUES ($1, 'w')", id)
			if w.stopping.Load() {
				break // an answer racing with Stop closing the session counts for nothing
			}
			if err != nil {
				break
			}
			w.mu.Lock()
			w.acked = append(w.acked, id)
			w.ackedAt = append(w.ackedAt, time.Now())
			w.mu.Unlock()
		}
		w.mu.Lock()
		delete(w.conns, i)
		w.mu.Unlock()
		conn.Close(context.Background())
	}
}

// Stop ends every session (a blocked commit is abandoned, not cancelled).
func (w *ackWriter) Stop() {
	w.stopping.Store(true)
	w.mu.Lock()
	for _, c := range w.conns {
		_ = c.PgConn().Conn().Close()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

func (w *ackWriter) Acked() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int64(nil), w.acked...)
}

// ackedBetween counts the commits acknowledged in [from, to).
func (w *ackWriter) ackedBetween(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, at := range w.ackedAt {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// missing returns how many of ids the member's database lacks.
func missing(t testing.TB, m *Member, ids []int64) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.DSN())
	if err != nil {
		t.Fatalf("connecting to %s: %v", m.Name, err)
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM steward_test WHERE id = ANY($1)", ids).Scan(&n); err != nil {
		t.Fatalf("counting acknowledged ids on %s: %v", m.Name, err)
	}
	return len(ids) - int(n)
}

// syncCluster bootstraps three members and turns synchronous replication
// on in the given mode; it returns once the leader counts its standbys.
func syncCluster(t *testing.T, mode string, n int) (*Cluster, *Member) {
	t.Helper()
	c, leader := bootstrap(t, Fast, nil)
	setDynamic(t, c, "synchronous_node_count", n)
	setDynamic(t, c, "synchronous_mode", mode)
	waitSyncKey(t, c, 30*time.Second, "the leader counts its synchronous standbys", func(s dcs.SyncState) bool {
		return s.Mode == mode && s.Leader == leader.Name && s.Quorum > 0 && (mode != "quorum" || len(s.Members) == 2)
	})
	return c, leader
}

func syncKills() int {
	if n, err := strconv.Atoi(os.Getenv("STEWARD_SYNC_KILLS")); err == nil && n > 0 {
		return n
	}
	return 2
}

// Repeated kill -9 of the primary (agent and PostgreSQL) at random moments
// under write load, in modes on and quorum: after every failover each
// acknowledged id is on the new primary, and the new primary was counted by
// the sync key (never the asynchronous member). STEWARD_SYNC_KILLS=20 for
// the long run.
func TestSyncFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"on", "quorum"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			kills := syncKills()
			c, _ := syncCluster(t, mode, 1)
			w := startAckWriter(c, 4)
			defer w.Stop()
			rng := rand.New(rand.NewSource(time.Now().UnixNano()))
			totalLost, asyncPromoted := 0, 0
			for k := 1; k <= kills; k++ {
				old := c.Leader()
				if old == nil {
					t.Fatal("no leader before the kill")
				}
				before := len(w.Acked())
				Eventually(t, 20*time.Second, "writes acknowledged under load", func() bool { return len(w.Acked()) > before+50 })
				time.Sleep(time.Duration(rng.Intn(1500)) * time.Millisecond)
				key := syncState(c)
				var async []string
				for _, m := range c.Members {
					if m != old && !slices.Contains(key.Members, m.Name) {
						async = append(async, m.Name)
					}
				}
				killedAt := time.Now()
				old.Crash()
				var nl *Member
				Eventually(t, c.Profile.TTL+20*time.Second, "a new primary", func() bool {
					nl = c.Leader()
					if nl == nil || nl == old {
						return false
					}
					st := nl.Status()
					return st != nil && st.Writable
				})
				failover := time.Since(killedAt)
				// Every id acknowledged so far: before the kill by the old
				// primary, after it by the new one.
				Eventually(t, 10*time.Second, "the new primary acknowledges writes", func() bool {
					return w.ackedBetween(killedAt, time.Now().Add(time.Hour)) > 0
				})
				acked := w.Acked()
				lost := missing(t, nl, acked)
				totalLost += lost
				if slices.Contains(async, nl.Name) {
					asyncPromoted++
				}
				t.Logf("MEASURED sync %s kill %d/%d: killed %s (sync key %d of %v, async %v) -> new primary %s after %v; acknowledged ids %d, lost %d",
					mode, k, kills, old.Name, key.Quorum, key.Members, async, nl.Name, failover.Round(time.Millisecond), len(acked), lost)
				if lost > 0 {
					t.Errorf("kill %d: %d acknowledged ids are not on the new primary %s", k, lost, nl.Name)
				}
				if slices.Contains(async, nl.Name) {
					t.Errorf("kill %d: %s was promoted although the sync key did not count it (%d of %v)", k, nl.Name, key.Quorum, key.Members)
				}
				// The old primary comes back as a replica; synchronous
				// replication is whole again before the next kill.
				old.Start()
				c.WaitHealthy(90 * time.Second)
				waitSyncKey(t, c, 30*time.Second, "the new leader counts its standbys again", func(s dcs.SyncState) bool {
					return s.Leader == nl.Name && s.Quorum > 0 && (mode != "quorum" || len(s.Members) == 2)
				})
			}
			w.Stop()
			acked := w.Acked()
			leader := c.Leader()
			t.Logf("MEASURED sync %s: %d kill -9s of the primary under load, %d acknowledged ids, %d lost, %d asynchronous members promoted",
				mode, kills, len(acked), totalLost, asyncPromoted)
			if n := missing(t, leader, acked); n != 0 {
				t.Fatalf("the final primary %s lacks %d acknowledged ids", leader.Name, n)
			}
		})
	}
}

// The synchronous standby dies: in mode on another becomes synchronous
// within a loop and writes go on; in strict mode, with no standby left,
// commits wait instead of being acknowledged, and go on when a standby
// returns.
func TestSyncStandbyLoss(t *testing.T) {
	t.Parallel()
	c, leader := syncCluster(t, "on", 1)
	w := startAckWriter(c, 2)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Acked()) > 20 })

	key := syncState(c)
	x := c.Member(key.Members[0])
	var y *Member
	for _, m := range c.Members {
		if m != leader && m != x {
			y = m
		}
	}
	killed := time.Now()
	x.Crash()
	waitSyncKey(t, c, 10*time.Second, y.Name+" becomes the synchronous standby", func(s dcs.SyncState) bool {
		return len(s.Members) == 1 && s.Members[0] == y.Name && s.Quorum == 1
	})
	took := time.Since(killed)
	if v, err := leader.QueryInt("SELECT count(*) FROM pg_stat_replication WHERE application_name=$1 AND sync_state='sync'", y.Name); err != nil || v != 1 {
		t.Fatalf("the sync key names %s but the primary does not wait for it (%d, %v)", y.Name, v, err)
	}
	t.Logf("MEASURED synchronous standby %s killed -> %s synchronous (database and sync key): %v (loop_wait %v)", x.Name, y.Name, took.Round(time.Millisecond), c.Profile.LoopWait)
	if limit := c.Profile.LoopWait + c.Profile.RetryTimeout + 2*time.Second; took > limit {
		t.Errorf("replacing the synchronous standby took %v, want within a loop (<= %v)", took, limit)
	}
	n := len(w.Acked())
	Eventually(t, 5*time.Second, "writes go on with "+y.Name, func() bool { return len(w.Acked()) > n+20 })

	// Strict: the last standby dies; nothing is acknowledged until one is
	// back.
	setDynamic(t, c, "synchronous_mode", "strict")
	waitSyncKey(t, c, 10*time.Second, "strict mode recorded", func(s dcs.SyncState) bool {
		return s.Mode == "strict" && slices.Equal(s.Members, []string{y.Name})
	})
	killed = time.Now()
	y.Crash()
	time.Sleep(time.Second) // commits in flight at the kill may have been acknowledged by y
	quiet := time.Now()
	time.Sleep(4 * time.Second)
	if n := w.ackedBetween(quiet, time.Now()); n != 0 {
		t.Fatalf("strict mode with no standby: %d commits acknowledged", n)
	}
	if l := c.Leader(); l == nil || l != leader || leader.Status() == nil || !leader.Status().Writable {
		t.Fatalf("the primary should stay leader and writable (commits wait); leader %v", l)
	}
	if s := syncState(c); s == nil || !slices.Equal(s.Members, []string{y.Name}) {
		t.Fatalf("strict mode: the sync key should still count %s (nothing was acknowledged since), got %+v", y.Name, s)
	}
	waiting, _ := leader.QueryInt("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
	t.Logf("strict, no standby: 0 commits acknowledged for 4 s, %d sessions waiting for a synchronous standby", waiting)
	if waiting == 0 {
		t.Errorf("no session waits for a synchronous standby")
	}
	back := time.Now()
	x.Start()
	Eventually(t, 60*time.Second, "writes resume when a standby returns", func() bool { return w.ackedBetween(back, time.Now().Add(time.Hour)) > 20 })
	t.Logf("MEASURED strict: %s restarted -> commits acknowledged again after %v (the writes had waited %v)",
		x.Name, time.Since(back).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	waitSyncKey(t, c, 30*time.Second, x.Name+" counted", func(s dcs.SyncState) bool { return slices.Equal(s.Members, []string{x.Name}) })
	w.Stop()
	// Every acknowledged id is on the synchronous standby (once replayed:
	// it is read as a hot standby).
	acked := w.Acked()
	lacking := 0
	Eventually(t, 15*time.Second, x.Name+" has every acknowledged id", func() bool {
		lacking = missing(t, x, acked)
		return lacking == 0
	})
	if n := missing(t, leader, acked); n != 0 {
		t.Fatalf("the primary lacks %d acknowledged ids", n)
	}
}

// The synchronous standby's database freezes (SIGSTOP of all its
// processes: a hung disk, a stuck host): its replication connection stays
// open, so PostgreSQL would keep every commit waiting for it until
// wal_sender_timeout (60 s). In mode on the leader sees commits waiting
// and the standby silent for longer than retry_timeout, and makes the
// other standby synchronous (key first): writes go on within seconds, and
// every acknowledged write is on the new synchronous standby.
func TestSyncStandbyFrozen(t *testing.T) {
	t.Parallel()
	c, leader := syncCluster(t, "on", 1)
	w := startAckWriter(c, 2)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Acked()) > 20 })

	x := c.Member(syncState(c).Members[0])
	var y *Member
	for _, m := range c.Members {
		if m != leader && m != x {
			y = m
		}
	}
	frozen := time.Now()
	x.SignalPostgres(syscall.SIGSTOP)
	thawed := false
	thaw := func() {
		if !thawed {
			x.SignalPostgres(syscall.SIGCONT)
			thawed = true
		}
	}
	defer thaw()

	// The first write acknowledged after the freeze by a commit that
	// started after it (an earlier one may have been confirmed by x just
	// before it stopped).
	var resumed time.Duration
	Eventually(t, 30*time.Second, "writes acknowledged again with "+x.Name+" frozen", func() bool {
		if w.ackedBetween(frozen.Add(200*time.Millisecond), time.Now()) > 0 {
			resumed = time.Since(frozen)
			return true
		}
		return false
	})
	waitSyncKey(t, c, 10*time.Second, y.Name+" becomes the synchronous standby", func(s dcs.SyncState) bool {
		return slices.Equal(s.Members, []string{y.Name}) && s.Quorum == 1
	})
	t.Logf("MEASURED synchronous standby %s frozen -> commits acknowledged again (with %s synchronous) after %v (retry_timeout %v, loop_wait %v)",
		x.Name, y.Name, resumed.Round(time.Millisecond), c.Profile.RetryTimeout, c.Profile.LoopWait)
	// Without the stall check the commits wait for wal_sender_timeout
	// (60 s); the bound leaves room for a loaded machine.
	if limit := 15 * time.Second; resumed > limit {
		t.Errorf("writes resumed %v after the synchronous standby froze, want < %v", resumed, limit)
	}
	n := len(w.Acked())
	Eventually(t, 10*time.Second, "writes go on with "+y.Name, func() bool { return len(w.Acked()) > n+20 })

	thaw()
	w.Stop()
	acked := w.Acked()
	lacking := 0
	Eventually(t, 15*time.Second, y.Name+" has every acknowledged id", func() bool {
		lacking = missing(t, y, acked)
		return lacking == 0
	})
	if n := missing(t, leader, acked); n != 0 {
		t.Fatalf("the primary lacks %d acknowledged ids", n)
	}
	// The thawed standby streams again, as an asynchronous one.
	Eventually(t, 30*time.Second, x.Name+" streams again", func() bool {
		v, err := leader.QueryInt("SELECT count(*) FROM pg_stat_replication WHERE application_name=$1 AND state='streaming'", x.Name)
		return err == nil && v == 1
	})
}

// syncViolation reports whether the sync key promises more than the
// database waits for: a member the database does not wait for, or more
// acknowledgements than it requires from the members named.
func syncViolation(key dcs.SyncState, db backends.SyncConfig) string {
	if !key.Active() {
		return ""
	}
	outside := 0
	for _, n := range db.Names {
		if !slices.Contains(key.Members, n) {
			outside++
		}
	}
	for _, m := range key.Members {
		if !db.Has(m) {
			return fmt.Sprintf("the sync key names %s, the database waits for %s", m, db)
		}
	}
	if key.Quorum > db.Num-outside {
		return fmt.Sprintf("the sync key promises %d of %v, the database waits for %s", key.Quorum, key.Members, db)
	}
	return ""
}

// syncPoller reads the database's synchronous_standby_names, the DCS sync
// key, and the database again, every 10 ms; a sample is a violation when
// the key promises more than either reading of the database (the two
// readings bracket the key).
type syncPoller struct {
	samples, violations atomic.Int64
	states              sync.Map // distinct keys seen
	mu                  sync.Mutex
	first               string
	stop                chan struct{}
	done                chan struct{}
}

func startSyncPoller(t *testing.T, c *Cluster, leader *Member) *syncPoller {
	p := &syncPoller{stop: make(chan struct{}), done: make(chan struct{})}
	conn, err := pgx.Connect(context.Background(), leader.DSN())
	if err != nil {
		t.Fatal(err)
	}
	read := func() (backends.SyncConfig, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var s string
		if err := conn.QueryRow(ctx, "SELECT current_setting('synchronous_standby_names')").Scan(&s); err != nil {
			return backends.SyncConfig{}, false
		}
		cfg, err := postgres.ParseSyncStandbyNames(s)
		return cfg, err == nil
	}
	go func() {
		defer close(p.done)
		defer conn.Close(context.Background())
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			db1, ok1 := read()
			key := syncState(c)
			db2, ok2 := read()
			if !ok1 || !ok2 || key == nil {
				continue
			}
			p.samples.Add(1)
			p.states.Store(fmt.Sprint(key.Mode, key.Members, key.Quorum), true)
			v1, v2 := syncViolation(*key, db1), syncViolation(*key, db2)
			if v1 != "" && v2 != "" {
				p.violations.Add(1)
				p.mu.Lock()
				if p.first == "" {
					p.first = v1
				}
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *syncPoller) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *syncPoller) distinct() int {
	n := 0
	p.states.Range(func(any, any) bool { n++; return true })
	return n
}

// The sync set changes under write load — synchronous_node_count up and
// down, a member leaving and joining, the mode switched to quorum — while
// a poller reads the database and the DCS: never a moment where the key
// names a member the database does not wait for (or promises more
// acknowledgements than it requires). Then the leader is made to write the
// key before the database on purpose (fault injection), and the same
// poller catches it.
func TestSyncSetChangesUnderLoad(t *testing.T) {
	t.Parallel()
	c, leader := syncCluster(t, "on", 1)
	w := startAckWriter(c, 3)
	defer w.Stop()
	p := startSyncPoller(t, c, leader)
	defer p.Stop()
	var standbys []*Member
	for _, m := range c.Members {
		if m != leader {
			standbys = append(standbys, m)
		}
	}
	settle := func(what string, cond func(s dcs.SyncState) bool) {
		t.Helper()
		start := time.Now()
		waitSyncKey(t, c, 30*time.Second, what, cond)
		t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
		time.Sleep(300 * time.Millisecond)
	}
	setDynamic(t, c, "synchronous_node_count", 2)
	settle("N 1 -> 2: both standbys synchronous", func(s dcs.SyncState) bool { return len(s.Members) == 2 && s.Quorum == 2 })
	standbys[1].Crash()
	settle(standbys[1].Name+" leaves", func(s dcs.SyncState) bool {
		return slices.Equal(s.Members, []string{standbys[0].Name}) && s.Quorum == 1
	})
	standbys[1].Start()
	settle(standbys[1].Name+" joins", func(s dcs.SyncState) bool { return len(s.Members) == 2 && s.Quorum == 2 })
	setDynamic(t, c, "synchronous_node_count", 1)
	settle("N 2 -> 1", func(s dcs.SyncState) bool { return len(s.Members) == 1 && s.Quorum == 1 })
	setDynamic(t, c, "synchronous_mode", "quorum")
	settle("mode quorum, ANY 1 of 2", func(s dcs.SyncState) bool { return s.Mode == "quorum" && len(s.Members) == 2 && s.Quorum == 1 })
	setDynamic(t, c, "synchronous_node_count", 2)
	settle("quorum, ANY 2 of 2", func(s dcs.SyncState) bool { return s.Mode == "quorum" && len(s.Members) == 2 && s.Quorum == 2 })
	standbys[0].Crash()
	settle("quorum, "+standbys[0].Name+" leaves", func(s dcs.SyncState) bool {
		return slices.Equal(s.Members, []string{standbys[1].Name}) && s.Quorum == 1
	})
	standbys[0].Start()
	settle("quorum, "+standbys[0].Name+" joins", func(s dcs.SyncState) bool { return len(s.Members) == 2 && s.Quorum == 2 })
	setDynamic(t, c, "synchronous_mode", "on")
	setDynamic(t, c, "synchronous_node_count", 1)
	settle("back to on, N 1", func(s dcs.SyncState) bool { return s.Mode == "on" && len(s.Members) == 1 && s.Quorum == 1 })

	samples, violations, distinct := p.samples.Load(), p.violations.Load(), p.distinct()
	t.Logf("MEASURED sync set changes under load: %d samples of (database, DCS, database), %d distinct sync keys, %d violations; %d writes acknowledged",
		samples, distinct, violations, len(w.Acked()))
	if violations != 0 {
		t.Fatalf("%d samples where the DCS promised more than the database waits for; first: %s", violations, p.first)
	}
	if samples < 100 || distinct < 6 {
		t.Fatalf("the poller saw too little (%d samples, %d distinct keys) to mean anything", samples, distinct)
	}

	// Break rule 6 on purpose: the leader writes the key before the
	// database waits. The same poller must see it.
	standbys[1].Crash()
	settle("fault run: "+standbys[1].Name+" leaves", func(s dcs.SyncState) bool { return slices.Equal(s.Members, []string{standbys[0].Name}) })
	setDynamic(t, c, "synchronous_node_count", 2)
	time.Sleep(time.Second)
	leader.Fault("sync-key-first", true)
	standbys[1].Start()
	settle("fault run: "+standbys[1].Name+" joins", func(s dcs.SyncState) bool { return len(s.Members) == 2 })
	leader.Fault("sync-key-first", false)
	p.Stop()
	if p.violations.Load() == 0 {
		t.Fatalf("with the key written before the database, the poller saw no violation in %d samples: it cannot catch one", p.samples.Load()-samples)
	}
	t.Logf("fault injected (key before database): %d violating samples caught, first: %s", p.violations.Load(), p.first)
}

// Quorum mode, ANY 1 of two standbys: the primary and one standby die
// together. The survivor cannot prove it holds every acknowledged commit
// (the dead standby may hold some alone), so nobody is promoted; once the
// dead standby's database is back, the quorum rule holds and the most
// advanced of the two takes over without losing an acknowledged commit.
func TestQuorumRuleNeedsEnoughVoters(t *testing.T) {
	t.Parallel()
	c, old := syncCluster(t, "quorum", 1)
	w := startAckWriter(c, 3)
	defer w.Stop()
	Eventually(t, 10*time.Second, "writes acknowledged", func() bool { return len(w.Acked()) > 200 })
	var survivor, gone *Member
	for _, m := range c.Members {
		switch {
		case m == old:
		case survivor == nil:
			survivor = m
		default:
			gone = m
		}
	}
	// Both hosts die at once: the agents first, so that the leader cannot
	// take the dying standby out of the set, then the databases.
	old.Kill()
	gone.Kill()
	old.KillPostgres()
	gone.KillPostgres()
	deadline := time.Now().Add(c.Profile.TTL + 5*time.Second)
	for time.Now().Before(deadline) {
		if st := survivor.Status(); st != nil && st.Writable {
			t.Fatalf("%s was promoted without reaching enough of the sync set", survivor.Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l := c.Leader(); l != nil {
		t.Fatalf("%s took the leader key without the quorum", l.Name)
	}
	lines := grepLines(survivor.Log(), "quorum rule")
	if len(lines) == 0 {
		t.Fatalf("%s's log does not say why it does not take over", survivor.Name)
	}
	t.Logf("%s: %s", survivor.Name, lines[len(lines)-1])

	back := time.Now()
	gone.Start()
	var nl *Member
	Eventually(t, 60*time.Second, "a new primary once the voter is back", func() bool {
		nl = c.Leader()
		if nl == nil || nl == old {
			return false
		}
		st := nl.Status()
		return st != nil && st.Writable
	})
	t.Logf("MEASURED quorum: %s's database back -> %s primary after %v", gone.Name, nl.Name, time.Since(back).Round(time.Millisecond))
	w.Stop()
	acked := w.Acked()
	if n := missing(t, nl, acked); n != 0 {
		t.Fatalf("the new primary %s lacks %d of %d acknowledged ids", nl.Name, n, len(acked))
	}
	t.Logf("quorum: %d acknowledged ids, all on the new primary %s", len(acked), nl.Name)
}
