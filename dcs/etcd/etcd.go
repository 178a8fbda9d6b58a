// Package etcd is steward's DCS on etcd v3: the leader key bound to a session
// lease, conditional writes for every record, and a watch on the leader key.
//
// One session lease per agent carries both its member key and, while it
// leads, the leader key, so one keep-alive per loop renews both. Every call
// is bounded by the request timeout (retry_timeout): an unreachable etcd
// gives dcs.ErrUnavailable within that deadline, never a hang.
//
// Guarantees:
//   - AcquireLeader succeeds for at most one member at a time: it creates the
//     key only if it does not exist (create revision 0), on our lease.
//   - KeepAlive returns the local time read *before* the renewal was sent;
//     the lease outlives that moment by at least the lease TTL at etcd, so a
//     holder that stops writing by sent+ttl-margin never overlaps a successor.
//   - ReleaseLeader deletes the key only while it holds our name on our lease.
//
// Not guaranteed: reads (Load, GetLeader) may be stale by the time they
// return; etcd may keep a lease alive longer than its TTL (it extends leases
// when its own leader changes), so the TTL is a lower bound on how long a dead
// holder's key survives, never an upper bound.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stewardha/steward/dcs"
)

// Options configure a Store.
type Options struct {
	Endpoints []string
	Username  string
	Password  string
	CAFile    string
	CertFile  string
	KeyFile   string
	// DialTimeout bounds connection establishment per attempt (default 2s).
	DialTimeout time.Duration

	Namespace string // e.g. "/steward"
	Cluster   string
	Member    string // this agent's member name ("" for CLI use)

	// RequestTimeout bounds every call (the cluster's retry_timeout).
	RequestTimeout time.Duration
	// TTL of the session lease (the cluster's ttl). Whole seconds.
	TTL time.Duration

	// Now reads the local monotonic clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Store is the etcd implementation of steward's DCS. It is safe for
// concurrent use.
type Store struct {
	cli  *clientv3.Client
	keys dcs.Keys
	name string
	now  func() time.Time
	log  *slog.Logger
	eps  []string

	mu      sync.Mutex
	timeout time.Duration
	ttl     time.Duration
	lease   clientv3.LeaseID // 0 when none granted (or lost)
}

// New connects to etcd. It does not block on the connection: an unreachable
// etcd shows up as dcs.ErrUnavailable from the first call.
func New(opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints given (etcd.endpoints)")
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 3 * time.Second
	}
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Second
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	eps := make([]string, len(opts.Endpoints))
	for i, e := range opts.Endpoints {
		eps[i] = strings.TrimSpace(e)
	}
	tlsCfg, err := tlsConfig(opts)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          0, // non-blocking: per-call deadlines decide
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: opts.DialTimeout,
		Username:             opts.Username,
		Password:             opts.Password,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
		// Fail fast on a broken connection instead of queueing requests, so
		// the per-call deadline is the only wait.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(connectParams(opts.DialTimeout))},
		// Let the client reject oversized responses cleanly.
		MaxCallRecvMsgSize: 32 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: connecting to %s: %w", strings.Join(eps, ","), err)
	}
	return &Store{
		cli:     cli,
		keys:    dcs.NewKeys(opts.Namespace, opts.Cluster),
		name:    opts.Member,
		now:     opts.Now,
		log:     opts.Logger,
		eps:     eps,
		timeout: opts.RequestTimeout,
		ttl:     opts.TTL,
	}, nil
}

// connectParams makes gRPC retry a lost connection quickly (etcd restarts
// and partitions heal within seconds; the default backoff grows to 2 minutes).
func connectParams(dial time.Duration) grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: dial,
	}
}

