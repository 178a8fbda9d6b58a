package api

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// t0 is the fake "now" of every test.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeAgent is an AgentView returning a view the test built.
type fakeAgent struct {
	mu       sync.Mutex
	v        agent.View
	deadline time.Time
	wakes    int
}

func (f *fakeAgent) Snapshot() agent.View {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.v
}

func (f *fakeAgent) PeerStatus(now time.Time) agent.PeerStatus {
	v := f.Snapshot()
	m := v.Member
	return agent.PeerStatus{Name: m.Name, Role: m.Role, State: m.State, Writable: m.Writable,
		Leader: !f.LeaseDeadline().IsZero() && now.Before(f.LeaseDeadline()), Timeline: m.Timeline, Position: m.Position}
}

func (f *fakeAgent) LeaseDeadline() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deadline
}

func (f *fakeAgent) Wake() {
	f.mu.Lock()
	f.wakes++
	f.mu.Unlock()
}

func (f *fakeAgent) set(v agent.View, deadline time.Time) {
	f.mu.Lock()
	f.v, f.deadline = v, deadline
	f.mu.Unlock()
}

// fakeStore is an in-memory DCS that records every write.
type fakeStore struct {
	mu      sync.Mutex
	config  []byte // nil: no config key
	version int64
	writes  int
	down    bool
	// beforeCAS runs inside CASConfig before the compare (to simulate a
	// concurrent writer).
	beforeCAS func(f *fakeStore)
	cluster   *dcs.Cluster
	history   []dcs.HistoryRecord
}

func (f *fakeStore) Load(context.Context) (*dcs.Cluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, dcs.ErrUnavailable
	}
	if f.cluster == nil {
		return &dcs.Cluster{Members: map[string]dcs.Member{}}, nil
	}
	return f.cluster, nil
}

func (f *fakeStore) History(context.Context) ([]dcs.HistoryRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, dcs.ErrUnavailable
	}
	return f.history, nil
}

func (f *fakeStore) GetConfig(context.Context) ([]byte, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, 0, dcs.ErrUnavailable
	}
	if f.config == nil {
		return nil, 0, dcs.ErrNotFound
	}
	return append([]byte(nil), f.config...), f.version, nil
}

func (f *fakeStore) CASConfig(_ context.Context, cfg []byte, version int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.beforeCAS != nil {
		f.beforeCAS(f)
	}
	if f.down {
		return 0, dcs.ErrUnavailable
	}
	cur := f.version
	if f.config == nil {
		cur = 0
	}
	if cur != version {
		return 0, fmt.Errorf("write config: %w", dcs.ErrConflict)
	}
	f.config = append([]byte(nil), cfg...)
	f.version += 10
	f.writes++
	return f.version, nil
}

func (f *fakeStore) state() (string, int64, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.config), f.version, f.writes
}

// views builds the roles the tests judge.
type role struct {
	name     string
	v        agent.View
	deadline time.Time
}

func baseView() agent.View {
	return agent.View{
		Config:  config.DefaultDynamic(),
		LoopAt:  t0.Add(-200 * time.Millisecond),
		DCSAt:   t0.Add(-200 * time.Millisecond),
		Cluster: &dcs.Cluster{Leader: &dcs.Leader{Name: "m1", Term: 7}},
	}
}

func primaryView() role {
	v := baseView()
	v.Member = dcs.Member{Name: "m1", Role: dcs.RolePrimary, State: agent.StateRunning, Writable: true, Timeline: 2,
		Position: backends.Position{LSN: 0x3000000}, LagBytes: 0, Priority: 1}
	v.DB = backends.Status{State: backends.StateRunning, Writable: true, Timeline: 2, Position: backends.Position{LSN: 0x3000000}}
	return role{"primary", v, t0.Add(5 * time.Second)}
}

