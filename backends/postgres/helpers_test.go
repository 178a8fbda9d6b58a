package postgres_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/backends/postgres"
	"github.com/stewardha/steward/backends/postgres/pgtest"
)

// The backend is what the agent needs.
var _ agent.Backend = (*postgres.Backend)(nil)

// member is one test server.
type member struct {
	name string
	opts postgres.Options
	b    *postgres.Backend
}

func (m *member) addr() string { return m.opts.Listen }

func (m *member) upstream() backends.Upstream {
	h, p, _ := net.SplitHostPort(m.opts.ConnectAddress)
	port, _ := strconv.Atoi(p)
	return backends.Upstream{Name: m.name, Host: h, Port: port}
}

func (m *member) upPtr() *backends.Upstream { u := m.upstream(); return &u }

func newMember(t *testing.T, name string, edit ...func(*postgres.Options)) *member {
	t.Helper()
	opts := pgtest.Options(t, name)
	for _, e := range edit {
		e(&opts)
	}
	b, err := postgres.New(opts)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	return &member{name: name, opts: opts, b: b}
}

func tctx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// bootstrapMember makes a running primary.
func bootstrapMember(t *testing.T, name string, edit ...func(*postgres.Options)) *member {
	t.Helper()
	m := newMember(t, name, edit...)
	if _, err := m.b.Bootstrap(tctx(t, 120*time.Second)); err != nil {
		t.Fatalf("Bootstrap(%s): %v", name, err)
	}
	return m
}

// cloneMember clones name from up, creates its slot on up and starts it as
// a replica of up; it waits until it streams.
func cloneMember(t *testing.T, name string, up *member, edit ...func(*postgres.Options)) *member {
	t.Helper()
	m := newMember(t, name, edit...)
	if err := up.b.EnsureSlots(tctx(t, 10*time.Second), []string{up.name, name}); err != nil {
		t.Fatalf("EnsureSlots on %s: %v", up.name, err)
	}
	if err := m.b.Clone(tctx(t, 120*time.Second), up.upstream()); err != nil {
		t.Fatalf("Clone(%s from %s): %v", name, up.name, err)
	}
	if err := m.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, up.upPtr()); err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	waitStreaming(t, m, up, 30*time.Second)
	return m
}

func observe(t *testing.T, m *member) backends.Status {
	t.Helper()
	return m.b.Observe(tctx(t, 5*time.Second))
}

// waitFor polls f every 20 ms until it reports true or d passes.
func waitFor(t *testing.T, d time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		ok, s := f()
		if ok {
			return
		}
		last = s
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v; last: %s", what, d, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitStreaming(t *testing.T, m, up *member, d time.Duration) backends.Status {
	t.Helper()
	var st backends.Status
	waitFor(t, d, m.name+" streaming from "+up.name, func() (bool, string) {
		st = observe(t, m)
		return st.State == backends.StateRunning && st.Streaming && st.Upstream == up.addr(), statusString(st)
	})
	return st
}

func waitRunning(t *testing.T, m *member, d time.Duration) backends.Status {
	t.Helper()
	var st backends.Status
	waitFor(t, d, m.name+" running", func() (bool, string) {
		st = observe(t, m)
		return st.State == backends.StateRunning, statusString(st)
	})
	return st
}

// waitCaughtUp waits until m has replayed everything primary has flushed.
func waitCaughtUp(t *testing.T, m, primary *member, d time.Duration) {
	t.Helper()
	target := observe(t, primary).Position
	waitFor(t, d, m.name+" replaying "+target.String(), func() (bool, string) {
		st := observe(t, m)
		return st.Replayed.LSN >= target.LSN, statusString(st)
	})
}

func statusString(st backends.Status) string {
	return "state=" + string(st.State) + " reason=" + st.Reason + " recovery=" + strconv.FormatBool(st.InRecovery) +
		" writable=" + strconv.FormatBool(st.Writable) + " tl=" + strconv.FormatInt(st.Timeline, 10) +
		" pos=" + st.Position.String() + " recv=" + st.Received.String() + " replay=" + st.Replayed.String() +
		" receiver=" + st.ReceiverState + " streaming=" + strconv.FormatBool(st.Streaming) + " upstream=" + st.Upstream
}
