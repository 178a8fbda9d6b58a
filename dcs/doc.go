// Package dcs defines what steward keeps in its distributed configuration
// store: the key layout under /<namespace>/<cluster>/, the JSON records stored
// there, and the errors every store implementation translates its failures
// into. The etcd v3 implementation is in dcs/etcd; dcs/dcstest holds the
// conformance suite run against a real etcd.
//
// Keys (relative to the cluster prefix):
//
//	leader          leader member name, on the holder's session lease
//	members/<name>  Member JSON, on that member's session lease
//	status          Status JSON, written by the leader (guarded by its term)
//	config          dynamic config JSON, compare-and-swap
//	initialize      Initialize JSON, created once (the bootstrap race)
//	switchover      Switchover JSON, consumed exactly once (conditional delete)
//	sync            SyncState JSON, compare-and-swap, guarded by the term
//	history/<n>     HistoryRecord JSON, one per leader change, append-only
//
// What this package guarantees: the names and encodings above, and that a
// term (the create revision of the leader key) identifies one leadership.
// What it does not: reads may be stale the moment they return. Safety rests
// only on the conditional writes and lease renewals of the implementation,
// never on a read.
package dcs
