package fencing

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Device is a watchdog device: once opened it resets the host unless it is
// kept alive within its timeout; a "magic close" disarms it.
type Device interface {
	// SetTimeout sets the timeout in seconds and returns what the device
	// actually uses (drivers may round).
	SetTimeout(seconds int) (int, error)
	Keepalive() error
	// MagicClose writes 'V' and closes the device: the driver disarms.
	MagicClose() error
}

// Linux watchdog ioctls (linux/watchdog.h).
const (
	wdiocKeepalive  = 0x80045705 // _IOR('W', 5, int)
	wdiocSetTimeout = 0xC0045706 // _IOWR('W', 6, int)
)

type linuxDevice struct{ f *os.File }

// OpenDevice opens a Linux watchdog device such as /dev/watchdog. Opening it
// arms it.
func OpenDevice(path string) (Device, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening watchdog device %s: %w (is softdog loaded? see docs/fencing.md)", path, err)
	}
	return &linuxDevice{f: f}, nil
}

func (d *linuxDevice) ioctl(req uintptr, val *int32) error {
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, d.f.Fd(), req, uintptr(unsafe.Pointer(val)))
	if errno != 0 {
		return errno
	}
	return nil
}

func (d *linuxDevice) SetTimeout(seconds int) (int, error) {
	v := int32(seconds)
	if err := d.ioctl(wdiocSetTimeout, &v); err != nil {
		return 0, fmt.Errorf("WDIOC_SETTIMEOUT %ds: %w", seconds, err)
	}
	return int(v), nil
}

func (d *linuxDevice) Keepalive() error {
	var v int32
	if err := d.ioctl(wdiocKeepalive, &v); err != nil {
		// Some drivers only accept writes.
		if _, werr := d.f.Write([]byte{0}); werr != nil {
			return fmt.Errorf("watchdog keepalive: %w", err)
		}
	}
	return nil
}

func (d *linuxDevice) MagicClose() error {
	_, werr := d.f.Write([]byte("V"))
	cerr := d.f.Close()
	return errors.Join(werr, cerr)
}

// Watchdog modes (watchdog.mode).
const (
	WatchdogOff       = "off"
	WatchdogAutomatic = "automatic" // use the device when it works, lead without it otherwise
	WatchdogRequired  = "required"  // never lead without a working device
)

// Watchdog arms a device while this member leads and keeps it alive only
// while its lease is valid: an agent that freezes (or whose fence timer
// cannot run) stops petting, and the host resets before the leader key
// expires at etcd.
type Watchdog struct {
	Mode   string
	Path   string
	Open   func(path string) (Device, error) // default OpenDevice
	Logger *slog.Logger

	mu      sync.Mutex
	dev     Device
	timeout int
}

// Arm opens the device (if not open) and sets its timeout to the lease's
// usable length (ttl − safety_margin, rounded down to whole seconds). In
// required mode any failure is returned: the caller must not lead. In
// automatic mode failures are logged and nil is returned.
func (w *Watchdog) Arm(timeout time.Duration) error {
	if w == nil || w.Mode == "" || w.Mode == WatchdogOff {
		return nil
	}
	err := w.arm(timeout)
	if err != nil && w.Mode != WatchdogRequired {
		w.logger().Warn("watchdog not available; leading without it (watchdog.mode automatic)", "err", err)
		return nil
	}
	return err
}

func (w *Watchdog) arm(timeout time.Duration) error {
	secs := int(math.Floor(timeout.Seconds()))
	if secs < 1 {
		return fmt.Errorf("watchdog timeout %v is under 1 s: ttl − safety_margin is too small for a watchdog", timeout)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dev == nil {
		open := w.Open
		if open == nil {
			open = OpenDevice
		}
		dev, err := open(w.Path)
		if err != nil {
			return err
		}
		w.dev = dev
	}
	got, err := w.dev.SetTimeout(secs)
	if err != nil {
		return err
	}
	if got > secs {
		return fmt.Errorf("watchdog device %s uses a %ds timeout, longer than the lease allows (%ds): unsafe", w.Path, got, secs)
	}
	if err := w.dev.Keepalive(); err != nil {
		return err
	}
	if w.timeout != got {
		w.logger().Info("watchdog armed", "device", w.Path, "timeout_s", got)
	}
	w.timeout = got
	return nil
}

// Keepalive pets the device if it is armed. Call it only right after a
// successful lease renewal.
func (w *Watchdog) Keepalive() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dev == nil {
		return nil
	}
	return w.dev.Keepalive()
}

// Disarm closes the device with the magic character. Call it only once the
// database no longer takes writes (after a demotion, a fence, on shutdown).
func (w *Watchdog) Disarm() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dev == nil {
		return nil
	}
	err := w.dev.MagicClose()
	w.dev, w.timeout = nil, 0
	w.logger().Info("watchdog disarmed", "device", w.Path, "err", err)
	return err
}

// Armed reports whether the device is open.
func (w *Watchdog) Armed() bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dev != nil
}

func (w *Watchdog) logger() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}
