package mysql

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// GTIDs in the two flavours.
//
// MariaDB names a transaction domain-server_id-seq_no ("0-1-532"). Its
// variables hold either a position (one entry per domain: gtid_binlog_pos,
// gtid_slave_pos, gtid_current_pos, Gtid_IO_Pos) or a state (one entry per
// (domain, server_id) pair: gtid_binlog_state). steward keeps a *state*: the
// highest seq_no seen from every (domain, server_id), merged from all of
// them. A state A contains a state B when A has, for every (d, s, n) of B, an
// entry (d, s, m) with m >= n: A has seen server s's transactions in domain
// d up to n. That is the history check of research/mysql-failover.md §1.9
// step 3 and §4.1; comparing sequence numbers per domain alone would miss
// errant transactions (old primary 0-1-532 vs new primary 0-1-211,0-2-533:
// the new primary is "numerically ahead" yet lacks 0-1-212..532).
//
// MySQL names a transaction source_uuid:number ("3e11fa47-...:23") and its
// variables (gtid_executed, Retrieved_Gtid_Set) are sets of intervals, so
// containment is exact set algebra.

// mariaKey is a (domain, server_id) pair.
type mariaKey struct {
	Domain uint32
	Server uint32
}

// MariaState is a MariaDB GTID state: the highest seq_no seen per
// (domain, server_id).
type MariaState map[mariaKey]uint64

// ParseMariaState parses a MariaDB GTID list ("0-1-5,0-2-7"; whitespace
// and empty entries ignored). Several entries for one (domain, server_id)
// keep the highest seq_no.
func ParseMariaState(s string) (MariaState, error) {
	st := MariaState{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' }) {
		parts := strings.Split(f, "-")
		if len(parts) != 3 {
			return nil, fmt.Errorf("%q is not a MariaDB GTID (domain-server_id-seq_no)", f)
		}
		d, err1 := strconv.ParseUint(parts[0], 10, 32)
		sv, err2 := strconv.ParseUint(parts[1], 10, 32)
		n, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%q is not a MariaDB GTID (domain-server_id-seq_no)", f)
		}
		k := mariaKey{uint32(d), uint32(sv)}
		if cur, ok := st[k]; !ok || n > cur {
			st[k] = n
		}
	}
	return st, nil
}

// Merge adds every entry of o (keeping the higher seq_no).
func (m MariaState) Merge(o MariaState) {
	for k, n := range o {
		if cur, ok := m[k]; !ok || n > cur {
			m[k] = n
		}
	}
}

// Clone returns a copy.
func (m MariaState) Clone() MariaState {
	c := make(MariaState, len(m))
	c.Merge(m)
	return c
}

// Seq is the highest seq_no seen from server in domain (0 when none).
func (m MariaState) Seq(domain, server uint32) uint64 { return m[mariaKey{domain, server}] }

// DomainMax is the highest seq_no in domain d (0 when none).
func (m MariaState) DomainMax(d uint32) uint64 {
	var mx uint64
	for k, n := range m {
		if k.Domain == d && n > mx {
			mx = n
		}
	}
	return mx
}

// Contains reports whether m has seen everything o has: for every
// (domain, server_id, seq_no) of o, m has that pair at seq_no or later.
func (m MariaState) Contains(o MariaState) bool {
	for k, n := range o {
		if m[k] < n {
			return false
		}
	}
	return true
}

// Errant lists o's entries that m does not contain, as ranges: for a pair m
// has up to seq a and o up to seq b > a, "d-s-(a+1)..d-s-b" (the GTIDs of
// server s in domain d after a, up to b; the sequence numbers in between
// may belong to other servers). Sorted.
func (m MariaState) Errant(o MariaState) []string {
	var out []string
	for _, k := range o.keys() {
		n, have := o[k], m[k]
		if have >= n {
			continue
		}
		switch {
		case have == 0 && n == 1, have+1 == n:
			out = append(out, fmt.Sprintf("%d-%d-%d", k.Domain, k.Server, n))
		case have == 0:
			out = append(out, fmt.Sprintf("%d-%d-1..%d-%d-%d (every GTID of server %d in domain %d up to %d)", k.Domain, k.Server, k.Domain, k.Server, n, k.Server, k.Domain, n))
		default:
			out = append(out, fmt.Sprintf("%d-%d-%d..%d-%d-%d", k.Domain, k.Server, have+1, k.Domain, k.Server, n))
		}
	}
	return out
}

// Common is the part of m that o also has: per pair, the lower seq_no.
func (m MariaState) Common(o MariaState) MariaState {
	c := MariaState{}
	for k, n := range m {
		if on, ok := o[k]; ok {
			c[k] = min(n, on)
		}
	}
	return c
}

// Position is the state reduced to one entry per domain (the highest
// seq_no, i.e. the last transaction), the form MASTER_GTID_WAIT and
// gtid_slave_pos take.
func (m MariaState) Position() string {
	best := map[uint32]mariaKey{}
	for k, n := range m {
		if b, ok := best[k.Domain]; !ok || n > m[b] || (n == m[b] && k.Server < b.Server) {
			best[k.Domain] = k
		}
	}
	doms := make([]uint32, 0, len(best))
	for d := range best {
		doms = append(doms, d)
	}
	slices.Sort(doms)
	parts := make([]string, 0, len(doms))
	for _, d := range doms {
		k := best[d]
		parts = append(parts, fmt.Sprintf("%d-%d-%d", k.Domain, k.Server, m[k]))
	}
	return strings.Join(parts, ",")
}

