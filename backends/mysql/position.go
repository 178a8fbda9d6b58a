package mysql

import (
	"strconv"
	"strings"

	"github.com/stewardha/steward/backends"
)

// Positions.
//
// Position.GTID is the GTID history, in the server's own syntax:
//   - MariaDB: a state (see MariaState): gtid_binlog_state merged with
//     gtid_slave_pos and gtid_current_pos, and for a replica's received
//     position also Gtid_IO_Pos. Canonical order, so equal histories are
//     equal strings.
//   - MySQL: gtid_executed, and for a replica's received position
//     gtid_executed ∪ Retrieved_Gtid_Set, canonical.
//
// Position.LSN is a byte coordinate in the binary log of the server the
// position is measured against (the primary), so that the agent's lag
// (Lag(status.Position, replica.Replayed) <= maximum_lag_on_failover) is in
// bytes:
//
//	bits 63..52  tag: (server_id of that primary mod 4095) + 1 (0: unknown)
//	bits 51..32  binary log file index (the number after the last '.')
//	bits 31..0   offset in that file
//
// A primary publishes its own binlog end (SHOW MASTER STATUS) tagged with
// its own server_id. A replica's Received is (Master_Log_File,
// Read_Master_Log_Pos) and its Replayed is (Relay_Master_Log_File,
// Exec_Master_Log_Pos), both in the primary's coordinates, tagged with
// Master_Server_Id. The difference between Received and Replayed is the
// relay-log backlog (received, not applied) in bytes.
//
// Seconds_Behind_Master is never used for a decision: it is NULL whenever a
// thread is stopped and 0 while the IO thread is silently behind.

const (
	lsnTagShift  = 52
	lsnFileShift = 32
	lsnTagMask   = 0xFFF
	lsnFileMask  = 0xFFFFF
	lsnOffMask   = 0xFFFFFFFF
)

// EncodeLSN builds a Position.LSN from the server_id of the primary whose
// binary log the coordinates are in, the file name and the offset. It is 0
// (unknown) when serverID is 0, the file has no numeric extension or the
// offset is 0.
func EncodeLSN(serverID uint64, file string, offset uint64) uint64 {
	if serverID == 0 || file == "" || offset == 0 {
		return 0
	}
	i := strings.LastIndexByte(file, '.')
	if i < 0 {
		return 0
	}
	idx, err := strconv.ParseUint(file[i+1:], 10, 64)
	if err != nil {
		return 0
	}
	tag := serverID%lsnTagMask + 1
	return tag<<lsnTagShift | (idx&lsnFileMask)<<lsnFileShift | min(offset, lsnOffMask)
}

// DecodeLSN splits a Position.LSN into its tag, file index and offset.
func DecodeLSN(lsn uint64) (tag, file, offset uint64) {
	return lsn >> lsnTagShift & lsnTagMask, lsn >> lsnFileShift & lsnFileMask, lsn & lsnOffMask
}

// lsnDistance is how many bytes pos is behind leader in the same primary's
// binary log; ok=false when they are not in the same primary's coordinates.
// Within one file it is exact. Across files it assumes every file in
// between is 4 GiB (the largest offset the format allows), so it never
// underestimates: a replica that has not yet applied a binlog rotation looks
// far behind until it has (normally milliseconds).
func lsnDistance(leader, pos uint64) (int64, bool) {
	lt, lf, lo := DecodeLSN(leader)
	pt, pf, po := DecodeLSN(pos)
	if lt == 0 || pt == 0 || lt != pt {
		return 0, false
	}
	switch {
	case pf > lf, pf == lf && po >= lo:
		return 0, true
	case pf == lf:
		return int64(lo - po), true
	}
	return int64((lf-pf)<<lsnFileShift + lo - po), true
}

// gtids is either flavour's parsed GTID history.
type gtids struct {
	maria MariaState
	my    MySQLSet
	isMy  bool
	empty bool
}

func parseGTIDs(s string) (gtids, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return gtids{empty: true}, true
	}
	if gtidIsMySQL(s) {
		set, err := ParseMySQLSet(s)
		return gtids{my: set, isMy: true, empty: len(set) == 0}, err == nil
	}
	st, err := ParseMariaState(s)
	return gtids{maria: st, empty: len(st) == 0}, err == nil
}

