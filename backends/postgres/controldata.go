package postgres

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/stewardha/steward/backends"
)

// controlData is pg_controldata's output, label → value.
type controlData map[string]string

func parseControlData(out string) controlData {
	cd := controlData{}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		cd[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return cd
}

func (cd controlData) state() string { return cd["Database cluster state"] }

func (cd controlData) lsn(key string) uint64 {
	v, err := backends.ParseLSN(cd[key])
	if err != nil {
		return 0
	}
	return v
}

func (cd controlData) int(key string) int64 {
	v, _ := strconv.ParseInt(cd[key], 10, 64)
	return v
}

// controlData runs pg_controldata on the data directory.
func (b *Backend) controlData(ctx context.Context) (controlData, error) {
	out, _, err := b.run(ctx, cmdSpec{prog: "pg_controldata", args: []string{"-D", b.dataDir}, cLocale: true})
	if err != nil {
		return nil, err
	}
	cd := parseControlData(out)
	if cd.state() == "" {
		return nil, fmt.Errorf("pg_controldata printed no \"Database cluster state\": %.200q", out)
	}
	return cd, nil
}

// cleanShutdown reports whether a pg_controldata state means "shut down
// cleanly" (as a primary or as a standby).
func cleanShutdown(state string) bool {
	return state == "shut down" || state == "shut down in recovery"
}

var (
	waldumpRecord  = regexp.MustCompile(`len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*\d+, lsn: ([0-9A-Fa-f]+/[0-9A-Fa-f]+), prev`)
	waldumpInvalid = regexp.MustCompile(`invalid record length at ([0-9A-Fa-f]+/[0-9A-Fa-f]+)`)
)

// Sizes of WAL page headers (PostgreSQL's XLogPageHeaderData and
// XLogLongPageHeaderData, MAXALIGNed) and the WAL page size.
const (
	walPageSize     = 8192
	walShortPageHdr = 24
	walLongPageHdr  = 40
)

// checkpointEnd returns where the WAL record starting at lsn on timeline
// tli ends — for a cleanly shut-down primary, the end of its shutdown
// checkpoint, which is the switch point a replica that received everything
// records when it is promoted.
func (b *Backend) checkpointEnd(ctx context.Context, tli int64, lsn uint64, segSize uint64) (uint64, error) {
	stdout, stderr, err := b.run(ctx, cmdSpec{prog: "pg_waldump", cLocale: true, args: []string{
		"-p", filepath.Join(b.dataDir, "pg_wal"), "-t", strconv.FormatInt(tli, 10), "-s", backends.FormatLSN(lsn), "-n", "2"}})
	recs := waldumpRecord.FindAllStringSubmatch(stdout, -1)
	if len(recs) == 0 {
		if err == nil {
			err = fmt.Errorf("no record at %s", backends.FormatLSN(lsn))
		}
		return 0, fmt.Errorf("reading the checkpoint record at %s with pg_waldump: %w", backends.FormatLSN(lsn), err)
	}
	// The position the reader reached after the record: where the next
	// record starts, or where it found no valid record.
	if len(recs) >= 2 {
		if next, perr := backends.ParseLSN(recs[1][2]); perr == nil {
			return next, nil
		}
	}
	if m := waldumpInvalid.FindStringSubmatch(stderr); m != nil {
		if end, perr := backends.ParseLSN(m[1]); perr == nil {
			return end, nil
		}
	}
	// Compute it from the record's length.
	tot, _ := strconv.ParseUint(recs[0][1], 10, 64)
	return recordEnd(lsn, tot, segSize), nil
}

// recordEnd computes where a WAL record of tot bytes starting at start ends
// (MAXALIGNed, skipping page headers).
func recordEnd(start, tot, segSize uint64) uint64 {
	if segSize == 0 {
		segSize = 16 << 20
	}
	pos, left := start, tot
	for left > 0 {
		if pos%walPageSize == 0 {
			if pos%segSize == 0 {
				pos += walLongPageHdr
			} else {
				pos += walShortPageHdr
			}
			continue
		}
		room := walPageSize - pos%walPageSize
		n := min(room, left)
		pos += n
		left -= n
	}
	return (pos + 7) &^ 7
}
