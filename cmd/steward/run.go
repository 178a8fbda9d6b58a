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
	"github.com/stewardha/steward/api"
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
	return nil, "", errors.New("mysql: the MySQL/MariaDB backend is not available in this build yet")
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
	fencer, watchdog := buildFencing(cfg, log)
	ag := agent.New(agent.Options{
		Self: agent.Self{Name: cfg.Name, NoFailover: cfg.Tags.NoFailover, Priority: cfg.Tags.FailoverPriority,
			NoSync: cfg.Tags.NoSync, Rewind: rewind, Reinit: reinit},
		Store:     store,
		Backend:   db,
		Peers:     api.NewClient(nil, cfg.API.Username, cfg.API.Password),
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
		Cluster:     cfg.Cluster,
		Fencer:      fencer,
		FencingMode: cfg.Fencing.Mode,
		Watchdog:    watchdog,
	})
	srv, ln, err := newAPIServer(cfg, ag, store, log.With("component", "api"))
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

// runAgent runs the HA agent until SIGINT/SIGTERM.
func runAgent(parent context.Context, e *env, cfg *config.Config) error {
	if parent == nil {
		parent = context.Background()
	}
	log := newLogger(e.stderr, cfg.Log).With("member", cfg.Name)
	ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n, err := startNode(context.Background(), cfg, log, nil)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		log.Info("signal received: shutting down", "on_shutdown", cfg.OnShutdown)
	case err := <-n.done:
		n.done <- err
	}
	return n.shutdown()
}