func tlsConfig(o Options) (*tls.Config, error) {
	anyHTTPS := false
	for _, e := range o.Endpoints {
		if strings.HasPrefix(strings.TrimSpace(e), "https://") {
			anyHTTPS = true
		}
	}
	if !anyHTTPS && o.CAFile == "" && o.CertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd.ca_file: %s holds no PEM certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd.cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Close stops the client. It does not revoke the session lease: a stopping
// primary that wants a fast handover calls ReleaseLeader first.
func (s *Store) Close() error { return s.cli.Close() }

// Keys returns the key layout in use.
func (s *Store) Keys() dcs.Keys { return s.keys }

// Endpoints returns the endpoints this store was configured with.
func (s *Store) Endpoints() []string { return append([]string(nil), s.eps...) }

// SetTimings changes the request timeout and, from the next lease grant on,
// the lease TTL (dynamic config changed). A changed TTL takes effect through
// RotateLease.
func (s *Store) SetTimings(requestTimeout, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if requestTimeout > 0 {
		s.timeout = requestTimeout
	}
	if ttl > 0 {
		s.ttl = ttl
	}
}

// TTL returns the TTL new leases are granted with.
func (s *Store) TTL() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ttl
}

func (s *Store) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	s.mu.Lock()
	t := s.timeout
	s.mu.Unlock()
	// WithRequireLeader: an etcd member cut off from its quorum answers at
	// once instead of holding the request until our deadline.
	return context.WithTimeout(clientv3.WithRequireLeader(parent), t)
}

// classify translates an etcd/gRPC error into a dcs sentinel.
func (s *Store) classify(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return fmt.Errorf("etcd %s: %w", op, dcs.ErrLeaseLost)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("etcd %s: %w", op, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("etcd %s: no answer from %s within the deadline: %w", op, strings.Join(s.eps, ","), dcs.ErrUnavailable)
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.ResourceExhausted:
			return fmt.Errorf("etcd %s: %s: %w", op, st.Message(), dcs.ErrUnavailable)
		case codes.NotFound:
			if strings.Contains(st.Message(), "lease not found") {
				return fmt.Errorf("etcd %s: %w", op, dcs.ErrLeaseLost)
			}
		}
	}
	if errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) || errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) ||
		errors.Is(err, rpctypes.ErrLeaderChanged) {
		return fmt.Errorf("etcd %s: %v: %w", op, err, dcs.ErrUnavailable)
	}
	return fmt.Errorf("etcd %s: %w", op, err)
}

// ---------------------------------------------------------------------------
// Session lease

// Lease returns the current session lease ID (0 when none).
func (s *Store) Lease() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.lease)
}

// KeepAlive renews the session lease, granting one if there is none, and
// returns the local time read just before the request was sent. On
// dcs.ErrLeaseLost the lease expired: every key on it is gone, and the next
// call grants a new lease.
func (s *Store) KeepAlive(ctx context.Context) (time.Time, error) {
	s.mu.Lock()
	lease, ttl := s.lease, s.ttl
	s.mu.Unlock()
	c, cancel := s.ctx(ctx)
	defer cancel()
	if lease == 0 {
		sent := s.now()
		resp, err := s.cli.Grant(c, int64(ttl/time.Second))
		if err != nil {
			return time.Time{}, s.classify("grant lease", err)
		}
		s.mu.Lock()
		s.lease = resp.ID
		s.mu.Unlock()
		return sent, nil
	}
	sent := s.now()
	resp, err := s.cli.KeepAliveOnce(c, lease)
	if err != nil {
		err = s.classify("keep lease alive", err)
		if errors.Is(err, dcs.ErrLeaseLost) {
			s.dropLease(lease)
		}
		return time.Time{}, err
	}
	if resp.TTL <= 0 {
		s.dropLease(lease)
		return time.Time{}, fmt.Errorf("etcd keep lease alive: lease %x expired: %w", lease, dcs.ErrLeaseLost)
	}
	return sent, nil
}

func (s *Store) dropLease(id clientv3.LeaseID) {
	s.mu.Lock()
	if s.lease == id {
		s.lease = 0
	}
	s.mu.Unlock()
}

