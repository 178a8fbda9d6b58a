package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/backends/mysql"
	"github.com/stewardha/steward/backends/postgres"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs/etcd"
)

// newLogger builds the agent's structured logger from log.level/log.format.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// apiURL is how other members and the CLI reach this member's API.
func apiURL(cfg *config.Config) string {
	scheme := "http"
	if cfg.API.TLS.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + cfg.API.ConnectAddress
}

// buildBackend returns the database backend of this member.
func buildBackend(cfg *config.Config, log *slog.Logger) (agent.Backend, string, error) {
	if p := cfg.Postgres; p != nil {
		b, err := postgres.New(postgres.Options{
			Member:         cfg.Name,
			DataDir:        p.DataDir,
			BinDir:         p.BinDir,
			Listen:         p.Listen,
			ConnectAddress: p.ConnectAddress,
			Superuser:      postgres.Credentials{Username: p.Superuser.Username, Password: p.Superuser.Password},
			Replication:    postgres.Credentials{Username: p.Replication.Username, Password: p.Replication.Password},
			Parameters:     p.Parameters,
			PgHba:          p.PgHba,
			UsePgRewind:    p.UsePgRewind,
			RunAs:          p.RunAs,
			Logger:         log.With("component", "postgres"),
			QueryTimeout:   cfg.Bootstrap.RetryTimeout.D(),
		})
		return b, p.ConnectAddress, err
	}
	if m := cfg.MySQL; m != nil {
		b, err := mysql.New(mysql.Options{
			Member:         cfg.Name,
			Address:        m.Address,
			ConnectAddress: m.ConnectAddress,
			User:           m.User,
			Password:       m.Password,
			Replication:    mysql.Credentials{Username: m.Replication.Username, Password: m.Replication.Password},
			DataDir:        m.DataDir,
			StartCommand:   m.StartCommand,
			StopCommand:    m.StopCommand,
			CloneCommand:   m.CloneCommand,
			Logger:         log.With("component", "mysql"),
			QueryTimeout:   cfg.Bootstrap.RetryTimeout.D(),
		})
		if err != nil {
			return nil, "", err
		}
		return b, m.ConnectAddress, nil
	}
	return nil, "", errors.New("no database configured: set exactly one of postgres or mysql")
}

// node is one running member: its agent loop, its API server and its DCS
// client. `steward agent` runs one; `steward demo` runs several in-process.
type node struct {
	cfg    *config.Config
	log    *slog.Logger
	store  *etcd.Store
	agent  *agent.Agent
	srv    *http.Server
	cancel context.CancelFunc
	done   chan error
}

