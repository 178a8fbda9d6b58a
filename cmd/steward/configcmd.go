package main

// show-config, edit-config, pause and resume: the cluster-wide (dynamic)
// settings in etcd's config key. They are read from etcd and written
// through a member's PATCH /config, with the version read as If-Match: the
// agent validates the result as every agent will read it and writes it with
// a compare-and-swap, so a concurrent change is never overwritten.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/stewardha/steward/api"
	"github.com/stewardha/steward/config"
	"github.com/stewardha/steward/dcs"
)

// dynState is the DCS copy of the dynamic settings as read.
type dynState struct {
	version int64           // 0: no config key yet
	set     map[string]bool // keys present in the stored object
	eff     config.Dynamic  // the effective settings (defaults filled in)
}

func (c *ctl) readDynamic(ctx context.Context) (dynState, error) {
	gctx, cancel := context.WithTimeout(ctx, c.dcsTimeout())
	defer cancel()
	raw, ver, err := c.store.GetConfig(gctx)
	switch {
	case errors.Is(err, dcs.ErrNotFound):
		// The first leader writes its bootstrap section; until then the
		// agents run with their own.
		return dynState{set: map[string]bool{}, eff: c.cfg.Bootstrap}, nil
	case err != nil:
		return dynState{}, dcsErr(c.cfg, err)
	}
	d, err := config.ParseDynamicJSON(raw)
	if err != nil {
		return dynState{}, fmt.Errorf("the config in etcd is invalid (the agents keep their last good settings):\n%w\nreplace it with PUT /config on any agent", err)
	}
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(raw, &obj)
	st := dynState{version: ver, set: map[string]bool{}, eff: d}
	for k := range obj {
		st.set[k] = true
	}
	return st, nil
}

// dynEntry is one setting as shown to operators.
type dynEntry struct{ key, value string }

