package postgres_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/backends/postgres"
	"github.com/stewardha/steward/backends/postgres/pgtest"
)

// A full disk does not always make a one-row commit fail: the heartbeat row
// is updated in place and the current WAL segment is preallocated, while
// client writes already fail with "could not extend file". The heartbeat
// must report the leader unhealthy all the same, and healthy again once
// space is freed.
func TestHeartbeatFailsOnFullDisk(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs and must run as root (CI does)")
	}
	m := newMember(t, "full", onTmpfs(t, "96M"))
	if _, err := m.b.Bootstrap(tctx(t, 120*time.Second)); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if err := m.b.Heartbeat(tctx(t, 5*time.Second), "full"); err != nil {
		t.Fatalf("Heartbeat with free space: %v", err)
	}

	// Fill the filesystem up to 256 kB, as a runaway table or log would.
	filler := fillUpTo(t, m.opts.DataDir, 256<<10)
	err := m.b.Heartbeat(tctx(t, 5*time.Second), "full")
	if err == nil || !strings.Contains(err.Error(), "no space left") || !strings.Contains(err.Error(), m.opts.DataDir) {
		t.Fatalf("Heartbeat on a full disk: %v, want an error naming the data directory and \"no space left\"", err)
	}
	t.Logf("heartbeat on a full disk: %v", err)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := m.b.Heartbeat(tctx(t, 5*time.Second), "full"); err != nil {
		t.Fatalf("Heartbeat after freeing space: %v", err)
	}
}

// A standby whose WAL disk is nearly full says it cannot be promoted (the
// new timeline starts in a new 16 MB WAL segment), so that the agent takes
// it out of the race instead of letting it take the key, fail to promote and
// hold back the other replicas because it is ahead. Freeing space makes it a
// candidate again.
func TestStandbyOnFullDiskCannotPromote(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs and must run as root (CI does)")
	}
	p := bootstrapMember(t, "fullp")
	r := cloneMember(t, "fullr", p, onTmpfs(t, "160M"))
	if st := observe(t, r); st.CannotPromote != "" {
		t.Fatalf("standby with free space: cannot_promote %q, want empty", st.CannotPromote)
	}

	// 8 MB free: less than the 16 MB WAL segment promotion writes.
	filler := fillUpTo(t, r.opts.DataDir, 8<<20)
	st := observe(t, r)
	if st.State != backends.StateRunning || !st.InRecovery {
		t.Fatalf("standby on a full disk: %s, want a running standby", statusString(st))
	}
	if !strings.Contains(st.CannotPromote, "not enough disk space to promote") || !strings.Contains(st.CannotPromote, r.opts.DataDir) {
		t.Fatalf("standby with 8 MB free: cannot_promote %q, want it to name the lack of space and the data directory", st.CannotPromote)
	}
	t.Logf("standby with 8 MB free: %s", st.CannotPromote)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if st := observe(t, r); st.CannotPromote != "" {
		t.Fatalf("standby after freeing space: cannot_promote %q, want empty", st.CannotPromote)
	}
}

// onTmpfs puts a member's data directory on its own tmpfs of the given size
// (unmounted at cleanup, after the server was stopped).
func onTmpfs(t *testing.T, size string) func(*postgres.Options) {
	return func(o *postgres.Options) {
		mnt := filepath.Join(filepath.Dir(o.DataDir), "tmpfs")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		opts := "size=" + size + ",mode=0755"
		if o.RunAs != "" {
			cr := lookupCred(t, o.RunAs)
			opts += fmt.Sprintf(",uid=%d,gid=%d", cr.Uid, cr.Gid)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", mnt).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if err := syscall.Unmount(mnt, 0); err != nil {
				_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
			}
		})
		o.DataDir = filepath.Join(mnt, "data")
		pgtest.StopAtCleanup(t, o.DataDir) // runs before the unmount
	}
}

// fillUpTo fills the filesystem of dir until only left bytes are free and
// returns the filler file's path.
func fillUpTo(t *testing.T, dir string, left int64) string {
	t.Helper()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(filepath.Dir(dir), "filler")
	size := int64(fs.Bavail)*int64(fs.Bsize) - left
	if out, err := exec.Command("fallocate", "-l", fmt.Sprint(size), filler).CombinedOutput(); err != nil {
		t.Fatalf("fallocate: %v: %s", err, out)
	}
	return filler
}

func lookupCred(t *testing.T, name string) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("looking up %s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}
