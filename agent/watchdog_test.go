package agent

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stewardha/steward/fencing"
)

// wdDevice is a fake watchdog device.
type wdDevice struct {
	mu      sync.Mutex
	timeout int
	pets    []time.Time
	closed  bool
}

func (d *wdDevice) SetTimeout(s int) (int, error) {
	d.mu.Lock()
	d.timeout = s
	d.mu.Unlock()
	return s, nil
}
func (d *wdDevice) Keepalive() error {
	d.mu.Lock()
	d.pets = append(d.pets, time.Now())
	d.mu.Unlock()
	return nil
}
func (d *wdDevice) MagicClose() error { d.mu.Lock(); d.closed = true; d.mu.Unlock(); return nil }
func (d *wdDevice) state() (int, []time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.timeout, append([]time.Time(nil), d.pets...), d.closed
}

func watchdogAgent(st *fakeStore, db *fakeDB, dev *wdDevice) *Agent {
	a := leaderAgent(st, db)
	a.opts.Watchdog = &fencing.Watchdog{Mode: fencing.WatchdogRequired, Path: "/dev/fake", Open: func(string) (fencing.Device, error) { return dev, nil }}
	return a
}

// Armed with ttl − safety_margin when the member leads, kept alive on every
// renewal, and not after the lease deadline; disarmed (magic close) once the
// database was fenced.
func TestWatchdogFollowsTheLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("a", 5)
		db := &fakeDB{writable: true}
		dev := &wdDevice{}
		a := watchdogAgent(st, db, dev)
		defer startAgent(a)()
		time.Sleep(5 * time.Second)
		timeout, pets, closed := dev.state()
		if timeout != 3 { // ttl 4s − margin 800ms, whole seconds
			t.Fatalf("watchdog armed with %ds, want 3", timeout)
		}
		if closed {
			t.Fatal("watchdog closed while leading")
		}
		st.mu.Lock()
		renewals := st.renewals
		st.mu.Unlock()
		if len(pets) < renewals-1 || len(pets) < 8 {
			t.Fatalf("%d pets for %d renewals in 5s: the watchdog is not kept alive on every renewal", len(pets), renewals)
		}
		// etcd goes away: renewals fail, pets stop; at the deadline the
		// database is fenced and only then the watchdog disarmed.
		st.setDown(true)
		cut := time.Now()
		time.Sleep(10 * time.Second)
		_, pets, closed = dev.state()
		st.mu.Lock()
		last := st.lastSent
		st.mu.Unlock()
		deadline := last.Add(4*time.Second - 800*time.Millisecond)
		for _, p := range pets {
			if p.After(deadline) {
				t.Fatalf("watchdog petted at +%v after the lease deadline", p.Sub(deadline))
			}
			if p.After(cut.Add(time.Second)) {
				t.Fatalf("watchdog petted %v after etcd became unreachable", p.Sub(cut))
			}
		}
		fenced := db.fenced()
		if fenced.IsZero() || !closed {
			t.Fatalf("fenced=%v closed=%v: want the database fenced and then the watchdog disarmed", fenced, closed)
		}
	})
}

// A clean shutdown disarms the watchdog with the magic close.
func TestWatchdogClosedOnShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("a", 5)
		db := &fakeDB{writable: true}
		dev := &wdDevice{}
		a := watchdogAgent(st, db, dev)
		stop := startAgent(a)
		time.Sleep(3 * time.Second)
		if _, pets, _ := dev.state(); len(pets) == 0 {
			t.Fatal("watchdog never armed")
		}
		stop()
		a.Shutdown(context.Background(), true)
		if _, _, closed := dev.state(); !closed {
			t.Fatal("watchdog not closed cleanly on shutdown")
		}
	})
}

// watchdog.mode required with a device that does not work: the member does
// not lead (adopting the key with a writable database demotes instead).
func TestWatchdogRequiredRefusesToLead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore("a", 5)
		db := &fakeDB{writable: true}
		a := leaderAgent(st, db)
		a.opts.Watchdog = &fencing.Watchdog{Mode: fencing.WatchdogRequired, Path: "/dev/none", Open: func(string) (fencing.Device, error) {
			return nil, context.DeadlineExceeded
		}}
		defer startAgent(a)()
		time.Sleep(3 * time.Second)
		if !a.LeaseDeadline().IsZero() {
			t.Fatal("leading without the required watchdog")
		}
		if db.fenced().IsZero() {
			t.Fatal("the writable database was not demoted although the required watchdog does not work")
		}
	})
}
