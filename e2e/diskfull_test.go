package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stewardha/steward/backends/postgres/pgtest"
)

// mountTmpfs mounts a tmpfs of the given size owned by the agents' user and
// unmounts it when the test ends (after everything in it was stopped).
func mountTmpfs(t *testing.T, dir string, size string, c *Cluster) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test mounts a tmpfs and must run as root (CI does)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := "size=" + size + ",mode=0755"
	if cr := credential(t, c.runAs); cr != nil {
		opts += fmt.Sprintf(",uid=%d,gid=%d", cr.Uid, cr.Gid)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		for i := 0; i < 50; i++ {
			if err := syscall.Unmount(dir, 0); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Unmount(dir, syscall.MNT_DETACH)
	})
}

// The primary's data directory fills up: the cluster fails over to a healthy
// replica within primary_unhealthy_timeout + ttl, and `list` showed why.
func TestDiskFullFailover(t *testing.T) {
	t.Parallel()
	p := Fast
	p.PrimaryUnhealthyTimeout = 5 * time.Second
	p.PrimaryStartTimeout = 5 * time.Second
	// The filler writes WAL at full speed until the disk is full and
	// PostgreSQL PANICs at its next WAL segment. Under a loaded make test
	// (stress run 4, 2026-12-07) the replicas had received up to 1.7 and
	// 4.9 MB short of the segment the leader died at (0/8E64000, 0/8B44000
	// vs 0/9000000): with 1MB most likely neither was eligible, and the
	// leader kept restarting in place, as it should. This test is about
	// noticing the full disk; the lag rule has its own tests
	// (TestNoEligibleReplicaNoPromotion, TestCrashLoopingPrimaryIsReleased).
	p.MaxLag = "64MB"
	c, old := bootstrap(t, p, func(c *Cluster) {
		m1 := c.Members[0]
		mnt := filepath.Join(c.dir, "tmpfs-m1")
		// Registered before the member's own cleanups, so it runs after
		// them: PostgreSQL is stopped before the unmount.
		mountTmpfs(t, mnt, "150M", c)
		m1.DataDir = filepath.Join(mnt, "m1")
		// The member's own cleanup stops PostgreSQL at its old data
		// directory path; stop the one on the tmpfs too (before the
		// unmount: cleanups run last-registered first).
		pgtest.StopAtCleanup(t, m1.DataDir)
		c.Postgres = map[string]string{"min_wal_size": "32MB", "max_wal_size": "64MB", "wal_keep_size": "0"}
	})
	if old.Name != "m1" {
		t.Fatalf("m1 should lead (its data directory is on the small tmpfs), got %s", old.Name)
	}
	if err := old.Exec("CREATE TABLE filler(x text)"); err != nil {
		t.Fatal(err)
	}
	var fullAt time.Time
	for i := 0; i < 400; i++ {
		err := old.Exec("INSERT INTO filler SELECT repeat(md5(g::text), 30) FROM generate_series(1, 20000) g")
		if err != nil {
			if !strings.Contains(err.Error(), "space") && !strings.Contains(err.Error(), "connect") && !strings.Contains(err.Error(), "terminat") {
				t.Logf("insert failed: %v", err)
			}
			fullAt = time.Now()
			t.Logf("the primary's disk is full: %v", err)
			break
		}
	}
	if fullAt.IsZero() {
		t.Fatal("could not fill the tmpfs")
	}
	defer func() {
		if t.Failed() {
			out, _ := c.Members[1].Steward("list")
			t.Logf("steward list at the failure (why no replica took over):\n%s", out)
		}
	}()
	sawReason := ""
	var newLeader *Member
	within := p.PrimaryUnhealthyTimeout + p.TTL + 5*time.Second
	took := Eventually(t, within, "a healthy replica takes over", func() bool {
		if sawReason == "" {
			if out, code := old.Steward("list", "-o", "json"); code == 0 && strings.Contains(out, `"name": "m1"`) {
				for _, hint := range []string{"no space left", "No space left", "cannot commit", "crashed", "unhealthy", "unresponsive"} {
					if strings.Contains(out, hint) {
						sawReason = hint
						break
					}
				}
			}
		}
		l := c.Leader()
		if l != nil && l != old && l.Status() != nil && l.Status().Writable {
			newLeader = l
			return true
		}
		return false
	})
	t.Logf("MEASURED disk full on the primary -> %s accepts writes: %v (primary_unhealthy_timeout %v, ttl %v)",
		newLeader.Name, took.Round(time.Millisecond), p.PrimaryUnhealthyTimeout, p.TTL)
	if took > p.PrimaryUnhealthyTimeout+p.TTL {
		t.Errorf("failover took %v, want <= primary_unhealthy_timeout + ttl (%v)", took, p.PrimaryUnhealthyTimeout+p.TTL)
	}
	if sawReason == "" {
		t.Errorf("steward list never showed why the primary was unhealthy before the failover")
	} else {
		t.Logf("steward list showed the primary as %q before the failover", sawReason)
	}
	if st := old.Status(); st != nil && st.Writable {
		t.Fatalf("the full primary is still writable")
	}
	if err := newLeader.Exec("INSERT INTO steward_test VALUES (1, 'after')"); err != nil {
		t.Fatalf("the new primary does not take writes: %v", err)
	}
}
