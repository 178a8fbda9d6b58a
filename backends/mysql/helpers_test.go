package mysql_test

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/backends/mysql"
	"github.com/stewardha/steward/backends/mysql/mytest"
)

// The backend is what the agent needs.
var (
	_ agent.Backend    = (*mysql.Backend)(nil)
	_ agent.PeerFencer = (*mysql.Backend)(nil)
	// Semi-synchronous replication (semisync_test.go).
	_ agent.AckReplicator = (*mysql.Backend)(nil)
)

// member is one test server and its backend.
type member struct {
	name string
	opts mysql.Options
	srv  *mytest.Server
	b    *mysql.Backend
}

func (m *member) addr() string { return m.srv.Addr() }

func (m *member) upstream() backends.Upstream {
	return backends.Upstream{Name: m.name, Host: "127.0.0.1", Port: m.srv.Port}
}

func (m *member) upPtr() *backends.Upstream { u := m.upstream(); return &u }

// newMember makes an initialized, stopped server and its backend.
func newMember(t *testing.T, dir, name string, serverID int, edit ...func(*mysql.Options)) *member {
	t.Helper()
	opts, srv := mytest.Options(t, dir, name, serverID)
	for _, e := range edit {
		e(&opts)
	}
	b, err := mysql.New(opts)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() { b.Close() })
	return &member{name: name, opts: opts, srv: srv, b: b}
}

func tctx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// bootstrapMember makes a running writable primary with an app table.
func bootstrapMember(t *testing.T, dir, name string, serverID int) *member {
	t.Helper()
	m := newMember(t, dir, name, serverID)
	if _, err := m.b.Bootstrap(tctx(t, 60*time.Second)); err != nil {
		t.Fatalf("Bootstrap(%s): %v", name, err)
	}
	mytest.Exec(t, m.addr(), "CREATE DATABASE IF NOT EXISTS app",
		"CREATE TABLE IF NOT EXISTS app.t (id BIGINT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(255)) ENGINE=InnoDB")
	return m
}

// cloneMember makes a replica of up: start (empty), clone, start as a
// replica; it waits until it streams.
func cloneMember(t *testing.T, dir, name string, serverID int, up *member) *member {
	t.Helper()
	m := newMember(t, dir, name, serverID)
	if err := m.b.Start(tctx(t, 30*time.Second), backends.RoleReplica, up.upPtr()); err != nil {
		t.Fatalf("Start(%s) empty: %v", name, err)
	}
	if st := observe(t, m); st.State != backends.StateUninitialized {
		t.Fatalf("%s before the clone: %s", name, statusString(st))
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

// waitCaughtUp waits until m has applied everything primary has.
func waitCaughtUp(t *testing.T, m, primary *member, d time.Duration) {
	t.Helper()
	target := observe(t, primary).Position
	waitFor(t, d, m.name+" applied "+target.String(), func() (bool, string) {
		st := observe(t, m)
		return mysql.Compare(st.Replayed, target) >= 0, statusString(st)
	})
}

func count(t *testing.T, m *member, q string) int {
	t.Helper()
	n, err := strconv.Atoi(mytest.QueryValue(t, m.addr(), q))
	if err != nil {
		t.Fatalf("%s: %s: %v", m.name, q, err)
	}
	return n
}

// slaveStatus reads SHOW SLAVE STATUS on m.
func slaveStatus(t *testing.T, m *member) map[string]string {
	t.Helper()
	rows := mytest.Query(t, m.addr(), "SHOW SLAVE STATUS")
	if len(rows) == 0 {
		return map[string]string{}
	}
	return rows[0]
}

// insertRows commits n single-row transactions on m.
func insertRows(t *testing.T, m *member, n int, tag string) {
	t.Helper()
	stmts := make([]string, n)
	for i := range stmts {
		stmts[i] = "INSERT INTO app.t (v) VALUES ('" + tag + "')"
	}
	mytest.Exec(t, m.addr(), stmts...)
}

func statusString(st backends.Status) string {
	return "state=" + string(st.State) + " reason=" + st.Reason + " recovery=" + strconv.FormatBool(st.InRecovery) +
		" writable=" + strconv.FormatBool(st.Writable) + " pos=" + st.Position.String() + " recv=" + st.Received.String() +
		" replay=" + st.Replayed.String() + " receiver=" + st.ReceiverState + " streaming=" + strconv.FormatBool(st.Streaming) +
		" upstream=" + st.Upstream + " pid=" + strconv.Itoa(st.PID)
}

func contains(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

type sqlDB = sql.DB

// openApp opens a pool to m as the application account.
func openApp(m *member) *sql.DB {
	db := mytest.Open(m.addr(), mytest.AppUser, mytest.AppPassword)
	db.SetMaxOpenConns(1)
	return db
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