// contains: a has everything b has. ok=false when they are in different
// flavours.
func (a gtids) contains(b gtids) (contains, ok bool) {
	switch {
	case b.empty:
		return true, true
	case a.empty:
		return false, true
	case a.isMy != b.isMy:
		return false, false
	case a.isMy:
		return a.my.Contains(b.my), true
	}
	return a.maria.Contains(b.maria), true
}

// Lag returns how many bytes pos is behind leader; see the package
// function Lag.
func (*Backend) Lag(leader, pos backends.Position) int64 { return Lag(leader, pos) }

// Compare orders two positions by GTID containment; see the package
// function Compare.
func (*Backend) Compare(a, b backends.Position) int { return Compare(a, b) }

// Lag returns how many bytes of the primary's binary log pos is behind
// leader:
//   - 0 when pos's GTID history contains leader's (whatever the
//     coordinates say: after a failover they may be in another primary's
//     binary log), or when pos is at or past leader in the same primary's
//     binary log;
//   - the byte distance when both are in the same primary's binary log
//     (exact within a file, an overestimate across files);
//   - -1 when it cannot be known: a position is unknown, or the two are in
//     different primaries' coordinates and pos does not contain leader.
func Lag(leader, pos backends.Position) int64 {
	if leader.IsZero() || pos.IsZero() {
		return -1
	}
	if leader.GTID != "" && pos.GTID != "" {
		l, ok1 := parseGTIDs(leader.GTID)
		p, ok2 := parseGTIDs(pos.GTID)
		if ok1 && ok2 {
			if c, ok := p.contains(l); ok && c {
				return 0
			}
		}
	}
	if d, ok := lsnDistance(leader.LSN, pos.LSN); ok {
		return d
	}
	return -1
}

// Compare orders two positions by their GTID histories: +1 when a contains
// everything b has and more, 0 when they hold the same transactions, -1
// when b contains a and more — and also -1 when neither contains the other
// (diverged histories: each has transactions the other lacks). A diverged
// history is never reported as ahead, so Compare(a, b) > 0 always means "a
// can be promoted without losing anything b has". Without GTIDs on either
// side (binary logging off) the byte coordinates decide when they are in the
// same primary's binary log; otherwise they are equal.
func Compare(a, b backends.Position) int {
	ga, okA := parseGTIDs(a.GTID)
	gb, okB := parseGTIDs(b.GTID)
	if !okA || !okB {
		if a.GTID == b.GTID {
			return 0
		}
		return -1
	}
	if ga.empty && gb.empty {
		if d, ok := lsnDistance(a.LSN, b.LSN); ok && d > 0 {
			return -1
		}
		if d, ok := lsnDistance(b.LSN, a.LSN); ok && d > 0 {
			return 1
		}
		return 0
	}
	ab, ok1 := ga.contains(gb)
	ba, ok2 := gb.contains(ga)
	switch {
	case !ok1 || !ok2:
		return -1
	case ab && ba:
		return 0
	case ab:
		return 1
	}
	return -1
}

// Diverged reports whether neither position's GTID history contains the
// other's (each has transactions the other lacks): promoting either loses
// the other's. Positions in different flavours are diverged.
func Diverged(a, b backends.Position) bool {
	ga, okA := parseGTIDs(a.GTID)
	gb, okB := parseGTIDs(b.GTID)
	if !okA || !okB {
		return a.GTID != b.GTID
	}
	ab, ok1 := ga.contains(gb)
	ba, ok2 := gb.contains(ga)
	return !ok1 || !ok2 || (!ab && !ba)
}

// TransactionLag returns how many transactions pos lacks of leader's
// history: MariaDB, the seq_no distance summed over domains; MySQL, the
// number of GTIDs in leader − pos. ok=false when it cannot be computed.
func TransactionLag(leader, pos backends.Position) (int64, bool) {
	l, ok1 := parseGTIDs(leader.GTID)
	p, ok2 := parseGTIDs(pos.GTID)
	if !ok1 || !ok2 || (l.isMy != p.isMy && !l.empty && !p.empty) {
		return 0, false
	}
	if l.isMy {
		if p.my == nil {
			p.my = MySQLSet{}
		}
		return int64(l.my.Subtract(p.my).Count()), true
	}
	var n int64
	doms := map[uint32]bool{}
	for k := range l.maria {
		doms[k.Domain] = true
	}
	for d := range doms {
		if lm, pm := l.maria.DomainMax(d), p.maria.DomainMax(d); lm > pm {
			n += int64(lm - pm)
		}
	}
	return n, true
}
