package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/stewardha/steward/backends"
)

// localHistory is where the local history ends.
type localHistory struct {
	systemID string
	timeline int64
	position uint64
	how      string // how it was read, for Reason
	// The WAL receiver, when the local server runs as a standby.
	streamingFrom string // host:port while status = streaming
	receivedTLI   int64
}

// Divergence compares the local history (timeline, end of WAL) with up's
// timeline history (DESIGN rule 5).
//
// The local server must run (normally as a standby; its position is the
// larger of received and replayed WAL, from IDENTIFY_SYSTEM) or be shut
// down cleanly (position: the end of the shutdown checkpoint of a primary,
// the minimum recovery point of a standby, from the control file).
// Otherwise it returns an error: a crashed server must first be started so
// that crash recovery finds its real end of WAL.
//
// Rules: a local timeline newer than up's has diverged; the same timeline
// has not; an older one has diverged when up's history did not branch off
// it or branched off before the local end of WAL (Discarded is what a rewind
// throws away). A standby streaming from up on up's timeline right now has
// not diverged (PostgreSQL verified it).
func (b *Backend) Divergence(ctx context.Context, up backends.Upstream) (backends.Divergence, error) {
	d, err := b.divergence(ctx, up)
	if err != nil {
		b.log.Debug("divergence check failed", "upstream", up.Name, "error", err)
		return d, err
	}
	b.log.Info("divergence checked", "upstream", up.Name, "diverged", d.Diverged, "local_timeline", d.LocalTimeline,
		"local_position", d.LocalPosition.String(), "upstream_timeline", d.UpstreamTimeline, "reason", d.Reason)
	return d, nil
}

func (b *Backend) divergence(ctx context.Context, up backends.Upstream) (backends.Divergence, error) {
	loc, err := b.readLocalHistory(ctx)
	if err != nil {
		return backends.Divergence{}, fmt.Errorf("divergence: %w", err)
	}
	d := backends.Divergence{LocalTimeline: loc.timeline, LocalPosition: backends.Position{LSN: loc.position}}

	c, err := b.replConn(ctx, up.Host, up.Port, "prefer")
	if err != nil {
		return d, fmt.Errorf("divergence: reading %s's history: %w", up.Name, err)
	}
	defer closePgConn(c)
	uid, err := runIdentifySystem(ctx, c)
	if err != nil {
		return d, fmt.Errorf("divergence: reading %s's history: %w", up.Name, err)
	}
	d.UpstreamTimeline = uid.timeline
	if loc.systemID != "" && uid.systemID != loc.systemID {
		return d, fmt.Errorf("divergence: %s belongs to another cluster (system identifier %s, ours %s); it cannot be followed", up.Name, uid.systemID, loc.systemID)
	}
	lp := backends.FormatLSN(loc.position)

	if loc.streamingFrom == hostPort(up) && loc.receivedTLI == uid.timeline {
		d.Reason = fmt.Sprintf("streaming from %s on its timeline %d (local end of WAL %s): PostgreSQL accepted our history", up.Name, uid.timeline, lp)
		return d, nil
	}
	switch {
	case loc.timeline > uid.timeline:
		d.Diverged = true
		d.Reason = fmt.Sprintf("local timeline %d (%s, WAL to %s) is newer than %s's timeline %d: this member was promoted on a branch %s does not have",
			loc.timeline, loc.how, lp, up.Name, uid.timeline, up.Name)
		return d, nil
	case loc.timeline == uid.timeline:
		d.Reason = fmt.Sprintf("same timeline %d as %s (local WAL to %s, %s at %s): its history continues ours",
			loc.timeline, up.Name, lp, up.Name, backends.FormatLSN(uid.xlogpos))
		if loc.position > uid.xlogpos {
			d.Reason += fmt.Sprintf("; we are %d bytes ahead of it, it must catch up before we can stream", loc.position-uid.xlogpos)
		}
		return d, nil
	}
	content, err := timelineHistory(ctx, c, uid.timeline)
	if err != nil {
		return d, fmt.Errorf("divergence: reading %s's timeline history: %w", up.Name, err)
	}
	hist, err := ParseTimelineHistory(content)
	if err != nil {
		return d, fmt.Errorf("divergence: %s's timeline history: %w", up.Name, err)
	}
	for _, e := range hist {
		if e.Timeline != loc.timeline {
			continue
		}
		d.SwitchPoint = backends.Position{LSN: e.SwitchPoint}
		sp := backends.FormatLSN(e.SwitchPoint)
		if loc.position > e.SwitchPoint {
			d.Diverged = true
			d.Discarded = int64(loc.position - e.SwitchPoint)
			d.Reason = fmt.Sprintf("local timeline %d goes on to %s (%s), past %s's switch point %s off it (now timeline %d): %d bytes of local WAL are not in %s's history",
				loc.timeline, lp, loc.how, up.Name, sp, uid.timeline, d.Discarded, up.Name)
			return d, nil
		}
		d.Reason = fmt.Sprintf("local timeline %d ends at %s (%s), not past %s's switch point %s off it (now timeline %d): its history contains ours",
			loc.timeline, lp, loc.how, up.Name, sp, uid.timeline)
		return d, nil
	}
	d.Diverged = true
	d.Reason = fmt.Sprintf("local timeline %d (WAL to %s) is not in %s's history of timeline %d: the histories forked before it",
		loc.timeline, lp, up.Name, uid.timeline)
	return d, nil
}

