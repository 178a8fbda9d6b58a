package etcd_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/dcstest"
	"github.com/stewardha/steward/dcs/etcd"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's embedded server and grpc keep a few process-wide goroutines.
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.(*serverWatchStream).recvLoop"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.(*serverWatchStream).sendLoop"),
	)
}

func open(t testing.TB, eps []string, cluster, member string, ttl, timeout time.Duration) *etcd.Store {
	t.Helper()
	s, err := etcd.New(etcd.Options{Endpoints: eps, Namespace: "/steward-test", Cluster: cluster, Member: member, TTL: ttl, RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func factory(t testing.TB, eps []string, cluster, member string, ttl, timeout time.Duration) dcstest.Store {
	return open(t, eps, cluster, member, ttl, timeout)
}

func TestConformanceEmbedded(t *testing.T) {
	srv := dcstest.StartEmbedded(t)
	dcstest.Run(t, srv, factory)
}

// Debian 12 ships etcd 3.4: the client must work against it too.
func TestConformanceEtcd34Binary(t *testing.T) {
	srv := dcstest.StartBinary(t)
	dcstest.Run(t, srv, factory)
}

func TestUnavailableNothingListening(t *testing.T) {
	port := dcstest.FreePort(t)
	s := open(t, []string{"http://127.0.0.1:" + strconv.Itoa(port)}, "c", "a", 10*time.Second, time.Second)
	dcstest.RunUnavailable(t, s, time.Second)
}

func TestUnavailableEtcdKilled(t *testing.T) {
	srv := dcstest.StartBinary(t)
	s := open(t, srv.Endpoints(), "c", "a", 10*time.Second, time.Second)
	if _, _, err := s.AcquireLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	dcstest.RunUnavailable(t, s, time.Second)
}

func TestUnavailableEtcdFrozen(t *testing.T) {
	srv := dcstest.StartBinary(t)
	s := open(t, srv.Endpoints(), "c", "a", 10*time.Second, time.Second)
	if _, _, err := s.AcquireLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	defer srv.Thaw()
	dcstest.RunUnavailable(t, s, time.Second)
}

func TestUnavailablePartitioned(t *testing.T) {
	srv := dcstest.StartEmbedded(t)
	p := dcstest.StartProxy(t, strings.TrimPrefix(srv.Endpoints()[0], "http://"))
	s := open(t, []string{p.URL()}, "c", "a", 10*time.Second, time.Second)
	if _, _, err := s.AcquireLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	dcstest.RunUnavailable(t, s, time.Second)
	// After the partition heals the same store works again.
	p.Restore()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.GetLeader(context.Background())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover after the partition healed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Rule 1 counts the lease from when the renewal was sent, never from when
// the answer came back: with 400 ms of latency on etcd's answers, the returned
// time is the moment before the request left.
func TestRenewReturnsSendTime(t *testing.T) {
	srv := dcstest.StartEmbedded(t)
	p := dcstest.StartProxy(t, strings.TrimPrefix(srv.Endpoints()[0], "http://"))
	s := open(t, []string{p.URL()}, "c", "a", 10*time.Second, 5*time.Second)
	ctx := context.Background()
	if _, _, err := s.AcquireLeader(ctx); err != nil {
		t.Fatal(err)
	}
	p.SetLatency(400 * time.Millisecond)
	before := time.Now()
	sent, err := s.RenewLeader(ctx)
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if after.Sub(before) < 400*time.Millisecond {
		t.Fatalf("renewal took %v; the proxy latency did not apply", after.Sub(before))
	}
	if sent.Before(before) || sent.Sub(before) > 50*time.Millisecond {
		t.Fatalf("renewal reported sent at +%v, want the moment before sending (~+0, the answer came at +%v)", sent.Sub(before), after.Sub(before))
	}
	t.Logf("MEASURED renewal with 400ms answer latency: sent-time +%v, answer +%v", sent.Sub(before).Round(time.Microsecond), after.Sub(before).Round(time.Millisecond))
}

// An agent restarted while its lease still lives adopts the lease the leader
// key is on, so a healthy primary is not failed over by an agent restart.
func TestAdoptLeaseAfterRestart(t *testing.T) {
	srv := dcstest.StartEmbedded(t)
	ctx := context.Background()
	first := open(t, srv.Endpoints(), "c", "a", 10*time.Second, 3*time.Second)
	l, _, err := first.AcquireLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first.Close() // the agent died without releasing
	second := open(t, srv.Endpoints(), "c", "a", 10*time.Second, 3*time.Second)
	cur, err := second.GetLeader(ctx)
	if err != nil || cur == nil || cur.Name != "a" {
		t.Fatalf("leader after restart: %+v %v", cur, err)
	}
	if _, err := second.AdoptLease(ctx, cur.Lease); err != nil {
		t.Fatalf("adopting the live lease: %v", err)
	}
	if _, err := second.RenewLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := second.ReleaseLeader(ctx, l.Term); err != nil {
		t.Fatalf("release by the restarted holder: %v", err)
	}
}

// A ttl change moves the leader key to a new lease without changing its term.
func TestRotateLeaseKeepsTerm(t *testing.T) {
	srv := dcstest.StartEmbedded(t)
	ctx := context.Background()
	s := open(t, srv.Endpoints(), "c", "a", 10*time.Second, 3*time.Second)
	l, _, err := s.AcquireLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.SetTimings(0, 4*time.Second)
	if _, err := s.RotateLease(ctx, &dcs.Member{Name: "a", Role: dcs.RolePrimary}); err != nil {
		t.Fatal(err)
	}
	cur, err := s.GetLeader(ctx)
	if err != nil || cur == nil {
		t.Fatal(err)
	}
	if cur.Term != l.Term || cur.Lease == l.Lease || cur.Lease != s.Lease() {
		t.Fatalf("after rotation: term %d (was %d), lease %x (was %x, store %x)", cur.Term, l.Term, cur.Lease, l.Lease, s.Lease())
	}
	ms, err := s.Members(ctx)
	if err != nil || len(ms) != 1 {
		t.Fatalf("member key after rotation: %v %v", ms, err)
	}
}

// A record that is not valid JSON is reported, not fatal.
func TestLoadSurvivesGarbage(t *testing.T) {
	srv := dcstest.StartEmbedded(t)
	ctx := context.Background()
	s := open(t, srv.Endpoints(), "c", "a", 10*time.Second, 3*time.Second)
	raw := open(t, srv.Endpoints(), "c", "b", 10*time.Second, 3*time.Second)
	if _, err := raw.CASConfig(ctx, []byte("not json at all {"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMember(ctx, dcs.Member{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSwitchover(ctx, dcs.Switchover{}, 0); err != nil {
		t.Fatal(err)
	}
	cl, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.Members) != 1 || cl.Config == nil || string(cl.Config.Value) != "not json at all {" {
		t.Fatalf("cluster = %+v", cl)
	}
	if _, err := s.GetSwitchover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLeader(ctx, 0); !errors.Is(err, dcs.ErrNotLeader) {
		t.Fatalf("release without holding: %v", err)
	}
}

// A sync key that cannot be decoded (written by hand, or by a future
// version) must not crash the reader or be taken for "no sync set": Load
// reports it, keeps its version so that the leader can overwrite it with a
// compare-and-swap, and the overwrite succeeds.
func TestUndecodableSyncKey(t *testing.T) {
	srv := dcstest.StartEmbedded(t)
	cluster := "badsync"
	a := open(t, srv.Endpoints(), cluster, "a", 10*time.Second, 3*time.Second)
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := dcs.NewKeys("/steward-test", cluster).Sync()
	if _, err := cli.Put(ctx, key, `{"leader": "a", "members": "not-a-list"`); err != nil {
		t.Fatal(err)
	}
	cl, err := a.Load(ctx)
	if err != nil {
		t.Fatalf("Load with an undecodable sync key: %v", err)
	}
	if cl.SyncError == "" || cl.Sync == nil || cl.Sync.Version == 0 || cl.Errors[key] == "" {
		t.Fatalf("undecodable sync key not reported: SyncError %q, Sync %+v, Errors %v", cl.SyncError, cl.Sync, cl.Errors)
	}
	l, _, err := a.AcquireLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CASSync(ctx, dcs.SyncState{Leader: "a", Mode: "on"}, cl.Sync.Version, l.Term); err != nil {
		t.Fatalf("overwriting the undecodable sync key: %v", err)
	}
	cl, err = a.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cl.SyncError != "" || cl.Sync == nil || cl.Sync.Value.Leader != "a" || !cl.Sync.Value.Active() {
		t.Fatalf("after the overwrite: SyncError %q, Sync %+v", cl.SyncError, cl.Sync)
	}
}
