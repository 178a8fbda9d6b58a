package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

func newListCmd(e *env, g *globals) *cobra.Command {
	var output string
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Show the cluster's members, roles, lag and failover readiness",
		Long: `Show the cluster as etcd holds it: the leader, maintenance mode, a scheduled
switchover, and every member with its host, role, state, timeline, lag,
pending restart, failover readiness and tags. It contacts etcd only.

With --watch 2s the table is printed again every 2 seconds until Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if cmd.Flags().Changed("watch") && watch < 100*time.Millisecond {
				return usageErr(fmt.Errorf("--watch %v: expected an interval of at least 100ms, e.g. --watch 2s", watch))
			}
			cfg, err := loadConfig(e, g)
			if err != nil {
				return err
			}
			st, err := openStore(cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			once := func() error {
				ctx, cancel := cliContext(cfg.Bootstrap.RetryTimeout.D() + time.Second)
				defer cancel()
				cl, err := st.Load(ctx)
				if err != nil {
					return dcsErr(cfg, err)
				}
				return renderList(e.stdout, output, cfg, cl)
			}
			if watch == 0 {
				return once()
			}
			ctx, stop := signal.NotifyContext(e.context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			clear := isTerminal(e.stdout) && output == "table"
			for {
				if clear {
					fmt.Fprint(e.stdout, "\033[H\033[2J")
				}
				if output == "table" {
					fmt.Fprintf(e.stdout, "%s (every %v; Ctrl-C to stop)\n", time.Now().Format("2006-01-02 15:04:05 MST"), watch)
				}
				if err := once(); err != nil {
					// A watch outlives a short etcd outage: say so and go on.
					fmt.Fprintf(e.stdout, "steward: %v\n", err)
				}
				if !clear && output == "table" {
					fmt.Fprintln(e.stdout)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(watch):
				}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "print the list again every interval (e.g. 2s) until Ctrl-C")
	return cmd
}

// isTerminal reports whether f (standard input or output) is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	fi, err := file.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func checkOutput(o string) error {
	switch o {
	case "table", "json", "yaml":
		return nil
	}
	return usageErr(fmt.Errorf("--output %q: expected table, json or yaml", o))
}

// listView is the machine-readable form of `steward list`.
type listView struct {
	Cluster     string          `json:"cluster" yaml:"cluster"`
	Leader      string          `json:"leader" yaml:"leader"`
	Term        int64           `json:"term,omitempty" yaml:"term,omitempty"`
	SystemID    string          `json:"system_id,omitempty" yaml:"system_id,omitempty"`
	Paused      bool            `json:"paused" yaml:"paused"`
	Switchover  *dcs.Switchover `json:"scheduled_switchover,omitempty" yaml:"scheduled_switchover,omitempty"`
	Members     []listMember    `json:"members" yaml:"members"`
	StoreErrors []string        `json:"store_errors,omitempty" yaml:"store_errors,omitempty"`
}

type listMember struct {
	Name           string            `json:"name" yaml:"name"`
	Host           string            `json:"host" yaml:"host"`
	Role           string            `json:"role" yaml:"role"`
	State          string            `json:"state" yaml:"state"`
	Reason         string            `json:"reason,omitempty" yaml:"reason,omitempty"`
	Timeline       int64             `json:"timeline" yaml:"timeline"`
	Position       string            `json:"position" yaml:"position"`
	LagBytes       int64             `json:"lag_bytes" yaml:"lag_bytes"`
	Eligible       bool              `json:"eligible" yaml:"eligible"`
	Ineligible     []string          `json:"ineligible_reasons,omitempty" yaml:"ineligible_reasons,omitempty"`
	Sync           string            `json:"sync_state,omitempty" yaml:"sync_state,omitempty"`
	Tags           map[string]string `json:"tags,omitempty" yaml:"tags,omitempty"`
	PendingRestart bool              `json:"pending_restart" yaml:"pending_restart"`
	APIURL         string            `json:"api_url" yaml:"api_url"`
}

func buildListView(cfg *config.Config, cl *dcs.Cluster) listView {
	v := listView{Cluster: cfg.Cluster}
	if cl.Leader != nil {
		v.Leader, v.Term = cl.Leader.Name, cl.Leader.Term
	}
	if cl.Initialize != nil {
		v.SystemID = cl.Initialize.Value.SystemID
	}
	if cl.Config != nil {
		if d, err := config.ParseDynamicJSON(cl.Config.Value); err == nil {
			v.Paused = d.Paused
		}
	}
	if cl.Switchover != nil {
		sw := cl.Switchover.Value
		v.Switchover = &sw
	}
	names := make([]string, 0, len(cl.Members))
	for n := range cl.Members {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := cl.Members[n]
		role := m.Role
		if cl.Leader != nil && cl.Leader.Name == n {
			role = "leader"
		}
		v.Members = append(v.Members, listMember{
			Name: n, Host: m.DBURL, Role: role, State: m.State, Reason: m.Reason,
			Timeline: m.Timeline, Position: m.Position.String(), LagBytes: m.LagBytes,
			Eligible: m.Eligible, Ineligible: m.IneligibleReason, Sync: m.Sync,
			Tags: memberTags(m), PendingRestart: m.PendingRestart, APIURL: m.APIURL,
		})
	}
	for k, e := range cl.Errors {
		v.StoreErrors = append(v.StoreErrors, k+": "+e)
	}
	sort.Strings(v.StoreErrors)
	return v
}

func memberTags(m dcs.Member) map[string]string {
	t := map[string]string{}
	for k, v := range m.Tags {
		t[k] = v
	}
	if m.NoFailover {
		t["nofailover"] = "true"
	}
	if m.NoLoadBalance {
		t["noloadbalance"] = "true"
	}
	if m.NoSync {
		t["nosync"] = "true"
	}
	if m.Priority != 1 {
		t["failover_priority"] = fmt.Sprint(m.Priority)
	}
	if len(t) == 0 {
		return nil
	}
	return t
}

func renderList(w io.Writer, format string, cfg *config.Config, cl *dcs.Cluster) error {
	v := buildListView(cfg, cl)
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		return yaml.NewEncoder(w).Encode(v)
	}
	leader := v.Leader
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(w, "Cluster: %s   Leader: %s", v.Cluster, leader)
	if v.Term != 0 {
		fmt.Fprintf(w, " (term %d)", v.Term)
	}
	if v.SystemID != "" {
		fmt.Fprintf(w, "   System ID: %s", v.SystemID)
	}
	fmt.Fprintln(w)
	if v.Paused {
		fmt.Fprintln(w, "Maintenance mode: ON (paused): no automatic failover, no restarts; steward resume ends it")
	} else {
		fmt.Fprintln(w, "Maintenance mode: off")
	}
	if v.Switchover != nil {
		fmt.Fprintf(w, "Scheduled switchover: %s\n", describeSwitchover(*v.Switchover))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tHOST\tROLE\tSTATE\tTL\tLAG\tPENDING RESTART\tFAILOVER\tTAGS")
	for _, m := range v.Members {
		state := m.State
		if m.Reason != "" {
			state += " (" + m.Reason + ")"
		}
		pending := "-"
		if m.PendingRestart {
			pending = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Host, m.Role, state,
			tl(m.Timeline), lagText(m.Role, m.LagBytes), pending, readiness(m), tagText(m.Tags))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Members) == 0 {
		fmt.Fprintln(w, "(no members have published themselves; is any agent running?)")
	}
	for _, e := range v.StoreErrors {
		fmt.Fprintf(w, "warning: undecodable record %s\n", e)
	}
	return nil
}

func describeSwitchover(s dcs.Switchover) string {
	var b strings.Builder
	if s.Leader != "" {
		fmt.Fprintf(&b, "from %s", s.Leader)
	} else {
		b.WriteString("manual failover")
	}
	switch {
	case s.Candidate != "":
		fmt.Fprintf(&b, " to %s", s.Candidate)
	case s.Leader != "":
		b.WriteString(" to the best eligible replica")
	}
	if !s.ScheduledAt.IsZero() {
		fmt.Fprintf(&b, " at %s", s.ScheduledAt.Local().Format(time.RFC3339))
		if d := time.Until(s.ScheduledAt); d > 0 && s.Phase == "" {
			fmt.Fprintf(&b, " (in %v)", d.Round(time.Second))
		}
	}
	if s.Force {
		b.WriteString(", forced")
	}
	if s.Phase != "" {
		fmt.Fprintf(&b, " [running: %s]", s.Phase)
	}
	return b.String()
}

func tl(t int64) string {
	if t == 0 {
		return "-"
	}
	return fmt.Sprint(t)
}

func readiness(m listMember) string {
	if m.Role == "leader" || m.Role == dcs.RolePrimary {
		return "-"
	}
	if m.Eligible {
		return "eligible"
	}
	if len(m.Ineligible) == 0 {
		return "no"
	}
	return "no: " + strings.Join(m.Ineligible, "; ")
}

func tagText(t map[string]string) string {
	if len(t) == 0 {
		return ""
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + t[k]
	}
	return strings.Join(parts, ",")
}

// lagText shows lag in bytes and in human units ("0", "12 kB (12288)").
func lagText(role string, b int64) string {
	if role == "leader" || role == dcs.RolePrimary {
		return "-"
	}
	if b < 0 {
		return "unknown"
	}
	return humanBytes(b)
}

func humanBytes(b int64) string {
	switch {
	case b < 1024:
		return fmt.Sprintf("%d B", b)
	case b < 1<<20:
		return fmt.Sprintf("%.1f kB (%d)", float64(b)/1024, b)
	case b < 1<<30:
		return fmt.Sprintf("%.1f MB (%d)", float64(b)/(1<<20), b)
	}
	return fmt.Sprintf("%.1f GB (%d)", float64(b)/(1<<30), b)
}
