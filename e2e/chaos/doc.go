// Package chaos is steward's fault-injection suite (issue 11): it breaks a
// real cluster on purpose, in many ways and random orders, and checks the
// rules of DESIGN.md after every fault.
//
// The lab: three test hosts, each a network namespace running one agent
// (the steward binary, as the postgres user) and its PostgreSQL 15; a
// 3-node etcd (Debian's etcd binary), one node per namespace; HAProxy in
// its own namespace, configured from docs/examples/haproxy.cfg; all on one
// bridge in a "switch" namespace, addresses from 198.18.0.0/15. The test
// process reaches everything over one veth and stays outside every
// partition, like an application server that still reaches the isolated
// primary — so any write that primary acknowledges is seen.
//
// Faults (schedule.go): kill -9 of the agent, of PostgreSQL, of both; SIGSTOP
// of the agent for 2 x ttl; SIGSTOP of PostgreSQL; the primary cut off from
// everyone; the primary cut off from etcd only; a replica cut off; kill -9
// of the etcd leader; loss of etcd quorum; 200 ms of added round trip and
// 10% packet loss; a full WAL disk (each member's data directory is a small
// tmpfs); the whole cluster stopped and started at once.
//
// How faults are made without tc netem (this kernel has none): partitions
// and packet loss are nftables rules of the bridge family in the switch
// namespace (silent drops; numgen random for loss); latency is a userspace
// proxy the test process runs inside each member's namespace, in the path
// of the agent's etcd connections and of every connection to its
// PostgreSQL. The API and HAProxy's health checks are not delayed.
//
// Invariants (check.go), after each fault is healed: (1) no split brain
// beyond the fencing mode's bound; (2) no acknowledged write lost in
// synchronous mode, loss within maximum_lag_on_failover in asynchronous
// mode; (3) one writable primary with every replica streaming within the
// recovery bound; (4) a member that is not back says why in steward list.
//
// What it does not do: it does not make timing reproducible. A seed
// reproduces the schedule — the faults, their order, targets (by role)
// and hold times — not the interleaving of the processes under it.
package chaos
