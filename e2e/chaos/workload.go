package chaos

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	gomysql "github.com/go-sql-driver/mysql"
)

// Op is one acknowledged write: which writer sent it, which member
// acknowledged it on which timeline at which WAL position, and when it
// was sent and acknowledged (the test process's monotonic clock, as
// offsets from the run's start, so every op is on one clock).
type Op struct {
	ID       int64         `json:"id"`
	Writer   string        `json:"writer"` // haproxy | direct-<member>
	Member   string        `json:"member"` // cluster_name of the server that committed it
	Timeline int64         `json:"tl"`
	LSN      uint64        `json:"lsn"` // pg_current_wal_lsn() in the writing transaction (before its commit record); MariaDB: the GTID sequence number (MyEras sets Timeline)
	Start    time.Duration `json:"start"`
	End      time.Duration `json:"end"`
}

// Workload runs the writers: one through HAProxy's write port and one
// directly to each member, each inserting a unique id every interval and
// recording every acknowledged write.
type Workload struct {
	epoch time.Time
	mu    sync.Mutex
	ops   []Op
	tries int
	stop  chan struct{}
	wg    sync.WaitGroup
}

// writerTarget is one writer's connection string.
type writerTarget struct {
	name  string
	dsn   string
	mysql bool // a go-sql-driver DSN of a MariaDB server
}

const insertSQL = `INSERT INTO chaos(id, writer) VALUES ($1, $2)
RETURNING current_setting('cluster_name'), ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint, pg_current_wal_lsn()::text`

// StartWorkload starts the writers. Ids are writer index << 40 | sequence,
// unique for the whole run.
func StartWorkload(epoch time.Time, targets []writerTarget, every time.Duration) *Workload {
	w := &Workload{epoch: epoch, stop: make(chan struct{})}
	for i, t := range targets {
		w.wg.Add(1)
		go w.writer(int64(i+1), t, every)
	}
	return w
}

func (w *Workload) writer(idx int64, t writerTarget, every time.Duration) {
	defer w.wg.Done()
	if t.mysql {
		w.myWriter(idx, t, every)
		return
	}
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	seq := int64(0)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tk.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, t.dsn)
			if err != nil {
				cancel()
				continue
			}
			conn = c
		}
		seq++
		id := idx<<40 | seq
		start := time.Since(w.epoch)
		var member, lsn string
		var tl int64
		err := conn.QueryRow(ctx, insertSQL, id, t.name).Scan(&member, &tl, &lsn)
		end := time.Since(w.epoch)
		cancel()
		w.mu.Lock()
		w.tries++
		if err == nil {
			w.ops = append(w.ops, Op{ID: id, Writer: t.name, Member: member, Timeline: tl, LSN: parseLSN(lsn), Start: start, End: end})
		}
		w.mu.Unlock()
		if err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				// Not an SQL error (read-only, ...): the connection is
				// in doubt; open a new one.
				conn.Close(context.Background())
				conn = nil
			}
		}
	}
}

// myWriter is writer for MariaDB: one connection at a time (the GTID is
// read in the writing session), a new one after any error but an SQL
// error from the server (read_only, ...).
func (w *Workload) myWriter(idx int64, t writerTarget, every time.Duration) {
	db, err := sql.Open("mysql", t.dsn)
	if err != nil {
		return
	}
	defer db.Close()
	db.SetMaxIdleConns(1)
	var conn *sql.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	seq := int64(0)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tk.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if conn == nil {
			c, err := db.Conn(ctx)
			if err != nil {
				cancel()
				continue
			}
			conn = c
		}
		seq++
		id := idx<<40 | seq
		start := time.Since(w.epoch)
		member, gseq, err := myInsert(ctx, conn, id, t.name)
		end := time.Since(w.epoch)
		cancel()
		w.mu.Lock()
		w.tries++
		if err == nil {
			w.ops = append(w.ops, Op{ID: id, Writer: t.name, Member: member, LSN: gseq, Start: start, End: end})
		}
		w.mu.Unlock()
		if err != nil {
			var me *gomysql.MySQLError
			if !errors.As(err, &me) {
				conn.Raw(func(any) error { return driver.ErrBadConn })
				conn.Close()
				conn = nil
			}
		}
	}
}

// Stop ends the writers.
func (w *Workload) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// Ops returns the acknowledged writes so far.
func (w *Workload) Ops() []Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Op(nil), w.ops...)
}

// Now is the current offset on the workload's clock.
func (w *Workload) Now() time.Duration { return time.Since(w.epoch) }

// parseLSN parses "16/B374D848".
func parseLSN(s string) uint64 {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0
	}
	return h<<32 | l
}

// formatLSN is the inverse of parseLSN.
func formatLSN(v uint64) string {
	return strings.ToUpper(strconv.FormatUint(v>>32, 16)) + "/" + strings.ToUpper(strconv.FormatUint(v&0xffffffff, 16))
}