// readLocalHistory finds the local timeline and end of WAL.
func (b *Backend) readLocalHistory(ctx context.Context) (localHistory, error) {
	if RunningPID(b.dataDir) != 0 {
		return b.runningHistory(ctx)
	}
	if _, err := os.Stat(filepath.Join(b.dataDir, "PG_VERSION")); err != nil {
		return localHistory{}, errors.New("the data directory holds no cluster")
	}
	if _, err := os.Stat(filepath.Join(b.dataDir, "backup_label")); err == nil {
		return localHistory{}, errors.New("the data directory is a fresh base backup or rewind (backup_label present): start it as a replica first")
	}
	cd, err := b.controlData(ctx)
	if err != nil {
		return localHistory{}, err
	}
	h := localHistory{systemID: cd["Database system identifier"]}
	switch cd.state() {
	case "shut down":
		h.timeline = cd.int("Latest checkpoint's TimeLineID")
		ckpt := cd.lsn("Latest checkpoint location")
		seg, _ := strconv.ParseUint(cd["Bytes per WAL segment"], 10, 64)
		end, err := b.checkpointEnd(ctx, h.timeline, ckpt, seg)
		if err != nil {
			return h, err
		}
		h.position = end
		h.how = "end of the shutdown checkpoint"
	case "shut down in recovery":
		h.timeline = cd.int("Min recovery ending loc's timeline")
		h.position = cd.lsn("Minimum recovery ending location")
		if ckpt := cd.lsn("Latest checkpoint location"); h.timeline == 0 || ckpt > h.position {
			h.timeline = cd.int("Latest checkpoint's TimeLineID")
			h.position = ckpt
		}
		h.how = "minimum recovery point of the stopped standby"
	default:
		return h, fmt.Errorf("the server is not running and was not shut down cleanly (control file: %q): start it (crash recovery) to learn its end of WAL, then check again", cd.state())
	}
	if h.timeline == 0 || h.position == 0 {
		return h, fmt.Errorf("the control file has no usable timeline/position (%q)", cd.state())
	}
	return h, nil
}

// runningHistory reads the history of the running local server.
func (b *Backend) runningHistory(ctx context.Context) (localHistory, error) {
	qctx, cancel := b.queryCtx(ctx)
	defer cancel()
	id, err := b.identifyLocal(qctx)
	if err != nil {
		return localHistory{}, fmt.Errorf("the local server runs but does not answer IDENTIFY_SYSTEM (is it still starting?): %w", err)
	}
	h := localHistory{systemID: id.systemID, timeline: id.timeline, position: id.xlogpos, how: "received/replayed WAL of the running server"}
	err = b.withConn(qctx, func(c *pgx.Conn) error {
		var inRecovery bool
		if err := c.QueryRow(qctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
			return err
		}
		if !inRecovery {
			h.how = "flushed WAL of the running primary"
			return nil
		}
		rows, err := c.Query(qctx, `SELECT coalesce(sender_host, ''), coalesce(sender_port, 0), coalesce(received_tli, 0)
			FROM pg_stat_wal_receiver WHERE status = 'streaming'`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var host string
			var port int
			if err := rows.Scan(&host, &port, &h.receivedTLI); err != nil {
				return err
			}
			if host != "" {
				h.streamingFrom = host + ":" + strconv.Itoa(port)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return h, fmt.Errorf("reading the WAL receiver: %w", err)
	}
	return h, nil
}