// startNode starts a member: API listener first (so that a port conflict is
// reported before anything else happens), then the HA loop.
func startNode(parent context.Context, cfg *config.Config, log *slog.Logger, onLoop func(agent.LoopReport)) (*node, error) {
	store, err := etcd.New(storeOptions(cfg, cfg.Name, log.With("component", "dcs")))
	if err != nil {
		return nil, err
	}
	db, dbAddr, err := buildBackend(cfg, log)
	if err != nil {
		store.Close()
		return nil, usageErr(err)
	}
	v, _ := buildVersion()
	tags := map[string]string{}
	for k, val := range cfg.Tags.Custom {
		tags[k] = val
	}
	var rewind, reinit bool
	if cfg.Postgres != nil {
		rewind, reinit = cfg.Postgres.UsePgRewind, cfg.Postgres.RemoveDataDirectoryOnRewindFailure
	}
	if cfg.MySQL != nil {
		reinit = cfg.MySQL.RecloneOnDivergence
	}
	fencer, watchdog := buildFencing(cfg, log)
	metrics := newMetrics(cfg)
	peers, err := newPeerClient(cfg)
	if err != nil {
		store.Close()
		return nil, err
	}
	ag := agent.New(agent.Options{
		Self: agent.Self{Name: cfg.Name, NoFailover: cfg.Tags.NoFailover, Priority: cfg.Tags.FailoverPriority,
			NoSync: cfg.Tags.NoSync, Rewind: rewind, Reinit: reinit, Kind: db.Kind()},
		Store:     store,
		Backend:   db,
		Peers:     peers,
		Logger:    log.With("component", "agent"),
		APIURL:    apiURL(cfg),
		DBAddress: dbAddr,
		Tags:      tags,
		NoLB:      cfg.Tags.NoLoadBalance,
		Version:   v,
		Bootstrap: cfg.Bootstrap,
		SafetyMargin: func(ttl time.Duration) time.Duration {
			return cfg.Watchdog.Margin(ttl)
		},
		OnLoop:      onLoop,
		Callbacks:   cfg.Callbacks,
		Cluster:     cfg.Cluster,
		Fencer:      fencer,
		FencingMode: cfg.Fencing.Mode,
		Watchdog:    watchdog,
		Metrics:     metrics,
	})
	srv, ln, err := newAPIServer(cfg, ag, store, metrics, log.With("component", "api"), reloadFunc(parent))
	if err != nil {
		store.Close()
		return nil, err
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server stopped", "err", err)
		}
	}()
	log.Info("agent starting", "version", v, "cluster", cfg.Cluster, "api", apiURL(cfg), "etcd", strings.Join(cfg.Etcd.Endpoints, ","),
		"backend", db.Kind())
	ctx, cancel := context.WithCancel(parent)
	n := &node{cfg: cfg, log: log, store: store, agent: ag, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- ag.Run(ctx) }()
	return n, nil
}

// shutdown stops the node cleanly (SIGTERM): the loop ends, then on_shutdown
// decides what happens to the database and the key.
func (n *node) shutdown() error {
	n.cancel()
	err := <-n.done
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n.agent.Shutdown(sctx, n.cfg.OnShutdown == "stop-database")
	_ = n.srv.Shutdown(sctx)
	n.store.Close()
	n.log.Info("agent stopped")
	return err
}

// crash stops the node as kill -9 would: no key release, no database stop.
func (n *node) crash() {
	n.cancel()
	<-n.done
	_ = n.srv.Close()
	n.store.Close()
}

// runAgent runs the HA agent until SIGINT/SIGTERM, as a systemd Type=notify
// service when NOTIFY_SOCKET is set (service.go): READY=1 after the first
// complete loop, STATUS= and WATCHDOG=1 after loops, STOPPING=1 on shutdown.
// SIGHUP re-reads the configuration file (service.reload, also POST
// /reload). SIGTERM/SIGINT shut down per on_shutdown (as last reloaded).
func runAgent(parent context.Context, e *env, cfg *config.Config) error {
	if parent == nil {
		parent = context.Background()
	}
	level := new(slog.LevelVar)
	log := newLeveledLogger(e.stderr, cfg.Log, level).With("member", cfg.Name)
	// Signal handlers first: SIGHUP's default action would kill the process.
	hup, stopHUP := notifyHUP()
	defer stopHUP()
	ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	svc := newService(e, cfg, level, log)
	n, err := startNode(withReload(context.Background(), svc.reload), cfg, log, svc.onLoop)
	if err != nil {
		return err
	}
	svc.attach(n.agent)
	for running := true; running; {
		select {
		case <-ctx.Done():
			log.Info("signal received: shutting down", "on_shutdown", svc.onShutdown())
			running = false
		case err := <-n.done:
			n.done <- err
			running = false
		case <-hup:
			log.Info("SIGHUP received: reloading the configuration", "file", cfg.Path)
			_ = svc.reload() // logs what it applied or why it refused
		}
	}
	onShutdown := svc.onShutdown()
	svc.stopping(onShutdown)
	if onShutdown != n.cfg.OnShutdown {
		c := *n.cfg
		c.OnShutdown = onShutdown
		n.cfg = &c
	}
	return n.shutdown()
}
