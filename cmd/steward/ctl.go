package main

// What the operator commands (switchover, failover, pause, resume,
// edit-config, restart, reinit, history, show-config) share.
//
// The CLI reads the cluster straight from etcd (the etcd section of the
// configuration file) and changes it only through a member's REST API (with
// api.username/password and the TLS settings of the file): the agents
// validate every request, log it and write it with a compare-and-swap, and
// the logic lives in one place.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/etcd"
)

// ctl is one operator command's connection to the cluster.
type ctl struct {
	e     *env
	cfg   *config.Config
	store *etcd.Store
	api   *api.Client
	in    *bufio.Reader
	start time.Time
}

// openCtl loads the configuration and connects to etcd; withAPI also
// builds the client of the members' APIs (with the file's TLS settings),
// which only the commands that change something need.
func openCtl(e *env, g *globals, withAPI bool) (*ctl, error) {
	cfg, err := loadConfig(e, g)
	if err != nil {
		return nil, err
	}
	var cl *api.Client
	if withAPI {
		if cl, err = newPeerClient(cfg); err != nil {
			return nil, usageErr(fmt.Errorf("api.tls in %s: %w", cfg.Path, err))
		}
	}
	st, err := openStore(cfg)
	if err != nil {
		return nil, dcsErr(cfg, err)
	}
	return &ctl{e: e, cfg: cfg, store: st, api: cl, in: bufio.NewReader(e.stdin), start: time.Now()}, nil
}

func (c *ctl) close() { c.store.Close() }

// dcsTimeout bounds one etcd call.
func (c *ctl) dcsTimeout() time.Duration { return c.cfg.Bootstrap.RetryTimeout.D() + time.Second }

// load reads the cluster from etcd.
func (c *ctl) load(ctx context.Context) (*dcs.Cluster, error) {
	lctx, cancel := context.WithTimeout(ctx, c.dcsTimeout())
	defer cancel()
	cl, err := c.store.Load(lctx)
	if err != nil {
		return nil, dcsErr(c.cfg, err)
	}
	return cl, nil
}

// history reads every history record from etcd.
func (c *ctl) history(ctx context.Context) ([]dcs.HistoryRecord, error) {
	hctx, cancel := context.WithTimeout(ctx, c.dcsTimeout())
	defer cancel()
	h, err := c.store.History(hctx)
	if err != nil {
		return nil, dcsErr(c.cfg, err)
	}
	return h, nil
}

// waitContext is the context of a command that waits: it ends at timeout,
// on SIGINT/SIGTERM and with the environment's context.
func (c *ctl) waitContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(c.e.context(), os.Interrupt, syscall.SIGTERM)
	tctx, cancel := context.WithTimeout(ctx, timeout)
	return tctx, func() { cancel(); stop() }
}

