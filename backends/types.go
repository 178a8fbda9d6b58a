package backends

import (
	"fmt"
	"strconv"
	"strings"
)

// Position is how far a database's history goes. PostgreSQL uses LSN (a byte
// offset in the WAL); MySQL/MariaDB use GTID (a set of executed transactions).
// Exactly one of the two is meaningful for a given backend.
type Position struct {
	LSN  uint64 `json:"lsn,omitempty"`
	GTID string `json:"gtid,omitempty"`
}

// IsZero reports whether the position is unknown.
func (p Position) IsZero() bool { return p.LSN == 0 && p.GTID == "" }

// String renders an LSN the way PostgreSQL does ("0/3000148") or the GTID set.
func (p Position) String() string {
	if p.GTID != "" {
		return p.GTID
	}
	if p.LSN == 0 {
		return ""
	}
	return FormatLSN(p.LSN)
}

// FormatLSN renders a WAL position as PostgreSQL does: high/low 32 bits in hex.
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", uint32(lsn>>32), uint32(lsn))
}

// ParseLSN parses PostgreSQL's "X/Y" text form.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("%q is not an LSN: expected the form 16/B374D848", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an LSN: expected the form 16/B374D848", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an LSN: expected the form 16/B374D848", s)
	}
	return h<<32 | l, nil
}
