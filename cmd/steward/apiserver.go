package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs/etcd"
)

// newAPIServer builds the member's REST API server and its listener (bound
// now, so that a port conflict is reported before the agent starts).
func newAPIServer(cfg *config.Config, ag *agent.Agent, store *etcd.Store, log *slog.Logger) (*http.Server, net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("api.listen %s: %w", cfg.API.Listen, err)
	}
	srv := &http.Server{
		Handler:           api.New(api.Deps{Agent: ag, Store: store, Cluster: cfg.Cluster, Logger: log}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return srv, ln, nil
}
