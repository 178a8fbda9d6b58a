// Package agent is steward's HA loop: observe (DCS + database), decide, act,
// publish — once per loop_wait and at once when the leader key changes.
//
// The decision is a pure function of the observation and the clock (decide),
// tested with named table cases; acting is separate (act). The agent imports
// no etcd, database driver or HTTP framework: it declares what it needs
// (Store, Backend, Peers) and cmd/steward wires the implementations in.
//
// What the agent guarantees (DESIGN.md rules):
//
//  1. One writer: the database is a writable primary only while this member
//     holds the leader key by its own monotonic clock, deadline
//     t_sent + ttl − safety_margin counted from when the last successful
//     renewal was sent. A timer of its own (not the loop) fences the
//     database at that deadline, so a stuck loop or an unreachable etcd still
//     stops writes in time. A writable database without the key is demoted.
//  2. A replica promotes only after it created the leader key itself and no
//     reachable member reports a writable database; the term (the key's
//     create revision) is re-checked right before promoting.
//  3. A replica takes the key only if it is eligible (healthy, not
//     nofailover, within maximum_lag_on_failover of the last leader position,
//     timeline not behind history) and no reachable eligible member is ahead.
//  5. A former primary rejoins only when its history is contained in the new
//     leader's; otherwise it is rewound (use_pg_rewind) or stays down and
//     says why.
//  6. Synchronous replication (synchronous_mode on, strict, quorum): the
//     leader keeps the DCS sync key and the database's synchronous standbys
//     in an order that never lets the key promise more than the database
//     keeps (into the database first and into the key once confirmed; out
//     of the key first, then out of the database); a new leader writes the
//     key before promoting; only a member the key counts may be promoted,
//     and in quorum mode only one that reaches enough of the set at or
//     behind its own position (planSync, quorumHolds;
//     docs/replication-modes.md).
//  7. Paused: publish state, never promote, demote, restart or delete keys.
//  8. Every loop logs its decision with a reason; every leader change is
//     appended to the DCS history with the candidates considered.
//
// Role change callbacks (callbacks.on_role_change, callbacks.go) run after a
// change, off the loop, one at a time and in the order of the changes; their
// outcome never feeds a decision.
//
// What it does not guarantee: a database whose agent is dead (or frozen) is
// not stopped by the lease alone — only fencing hooks or a watchdog can stop
// it (in quorum mode such a primary can still have commits acknowledged by
// the standbys that were not promoted). A commit whose client session sets
// synchronous_commit to local or off, or whose wait for a standby is
// cancelled, is not protected by rule 6. Reads of the DCS may be stale; they only trigger conditional writes.
package agent