// AdoptLease makes the store use an existing lease, e.g. the one the leader
// key is attached to after the agent was restarted while its lease still
// lived. It verifies the lease is alive and returns the send time of that
// verification (a renewal).
func (s *Store) AdoptLease(ctx context.Context, id int64) (time.Time, error) {
	s.mu.Lock()
	old := s.lease
	s.lease = clientv3.LeaseID(id)
	s.mu.Unlock()
	sent, err := s.KeepAlive(ctx)
	if err != nil {
		s.mu.Lock()
		if s.lease == clientv3.LeaseID(id) || s.lease == 0 {
			s.lease = old
		}
		s.mu.Unlock()
		return time.Time{}, err
	}
	if old != 0 && old != clientv3.LeaseID(id) {
		s.revokeQuietly(ctx, old)
	}
	return sent, nil
}

// RotateLease replaces the session lease with a new one granted at the
// current TTL (after ttl changed): the leader key (if ours) and the member key
// move to it, then the old lease is revoked. Returns the grant's send time.
func (s *Store) RotateLease(ctx context.Context, member *dcs.Member) (time.Time, error) {
	s.mu.Lock()
	old, ttl := s.lease, s.ttl
	s.mu.Unlock()
	c, cancel := s.ctx(ctx)
	defer cancel()
	sent := s.now()
	resp, err := s.cli.Grant(c, int64(ttl/time.Second))
	if err != nil {
		return time.Time{}, s.classify("grant lease", err)
	}
	if old != 0 && s.name != "" {
		// Move the leader key only if it is ours on the old lease.
		_, err := s.cli.Txn(c).If(
			clientv3.Compare(clientv3.Value(s.keys.Leader()), "=", s.name),
			clientv3.Compare(clientv3.LeaseValue(s.keys.Leader()), "=", old),
		).Then(clientv3.OpPut(s.keys.Leader(), s.name, clientv3.WithLease(resp.ID))).Commit()
		if err != nil {
			return time.Time{}, s.classify("move leader key to new lease", err)
		}
	}
	s.mu.Lock()
	s.lease = resp.ID
	s.mu.Unlock()
	if member != nil {
		if err := s.PutMember(ctx, *member); err != nil {
			return sent, err
		}
	}
	if old != 0 {
		s.revokeQuietly(ctx, old)
	}
	return sent, nil
}

func (s *Store) revokeQuietly(ctx context.Context, id clientv3.LeaseID) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	if _, err := s.cli.Revoke(c, id); err != nil {
		s.log.Debug("revoking old lease failed; it will expire by itself", "lease", fmt.Sprintf("%x", id), "err", err)
	}
}

// RevokeSession revokes the session lease: the member key (and the leader key
// if still attached) disappear at once. Used on clean shutdown.
func (s *Store) RevokeSession(ctx context.Context) error {
	s.mu.Lock()
	id := s.lease
	s.lease = 0
	s.mu.Unlock()
	if id == 0 {
		return nil
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.cli.Revoke(c, id)
	return s.classify("revoke lease", err)
}

// ---------------------------------------------------------------------------
// Leader key

// AcquireLeader renews (or grants) the session lease and then creates the
// leader key on it, only if no key exists. It returns the new leader record
// (Term = create revision) and the send time of the renewal, from which the
// caller counts its lease deadline. dcs.ErrConflict: someone holds the key.
func (s *Store) AcquireLeader(ctx context.Context) (dcs.Leader, time.Time, error) {
	if s.name == "" {
		return dcs.Leader{}, time.Time{}, errors.New("etcd: acquire leader: no member name configured")
	}
	sent, err := s.KeepAlive(ctx)
	if errors.Is(err, dcs.ErrLeaseLost) {
		sent, err = s.KeepAlive(ctx) // grants a fresh lease
	}
	if err != nil {
		return dcs.Leader{}, time.Time{}, err
	}
	s.mu.Lock()
	lease := s.lease
	s.mu.Unlock()
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(c).If(
		clientv3.Compare(clientv3.CreateRevision(s.keys.Leader()), "=", 0),
	).Then(
		clientv3.OpPut(s.keys.Leader(), s.name, clientv3.WithLease(lease)),
	).Else(
		clientv3.OpGet(s.keys.Leader()),
	).Commit()
	if err != nil {
		return dcs.Leader{}, time.Time{}, s.classify("acquire leader key", err)
	}
	if !resp.Succeeded {
		holder := "?"
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			holder = string(kvs[0].Value)
		}
		return dcs.Leader{}, time.Time{}, fmt.Errorf("leader key is held by %s: %w", holder, dcs.ErrConflict)
	}
	return dcs.Leader{Name: s.name, Term: resp.Header.Revision, Lease: int64(lease), ModRevision: resp.Header.Revision}, sent, nil
}