// say prints one progress line, stamped with the time since the command
// started.
func (c *ctl) say(format string, args ...any) {
	fmt.Fprintf(c.e.stdout, "[%6.2fs] %s\n", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

// errDeclined: the operator did not confirm.
var errDeclined = errors.New("aborted: nothing was changed")

// confirm asks a yes/no question; only "y" or "yes" is yes. Without an
// answer (standard input closed) it fails and says how to run unattended.
func (c *ctl) confirm(question, unattended string) error {
	fmt.Fprintf(c.e.stdout, "%s [y/N] ", question)
	line, err := c.in.ReadString('\n')
	if err != nil && strings.TrimSpace(line) == "" {
		fmt.Fprintln(c.e.stdout)
		return fmt.Errorf("no answer (standard input is closed): nothing was changed; %s runs without asking", unattended)
	}
	if !isTerminal(c.e.stdin) {
		// Show the answer read from a pipe, as a terminal would echo it.
		fmt.Fprintln(c.e.stdout, strings.TrimSpace(line))
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errDeclined
}

// member returns a member's record, or a usage error listing the members.
func (c *ctl) member(cl *dcs.Cluster, name string) (dcs.Member, error) {
	if m, ok := cl.Members[name]; ok {
		return m, nil
	}
	return dcs.Member{}, usageErr(fmt.Errorf("%q is not a member of cluster %s (members: %s); use a name as steward list shows it",
		name, c.cfg.Cluster, memberList(cl)))
}

func memberList(cl *dcs.Cluster) string {
	names := sortedNames(cl)
	if len(names) == 0 {
		return "none published; is any agent running?"
	}
	return strings.Join(names, ", ")
}

func sortedNames(cl *dcs.Cluster) []string {
	names := make([]string, 0, len(cl.Members))
	for n := range cl.Members {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// apiTarget is a member's REST API.
type apiTarget struct{ name, url string }

// apiTargets lists the members' APIs in the order to try them: the
// preferred members first, then the leader, then the others by name.
func apiTargets(cl *dcs.Cluster, prefer ...string) []apiTarget {
	var out []apiTarget
	seen := map[string]bool{}
	add := func(n string) {
		m, ok := cl.Members[n]
		if !ok || seen[n] || m.APIURL == "" {
			return
		}
		seen[n] = true
		out = append(out, apiTarget{name: n, url: m.APIURL})
	}
	for _, n := range prefer {
		add(n)
	}
	if cl.Leader != nil {
		add(cl.Leader.Name)
	}
	for _, n := range sortedNames(cl) {
		add(n)
	}
	return out
}

// unreachable reports whether err is a failure to reach the API at all (as
// opposed to an answer).
func unreachable(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}

// firstAnswer calls f with each member's API in apiTargets order until one
// answers; an unreachable API is skipped (and said so). It fails when no
// member answers.
func (c *ctl) firstAnswer(cl *dcs.Cluster, prefer []string, f func(t apiTarget) error) error {
	ts := apiTargets(cl, prefer...)
	if len(ts) == 0 {
		return fmt.Errorf("no member has published its API address; is any agent running? (steward list)")
	}
	var tried []string
	for _, t := range ts {
		err := f(t)
		if err == nil || !unreachable(err) {
			return err
		}
		fmt.Fprintf(c.e.stderr, "steward: %s's API does not answer (%v); trying another member\n", t.name, shortErr(err))
		tried = append(tried, t.name+" ("+t.url+")")
	}
	return fmt.Errorf("no member's API answered (tried %s): check that the agents run and that api.connect_address is reachable from here", strings.Join(tried, ", "))
}

// shortErr drops the method and URL that net/http puts in front of a
// transport error.
func shortErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// apiRefusal turns an API error answer into an error for the operator.
func apiRefusal(t apiTarget, code int, msg string) error {
	switch code {
	case 401:
		return fmt.Errorf("%s's API refused the credentials (401): set api.username and api.password (or STEWARD_API_PASSWORD) as on the agents", t.name)
	case 403:
		return fmt.Errorf("%s's API refused this host (403): %s (api.allowlist, or a client certificate with api.tls.verify_client)", t.name, msg)
	}
	if msg == "" {
		msg = fmt.Sprintf("HTTP %d", code)
	}
	return errors.New(msg)
}

// poll calls f every interval until it reports done, f fails, or ctx ends
// (then ctx.Err()).
func poll(ctx context.Context, every time.Duration, f func() (bool, error)) error {
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// waitErr explains why a wait ended without the outcome: interrupted or
// timed out (exit 3: the outcome is unknown).
func waitErr(ctx context.Context, what string, timeout time.Duration) error {
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return unknownErr(fmt.Errorf("%s: no outcome within %v (--timeout); it may still happen: check steward list and steward history", what, timeout))
	}
	return unknownErr(fmt.Errorf("%s: interrupted while waiting; the request stands and may still be carried out: check steward list and steward history", what))
}

// posText prints a position, "-" when unknown.
func posText(p fmt.Stringer) string {
	s := p.String()
	if s == "" {
		return "-"
	}
	return s
}