// keys returns the pairs sorted by domain, then seq_no, then server.
func (m MariaState) keys() []mariaKey {
	ks := make([]mariaKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.Domain != b.Domain {
			return a.Domain < b.Domain
		}
		if m[a] != m[b] {
			return m[a] < m[b]
		}
		return a.Server < b.Server
	})
	return ks
}

// String renders the state canonically: by domain, and within a domain by
// seq_no, so that the last entry of each domain is its position (the order
// SET GLOBAL gtid_binlog_state expects).
func (m MariaState) String() string {
	parts := make([]string, 0, len(m))
	for _, k := range m.keys() {
		parts = append(parts, fmt.Sprintf("%d-%d-%d", k.Domain, k.Server, m[k]))
	}
	return strings.Join(parts, ",")
}

// interval is a closed range of transaction numbers.
type interval struct{ lo, hi uint64 }

// MySQLSet is a MySQL GTID set: per source (uuid, or uuid:tag on 8.3+),
// sorted, disjoint, non-adjacent intervals.
type MySQLSet map[string][]interval

// ParseMySQLSet parses a MySQL GTID set ("uuid:1-5:7,uuid2:1-3"; the server
// inserts newlines after commas). UUIDs are compared case-insensitively.
func ParseMySQLSet(s string) (MySQLSet, error) {
	set := MySQLSet{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		parts := strings.Split(f, ":")
		if len(parts) < 2 {
			return nil, fmt.Errorf("%q is not a MySQL GTID set element (uuid:interval)", f)
		}
		src := strings.ToLower(parts[0])
		if len(src) != 36 || strings.Count(src, "-") != 4 {
			return nil, fmt.Errorf("%q: %q is not a server UUID", f, parts[0])
		}
		for _, p := range parts[1:] {
			p = strings.TrimSpace(p)
			if p == "" {
				return nil, fmt.Errorf("%q: empty interval", f)
			}
			if c := p[0]; c < '0' || c > '9' { // a tag (MySQL 8.3+): uuid:tag:1-5
				src = strings.ToLower(parts[0]) + ":" + strings.ToLower(p)
				continue
			}
			lo, hi, isRange := strings.Cut(p, "-")
			a, err := strconv.ParseUint(lo, 10, 64)
			if err != nil || a == 0 {
				return nil, fmt.Errorf("%q: bad interval %q", f, p)
			}
			b := a
			if isRange {
				if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a {
					return nil, fmt.Errorf("%q: bad interval %q", f, p)
				}
			}
			set.add(src, interval{a, b})
		}
	}
	return set, nil
}

// add inserts an interval, keeping the list normalised.
func (s MySQLSet) add(src string, iv interval) {
	list := append(s[src], iv)
	slices.SortFunc(list, func(a, b interval) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	out := list[:0:0]
	for _, x := range list {
		if n := len(out); n > 0 && x.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	s[src] = out
}

// Union adds every transaction of o.
func (s MySQLSet) Union(o MySQLSet) {
	for src, ivs := range o {
		for _, iv := range ivs {
			s.add(src, iv)
		}
	}
}

// Contains reports whether every transaction of o is in s.
func (s MySQLSet) Contains(o MySQLSet) bool {
	for src, ivs := range o {
		mine := s[src]
		for _, iv := range ivs {
			if !coversInterval(mine, iv) {
				return false
			}
		}
	}
	return true
}

func coversInterval(list []interval, iv interval) bool {
	for _, x := range list {
		if x.lo <= iv.lo && iv.hi <= x.hi {
			return true
		}
	}
	return false
}

// Subtract returns the transactions of s that are not in o.
func (s MySQLSet) Subtract(o MySQLSet) MySQLSet {
	out := MySQLSet{}
	for src, ivs := range s {
		for _, iv := range ivs {
			rest := []interval{iv}
			for _, cut := range o[src] {
				var next []interval
				for _, r := range rest {
					if cut.hi < r.lo || cut.lo > r.hi {
						next = append(next, r)
						continue
					}
					if cut.lo > r.lo {
						next = append(next, interval{r.lo, cut.lo - 1})
					}
					if cut.hi < r.hi {
						next = append(next, interval{cut.hi + 1, r.hi})
					}
				}
				rest = next
			}
			for _, r := range rest {
				out.add(src, r)
			}
		}
	}
	return out
}

// Count is the number of transactions in the set.
func (s MySQLSet) Count() uint64 {
	var n uint64
	for _, ivs := range s {
		for _, iv := range ivs {
			n += iv.hi - iv.lo + 1
		}
	}
	return n
}

// String renders the set canonically (sources sorted, lower case).
func (s MySQLSet) String() string {
	srcs := make([]string, 0, len(s))
	for src, ivs := range s {
		if len(ivs) > 0 {
			srcs = append(srcs, src)
		}
	}
	slices.Sort(srcs)
	parts := make([]string, 0, len(srcs))
	for _, src := range srcs {
		var b strings.Builder
		b.WriteString(src)
		for _, iv := range s[src] {
			if iv.lo == iv.hi {
				fmt.Fprintf(&b, ":%d", iv.lo)
			} else {
				fmt.Fprintf(&b, ":%d-%d", iv.lo, iv.hi)
			}
		}
		parts = append(parts, b.String())
	}
	return strings.Join(parts, ",")
}

// gtidIsMySQL tells which flavour a GTID text is written in: MySQL sets
// contain ':' (uuid:interval), MariaDB lists do not.
func gtidIsMySQL(s string) bool { return strings.Contains(s, ":") }
