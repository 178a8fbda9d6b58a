package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/fencing"
)

// hookFencer adapts fencing.Runner to the agent's Fencer.
type hookFencer struct {
	r       *fencing.Runner
	cluster string
}

func (h hookFencer) Fence(ctx context.Context, t agent.FenceTarget) (bool, []agent.FenceAttempt) {
	ok, att := h.r.Fence(ctx, fencing.Target{Name: t.Name, Host: t.Host, API: t.APIURL, Cluster: h.cluster})
	out := make([]agent.FenceAttempt, len(att))
	for i, a := range att {
		d := fmt.Sprintf("try %d", a.Try)
		if a.Err != "" {
			d += ": " + a.Err
		}
		out[i] = agent.FenceAttempt{Hook: a.Hook, Result: a.Result, Detail: d}
	}
	return ok, out
}

// buildFencing returns the fencer (nil when no hooks are configured) and the
// watchdog (nil when watchdog.mode is off) of a member.
func buildFencing(cfg *config.Config, log *slog.Logger) (agent.Fencer, agent.Watchdog) {
	var f agent.Fencer
	if len(cfg.Fencing.Hooks) > 0 {
		hooks := make([]fencing.Hook, len(cfg.Fencing.Hooks))
		for i, h := range cfg.Fencing.Hooks {
			hooks[i] = fencing.Hook{Name: h.Name, Command: h.Command, Timeout: h.Timeout.D()}
		}
		f = hookFencer{r: &fencing.Runner{Hooks: hooks, Logger: log.With("component", "fencing")}, cluster: cfg.Cluster}
	}
	var w agent.Watchdog
	if cfg.Watchdog.Mode != "" && cfg.Watchdog.Mode != fencing.WatchdogOff {
		w = &fencing.Watchdog{Mode: cfg.Watchdog.Mode, Path: cfg.Watchdog.Device, Logger: log.With("component", "watchdog")}
	}
	return f, w
}
