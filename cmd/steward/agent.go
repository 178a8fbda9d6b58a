package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

func newAgentCmd(e *env, g *globals) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the HA agent for the database on this host",
		Long: `Run the HA agent: keep this member's database in the role the cluster
needs (primary while it holds the leader key, replica of the leader otherwise),
publish its state to etcd, and serve the REST API.

With --dry-run the configuration is loaded and validated, the effective
configuration (defaults applied, secrets masked) is printed, and nothing else
happens.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(e, g)
			if err != nil {
				return err
			}
			if dryRun {
				out, err := yaml.Marshal(cfg.Redacted())
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "# %s is valid. Effective configuration (secrets masked):\n%s", g.configPath, out)
				return nil
			}
			return runAgent(cmd.Context(), e, cfg)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate the configuration, print the effective configuration and exit")
	return cmd
}