func replicaView() role {
	v := baseView()
	v.Member = dcs.Member{Name: "m2", Role: dcs.RoleReplica, State: agent.StateStreaming, Timeline: 2,
		Position: backends.Position{LSN: 0x3000000}, Received: backends.Position{LSN: 0x3000000}, Replayed: backends.Position{LSN: 0x3000000},
		LagBytes: 0, ReplicationState: "streaming", Eligible: true, Priority: 1, Tags: map[string]string{"zone": "a"}}
	v.DB = backends.Status{State: backends.StateRunning, InRecovery: true, Timeline: 2, Streaming: true, ReceiverState: "streaming",
		Position: backends.Position{LSN: 0x3000000}, Received: backends.Position{LSN: 0x3000000}, Replayed: backends.Position{LSN: 0x3000000},
		ReplayTime: t0.Add(-time.Minute)}
	return role{"replica", v, time.Time{}}
}

func roles() []role {
	p := primaryView()
	r := replicaView()

	lag := replicaView()
	lag.name = "lagging replica"
	lag.v.Member.LagBytes = 3 << 20
	lag.v.DB.Replayed = backends.Position{LSN: 0x3000000 - 3<<20}
	lag.v.DB.ReplayPaused = true
	lag.v.DB.ReplayTime = t0.Add(-30 * time.Second)

	paused := primaryView()
	paused.name = "paused primary, loop stuck"
	paused.v.Config.Paused = true
	paused.v.LoopAt = t0.Add(-time.Minute)

	pausedR := replicaView()
	pausedR.name = "paused replica"
	pausedR.v.Config.Paused = true

	expired := primaryView()
	expired.name = "lease expired"
	expired.deadline = t0.Add(-time.Millisecond)

	stuck := primaryView()
	stuck.name = "primary, loop stuck"
	stuck.v.LoopAt = t0.Add(-11 * time.Second)

	down := replicaView()
	down.name = "database down"
	down.v.DB = backends.Status{State: backends.StateCrashed, Reason: "postmaster gone"}
	down.v.Member.Role, down.v.Member.State = dcs.RoleUnknown, agent.StateCrashed

	pdown := primaryView()
	pdown.name = "leader, database down"
	pdown.v.DB = backends.Status{State: backends.StateUnresponsive}
	pdown.v.Member.Role, pdown.v.Member.State = dcs.RoleUnknown, agent.StateUnresponsive

	ns := replicaView()
	ns.name = "not streaming"
	ns.v.DB.Streaming, ns.v.DB.ReceiverState = false, "waiting"
	ns.v.Member.ReplicationState, ns.v.Member.State = "", agent.StateRunning

	nlb := replicaView()
	nlb.name = "noloadbalance"
	nlb.v.Member.NoLoadBalance = true

	sync := replicaView()
	sync.name = "sync replica"
	sync.v.Member.Sync = "sync"

	quorum := replicaView()
	quorum.name = "quorum replica"
	quorum.v.Member.Sync = "quorum"

	starting := replicaView()
	starting.name = "starting"
	starting.v.DB = backends.Status{State: backends.StateStarting}
	starting.v.Member.Role, starting.v.Member.State = dcs.RoleUnknown, agent.StateStarting
	starting.v.LoopAt = time.Time{}

	return []role{p, r, lag, paused, pausedR, expired, stuck, down, pdown, ns, nlb, sync, quorum, starting}
}

// newTestServer returns the handler over a fake agent and store.
func newTestServer(t testing.TB, r role, d Deps) (http.Handler, *fakeAgent, *fakeStore) {
	t.Helper()
	fa := &fakeAgent{}
	fa.set(r.v, r.deadline)
	fs, _ := d.Store.(*fakeStore)
	if fs == nil {
		fs = &fakeStore{}
		d.Store = fs
	}
	d.Agent = fa
	d.Now = func() time.Time { return t0 }
	d.Cluster = "main"
	return New(d), fa, fs
}

// do runs one request and returns the status and body.
func do(h http.Handler, method, target, body string, hdr ...string) (int, string, http.Header) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	// The query string is set raw, so that fuzzers can send anything a
	// client could put on the request line.
	path, query, _ := strings.Cut(target, "?")
	req := httptest.NewRequest(method, path, rd)
	req.URL.RawQuery = query
	req.RemoteAddr = "127.0.0.1:40000"
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "RemoteAddr" {
			req.RemoteAddr = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.String(), w.Header()
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