// RenewLeader renews the lease that holds the leader key and returns the
// local time read just before the renewal was sent (rule 1 counts the lease
// deadline from it). It is one lease keep-alive: the key itself is not
// rewritten, since it cannot change hands while the lease lives (steward
// never deletes another member's key; a key deleted by hand is seen by the
// leader watch). dcs.ErrLeaseLost: the lease expired and the key with it.
func (s *Store) RenewLeader(ctx context.Context) (time.Time, error) {
	return s.KeepAlive(ctx)
}

// ReleaseLeader deletes the leader key if and only if it still holds our
// name on our lease with the given term (0 skips the term check).
// dcs.ErrNotLeader: it was not ours; nothing was deleted.
func (s *Store) ReleaseLeader(ctx context.Context, term int64) error {
	s.mu.Lock()
	lease := s.lease
	s.mu.Unlock()
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.Value(s.keys.Leader()), "=", s.name),
		clientv3.Compare(clientv3.LeaseValue(s.keys.Leader()), "=", lease),
	}
	if term > 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.keys.Leader()), "=", term))
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(c).If(cmps...).Then(clientv3.OpDelete(s.keys.Leader())).Commit()
	if err != nil {
		return s.classify("release leader key", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("release leader key: %w", dcs.ErrNotLeader)
	}
	return nil
}

// GetLeader reads the leader key; nil when nobody holds it.
func (s *Store) GetLeader(ctx context.Context) (*dcs.Leader, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.keys.Leader())
	if err != nil {
		return nil, s.classify("read leader key", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	kv := resp.Kvs[0]
	return &dcs.Leader{Name: string(kv.Value), Term: kv.CreateRevision, Lease: kv.Lease, ModRevision: kv.ModRevision}, nil
}

// WatchLeader watches the leader key until ctx ends. Events are delivered in
// order; the channel is buffered and a slow reader never blocks the watch
// (older undelivered events are dropped in favour of newer ones, since only
// the latest state matters). After a broken watch it reconnects and sends a
// Resync event. Every change made after WatchLeader returns is delivered:
// it reads the current revision first (within the call deadline) and the
// watch starts right after it, however late its goroutine gets going. With
// etcd unreachable it starts from whatever is current once it connects.
func (s *Store) WatchLeader(ctx context.Context) <-chan dcs.LeaderEvent {
	out := make(chan dcs.LeaderEvent, 16)
	var rev int64
	c, cancel := s.ctx(ctx)
	if resp, err := s.cli.Get(c, s.keys.Leader(), clientv3.WithCountOnly()); err == nil {
		rev = resp.Header.Revision
	}
	cancel()
	go func() {
		defer close(out)
		send := func(ev dcs.LeaderEvent) {
			for {
				select {
				case out <- ev:
					return
				case <-ctx.Done():
					return
				default:
					select { // drop the oldest event
					case <-out:
					default:
					}
				}
			}
		}
		first := true
		backoff := 50 * time.Millisecond
		for ctx.Err() == nil {
			opts := []clientv3.OpOption{clientv3.WithPrevKV()}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev+1))
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			wch := s.cli.Watch(wctx, s.keys.Leader(), opts...)
			if !first {
				send(dcs.LeaderEvent{Resync: true, Revision: rev})
			}
			first = false
			for resp := range wch {
				if err := resp.Err(); err != nil {
					s.log.Debug("leader watch broke; re-establishing", "err", err)
					if resp.CompactRevision > 0 {
						rev = 0 // history gone: resume from now, signalling a resync
					}
					break
				}
				backoff = 50 * time.Millisecond
				for _, ev := range resp.Events {
					rev = ev.Kv.ModRevision
					if ev.Type == clientv3.EventTypeDelete {
						send(dcs.LeaderEvent{Revision: rev})
						continue
					}
					kv := ev.Kv
					send(dcs.LeaderEvent{Revision: rev, Leader: &dcs.Leader{Name: string(kv.Value), Term: kv.CreateRevision, Lease: kv.Lease, ModRevision: kv.ModRevision}})
				}
			}
			cancel()
			if ctx.Err() != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff < time.Second {
				backoff *= 2
			}
		}
	}()
	return out
}

