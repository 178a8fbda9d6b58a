package chaos

import (
	"bufio"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A run normally tears down everything it made. A test binary killed
// outright (a -timeout panic, kill -9) cannot, so every run marks its
// directory with its PID and lab id, and the next run of the suite cleans
// up after runs whose process is gone: their processes (found by the run
// directory in their command line), their mounts and their namespaces
// (named after the lab id). Nothing another run still owns, and nothing
// the suite did not make, is touched.

const (
	ownerFile = "owner.pid"
	labFile   = "lab.id"
)

// markRun records the owning process and the lab id in dir.
func markRun(dir, labID string) error {
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, labFile), []byte(labID), 0o644)
}

// ReapOrphans cleans up after dead runs under /tmp/stwchaos-*.
func ReapOrphans(log *slog.Logger) {
	dirs, _ := filepath.Glob("/tmp/stwchaos-*")
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not a run directory, or one still being set up
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid <= 0 || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		id, _ := os.ReadFile(filepath.Join(dir, labFile))
		log.Warn("cleaning up after a chaos run whose process is gone", "dir", dir, "pid", pid, "lab", string(id))
		killUnder(dir)
		unmountUnder(dir)
		if lab := strings.TrimSpace(string(id)); lab != "" {
			out, _ := exec.Command("ip", "netns", "list").Output()
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "stwchaos-"+lab+"-") {
					_ = run("ip", "netns", "del", f[0])
				}
			}
			_ = run("ip", "link", "del", "stwc"+lab)
		}
		_ = os.RemoveAll(dir)
	}
}

// killUnder SIGKILLs every process whose command line names a path in dir.
func killUnder(dir string) {
	// PostgreSQL's processes do not name the data directory in every
	// command line: end them through postmaster.pid.
	pids, _ := filepath.Glob(filepath.Join(dir, "*", "data", "postmaster.pid"))
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		line, _, _ := strings.Cut(string(b), "\n")
		pid, _ := strconv.Atoi(strings.TrimSpace(line))
		// The PID may have been reused: only a postmaster of this run
		// directory names it in its command line.
		if cmd, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); pid > 0 && err == nil && strings.Contains(string(cmd), dir+"/") {
			for _, k := range append([]int{pid}, childrenOf(pid)...) {
				_ = syscall.Kill(k, syscall.SIGKILL)
			}
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), dir+"/") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
}

// unmountUnder detaches every mount below dir.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 1 && strings.HasPrefix(fs[1], dir+"/") {
			mounts = append(mounts, fs[1])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}
