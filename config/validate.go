package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

var (
	namePattern      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	hostPattern      = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$`)
	tagPattern       = regexp.MustCompile(`^[a-z0-9_]+$`)
	parameterPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)
	placeholder      = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

// Allowed values of the enumerated keys.
var (
	synchronousModes = []string{"off", "on", "strict", "quorum"}
	verifyClients    = []string{"none", "optional", "required"}
	fencingModes     = []string{"off", "best-effort", "required"}
	watchdogModes    = []string{"off", "automatic", "required"}
	logLevels        = []string{"debug", "info", "warn", "error"}
	logFormats       = []string{"text", "json"}
	shutdownModes    = []string{"stop-database", "leave-running"}
	builtinTags      = []string{"nofailover", "noloadbalance", "nosync", "failover_priority"}
	hookPlaceholders = []string{"{target_name}", "{target_host}", "{target_api}", "{cluster}"}
)

// Timing limits.
const (
	minTTL          = 2 * time.Second
	minLoopWait     = 100 * time.Millisecond
	minRetryTimeout = 500 * time.Millisecond
	minAutoMargin   = 500 * time.Millisecond
	maxAutoMargin   = 5 * time.Second
)

// Validate checks c as it is (it applies no defaults) and returns every
// problem as *Errors, or nil. Load and Parse call it.
func (c *Config) Validate() error {
	if c == nil {
		return &Errors{{Msg: "no configuration"}}
	}
	var v collector
	c.validate(&v)
	return v.err()
}

func (c *Config) validate(v *collector) {
	checkName(v, "cluster", c.Cluster, "all members of one cluster share it (e.g. cluster: main)")
	checkName(v, "name", c.Name, "the unique name of this member (e.g. name: db1)")
	checkNamespace(v, c.Namespace)
	c.Etcd.validate(v)
	v.addErrors(c.Bootstrap.check("bootstrap"))
	c.API.validate(v)
	switch {
	case c.Postgres != nil && c.MySQL != nil:
		v.add("postgres, mysql", "both are set; a member manages exactly one database")
	case c.Postgres == nil && c.MySQL == nil:
		v.add("postgres", "missing; set exactly one of postgres or mysql")
	}
	if c.Postgres != nil {
		c.Postgres.validate(v)
	}
	if c.MySQL != nil {
		c.MySQL.validate(v)
	}
	c.Fencing.validate(v)
	c.Watchdog.validate(v)
	v.addErrors(c.Watchdog.checkTiming(c.Bootstrap))
	c.Tags.validate(v)
	if len(c.Callbacks.OnRoleChange) > 0 {
		checkArgv(v, "callbacks.on_role_change", c.Callbacks.OnRoleChange)
	}
	oneOf(v, "log.level", c.Log.Level, logLevels)
	oneOf(v, "log.format", c.Log.Format, logFormats)
	oneOf(v, "on_shutdown", c.OnShutdown, shutdownModes)
}

func checkName(v *collector, path, name, what string) {
	switch {
	case name == "":
		v.add(path, "required; %s", what)
	case !namePattern.MatchString(name):
		v.add(path, "%q is not a valid name: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
}

func checkNamespace(v *collector, ns string) {
	switch {
	case !strings.HasPrefix(ns, "/"):
		v.add("namespace", "%q must start with /: expected e.g. /steward", ns)
	case strings.IndexFunc(ns, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		v.add("namespace", "%q must not contain spaces", ns)
	case ns != "/" && strings.HasSuffix(ns, "/"):
		v.add("namespace", "%q must not end with /: write %s", ns, strings.TrimRight(ns, "/"))
	case strings.Contains(ns, "//"):
		v.add("namespace", "%q contains an empty path segment (//)", ns)
	}
}

func oneOf(v *collector, path, value string, allowed []string) {
	if !slices.Contains(allowed, value) {
		v.add(path, "expected %s, found %q", oneOfList(allowed), value)
	}
}

// bothOrNeither reports a cert_file without key_file and vice versa.
func bothOrNeither(v *collector, section, a, av, b, bv string) {
	switch {
	case av != "" && bv == "":
		v.add(join(section, b), "missing; %s is set, so %s is required too", a, b)
	case av == "" && bv != "":
		v.add(join(section, a), "missing; %s is set, so %s is required too", b, a)
	}
}

// checkCredentials requires a password with a username and vice versa.
func checkCredentials(v *collector, section, username, password, env string) {
	switch {
	case username != "" && password == "":
		v.add(join(section, "password"), "missing; %s.username is set, so set password, password_file or %s", section, env)
	case username == "" && password != "":
		v.add(join(section, "username"), "missing; a password is set, so username is required too")
	}
}

func positive(v *collector, path string, d Duration, example string) {
	if d <= 0 {
		v.add(path, "%s is too short: expected a positive duration such as %s", d, example)
	}
}

func (e *Etcd) validate(v *collector) {
	if len(e.Endpoints) == 0 {
		v.add("etcd.endpoints", "required; list at least one etcd URL, e.g. endpoints: [http://127.0.0.1:2379]")
	}
	tlsFiles := e.CAFile != "" || e.CertFile != "" || e.KeyFile != ""
	for i, ep := range e.Endpoints {
		p := index("etcd.endpoints", i)
		u, ok := checkEndpoint(v, p, ep)
		if ok && tlsFiles && u.Scheme == "http" {
			v.add(p, "%q uses http:// but ca_file, cert_file or key_file is set; use https://%s", ep, u.Host)
		}
	}
	bothOrNeither(v, "etcd", "cert_file", e.CertFile, "key_file", e.KeyFile)
	positive(v, "etcd.dial_timeout", e.DialTimeout, "2s")
	checkCredentials(v, "etcd", e.Username, e.Password, "STEWARD_ETCD_PASSWORD")
}

func checkEndpoint(v *collector, path, ep string) (*url.URL, bool) {
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(path, "%q is not an etcd URL: expected http://host:port or https://host:port", ep)
		return nil, false
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		v.add(path, "%q must be just scheme://host:port, without user, path or query", ep)
		return nil, false
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		v.add(path, "%q has no port: expected e.g. %s://%s:2379", ep, u.Scheme, u.Hostname())
		return nil, false
	}
	if msg := checkPort(port); msg != "" {
		v.add(path, "%q: %s", ep, msg)
		return nil, false
	}
	return u, true
}

func checkPort(port string) string {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("port %q is not a number from 1 to 65535", port)
	}
	return ""
}

// checkHostPort checks a host:port address and returns its host. A listen
// address may have a wildcard or empty host.
func checkHostPort(v *collector, path, addr, example string) (host string, ok bool) {
	if addr == "" {
		v.add(path, "required; expected host:port, e.g. %s", example)
		return "", false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(path, "%q is not host:port: expected e.g. %s (IPv6 as [::1]:port)", addr, example)
		return "", false
	}
	if msg := checkPort(port); msg != "" {
		v.add(path, "%q: %s", addr, msg)
		return "", false
	}
	if !isWildcard(host) && !validHost(host) {
		v.add(path, "%q: %q is not an IP address or host name", addr, host)
		return "", false
	}
	return host, true
}

func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return len(h) <= 253 && hostPattern.MatchString(h)
}

// checkListenConnect checks a listen address and the connect address other
// members use to reach it: required when listen is a wildcard, never a
// wildcard itself.
func checkListenConnect(v *collector, listenPath, listen, connectPath, connect, example string) {
	lhost, lok := checkHostPort(v, listenPath, listen, example)
	if connect == "" {
		if lok && isWildcard(lhost) {
			v.add(connectPath, "required because %s (%s) listens on all interfaces; set the address other members use to reach this one, e.g. 10.0.0.11:%s",
				listenPath, listen, listen[strings.LastIndex(listen, ":")+1:])
		} else if lok {
			v.add(connectPath, "required; expected host:port, e.g. %s", example)
		}
		return
	}
	if host, ok := checkHostPort(v, connectPath, connect, example); ok && isWildcard(host) {
		v.add(connectPath, "%q is a wildcard address that other members cannot connect to; use this host's IP address or DNS name", connect)
	}
}

// Validate checks the cluster-wide settings; prefix names the section in
// error paths ("bootstrap" for the file, "config" for the DCS copy). It
// returns every problem as *Errors, or nil.
func (d Dynamic) Validate(prefix string) error {
	var v collector
	v.addErrors(d.check(prefix))
	return v.err()
}

func (d Dynamic) check(prefix string) Errors {
	var v collector
	p := func(key string) string { return join(prefix, key) }
	ttl, loop, retry := d.TTL.D(), d.LoopWait.D(), d.RetryTimeout.D()
	if loop < minLoopWait {
		v.add(p("loop_wait"), "%s is too short: expected at least %s", d.LoopWait, minLoopWait)
	}
	if retry < minRetryTimeout {
		v.add(p("retry_timeout"), "%s is too short: expected at least %s", d.RetryTimeout, minRetryTimeout)
	}
	need := satAdd(loop, satAdd(retry, retry))
	switch {
	case ttl < minTTL && need <= minTTL:
		v.add(p("ttl"), "%s is too short: expected at least %s", d.TTL, minTTL)
	case ttl < need:
		v.add(p("ttl"), "%s is too short: ttl must be >= loop_wait + 2*retry_timeout (%s)", d.TTL, need)
	case ttl%time.Second != 0:
		v.add(p("ttl"), "%s is not a whole number of seconds (etcd leases have 1s granularity): use %s or %s",
			d.TTL, ttl.Truncate(time.Second), ttl.Truncate(time.Second)+time.Second)
	}
	if d.MaximumLagOnFailover < 0 {
		v.add(p("maximum_lag_on_failover"), "%d is negative: expected 0 or more bytes, e.g. 1MB", int64(d.MaximumLagOnFailover))
	}
	if !slices.Contains(synchronousModes, d.SynchronousMode) {
		hint := ""
		if d.SynchronousMode == "true" || d.SynchronousMode == "false" {
			hint = " (Patroni's true is on, false is off)"
		}
		v.add(p("synchronous_mode"), "expected %s, found %q%s", oneOfList(synchronousModes), d.SynchronousMode, hint)
	}
	if d.SynchronousNodeCount < 1 {
		v.add(p("synchronous_node_count"), "%d is too small: expected at least 1", d.SynchronousNodeCount)
	}
	if d.PrimaryUnhealthyTimeout < d.LoopWait {
		v.add(p("primary_unhealthy_timeout"), "%s is too short: must be >= loop_wait (%s)", d.PrimaryUnhealthyTimeout, d.LoopWait)
	}
	if d.PrimaryStartTimeout < 0 {
		v.add(p("primary_start_timeout"), "%s is negative: expected 0 or a positive duration such as 30s", d.PrimaryStartTimeout)
	}
	return v.errs
}

// satAdd adds durations without wrapping around.
func satAdd(a, b time.Duration) time.Duration {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	if b < 0 && a < math.MinInt64-b {
		return math.MinInt64
	}
	return a + b
}

func (a *API) validate(v *collector) {
	checkListenConnect(v, "api.listen", a.Listen, "api.connect_address", a.ConnectAddress, defaultAPIListen)
	t := a.TLS
	bothOrNeither(v, "api.tls", "cert_file", t.CertFile, "key_file", t.KeyFile)
	oneOf(v, "api.tls.verify_client", t.VerifyClient, verifyClients)
	if t.VerifyClient == "optional" || t.VerifyClient == "required" {
		if t.CAFile == "" {
			v.add("api.tls.ca_file", "required when verify_client is %s: the CA that signs client certificates", t.VerifyClient)
		}
		if t.CertFile == "" && t.KeyFile == "" {
			v.add("api.tls.cert_file", "required when verify_client is %s: client certificates are only checked over HTTPS (set cert_file and key_file)", t.VerifyClient)
		}
	}
	for i, entry := range a.Allowlist {
		if _, err := netip.ParseAddr(entry); err == nil {
			continue
		}
		if _, err := netip.ParsePrefix(entry); err == nil {
			continue
		}
		v.add(index("api.allowlist", i), "%q is not an IP address or CIDR: expected e.g. 10.0.0.5 or 10.0.0.0/24", entry)
	}
	checkCredentials(v, "api", a.Username, a.Password, "STEWARD_API_PASSWORD")
}

func checkAbsPath(v *collector, path, value, example string) {
	switch {
	case value == "":
		v.add(path, "required; expected an absolute path such as %s", example)
	case !filepath.IsAbs(value):
		v.add(path, "%q is not an absolute path: expected a path starting with /, e.g. %s", value, example)
	}
}

// managedParameter says how to get what a postgresql.conf setting that
// steward manages itself would have done.
func managedParameter(name string) (fix string, managed bool) {
	switch strings.ToLower(name) {
	case "listen_addresses", "port":
		return "set postgres.listen instead", true
	case "hba_file":
		return "set postgres.pg_hba instead", true
	case "data_directory":
		return "set postgres.data_dir instead", true
	case "config_file":
		return "steward writes postgresql.conf in postgres.data_dir itself", true
	case "primary_conninfo":
		return "steward points every replica at the current leader itself", true
	case "primary_slot_name":
		return "steward assigns replication slots itself", true
	case "recovery_target_timeline":
		return "replicas always follow the latest timeline so that they can follow a new leader", true
	case "synchronous_standby_names":
		return "set bootstrap.synchronous_mode and synchronous_node_count instead", true
	case "hot_standby":
		return "replicas always run with hot_standby = on so that they can be health-checked", true
	}
	return "", false
}

func (p *Postgres) validate(v *collector) {
	checkAbsPath(v, "postgres.data_dir", p.DataDir, "/var/lib/steward/db1")
	checkAbsPath(v, "postgres.bin_dir", p.BinDir, defaultPostgresBinDir)
	checkListenConnect(v, "postgres.listen", p.Listen, "postgres.connect_address", p.ConnectAddress, defaultPostgresListen)
	su, repl := p.Superuser.Username, p.Replication.Username
	if su == "" {
		v.add("postgres.superuser.username", "required; the superuser role steward connects as (e.g. postgres)")
	}
	if repl == "" {
		v.add("postgres.replication.username", "required; the role replicas stream as (e.g. replicator)")
	}
	if su != "" && su == repl {
		v.add("postgres.replication.username", "%q is also the superuser; use a separate replication role such as replicator", repl)
	}
	lower := map[string]string{}
	for _, name := range sortedKeys(p.Parameters) {
		path := join("postgres.parameters", name)
		if other, dup := lower[strings.ToLower(name)]; dup {
			v.add(path, "%s is also set; PostgreSQL parameter names are case-insensitive, so set it once", other)
			continue
		}
		lower[strings.ToLower(name)] = name
		if fix, managed := managedParameter(name); managed {
			v.add(path, "managed by steward; %s", fix)
			continue
		}
		if !parameterPattern.MatchString(name) {
			v.add(path, "%q is not a PostgreSQL parameter name", name)
			continue
		}
		if strings.ContainsFunc(p.Parameters[name], unicode.IsControl) {
			v.add(path, "the value contains a line break or control character; postgresql.conf settings are single-line")
		}
	}
	for i, line := range p.PgHba {
		switch {
		case strings.TrimSpace(line) == "":
			v.add(index("postgres.pg_hba", i), `empty line: expected a pg_hba.conf rule such as "host replication replicator 10.0.0.0/24 scram-sha-256"`)
		case strings.ContainsAny(line, "\r\n"):
			v.add(index("postgres.pg_hba", i), "contains a line break; write one rule per list item")
		}
	}
	if p.RunAs == "" {
		v.add("postgres.run_as", "required; the OS user PostgreSQL runs as when steward runs as root (e.g. postgres)")
	}
}

func (m *MySQL) validate(v *collector) {
	checkListenConnect(v, "mysql.address", m.Address, "mysql.connect_address", m.ConnectAddress, defaultMySQLAddress)
	if m.User == "" {
		v.add("mysql.user", "required; the account steward connects as (e.g. steward)")
	}
	if m.Replication.Username == "" {
		v.add("mysql.replication.username", "required; the account replicas replicate as (e.g. repl)")
	}
	if m.DataDir != "" {
		checkAbsPath(v, "mysql.data_dir", m.DataDir, "/var/lib/mysql")
	}
	for _, c := range []struct {
		path string
		argv []string
	}{
		{"mysql.start_command", m.StartCommand},
		{"mysql.stop_command", m.StopCommand},
		{"mysql.clone_command", m.CloneCommand},
	} {
		if len(c.argv) > 0 {
			checkArgv(v, c.path, c.argv)
		}
	}
}

// checkArgv checks a command run without a shell: a non-empty list whose
// first item is an absolute path or a bare program name.
func checkArgv(v *collector, path string, argv []string) bool {
	if len(argv) == 0 {
		v.add(path, "required; expected the command as a list of arguments, e.g. [/usr/local/bin/fence-ipmi, --host, \"{target_host}\"]")
		return false
	}
	prog := argv[0]
	p0 := index(path, 0)
	switch {
	case strings.TrimSpace(prog) == "":
		v.add(p0, "empty program name: expected an absolute path or a program name")
	case len(argv) == 1 && strings.ContainsFunc(prog, unicode.IsSpace):
		v.add(p0, "%q contains spaces, but the command runs without a shell: put each argument in its own list item, e.g. %s", prog, flowList(strings.Fields(prog)))
	case strings.Contains(prog, "/") && !filepath.IsAbs(prog):
		v.add(p0, "%q is a relative path: expected an absolute path or a bare program name looked up in PATH", prog)
	default:
		return true
	}
	return false
}

func (f *Fencing) validate(v *collector) {
	oneOf(v, "fencing.mode", f.Mode, fencingModes)
	if f.Mode == "required" && len(f.Hooks) == 0 {
		v.add("fencing.hooks", "required when fencing.mode is required: add at least one hook, or set mode: best-effort")
	}
	names := map[string]int{}
	for i, h := range f.Hooks {
		hp := index("fencing.hooks", i)
		switch first, dup := names[h.Name]; {
		case h.Name == "":
			v.add(join(hp, "name"), "required; name the hook (e.g. ipmi) so that the log and history can refer to it")
		case dup:
			v.add(join(hp, "name"), "%q is already used by fencing.hooks[%d]; hook names must be unique", h.Name, first)
		default:
			names[h.Name] = i
		}
		cp := join(hp, "command")
		checkArgv(v, cp, h.Command)
		for j, arg := range h.Command {
			for _, m := range placeholder.FindAllString(arg, -1) {
				if !slices.Contains(hookPlaceholders, m) {
					v.add(index(cp, j), "unknown placeholder %s in fencing hook %d (%q): expected one of %s", m, i, h.Name, strings.Join(hookPlaceholders, " "))
				}
			}
		}
		positive(v, join(hp, "timeout"), h.Timeout, "30s")
	}
}

// Margin returns the safety margin subtracted from ttl for the local lease
// deadline and the watchdog timeout: safety_margin, or when that is 0,
// ttl/5 clamped to [500ms, 5s].
func (w Watchdog) Margin(ttl time.Duration) time.Duration {
	if w.SafetyMargin != 0 {
		return w.SafetyMargin.D()
	}
	return min(max(ttl/5, minAutoMargin), maxAutoMargin)
}

func (w *Watchdog) validate(v *collector) {
	oneOf(v, "watchdog.mode", w.Mode, watchdogModes)
	if w.Mode != "off" && w.Device == "" {
		v.add("watchdog.device", "required when watchdog.mode is %s, e.g. /dev/watchdog", w.Mode)
	}
	if w.SafetyMargin < 0 {
		v.add("watchdog.safety_margin", "%s is negative: expected 0 (automatic) or a positive duration such as 2s", w.SafetyMargin)
	}
}

// ValidateTiming checks the safety margin against the cluster-wide timing
// d: the margin must be < ttl - loop_wait so that a lease renewal fits
// before the local deadline. The agent calls it whenever the DCS copy of
// the dynamic settings changes; Config.Validate calls it with the bootstrap
// section.
func (w Watchdog) ValidateTiming(d Dynamic) error {
	var v collector
	v.addErrors(w.checkTiming(d))
	return v.err()
}

func (w Watchdog) checkTiming(d Dynamic) Errors {
	var v collector
	ttl, loop := d.TTL.D(), d.LoopWait.D()
	if ttl <= 0 || loop < 0 || w.SafetyMargin < 0 {
		return nil // reported elsewhere
	}
	room := ttl - loop
	switch m := w.Margin(ttl); {
	case m < room:
	case w.SafetyMargin != 0:
		v.add("watchdog.safety_margin", "%s is too large: must be < ttl - loop_wait (%s) so that a lease renewal fits", w.SafetyMargin, room)
	default:
		v.add("watchdog.safety_margin", "the automatic margin %s (ttl/5, kept within %s..%s) is not < ttl - loop_wait (%s): set safety_margin explicitly or lower loop_wait", m, minAutoMargin, maxAutoMargin, room)
	}
	return v.errs
}

func (t *Tags) validate(v *collector) {
	if t.FailoverPriority < 0 {
		v.add("tags.failover_priority", "%d is negative: expected 0 (never promote) or more (higher is preferred)", t.FailoverPriority)
	}
	for _, key := range sortedKeys(t.Custom) {
		path := join("tags", key)
		if s := suggestTag(key); s != "" {
			v.add(path, "unknown tag too close to the built-in tag %s; did you mean %s? (custom tags must differ from built-in ones by more than 2 letters)", s, s)
			continue
		}
		if !tagPattern.MatchString(key) {
			v.add(path, "%q is not a valid custom tag name: use lowercase letters, digits and _", key)
		}
	}
}

// suggestTag returns the built-in tag that key is within edit distance 2 of.
func suggestTag(key string) string {
	lk := strings.ToLower(key)
	best, bestDist := "", 3
	for _, b := range builtinTags {
		if d := levenshtein(lk, b); d < bestDist {
			best, bestDist = b, d
		}
	}
	return best
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
