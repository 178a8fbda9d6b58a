package main

// steward restart and steward reinit: operator actions on one member's
// database, asked of that member's agent (POST /restart, POST
// /reinitialize) and followed until they are done.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stewardha/steward/agent"
	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/dcs"
)

type restartOpts struct {
	pending bool
	force   bool
	timeout time.Duration
}

func newRestartCmd(e *env, g *globals) *cobra.Command {
	var o restartOpts
	cmd := &cobra.Command{
		Use:   "restart MEMBER [--pending] [--force]",
		Short: "Restart a member's database (e.g. after changing a parameter that needs it)",
		Long: `Ask MEMBER's agent to restart its database (fast shutdown, then start in the
same role). The leader keeps its leader key during the restart: there is no
failover, writes fail for the few seconds the restart takes. With --pending
it restarts only when a setting waits for a restart (steward list: PENDING
RESTART), and otherwise does nothing.

It asks for confirmation unless --force, then waits (--timeout) until the
database runs again: exit 0 when it was restarted, 1 when refused or
failed, 3 when the outcome is not known yet.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.timeout <= 0 {
				return usageErr(fmt.Errorf("--timeout %v: expected a positive duration such as 2m", o.timeout))
			}
			c, err := openCtl(e, g, true)
			if err != nil {
				return err
			}
			defer c.close()
			return c.restart(args[0], o)
		},
	}
	cmd.Flags().BoolVar(&o.pending, "pending", false, "restart only if a setting waits for a restart")
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "do not ask for confirmation (for scripts)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the database to run again")
	return cmd
}

// memberStatus fetches a member's GET /status, explaining a failure.
func (c *ctl) memberStatus(ctx context.Context, name string, m dcs.Member) (api.StatusBody, error) {
	if m.APIURL == "" {
		return api.StatusBody{}, fmt.Errorf("%s has not published its API address", name)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := c.api.StatusBody(sctx, m.APIURL)
	if err != nil {
		return s, fmt.Errorf("%s's agent does not answer at %s (%s): the request needs its agent running", name, m.APIURL, shortErr(err))
	}
	return s, nil
}

func (c *ctl) restart(name string, o restartOpts) error {
	ctx, cancel := context.WithTimeout(c.e.context(), 30*time.Second)
	defer cancel()
	cl, err := c.load(ctx)
	if err != nil {
		return err
	}
	m, err := c.member(cl, name)
	if err != nil {
		return err
	}
	before, err := c.memberStatus(ctx, name, m)
	if err != nil {
		return err
	}
	if o.pending && !before.Database.PendingRestart {
		fmt.Fprintf(c.e.stdout, "%s has no setting waiting for a restart: nothing to do (--pending)\n", name)
		return nil
	}
	isLeader := cl.Leader != nil && cl.Leader.Name == name
	var term int64
	if isLeader {
		term = cl.Leader.Term
	}
	if !o.force {
		q := fmt.Sprintf("Restart the database of %s (a %s, %s)?", name, orDash(m.Role), orDash(m.State))
		if isLeader {
			q = fmt.Sprintf("Restart the database of %s? It is the leader: writes fail while it restarts; it keeps the leader key (no failover).", name)
		}
		if err := c.confirm(q, "--force"); err != nil {
			return err
		}
	}
	c.start = time.Now()
	requested := time.Now()
	res, code, err := c.api.Restart(ctx, m.APIURL, o.pending)
	if err != nil {
		return fmt.Errorf("%s's agent does not answer (%s): nothing was requested", name, shortErr(err))
	}
	if code != http.StatusAccepted {
		return fmt.Errorf("restart refused: %w", apiRefusal(apiTarget{name, m.APIURL}, code, res.Error))
	}
	pid := before.Database.PID
	if pid != 0 {
		c.say("requested: restart of %s's database (pid %d)", name, pid)
	} else {
		c.say("requested: restart of %s's database", name)
	}
	wctx, wcancel := c.waitContext(o.timeout)
	defer wcancel()
	var after api.StatusBody
	var failed string
	err = poll(wctx, 100*time.Millisecond, func() (bool, error) {
		s, err := c.api.StatusBody(wctx, m.APIURL)
		if err != nil {
			return false, nil // the agent is busy restarting: ask again
		}
		if r := s.Member.Reason; strings.HasPrefix(r, string(agent.ActRestart)+" failed") {
			failed = r
			return true, nil
		}
		running := s.Database.State == "running"
		restarted := pid != 0 && s.Database.PID != 0 && s.Database.PID != pid
		if pid == 0 {
			restarted = s.LoopAt.After(requested) // a whole loop ran after the request: it carried it out
		}
		after = s
		return running && restarted, nil
	})
	if failed != "" {
		return fmt.Errorf("the restart of %s failed: %s", name, failed)
	}
	if err != nil {
		return waitErr(wctx, "restart of "+name, o.timeout)
	}
	if pid != 0 {
		c.say("%s's database runs again (pid %d -> %d), as %s", name, pid, after.Database.PID, roleWord(after.Database.Writable))
	} else {
		c.say("%s's database runs again, as %s", name, roleWord(after.Database.Writable))
	}
	if isLeader {
		cl, err := c.load(ctx)
		if err != nil {
			return err
		}
		if cl.Leader == nil || cl.Leader.Name != name || cl.Leader.Term != term {
			return fmt.Errorf("the leadership changed during the restart (leader now: %s): check steward history", leaderText(cl))
		}
		c.say("no failover: %s still leads (term %d)", name, term)
	}
	return nil
}

func roleWord(writable bool) string {
	if writable {
		return "a writable primary"
	}
	return "a read-only replica"
}

func leaderText(cl *dcs.Cluster) string {
	if cl.Leader == nil {
		return "none"
	}
	return fmt.Sprintf("%s, term %d", cl.Leader.Name, cl.Leader.Term)
}

// ---------------------------------------------------------------------------
// steward reinit

func newReinitCmd(e *env, g *globals) *cobra.Command {
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "reinit MEMBER [--force]",
		Short: "Wipe a replica's data directory and clone it again from the leader",
		Long: `Ask MEMBER's agent to wipe its data directory and clone it again from the
leader (pg_basebackup; MySQL: the clone command), then stream. For a replica
whose data is damaged, or a former primary that cannot rejoin. Refused on
the leader (switch over first). Whatever only MEMBER had is lost.

It asks for confirmation unless --force, then waits (--timeout) until MEMBER
streams from the leader: exit 0 when done, 1 when refused or failed, 3 when
the outcome is not known yet.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usageErr(fmt.Errorf("--timeout %v: expected a positive duration such as 30m", timeout))
			}
			c, err := openCtl(e, g, true)
			if err != nil {
				return err
			}
			defer c.close()
			return c.reinit(args[0], force, timeout)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation (for scripts)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait for the clone and for streaming")
	return cmd
}