// ---------------------------------------------------------------------------
// Members

// PutMember publishes this member's record on its session lease (granting one
// if needed).
func (s *Store) PutMember(ctx context.Context, m dcs.Member) error {
	s.mu.Lock()
	lease := s.lease
	s.mu.Unlock()
	if lease == 0 {
		if _, err := s.KeepAlive(ctx); err != nil {
			return err
		}
		s.mu.Lock()
		lease = s.lease
		s.mu.Unlock()
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding member %s: %w", m.Name, err)
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	_, err = s.cli.Put(c, s.keys.Member(m.Name), string(b), clientv3.WithLease(lease))
	err = s.classify("publish member key", err)
	if errors.Is(err, dcs.ErrLeaseLost) {
		s.dropLease(lease)
	}
	return err
}

// DeleteMember removes a member key.
func (s *Store) DeleteMember(ctx context.Context, name string) error {
	c, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.cli.Delete(c, s.keys.Member(name))
	return s.classify("delete member key", err)
}

// Members lists the published members, sorted by name. Records that cannot be
// decoded are skipped and reported in the returned error map.
func (s *Store) Members(ctx context.Context) ([]dcs.Member, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.keys.MembersDir(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.classify("list members", err)
	}
	out := make([]dcs.Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m dcs.Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			s.log.Warn("ignoring undecodable member record", "key", string(kv.Key), "err", err)
			continue
		}
		m.Name = strings.TrimPrefix(string(kv.Key), s.keys.MembersDir())
		out = append(out, m)
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Cluster snapshot

// Load reads the whole cluster view (except the history before the newest
// record) in one linearizable transaction, so all records come from the same
// revision. Undecodable records are reported in Cluster.Errors, never as a
// failure: bad data in the store must not stop the agent.
func (s *Store) Load(ctx context.Context) (*dcs.Cluster, error) {
	p := s.keys.Prefix
	hist := s.keys.HistoryDir()
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(c).Then(
		clientv3.OpGet(p, clientv3.WithRange(hist)),                                                         // keys before history/
		clientv3.OpGet(clientv3.GetPrefixRangeEnd(hist), clientv3.WithRange(clientv3.GetPrefixRangeEnd(p))), // keys after history/
		clientv3.OpGet(hist, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
	).Commit()
	if err != nil {
		return nil, s.classify("load cluster", err)
	}
	cl := &dcs.Cluster{Revision: resp.Header.Revision, Members: map[string]dcs.Member{}, Errors: map[string]string{}}
	bad := func(key string, err error) { cl.Errors[key] = err.Error() }
	for i, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			key := string(kv.Key)
			if i == 2 {
				var h dcs.HistoryRecord
				if err := json.Unmarshal(kv.Value, &h); err != nil {
					bad(key, err)
					continue
				}
				if n, ok := s.keys.HistoryIndex(key); ok {
					h.Index = n
				}
				cl.LastHistory = &h
				continue
			}
			s.decodeInto(cl, key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Lease, bad)
		}
	}
	return cl, nil
}

func (s *Store) decodeInto(cl *dcs.Cluster, key string, val []byte, createRev, modRev, lease int64, bad func(string, error)) {
	k := s.keys
	switch {
	case key == k.Leader():
		cl.Leader = &dcs.Leader{Name: string(val), Term: createRev, Lease: lease, ModRevision: modRev}
	case strings.HasPrefix(key, k.MembersDir()):
		var m dcs.Member
		if err := json.Unmarshal(val, &m); err != nil {
			bad(key, err)
			return
		}
		m.Name = strings.TrimPrefix(key, k.MembersDir())
		cl.Members[m.Name] = m
	case key == k.Status():
		var st dcs.Status
		if err := json.Unmarshal(val, &st); err != nil {
			bad(key, err)
			return
		}
		cl.Status = &st
	case key == k.Config():
		cl.Config = &dcs.Versioned[[]byte]{Value: append([]byte(nil), val...), Version: modRev}
	case key == k.Initialize():
		var v dcs.Initialize
		if err := json.Unmarshal(val, &v); err != nil {
			bad(key, err)
			return
		}
		cl.Initialize = &dcs.Versioned[dcs.Initialize]{Value: v, Version: modRev}
	case key == k.Switchover():
		var v dcs.Switchover
		if err := json.Unmarshal(val, &v); err != nil {
			bad(key, err)
			// Still expose that a (broken) request exists so it can be deleted.
			cl.Switchover = &dcs.Versioned[dcs.Switchover]{Version: modRev}
			return
		}
		cl.Switchover = &dcs.Versioned[dcs.Switchover]{Value: v, Version: modRev}
	case key == k.Sync():
		var v dcs.SyncState
		if err := json.Unmarshal(val, &v); err != nil {
			bad(key, err)
			// Keep the version: the leader overwrites a broken record,
			// and until then nobody may rely on it (rule 6).
			cl.Sync = &dcs.Versioned[dcs.SyncState]{Version: modRev}
			cl.SyncError = err.Error()
			return
		}
		cl.Sync = &dcs.Versioned[dcs.SyncState]{Value: v, Version: modRev}
	}
}

// ---------------------------------------------------------------------------
// Leader-only records, guarded by the term

// PutStatus writes the status record only while the leader key still has
// the given term (create revision). dcs.ErrNotLeader otherwise.
func (s *Store) PutStatus(ctx context.Context, st dcs.Status, term int64) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.guardedPut(ctx, "write status", s.keys.Status(), b, term)
}

