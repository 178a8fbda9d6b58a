// Package systemd connects steward to the systemd service manager: the
// sd_notify protocol (READY, STATUS, WATCHDOG, RELOADING, STOPPING) and the
// unit files steward.service and steward@.service that live beside this
// file.
//
// # What it guarantees
//
//   - Without NOTIFY_SOCKET (steward started by hand, by a test, or by a
//     service manager that is not systemd) every method is a no-op that
//     returns nil: the agent behaves the same with or without systemd.
//   - The environment is read once, by FromEnv, through the lookup function
//     the caller passes (cmd/steward is the only package that reads the
//     process environment). The caller then removes NOTIFY_SOCKET,
//     WATCHDOG_USEC and WATCHDOG_PID from the process environment (Unsetenv)
//     so that the programs the agent starts — PostgreSQL, pg_rewind, fencing
//     hooks — do not inherit them: Debian's PostgreSQL is built with systemd
//     support and would otherwise send its own READY=1 to steward's unit.
//     That is why this package keeps the socket address itself instead of
//     calling go-systemd's daemon.SdNotify, which re-reads NOTIFY_SOCKET from
//     the environment on every call; the message names (daemon.SdNotifyReady,
//     ...) and MONOTONIC_USEC come from go-systemd.
//   - WATCHDOG_USEC is honoured only when WATCHDOG_PID is unset or names this
//     process (sd_watchdog_enabled(3) semantics). Watchdog throttles its
//     pings to at most one per quarter of the interval: callers may call it
//     after every loop, and systemd still sees a ping at least every half
//     interval (its documented recommendation) as long as the caller's
//     calls come that often.
//   - Status sends STATUS= only when the text changed.
//
// # What it does not do
//
//   - It does not decide when the agent is ready or healthy: cmd/steward
//     sends READY=1 after the first complete HA loop and WATCHDOG=1 after
//     every completed loop (see cmd/steward/service.go for why a loop that
//     could not reach etcd still counts).
//   - A failed send (systemd restarted its socket, the test listener went
//     away) is returned to the caller, never retried: the next message is
//     sent independently.
//   - It does not talk to systemd over D-Bus and does not support
//     Type=notify-reload (systemd 253+, not in Debian 12): reloads are
//     reported with RELOADING=1 then READY=1, which Type=notify accepts.
package systemd
