// Package postgres is steward's PostgreSQL backend: it manages one local
// PostgreSQL server (version 13 or newer; tested with 15) the way Patroni
// does, for the agent's HA loop.
//
// What it guarantees:
//
//   - It owns postgresql.conf and pg_hba.conf in the data directory and
//     rewrites them on every Bootstrap, Clone, Start, Follow, Promote and
//     Rewind, so the server's role (primary, replica of whom, slot name) is
//     always the one the agent asked for. standby.signal exists exactly when
//     the server is configured as a replica. postgresql.auto.conf is left
//     alone, except that Start removes the settings FencePeer wrote there. User settings come from Options.Parameters and override the
//     defaults, except the ones derived from other options (listen_addresses,
//     port, primary_conninfo, primary_slot_name), which New rejects.
//   - A server it starts is always started with `pg_ctl start -W` and
//     standby.signal unless the agent asked for RolePrimary; nothing here
//     makes a database writable except Bootstrap and Promote.
//   - FenceWrites does not use a database connection: it signals the
//     postmaster named in postmaster.pid (SIGQUIT, then SIGKILL of it and its
//     children after 2 s) and returns only when no process of that server is
//     left, or with an error when ctx ends first.
//   - Observe never blocks past its context or the query timeout and never
//     returns an error; problems are reported in Status.State and Reason.
//   - Every external program (initdb, pg_ctl, pg_basebackup, pg_rewind,
//     pg_controldata, pg_waldump) is run without a shell, with its argv, a
//     deadline, and — when the agent runs as root — as Options.RunAs.
//     Passwords reach them through PGPASSWORD, never the command line.
//     Their stderr (bounded) is part of the error they cause.
//   - A primary's member slots are only created, never dropped
//     (EnsureSlots); a standby drops the inactive member slots it kept from
//     when it led (DropMemberSlots), and no slot of another name.
//   - synchronous_standby_names lives in postgresql.conf, set by SetSync
//     (the leader's decision, DESIGN rule 6); SetSync returns only once
//     the running server applies it, with the flushed position read after.
//
// What it does not do:
//
//   - It does not decide anything: the agent decides when to promote,
//     follow, rewind or wipe; these methods only carry that out and refuse
//     what is unsafe in the state they find (for example Wipe or Rewind of a
//     running server).
//   - It does not manage tablespaces outside the data directory, archiving,
//     log rotation or the server's locale beyond
//     initdb's defaults (add postgresql.conf settings through Parameters).
//   - It does not drop replication slots of removed members; the operator
//     does (pg_drop_replication_slot), or WAL accumulates on the primary.
//
// Two paths beside the data directory belong to the backend too, because
// the data directory itself is replaced by initdb, pg_basebackup, pg_rewind
// and Wipe: the server log <DataDir>.log, and the Unix socket directory
// <DataDir>.run (not inside the data directory: pg_rewind copies every file
// of the source's data directory and fails on a socket; no Unix socket when
// that path is 80 bytes or longer). steward itself connects over TCP to
// Options.Listen.
package postgres