// dynEntries lists the settings in their documented order with their
// human form ("10s", "1MB").
func dynEntries(d config.Dynamic) []dynEntry {
	b, err := yaml.Marshal(d)
	if err != nil {
		panic(err) // plain values: cannot fail
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil || len(doc.Content) == 0 {
		panic(fmt.Sprintf("dynamic config YAML: %v", err))
	}
	m := doc.Content[0]
	out := make([]dynEntry, 0, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		out = append(out, dynEntry{m.Content[i].Value, m.Content[i+1].Value})
	}
	return out
}

// fieldJSON is one setting's canonical JSON value, as the agents store it.
func fieldJSON(d config.Dynamic, key string) json.RawMessage {
	b, _ := json.Marshal(d)
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(b, &obj)
	return obj[key]
}

// renderDynamicYAML is the settings as YAML, each key not stored in etcd
// marked as a default.
func renderDynamicYAML(st dynState) string {
	var b strings.Builder
	for _, e := range dynEntries(st.eff) {
		line := e.key + ": " + e.value
		if !st.set[e.key] {
			line += "  # default"
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// steward show-config

func newShowConfigCmd(e *env, g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show-config",
		Short: "Print the cluster-wide (dynamic) settings stored in etcd",
		Long: `Print the cluster-wide settings every agent runs with (etcd's config key):
ttl, loop_wait, retry_timeout, maximum_lag_on_failover, synchronous_mode,
paused, ... Keys not stored in etcd show their default, marked "# default".
Change them with steward edit-config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "yaml" && output != "json" {
				return usageErr(fmt.Errorf("--output %q: expected yaml or json", output))
			}
			c, err := openCtl(e, g, false)
			if err != nil {
				return err
			}
			defer c.close()
			st, err := c.readDynamic(e.context())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st.eff)
			}
			if st.version == 0 {
				fmt.Fprintf(e.stdout, "# cluster %s: no config in etcd yet; the agents run with their bootstrap section (shown)\n", c.cfg.Cluster)
			} else {
				fmt.Fprintf(e.stdout, "# cluster %s, etcd config version %d\n", c.cfg.Cluster, st.version)
			}
			fmt.Fprint(e.stdout, renderDynamicYAML(st))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "output format: yaml or json")
	return cmd
}

// ---------------------------------------------------------------------------
// steward edit-config

type editOpts struct {
	sets    []string
	force   bool
	timeout time.Duration
}

func newEditConfigCmd(e *env, g *globals) *cobra.Command {
	var o editOpts
	cmd := &cobra.Command{
		Use:   "edit-config [--set key=value]... [--force]",
		Short: "Change the cluster-wide settings: in $EDITOR, or with --set key=value",
		Long: `Change the cluster-wide settings stored in etcd. Without --set it opens
$VISUAL or $EDITOR (else vi) on them as YAML; with --set key=value (repeatable)
it changes just those keys. Either way it validates the result as the
agents will (an invalid value is refused with the key named, exit 2,
nothing written), shows the difference, asks for confirmation unless
--force, and writes it with a compare-and-swap through a member's API: if
someone else changed the settings meanwhile, nothing is written.

Then it waits (--timeout) until every agent that answers runs with the new
settings: they apply them at their next loop, without a restart.`,
		Example: `  steward edit-config --set loop_wait=500ms --force
  steward edit-config --set maximum_lag_on_failover=16MB --set ttl=30s
  EDITOR=nano steward edit-config`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.timeout <= 0 {
				return usageErr(fmt.Errorf("--timeout %v: expected a positive duration such as 30s", o.timeout))
			}
			var sets [][2]string
			for _, s := range o.sets {
				k, v, ok := strings.Cut(s, "=")
				if !ok || strings.TrimSpace(k) == "" {
					return usageErr(fmt.Errorf("--set %q: expected key=value, e.g. --set loop_wait=500ms (keys: %s)", s, strings.Join(config.Dynamic{}.Fields(), ", ")))
				}
				sets = append(sets, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
			}
			c, err := openCtl(e, g, true)
			if err != nil {
				return err
			}
			defer c.close()
			return c.editConfig(sets, o)
		},
	}
	cmd.Flags().StringArrayVarP(&o.sets, "set", "s", nil, "set key=value (repeatable); no editor is opened")
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "do not ask for confirmation (for scripts)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the agents to apply the change")
	return cmd
}

// applySets applies --set pairs to d; errors name the key.
func applySets(d config.Dynamic, sets [][2]string) (config.Dynamic, error) {
	var errs config.Errors
	for _, kv := range sets {
		if err := d.Set(kv[0], kv[1]); err != nil {
			var fe *config.Errors
			if errors.As(err, &fe) {
				for _, f := range *fe {
					errs = append(errs, config.FieldError{Path: "config." + f.Path, Msg: f.Msg + fmt.Sprintf(" (--set %s=%s)", kv[0], kv[1])})
				}
				continue
			}
			errs = append(errs, config.FieldError{Path: "config." + kv[0], Msg: err.Error()})
		}
	}
	if len(errs) > 0 {
		return d, &errs
	}
	return d, d.Validate("config")
}

// parseEdited reads the edited YAML: every key present is set; a removed
// key goes back to its default.
func parseEdited(data []byte) (config.Dynamic, error) {
	d := config.DefaultDynamic()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return d, &config.Errors{{Path: "config", Msg: "not valid YAML: " + err.Error()}}
	}
	if len(doc.Content) == 0 {
		return d, errEmptyEdit
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return d, &config.Errors{{Path: "config", Msg: "expected key: value lines"}}
	}
	var errs config.Errors
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i].Value, m.Content[i+1]
		path := "config." + k
		if seen[k] {
			errs = append(errs, config.FieldError{Path: path, Msg: fmt.Sprintf("given twice (line %d)", m.Content[i].Line)})
			continue
		}
		seen[k] = true
		if v.Kind != yaml.ScalarNode {
			errs = append(errs, config.FieldError{Path: path, Msg: fmt.Sprintf("expected a single value (line %d)", v.Line)})
			continue
		}
		if err := d.Set(k, v.Value); err != nil {
			var fe *config.Errors
			if errors.As(err, &fe) {
				for _, f := range *fe {
					errs = append(errs, config.FieldError{Path: "config." + f.Path, Msg: f.Msg + fmt.Sprintf(" (line %d)", v.Line)})
				}
				continue
			}
			errs = append(errs, config.FieldError{Path: path, Msg: err.Error()})
		}
	}
	if len(errs) > 0 {
		return d, &errs
	}
	return d, d.Validate("config")
}

var errEmptyEdit = errors.New("the edited file is empty: nothing was changed")

// dynamicDiff lists the changed settings as "-key: old" / "+key: new" lines
// and the merge patch that makes the change.
func dynamicDiff(cur, next config.Dynamic) ([]string, map[string]json.RawMessage) {
	var lines []string
	patch := map[string]json.RawMessage{}
	ne := dynEntries(next)
	for i, e := range dynEntries(cur) {
		if e.value == ne[i].value {
			continue
		}
		lines = append(lines, "-"+e.key+": "+e.value, "+"+e.key+": "+ne[i].value)
		patch[e.key] = fieldJSON(next, e.key)
	}
	return lines, patch
}

func (c *ctl) editConfig(sets [][2]string, o editOpts) error {
	ctx := c.e.context()
	st, err := c.readDynamic(ctx)
	if err != nil {
		return err
	}
	var next config.Dynamic
	if len(sets) > 0 {
		if next, err = applySets(st.eff, sets); err != nil {
			return usageErr(fmt.Errorf("invalid settings, nothing was written:\n%w", err))
		}
	} else {
		if next, err = c.editInEditor(st); err != nil {
			return err
		}
	}
	diff, patch := dynamicDiff(st.eff, next)
	if len(patch) == 0 {
		fmt.Fprintln(c.e.stdout, "no change: the settings already have these values")
		return nil
	}
	fmt.Fprintf(c.e.stdout, "--- config in etcd (version %d)\n+++ new config\n%s\n", st.version, strings.Join(diff, "\n"))
	if !o.force {
		if err := c.confirm("Apply these changes to the cluster?", "--force"); err != nil {
			return err
		}
	}
	return c.writeConfig(st, patch, next, o.timeout, true)
}

// editInEditor lets the operator edit the settings until they are valid
// (or they give up).
func (c *ctl) editInEditor(st dynState) (config.Dynamic, error) {
	editor := c.editorCommand()
	if len(editor) == 0 {
		return config.Dynamic{}, usageErr(errors.New("no editor: set $EDITOR (or $VISUAL), or use --set key=value"))
	}
	f, err := os.CreateTemp("", "steward-config-*.yml")
	if err != nil {
		return config.Dynamic{}, err
	}
	path := f.Name()
	defer os.Remove(path)
	header := fmt.Sprintf(`# Cluster-wide settings of cluster %s (etcd config key, version %d).
# Change values, save and quit. steward shows the difference and asks before
# writing. A removed line goes back to its default; lines starting with # are
# ignored. Reference: docs/configuration.md, "Dynamic settings".
`, c.cfg.Cluster, st.version)
	content := header + renderDynamicYAML(st)
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return config.Dynamic{}, err
	}
	f.Close()
	for {
		cmd := exec.Command(editor[0], append(editor[1:], path)...)
		cmd.Stdout, cmd.Stderr = c.e.stdout, c.e.stderr
		if f, ok := c.e.stdin.(*os.File); ok {
			cmd.Stdin = f // the terminal; another reader would be consumed by the editor
		}
		if err := cmd.Run(); err != nil {
			return config.Dynamic{}, fmt.Errorf("the editor %q failed: %w; nothing was written", strings.Join(editor, " "), err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return config.Dynamic{}, err
		}
		next, err := parseEdited(data)
		if err == nil {
			return next, nil
		}
		if errors.Is(err, errEmptyEdit) {
			return config.Dynamic{}, err
		}
		fmt.Fprintf(c.e.stderr, "steward: invalid settings:\n%v\n", err)
		if cerr := c.confirm("Edit again?", "--set"); cerr != nil {
			return config.Dynamic{}, usageErr(fmt.Errorf("invalid settings, nothing was written:\n%w", err))
		}
	}
}

// editorCommand is $VISUAL, else $EDITOR, else vi when installed (split on
// spaces, so that "code --wait" works).
func (c *ctl) editorCommand() []string {
	for _, k := range []string{"VISUAL", "EDITOR"} {
		if v, ok := c.e.lookupEnv(k); ok && strings.TrimSpace(v) != "" {
			return strings.Fields(v)
		}
	}
	if p, err := exec.LookPath("vi"); err == nil {
		return []string{p}
	}
	return nil
}

// writeConfig sends the patch through a member's API, conditional on the
// version read, then (wait) waits until every answering agent runs with
// next.
func (c *ctl) writeConfig(st dynState, patch map[string]json.RawMessage, next config.Dynamic, timeout time.Duration, wait bool) error {
	ctx, cancel := context.WithTimeout(c.e.context(), 30*time.Second)
	defer cancel()
	cl, err := c.load(ctx)
	if err != nil {
		return err
	}
	var ans api.ConfigAnswer
	var code int
	var via apiTarget
	err = c.firstAnswer(cl, nil, func(t apiTarget) error {
		var err error
		via = t
		ans, code, err = c.api.PatchConfig(ctx, t.url, patch, st.version)
		return err
	})
	if err != nil {
		return fmt.Errorf("nothing was written: %w", err)
	}
	switch code {
	case http.StatusOK:
	case http.StatusBadRequest:
		if len(ans.Fields) > 0 {
			msgs := make([]string, len(ans.Fields))
			for i, f := range ans.Fields {
				msgs[i] = f.Field + ": " + f.Message
			}
			return usageErr(fmt.Errorf("%s refused the settings, nothing was written:\n%s", via.name, strings.Join(msgs, "\n")))
		}
		return usageErr(fmt.Errorf("%s refused the settings, nothing was written: %s", via.name, ans.Error))
	case http.StatusPreconditionFailed, http.StatusConflict:
		return errors.New("the settings changed in etcd since they were read (someone else changed them): nothing was written; run the command again")
	case http.StatusServiceUnavailable:
		return unknownErr(fmt.Errorf("writing the settings may have failed (%s): check steward show-config", ans.Error))
	default:
		return fmt.Errorf("nothing was written: %w", apiRefusal(via, code, ans.Error))
	}
	c.start = time.Now()
	c.say("written through %s's API (etcd config version %d)", via.name, ans.Version)
	if !wait {
		return nil
	}
	// The agents run with what was stored, as they read it.
	if stored, err := config.ParseDynamicJSON(ans.Config); err == nil {
		next = stored
	}
	return c.waitApplied(cl, next, timeout)
}

// waitApplied waits until every member whose API answers reports that it
// runs with d (GET /status: config).
func (c *ctl) waitApplied(cl *dcs.Cluster, d config.Dynamic, timeout time.Duration) error {
	ctx, cancel := c.waitContext(timeout)
	defer cancel()
	applied := map[string]bool{}
	down := map[string]string{}
	names := sortedNames(cl)
	err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		pending := 0
		for _, n := range names {
			if applied[n] {
				continue
			}
			m := cl.Members[n]
			sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
			s, err := c.api.StatusBody(sctx, m.APIURL)
			scancel()
			if err != nil {
				if _, said := down[n]; !said {
					down[n] = shortErr(err)
					c.say("%s's API does not answer (%s): it applies the settings when its agent runs", n, shortErr(err))
				}
				continue
			}
			delete(down, n)
			if s.Config == d {
				applied[n] = true
				c.say("%s runs with the new settings", n)
				continue
			}
			pending++
		}
		return pending == 0, nil
	})
	if err != nil {
		var late []string
		for _, n := range names {
			if _, isDown := down[n]; !applied[n] && !isDown {
				late = append(late, n)
			}
		}
		return waitErr(ctx, "applying the settings (not yet: "+strings.Join(late, ", ")+")", timeout)
	}
	if len(down) > 0 {
		return nil
	}
	c.say("every agent runs with the new settings")
	return nil
}

// ---------------------------------------------------------------------------
// steward pause / resume

func newPauseCmd(e *env, g *globals, pause bool) *cobra.Command {
	var wait bool
	var timeout time.Duration
	use, short, long := "pause", "Enter maintenance mode: the agents stop failing over, demoting and restarting",
		`Enter maintenance mode (paused: true in the cluster-wide settings): the
agents keep publishing their state but never promote, demote, restart or
delete keys, so that you can stop, restart or repair databases by hand.
A primary that dies while paused is not replaced: steward resume ends it.

With --wait the command waits (--timeout) until every member reports that
it is paused.`
	if !pause {
		use, short, long = "resume", "Leave maintenance mode: automatic failover is back",
			`Leave maintenance mode (paused: false): the agents act again; if the
cluster has no leader, they elect one now.

With --wait the command waits (--timeout) until every member reports that
it is no longer paused.`
	}
	cmd := &cobra.Command{
		Use:   use + " [--wait]",
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return usageErr(fmt.Errorf("--timeout %v: expected a positive duration such as 30s", timeout))
			}
			c, err := openCtl(e, g, true)
			if err != nil {
				return err
			}
			defer c.close()
			return c.setPaused(pause, wait, timeout)
		},
	}
	cmd.Flags().BoolVarP(&wait, "wait", "w", false, "wait until every member reports the change")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long --wait waits")
	return cmd
}

func (c *ctl) setPaused(pause, wait bool, timeout time.Duration) error {
	st, err := c.readDynamic(c.e.context())
	if err != nil {
		return err
	}
	mode := "off"
	if pause {
		mode = "ON"
	}
	if st.eff.Paused == pause {
		c.say("maintenance mode is already %s: nothing to change", mode)
	} else {
		next := st.eff
		next.Paused = pause
		_, patch := dynamicDiff(st.eff, next)
		if err := c.writeConfig(st, patch, next, timeout, false); err != nil {
			return err
		}
		if pause {
			c.say("maintenance mode ON: the agents will not fail over, demote or restart anything until steward resume")
		} else {
			c.say("maintenance mode off: automatic failover is back")
		}
	}
	if !wait {
		c.say("the agents apply it at their next loop (loop_wait %v); --wait waits for them", st.eff.LoopWait.D())
		return nil
	}
	ctx, cancel := c.waitContext(timeout)
	defer cancel()
	done := map[string]bool{}
	err = poll(ctx, 100*time.Millisecond, func() (bool, error) {
		cl, err := c.load(ctx)
		if err != nil {
			return false, nil // retried until the timeout
		}
		all := true
		for _, n := range sortedNames(cl) {
			if cl.Members[n].Paused != pause {
				all = false
				continue
			}
			if !done[n] {
				done[n] = true
				c.say("%s reports maintenance mode %s", n, mode)
			}
		}
		if all && !pause && cl.Leader == nil {
			c.say("the cluster has no leader: the agents elect one now (steward list)")
		}
		return all, nil
	})
	if err != nil {
		return waitErr(ctx, "waiting for every member to report maintenance mode "+mode, timeout)
	}
	c.say("every member reports maintenance mode %s", mode)
	return nil
}
