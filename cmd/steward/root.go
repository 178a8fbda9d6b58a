package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
	"github.com/stewardha/steward/dcs/etcd"
)

const defaultConfigPath = "/etc/steward/steward.yml"

// globals are the flags every command shares.
type globals struct {
	configPath string
}

func newRootCmd(e *env) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "steward",
		Short: "High-availability failover manager for PostgreSQL and MySQL/MariaDB",
		Long: `steward keeps a PostgreSQL or MySQL/MariaDB cluster writable when hosts die.

One agent ("steward agent") runs next to every database; the agents share an
etcd cluster, and whoever holds the leader key there is the only member allowed
to accept writes. The same binary is the operator's CLI.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	def := defaultConfigPath
	if v, ok := e.lookupEnv("STEWARD_CONFIG"); ok && v != "" {
		def = v
	}
	root.PersistentFlags().StringVarP(&g.configPath, "config", "c", def, "configuration file (env STEWARD_CONFIG)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	root.AddCommand(
		newVersionCmd(e),
		newAgentCmd(e, g),
		newListCmd(e, g),
		newSwitchoverCmd(e, g),
		newFailoverCmd(e, g),
		newPauseCmd(e, g, true),
		newPauseCmd(e, g, false),
		newHistoryCmd(e, g),
		newShowConfigCmd(e, g),
		newEditConfigCmd(e, g),
		newRestartCmd(e, g),
		newReinitCmd(e, g),
		newDemoCmd(e),
	)
	return root
}

// loadConfig reads and validates the configuration file. An invalid file is
// a usage error (exit 2) listing every problem with its key.
func loadConfig(e *env, g *globals) (*config.Config, error) {
	cfg, err := config.Load(g.configPath, e.lookupEnv)
	if err != nil {
		return nil, usageErr(fmt.Errorf("invalid configuration %s:\n%w", g.configPath, err))
	}
	return cfg, nil
}

// storeOptions maps the configuration to DCS client options.
func storeOptions(cfg *config.Config, member string, log *slog.Logger) etcd.Options {
	return etcd.Options{
		Endpoints:      cfg.Etcd.Endpoints,
		Username:       cfg.Etcd.Username,
		Password:       cfg.Etcd.Password,
		CAFile:         cfg.Etcd.CAFile,
		CertFile:       cfg.Etcd.CertFile,
		KeyFile:        cfg.Etcd.KeyFile,
		DialTimeout:    cfg.Etcd.DialTimeout.D(),
		Namespace:      cfg.Namespace,
		Cluster:        cfg.Cluster,
		Member:         member,
		RequestTimeout: cfg.Bootstrap.RetryTimeout.D(),
		TTL:            cfg.Bootstrap.TTL.D(),
		Logger:         log,
	}
}

// openStore opens the DCS for a CLI command (not as a member).
func openStore(cfg *config.Config) (*etcd.Store, error) {
	return etcd.New(storeOptions(cfg, "", nil))
}

// dcsErr explains a DCS failure for an operator: which endpoints were tried.
func dcsErr(cfg *config.Config, err error) error {
	if errors.Is(err, dcs.ErrUnavailable) {
		return fmt.Errorf("etcd unreachable: tried %s (etcd.endpoints in %s): %w",
			strings.Join(cfg.Etcd.Endpoints, ", "), cfg.Path, err)
	}
	return err
}

// cliContext bounds a CLI call.
func cliContext(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
