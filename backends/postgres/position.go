package postgres

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/stewardha/steward/backends"
)

// parseLSN parses "X/Y"; "" (SQL NULL) is 0.
func parseLSN(s string) (uint64, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	return backends.ParseLSN(s)
}

// Lag returns how many bytes pos is behind leader: 0 when not behind, -1
// when either position is unknown (zero).
func (*Backend) Lag(leader, pos backends.Position) int64 { return Lag(leader, pos) }

// Compare orders two positions by LSN: -1 a behind b, 0 equal, +1 a ahead.
func (*Backend) Compare(a, b backends.Position) int { return Compare(a, b) }

// Lag is Backend.Lag as a function.
func Lag(leader, pos backends.Position) int64 {
	if leader.LSN == 0 || pos.LSN == 0 {
		return -1
	}
	if pos.LSN >= leader.LSN {
		return 0
	}
	return int64(leader.LSN - pos.LSN)
}

// Compare is Backend.Compare as a function.
func Compare(a, b backends.Position) int {
	switch {
	case a.LSN < b.LSN:
		return -1
	case a.LSN > b.LSN:
		return 1
	}
	return 0
}

// HistoryEntry is one line of a timeline history file: timeline TLI ended
// (the next one began) at SwitchPoint.
type HistoryEntry struct {
	Timeline    int64
	SwitchPoint uint64
	Reason      string
}

// ParseTimelineHistory parses a PostgreSQL timeline history file
// ("<tli>\t<X/Y>\t<reason>" lines; blank lines and # comments ignored).
func ParseTimelineHistory(content string) ([]HistoryEntry, error) {
	var out []HistoryEntry
	for n, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("timeline history line %d %q: expected \"<timeline> <X/Y> <reason>\"", n+1, line)
		}
		tli, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || tli < 1 {
			return nil, fmt.Errorf("timeline history line %d %q: bad timeline %q", n+1, line, f[0])
		}
		lsn, err := backends.ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("timeline history line %d: %w", n+1, err)
		}
		e := HistoryEntry{Timeline: tli, SwitchPoint: lsn}
		if _, rest, ok := strings.Cut(line, f[1]); ok {
			e.Reason = strings.TrimSpace(rest)
		}
		out = append(out, e)
	}
	return out, nil
}

// timelineFromWalfile reads the timeline from a WAL file name (its first 8
// hex digits).
func timelineFromWalfile(name string) (int64, error) {
	if len(name) < 8 {
		return 0, fmt.Errorf("%q is not a WAL file name", name)
	}
	return strconv.ParseInt(name[:8], 16, 64)
}