func (c *ctl) reinit(name string, force bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(c.e.context(), 30*time.Second)
	defer cancel()
	cl, err := c.load(ctx)
	if err != nil {
		return err
	}
	m, err := c.member(cl, name)
	if err != nil {
		return err
	}
	if cl.Leader == nil {
		return errors.New("the cluster has no leader to clone from: nothing was changed")
	}
	leader := cl.Leader.Name
	if leader == name {
		return fmt.Errorf("reinit refused: %s is the leader; wiping it would destroy the primary; switch over first (steward switchover), then reinit %s", name, name)
	}
	if m.APIURL == "" {
		return fmt.Errorf("%s has not published its API address", name)
	}
	if !force {
		q := fmt.Sprintf("Wipe the data directory of %s and clone it again from %s? Anything only %s has is lost.", name, leader, name)
		if err := c.confirm(q, "--force"); err != nil {
			return err
		}
	}
	h, err := c.history(ctx)
	if err != nil {
		return err
	}
	base := lastIndex(h)
	c.start = time.Now()
	res, code, err := c.api.Reinitialize(ctx, m.APIURL)
	if err != nil {
		return fmt.Errorf("%s's agent does not answer (%s): nothing was requested", name, shortErr(err))
	}
	if code != http.StatusAccepted {
		return fmt.Errorf("reinit refused: %w", apiRefusal(apiTarget{name, m.APIURL}, code, res.Error))
	}
	c.say("requested: reinit of %s from %s", name, leader)
	wctx, wcancel := c.waitContext(timeout)
	defer wcancel()
	seen := map[string]bool{}
	var failed string
	err = poll(wctx, 200*time.Millisecond, func() (bool, error) {
		cl, err := c.load(wctx)
		if err != nil {
			return false, nil
		}
		cur, ok := cl.Members[name]
		if !ok {
			return false, nil
		}
		if cur.State == agent.StateCloning && !seen["cloning"] {
			seen["cloning"] = true
			c.say("%s: data directory wiped, cloning from %s", name, leader)
		}
		if strings.HasPrefix(cur.Reason, string(agent.ActReinit)+" failed") {
			failed = cur.Reason
			return true, nil
		}
		if !seen["cloned"] && (cur.State == agent.StateStreaming || isReinitOf(cl.LastHistory, name, base)) {
			// The agent records the clone in the history before it starts
			// streaming.
			if h, err := c.history(wctx); err == nil {
				for _, hr := range h {
					if isReinitOf(&hr, name, base) {
						seen["cloned"] = true
						c.say("%s: cloned again from %s", name, orDash(hr.NewLeader))
					}
				}
			}
		}
		if seen["cloned"] && cur.State == agent.StateStreaming && cl.Leader != nil && cur.Following == cl.Leader.Name {
			c.say("%s streams from %s: reinit done", name, cl.Leader.Name)
			return true, nil
		}
		return false, nil
	})
	if failed != "" {
		return fmt.Errorf("the reinit of %s failed: %s", name, failed)
	}
	if err != nil {
		return waitErr(wctx, "reinit of "+name, timeout)
	}
	return nil
}

func isReinitOf(hr *dcs.HistoryRecord, name string, after int64) bool {
	return hr != nil && hr.Index > after && hr.Kind == "reinit" && hr.Member == name
}