func (s *Store) guardedPut(ctx context.Context, op, key string, val []byte, term int64, extra ...clientv3.Cmp) error {
	c, cancel := s.ctx(ctx)
	defer cancel()
	cmps := append([]clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(s.keys.Leader()), "=", term),
		clientv3.Compare(clientv3.Value(s.keys.Leader()), "=", s.name),
	}, extra...)
	resp, err := s.cli.Txn(c).If(cmps...).Then(clientv3.OpPut(key, string(val))).Else(
		clientv3.OpGet(s.keys.Leader()),
		clientv3.OpGet(key),
	).Commit()
	if err != nil {
		return s.classify(op, err)
	}
	if !resp.Succeeded {
		lkv := resp.Responses[0].GetResponseRange().Kvs
		if len(lkv) == 0 || lkv[0].CreateRevision != term || string(lkv[0].Value) != s.name {
			return fmt.Errorf("%s: %w", op, dcs.ErrNotLeader)
		}
		return fmt.Errorf("%s: %w", op, dcs.ErrConflict)
	}
	return nil
}

// CASSync writes the sync record if its version is still `version` (0: must
// not exist) and the leader key still has the given term.
func (s *Store) CASSync(ctx context.Context, v dcs.SyncState, version, term int64) (int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	cmp := clientv3.Compare(clientv3.ModRevision(s.keys.Sync()), "=", version)
	if err := s.guardedPut(ctx, "write sync", s.keys.Sync(), b, term, cmp); err != nil {
		return 0, err
	}
	return s.version(ctx, s.keys.Sync())
}

