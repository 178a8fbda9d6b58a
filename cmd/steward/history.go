package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/stewardha/steward/dcs"
)

func newHistoryCmd(e *env, g *globals) *cobra.Command {
	var output string
	var last int
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show the cluster's leader changes (failovers, switchovers) and other data events",
		Long: `Show the history etcd keeps: every leader change (bootstrap, failover,
switchover, manual-failover, reacquire) with its time, old and new leader,
term, timeline, position and reason, and the events that changed a member's
data (rewind, reinit, fencing, a failed switchover).

POSITION is the old leader's last known position (for a switchover, its
final position, which the new leader had replayed). -o json and -o yaml add
the candidates considered at each failover and why each was rejected.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if last < 0 {
				return usageErr(fmt.Errorf("--last %d: expected 0 (all) or more", last))
			}
			c, err := openCtl(e, g, false)
			if err != nil {
				return err
			}
			defer c.close()
			h, err := c.history(e.context())
			if err != nil {
				return err
			}
			if last > 0 && len(h) > last {
				h = h[len(h)-last:]
			}
			return renderHistory(e.stdout, output, h)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	cmd.Flags().IntVarP(&last, "last", "n", 0, "show only the last N records (0: all)")
	return cmd
}

func renderHistory(w io.Writer, format string, h []dcs.HistoryRecord) error {
	if h == nil {
		h = []dcs.HistoryRecord{}
	}
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(h)
	case "yaml":
		return yaml.NewEncoder(w).Encode(h)
	}
	if len(h) == 0 {
		fmt.Fprintln(w, "(no history yet: the cluster has not been bootstrapped)")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tTIME\tEVENT\tOLD LEADER\tNEW LEADER\tTERM\tTL\tPOSITION\tREASON")
	for _, r := range h {
		old, nw, reason := orDash(r.OldLeader), orDash(r.NewLeader), r.Reason
		if r.Member != "" && !isLeaderChange(r.Kind) {
			// An event about one member's data: say whose.
			old, nw = "-", "-"
			reason = r.Member + ": " + reason
		}
		if r.Kind == "switchover-failed" {
			old, nw = "-", "-"
			reason = fmt.Sprintf("%s -> %s not done: %s", orDash(r.OldLeader), orDash(r.NewLeader), reason)
		}
		pos := r.Position
		if pos.IsZero() {
			pos = r.Promoted
		}
		term := "-"
		if r.Term != 0 {
			term = fmt.Sprint(r.Term)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Index, r.Time.Local().Format("2006-01-02 15:04:05 MST"), r.Kind,
			old, nw, term, tl(r.Timeline), posText(pos), oneLine(reason))
	}
	return tw.Flush()
}

func isLeaderChange(kind string) bool {
	switch kind {
	case "bootstrap", "failover", "switchover", "manual-failover", "reacquire":
		return true
	}
	return false
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