func (s *Store) version(ctx context.Context, key string) (int64, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, key)
	if err != nil {
		return 0, s.classify("read "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return resp.Kvs[0].ModRevision, nil
}

// ---------------------------------------------------------------------------
// Compare-and-swap records

// casPut writes key=val if its mod revision is still version (0: the key must
// not exist). It returns the new version.
func (s *Store) casPut(ctx context.Context, op, key string, val []byte, version int64) (int64, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", version)
	if version == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	resp, err := s.cli.Txn(c).If(cmp).Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return 0, s.classify(op, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%s: %w", op, dcs.ErrConflict)
	}
	return resp.Header.Revision, nil
}

// casDelete deletes key if its mod revision is still version.
func (s *Store) casDelete(ctx context.Context, op, key string, version int64) error {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(c).If(clientv3.Compare(clientv3.ModRevision(key), "=", version)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return s.classify(op, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", op, dcs.ErrConflict)
	}
	return nil
}

func (s *Store) getVersioned(ctx context.Context, op, key string) ([]byte, int64, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, key)
	if err != nil {
		return nil, 0, s.classify(op, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%s: %w", op, dcs.ErrNotFound)
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// GetConfig reads the dynamic config JSON and its version.
func (s *Store) GetConfig(ctx context.Context) ([]byte, int64, error) {
	return s.getVersioned(ctx, "read config", s.keys.Config())
}

// CASConfig writes the dynamic config JSON if its version is still `version`
// (0: create it only if absent). dcs.ErrConflict when someone changed it.
func (s *Store) CASConfig(ctx context.Context, cfg []byte, version int64) (int64, error) {
	return s.casPut(ctx, "write config", s.keys.Config(), cfg, version)
}

// CreateInitialize creates the initialize record; exactly one member wins.
// dcs.ErrConflict: the cluster was already initialized (or is being).
func (s *Store) CreateInitialize(ctx context.Context, v dcs.Initialize) (int64, error) {
	b, _ := json.Marshal(v)
	return s.casPut(ctx, "create initialize", s.keys.Initialize(), b, 0)
}

// UpdateInitialize rewrites the initialize record (e.g. with the system
// identifier after initdb) if its version is unchanged.
func (s *Store) UpdateInitialize(ctx context.Context, v dcs.Initialize, version int64) (int64, error) {
	b, _ := json.Marshal(v)
	return s.casPut(ctx, "update initialize", s.keys.Initialize(), b, version)
}

// DeleteInitialize removes the initialize record (a failed bootstrap gives
// way to another member) if its version is unchanged.
func (s *Store) DeleteInitialize(ctx context.Context, version int64) error {
	return s.casDelete(ctx, "delete initialize", s.keys.Initialize(), version)
}

// GetInitialize reads the initialize record.
func (s *Store) GetInitialize(ctx context.Context) (dcs.Versioned[dcs.Initialize], error) {
	b, ver, err := s.getVersioned(ctx, "read initialize", s.keys.Initialize())
	if err != nil {
		return dcs.Versioned[dcs.Initialize]{}, err
	}
	var v dcs.Initialize
	if err := json.Unmarshal(b, &v); err != nil {
		return dcs.Versioned[dcs.Initialize]{}, fmt.Errorf("decoding %s: %w", s.keys.Initialize(), err)
	}
	return dcs.Versioned[dcs.Initialize]{Value: v, Version: ver}, nil
}

// PutSwitchover writes a switchover request if the key's version is still
// `version` (0: only if none is pending).
func (s *Store) PutSwitchover(ctx context.Context, v dcs.Switchover, version int64) (int64, error) {
	b, _ := json.Marshal(v)
	return s.casPut(ctx, "write switchover", s.keys.Switchover(), b, version)
}

// GetSwitchover reads the pending switchover request.
func (s *Store) GetSwitchover(ctx context.Context) (dcs.Versioned[dcs.Switchover], error) {
	b, ver, err := s.getVersioned(ctx, "read switchover", s.keys.Switchover())
	if err != nil {
		return dcs.Versioned[dcs.Switchover]{}, err
	}
	var v dcs.Switchover
	if err := json.Unmarshal(b, &v); err != nil {
		return dcs.Versioned[dcs.Switchover]{Version: ver}, fmt.Errorf("decoding %s: %w", s.keys.Switchover(), err)
	}
	return dcs.Versioned[dcs.Switchover]{Value: v, Version: ver}, nil
}

// DeleteSwitchover consumes a switchover request: it is deleted only if it is
// still the version that was read, so a request is acted on exactly once.
func (s *Store) DeleteSwitchover(ctx context.Context, version int64) error {
	return s.casDelete(ctx, "delete switchover", s.keys.Switchover(), version)
}

// GetSync reads the sync record.
func (s *Store) GetSync(ctx context.Context) (dcs.Versioned[dcs.SyncState], error) {
	b, ver, err := s.getVersioned(ctx, "read sync", s.keys.Sync())
	if err != nil {
		return dcs.Versioned[dcs.SyncState]{}, err
	}
	var v dcs.SyncState
	if err := json.Unmarshal(b, &v); err != nil {
		return dcs.Versioned[dcs.SyncState]{Version: ver}, fmt.Errorf("decoding %s: %w", s.keys.Sync(), err)
	}
	return dcs.Versioned[dcs.SyncState]{Value: v, Version: ver}, nil
}

// GetStatus reads the status record.
func (s *Store) GetStatus(ctx context.Context) (*dcs.Status, error) {
	b, _, err := s.getVersioned(ctx, "read status", s.keys.Status())
	if errors.Is(err, dcs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st dcs.Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", s.keys.Status(), err)
	}
	return &st, nil
}

// ---------------------------------------------------------------------------
// History

// AppendHistory adds a record as history/<n+1>, where n is the newest index;
// concurrent appenders each get their own index. Returns the index used.
func (s *Store) AppendHistory(ctx context.Context, rec dcs.HistoryRecord) (int64, error) {
	for attempt := 0; attempt < 10; attempt++ {
		last, err := s.lastHistoryIndex(ctx)
		if err != nil {
			return 0, err
		}
		rec.Index = last + 1
		if rec.Time.IsZero() {
			rec.Time = time.Now().UTC()
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return 0, err
		}
		_, err = s.casPut(ctx, "append history", s.keys.History(rec.Index), b, 0)
		if errors.Is(err, dcs.ErrConflict) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return rec.Index, nil
	}
	return 0, fmt.Errorf("append history: too many concurrent appends: %w", dcs.ErrConflict)
}

func (s *Store) lastHistoryIndex(ctx context.Context) (int64, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.keys.HistoryDir(), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return 0, s.classify("read history", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	n, _ := s.keys.HistoryIndex(string(resp.Kvs[0].Key))
	return n, nil
}

// History returns every history record in order. Undecodable records are
// skipped (and logged).
func (s *Store) History(ctx context.Context) ([]dcs.HistoryRecord, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.keys.HistoryDir(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.classify("read history", err)
	}
	out := make([]dcs.HistoryRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h dcs.HistoryRecord
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			s.log.Warn("ignoring undecodable history record", "key", string(kv.Key), "err", err)
			continue
		}
		if n, ok := s.keys.HistoryIndex(string(kv.Key)); ok {
			h.Index = n
		}
		out = append(out, h)
	}
	return out, nil
}
