package mysql

import (
	"strings"
	"testing"

	"github.com/stewardha/steward/backends"
)

func TestParseFlavor(t *testing.T) {
	for _, c := range []struct {
		in     string
		maria  bool
		ver    [3]int
		String string
	}{
		{"10.11.19-MariaDB-0+deb12u1-log", true, [3]int{10, 11, 19}, "MariaDB 10.11.19"},
		{"5.5.5-10.6.12-MariaDB", true, [3]int{10, 6, 12}, "MariaDB 10.6.12"},
		{"11.4.2-MariaDB", true, [3]int{11, 4, 2}, "MariaDB 11.4.2"},
		{"8.0.36", false, [3]int{8, 0, 36}, "MySQL 8.0.36"},
		{"8.4.0-commercial", false, [3]int{8, 4, 0}, "MySQL 8.4.0"},
		{"8.0.21-log", false, [3]int{8, 0, 21}, "MySQL 8.0.21"},
		{"5.7.44-log", false, [3]int{5, 7, 44}, "MySQL 5.7.44"},
	} {
		f, err := ParseFlavor(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if f.MariaDB != c.maria || [3]int{f.Major, f.Minor, f.Patch} != c.ver || f.String() != c.String || f.Version != c.in {
			t.Errorf("%q: %+v (%s)", c.in, f, f)
		}
	}
	if _, err := ParseFlavor("garbage"); err == nil {
		t.Error("ParseFlavor(garbage) succeeded")
	}
}

func mustFlavor(t *testing.T, v string) Flavor {
	t.Helper()
	f, err := ParseFlavor(v)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The SQL of every flavour: MariaDB keeps SLAVE/MASTER words and
// MASTER_USE_GTID; MySQL 8.0.22 renamed to REPLICA, 8.0.23 to SOURCE, 8.2
// renamed the binary-log statements, 8.4 removed the old ones.
func TestFlavorSQL(t *testing.T) {
	maria := mustFlavor(t, "10.11.19-MariaDB-0+deb12u1-log")
	my57 := mustFlavor(t, "5.7.44-log")
	my8021 := mustFlavor(t, "8.0.21")
	my8022 := mustFlavor(t, "8.0.22")
	my80 := mustFlavor(t, "8.0.36")
	my84 := mustFlavor(t, "8.4.0")
	type row struct {
		f                                     Flavor
		status, start, stopIO, reset, binlog  string
		resetBinlogs, hosts, wait, shutdown   string
		change                                []string // substrings
		readOnlyOn, readOnlyOff               []string
		timedOut                              int64
		dumpWants, dumpRejects, dump, clients string
	}
	for _, c := range []row{
		{f: maria, status: "SHOW SLAVE STATUS", start: "START SLAVE", stopIO: "STOP SLAVE IO_THREAD", reset: "RESET SLAVE ALL",
			binlog: "SHOW MASTER STATUS", resetBinlogs: "RESET MASTER", hosts: "SHOW SLAVE HOSTS", wait: "SELECT MASTER_GTID_WAIT(?, ?)",
			shutdown: "SHUTDOWN WAIT FOR ALL SLAVES", change: []string{"CHANGE MASTER TO MASTER_HOST = ?", "MASTER_USE_GTID = slave_pos", "MASTER_CONNECT_RETRY = 1"},
			readOnlyOn: []string{"SET GLOBAL read_only = ON"}, readOnlyOff: []string{"SET GLOBAL read_only = OFF"}, timedOut: -1,
			dumpWants: "--gtid --master-data=2", dumpRejects: "--set-gtid-purged", dump: "mariadb-dump", clients: "mariadb"},
		{f: my57, status: "SHOW SLAVE STATUS", start: "START SLAVE", stopIO: "STOP SLAVE IO_THREAD", reset: "RESET SLAVE ALL",
			binlog: "SHOW MASTER STATUS", resetBinlogs: "RESET MASTER", hosts: "SHOW SLAVE HOSTS", wait: "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
			shutdown: "SHUTDOWN", change: []string{"CHANGE MASTER TO MASTER_HOST = ?", "MASTER_AUTO_POSITION = 1", "GET_MASTER_PUBLIC_KEY = 1"},
			readOnlyOn: []string{"SET GLOBAL super_read_only = ON"}, readOnlyOff: []string{"SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"}, timedOut: 1,
			dumpWants: "--set-gtid-purged=ON --master-data=2", dumpRejects: "--gtid ", dump: "mysqldump", clients: "mysql"},
		{f: my8021, status: "SHOW SLAVE STATUS", start: "START SLAVE", stopIO: "STOP SLAVE IO_THREAD", reset: "RESET SLAVE ALL",
			binlog: "SHOW MASTER STATUS", resetBinlogs: "RESET MASTER", hosts: "SHOW SLAVE HOSTS", wait: "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
			shutdown: "SHUTDOWN", change: []string{"CHANGE MASTER TO", "MASTER_AUTO_POSITION = 1"},
			readOnlyOn: []string{"SET GLOBAL super_read_only = ON"}, readOnlyOff: []string{"SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"}, timedOut: 1,
			dumpWants: "--master-data=2", dumpRejects: "--source-data", dump: "mysqldump", clients: "mysql"},
		{f: my8022, status: "SHOW REPLICA STATUS", start: "START REPLICA", stopIO: "STOP REPLICA IO_THREAD", reset: "RESET REPLICA ALL",
			binlog: "SHOW MASTER STATUS", resetBinlogs: "RESET MASTER", hosts: "SHOW REPLICAS", wait: "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
			shutdown: "SHUTDOWN", change: []string{"CHANGE MASTER TO", "MASTER_AUTO_POSITION = 1"},
			readOnlyOn: []string{"SET GLOBAL super_read_only = ON"}, readOnlyOff: []string{"SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"}, timedOut: 1,
			dumpWants: "--master-data=2", dump: "mysqldump", clients: "mysql"},
		{f: my80, status: "SHOW REPLICA STATUS", start: "START REPLICA", stopIO: "STOP REPLICA IO_THREAD", reset: "RESET REPLICA ALL",
			binlog: "SHOW MASTER STATUS", resetBinlogs: "RESET MASTER", hosts: "SHOW REPLICAS", wait: "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
			shutdown: "SHUTDOWN", change: []string{"CHANGE REPLICATION SOURCE TO SOURCE_HOST = ?", "SOURCE_AUTO_POSITION = 1", "GET_SOURCE_PUBLIC_KEY = 1"},
			readOnlyOn: []string{"SET GLOBAL super_read_only = ON"}, readOnlyOff: []string{"SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"}, timedOut: 1,
			dumpWants: "--set-gtid-purged=ON --source-data=2", dump: "mysqldump", clients: "mysql"},
		{f: my84, status: "SHOW REPLICA STATUS", start: "START REPLICA", stopIO: "STOP REPLICA IO_THREAD", reset: "RESET REPLICA ALL",
			binlog: "SHOW BINARY LOG STATUS", resetBinlogs: "RESET BINARY LOGS AND GTIDS", hosts: "SHOW REPLICAS", wait: "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
			shutdown: "SHUTDOWN", change: []string{"CHANGE REPLICATION SOURCE TO", "SOURCE_AUTO_POSITION = 1"},
			readOnlyOn: []string{"SET GLOBAL super_read_only = ON"}, readOnlyOff: []string{"SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"}, timedOut: 1,
			dumpWants: "--set-gtid-purged=ON --source-data=2", dump: "mysqldump", clients: "mysql"},
	} {
		f := c.f
		name := f.String()
		eq := func(what, got, want string) {
			if got != want {
				t.Errorf("%s %s: %q, want %q", name, what, got, want)
			}
		}
		eq("status", f.ReplicaStatusSQL(), c.status)
		eq("start", f.ReplicaThreadSQL(true, ""), c.start)
		eq("stop io", f.ReplicaThreadSQL(false, "IO_THREAD"), c.stopIO)
		eq("reset", f.ResetReplicaAllSQL(), c.reset)
		eq("binlog", f.BinlogStatusSQL(), c.binlog)
		eq("reset binlogs", f.ResetBinlogsSQL(), c.resetBinlogs)
		eq("hosts", f.ReplicaHostsSQL(), c.hosts)
		eq("wait", f.WaitAppliedSQL(), c.wait)
		eq("shutdown", f.ShutdownSQL(), c.shutdown)
		q, args := f.ChangeSourceSQL("10.0.0.5", 3307, "repl", "p'w\\d")
		for _, want := range c.change {
			if !strings.Contains(q, want) {
				t.Errorf("%s change source: %q lacks %q", name, q, want)
			}
		}
		if strings.Count(q, "?") != 4 || len(args) != 4 || args[3] != "p'w\\d" || args[1] != 3307 {
			t.Errorf("%s change source args: %q %v (values must be bind arguments, never spliced)", name, q, args)
		}
		if got := strings.Join(f.ReadOnlySQL(true), ";"); got != strings.Join(c.readOnlyOn, ";") {
			t.Errorf("%s read only on: %q", name, got)
		}
		if got := strings.Join(f.ReadOnlySQL(false), ";"); got != strings.Join(c.readOnlyOff, ";") {
			t.Errorf("%s read only off: %q", name, got)
		}
		if f.WaitTimedOut() != c.timedOut {
			t.Errorf("%s timed out value %d", name, f.WaitTimedOut())
		}
		dump := strings.Join(f.DumpArgs("h", 1, []string{"app", "steward"}), " ")
		if !strings.Contains(dump, c.dumpWants) || (c.dumpRejects != "" && strings.Contains(dump, c.dumpRejects)) ||
			!strings.Contains(dump, "--single-transaction") || !strings.HasSuffix(dump, "--databases app steward") {
			t.Errorf("%s dump args: %s", name, dump)
		}
		if d, l := f.ClientPrograms(); d[0] != c.dump || l[0] != c.clients {
			t.Errorf("%s programs: %v %v", name, d, l)
		}
		if load := strings.Join(f.LoadArgs("127.0.0.1", 5), " "); !strings.Contains(load, "--init-command=SET SESSION sql_log_bin = 0") {
			t.Errorf("%s load args must keep the copy out of the binary log: %s", name, load)
		}
		gv := f.GTIDVarsSQL()
		for _, col := range []string{"binlog_state", "slave_pos", "current_pos", "binlog_pos", "log_replica_updates", "strict_mode", "super_read_only", "server_uuid"} {
			if !strings.Contains(gv, " AS "+col) {
				t.Errorf("%s GTID vars lack %s: %s", name, col, gv)
			}
		}
		if strings.Contains(gv, " FROM ") {
			t.Errorf("%s GTID vars must be table-less (MariaDB reported a stale read_only next to an InnoDB table): %s", name, gv)
		}
	}
	if q, _ := maria.KeepRelayLogSQL("relay-bin.000003", 645); q != "CHANGE MASTER TO MASTER_USE_GTID = no, RELAY_LOG_FILE = ?, RELAY_LOG_POS = ?" {
		t.Errorf("keep relay log: %q", q)
	}
	if !strings.Contains(my80.GTIDVarsSQL(), "log_replica_updates AS") || !strings.Contains(my8021.GTIDVarsSQL(), "log_slave_updates AS") {
		t.Error("MySQL 8.0.26 renamed log_slave_updates")
	}
}

// Recorded SHOW REPLICA STATUS column names of MySQL 8.0.36 map to the
// classic names the backend reads.
func TestStatusColumns(t *testing.T) {
	for in, want := range map[string]string{
		"Replica_IO_State": "Slave_IO_State", "Source_Host": "Master_Host", "Source_Port": "Master_Port",
		"Source_Log_File": "Master_Log_File", "Read_Source_Log_Pos": "Read_Master_Log_Pos",
		"Relay_Source_Log_File": "Relay_Master_Log_File", "Replica_IO_Running": "Slave_IO_Running",
		"Replica_SQL_Running": "Slave_SQL_Running", "Exec_Source_Log_Pos": "Exec_Master_Log_Pos",
		"Seconds_Behind_Source": "Seconds_Behind_Master", "Source_Server_Id": "Master_Server_Id",
		"Replica_SQL_Running_State": "Slave_SQL_Running_State", "Retrieved_Gtid_Set": "Retrieved_Gtid_Set",
		"Executed_Gtid_Set": "Executed_Gtid_Set", "Auto_Position": "Auto_Position", "Relay_Log_File": "Relay_Log_File",
		// MariaDB's names stay.
		"Slave_IO_Running": "Slave_IO_Running", "Gtid_IO_Pos": "Gtid_IO_Pos", "Using_Gtid": "Using_Gtid", "Master_Host": "Master_Host",
	} {
		if got := statusColumn(in); got != want {
			t.Errorf("statusColumn(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestMariaState(t *testing.T) {
	s, err := ParseMariaState(" 0-1-211,0-2-533,\n1-7-5, 0-1-100")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "0-1-211,0-2-533,1-7-5" {
		t.Errorf("canonical %q", got)
	}
	if s.Seq(0, 1) != 211 || s.Seq(1, 7) != 5 || s.Seq(2, 1) != 0 || s.DomainMax(0) != 533 {
		t.Errorf("Seq/DomainMax of %s", s)
	}
	if got := s.Position(); got != "0-2-533,1-7-5" {
		t.Errorf("position %q", got)
	}
	for _, bad := range []string{"0-1", "a-b-c", "0-1-2-3", "0-x-5"} {
		if _, err := ParseMariaState(bad); err == nil {
			t.Errorf("ParseMariaState(%q) succeeded", bad)
		}
	}
	if e, _ := ParseMariaState(""); len(e) != 0 {
		t.Error("empty state not empty")
	}

	// The verified counter-example (research §1.9): the old primary at
	// 0-1-532, the new primary's history 0-1-211,0-2-533. Sequence numbers
	// say the new primary is ahead; it lacks 0-1-212..532.
	oldP, _ := ParseMariaState("0-1-532")
	newP, _ := ParseMariaState("0-1-211,0-2-533")
	if newP.Contains(oldP) {
		t.Fatal("the new primary must not contain the old primary's 0-1-212..532")
	}
	if got := newP.Errant(oldP); len(got) != 1 || got[0] != "0-1-212..0-1-532" {
		t.Errorf("errant %v", got)
	}
	// The clean case: the new primary continued the old one's history.
	clean, _ := ParseMariaState("0-1-532,0-2-533")
	if !clean.Contains(oldP) || clean.Errant(oldP) != nil {
		t.Error("a continued history must contain the old primary")
	}
	// Equal seq_no, different server: diverged both ways.
	a, _ := ParseMariaState("0-1-10")
	b, _ := ParseMariaState("0-2-10")
	if a.Contains(b) || b.Contains(a) {
		t.Error("0-1-10 and 0-2-10 are different transactions")
	}
	// A single errant transaction and a server never seen.
	one, _ := ParseMariaState("0-3-659,0-1-658")
	up, _ := ParseMariaState("0-1-700")
	if got := up.Errant(one); len(got) != 1 || !strings.HasPrefix(got[0], "0-3-1..0-3-659") {
		t.Errorf("errant %v", got)
	}
	one2, _ := ParseMariaState("0-1-701")
	if got := up.Errant(one2); len(got) != 1 || got[0] != "0-1-701" {
		t.Errorf("errant %v", got)
	}
	if got := oldP.Common(newP).String(); got != "0-1-211" {
		t.Errorf("common %q", got)
	}
}

func TestMySQLSet(t *testing.T) {
	const u1, u2 = "3e11fa47-71ca-11e1-9e33-c80aa9429562", "4E11FA47-71CA-11E1-9E33-C80AA9429562"
	s, err := ParseMySQLSet(u1 + ":1-5:7-9:6,\n" + u2 + ":3")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != u1+":1-9,"+strings.ToLower(u2)+":3" {
		t.Errorf("canonical %q", got)
	}
	if s.Count() != 10 {
		t.Errorf("count %d", s.Count())
	}
	sub, _ := ParseMySQLSet(u1 + ":2-4")
	if !s.Contains(sub) || sub.Contains(s) {
		t.Error("containment")
	}
	if got := s.Subtract(sub).String(); got != u1+":1:5-9,"+strings.ToLower(u2)+":3" {
		t.Errorf("subtract %q", got)
	}
	tagged, err := ParseMySQLSet(u1 + ":1-3:tag1:1-2")
	if err != nil {
		t.Fatal(err)
	}
	if got := tagged.String(); got != u1+":1-3,"+u1+":tag1:1-2" {
		t.Errorf("tagged %q", got)
	}
	for _, bad := range []string{"nouuid:1-3", u1 + ":0", u1 + ":5-3", u1} {
		if _, err := ParseMySQLSet(bad); err == nil {
			t.Errorf("ParseMySQLSet(%q) succeeded", bad)
		}
	}
	// Errant: the local executed set minus the primary's.
	local, _ := ParseMySQLSet(u1 + ":1-100," + u2 + ":1")
	primary, _ := ParseMySQLSet(u1 + ":1-120")
	if got := local.Subtract(primary).String(); got != strings.ToLower(u2)+":1" {
		t.Errorf("errant %q", got)
	}
}

func TestLSNEncoding(t *testing.T) {
	lsn := EncodeLSN(7, "mariadb-bin.000003", 4628687)
	tag, file, off := DecodeLSN(lsn)
	if tag != 8 || file != 3 || off != 4628687 {
		t.Fatalf("decode %d %d %d", tag, file, off)
	}
	for _, z := range []uint64{EncodeLSN(0, "b.000001", 5), EncodeLSN(1, "", 5), EncodeLSN(1, "b.000001", 0), EncodeLSN(1, "nodot", 5)} {
		if z != 0 {
			t.Errorf("unknown coordinates encode to %d", z)
		}
	}
	// Same file: exact bytes. Ahead: 0. Earlier file: never underestimated.
	l := EncodeLSN(1, "b.000005", 10_000)
	if d, ok := lsnDistance(l, EncodeLSN(1, "b.000005", 4_000)); !ok || d != 6_000 {
		t.Errorf("same file %d %v", d, ok)
	}
	if d, ok := lsnDistance(l, EncodeLSN(1, "b.000006", 4)); !ok || d != 0 {
		t.Errorf("ahead %d %v", d, ok)
	}
	if d, ok := lsnDistance(l, EncodeLSN(1, "b.000004", 1<<30)); !ok || d < 10_000 {
		t.Errorf("earlier file %d %v", d, ok)
	}
	// Another primary's coordinates cannot be compared.
	if _, ok := lsnDistance(l, EncodeLSN(2, "b.000005", 10)); ok {
		t.Error("different primaries compared")
	}
}

func pos(lsn uint64, gtid string) backends.Position { return backends.Position{LSN: lsn, GTID: gtid} }

func TestLagAndCompare(t *testing.T) {
	leader := pos(EncodeLSN(1, "b.000002", 2_000_000), "0-1-500")
	// A replica whose applier is 1.5 MB behind in the same binlog.
	rep := pos(EncodeLSN(1, "b.000002", 500_000), "0-1-300")
	if got := Lag(leader, rep); got != 1_500_000 {
		t.Errorf("lag %d", got)
	}
	// History contains the leader's: 0 whatever the coordinates.
	if got := Lag(leader, pos(EncodeLSN(9, "x.000001", 5), "0-1-500,0-2-501")); got != 0 {
		t.Errorf("lag of a containing history %d", got)
	}
	// Different primary, not containing: unknown.
	if got := Lag(leader, pos(EncodeLSN(9, "x.000001", 5), "0-1-400")); got != -1 {
		t.Errorf("lag across primaries %d", got)
	}
	if Lag(backends.Position{}, rep) != -1 || Lag(leader, backends.Position{}) != -1 {
		t.Error("unknown positions must lag -1")
	}

	for _, c := range []struct {
		a, b string
		want int
	}{
		{"0-1-500", "0-1-500", 0},
		{"0-1-501", "0-1-500", 1},
		{"0-1-499", "0-1-500", -1},
		{"0-1-500,0-2-501", "0-1-500", 1},
		// Diverged: never ahead, in either order.
		{"0-1-532", "0-1-211,0-2-533", -1},
		{"0-1-211,0-2-533", "0-1-532", -1},
		{"0-1-10", "0-2-10", -1},
		{"0-2-10", "0-1-10", -1},
		// Multi-domain: ahead in one, behind in another is not comparable.
		{"0-1-10,1-1-5", "0-1-9,1-1-6", -1},
		{"0-1-10,1-1-6", "0-1-9,1-1-6", 1},
		{"", "0-1-1", -1},
		{"0-1-1", "", 1},
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9", 1},
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10,4e11fa47-71ca-11e1-9e33-c80aa9429562:1", -1},
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9,4e11fa47-71ca-11e1-9e33-c80aa9429562:1", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10", -1},
		// Mixed flavours are never comparable.
		{"0-1-5", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1", -1},
	} {
		if got := Compare(pos(0, c.a), pos(0, c.b)); got != c.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	if !Diverged(pos(0, "0-1-532"), pos(0, "0-1-211,0-2-533")) || Diverged(pos(0, "0-1-5"), pos(0, "0-1-6")) {
		t.Error("Diverged")
	}
	if n, ok := TransactionLag(pos(0, "0-1-500,1-2-10"), pos(0, "0-1-450,1-2-4")); !ok || n != 56 {
		t.Errorf("transaction lag %d %v", n, ok)
	}
	if n, ok := TransactionLag(pos(0, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10"), pos(0, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-4")); !ok || n != 6 {
		t.Errorf("mysql transaction lag %d %v", n, ok)
	}
}

// relayBacklog reads recorded SHOW SLAVE STATUS rows (MariaDB 10.11.19).
func TestRelayBacklog(t *testing.T) {
	maria := Flavor{MariaDB: true, Major: 10, Minor: 11}
	// Verified here: SQL thread stopped, IO stopped, after 50 inserts.
	backlog := map[string]string{"Master_Log_File": "mariadb-bin.000001", "Read_Master_Log_Pos": "12127",
		"Relay_Master_Log_File": "mariadb-bin.000001", "Exec_Master_Log_Pos": "1195", "Slave_IO_Running": "No",
		"Slave_SQL_Running": "No", "Using_Gtid": "Slave_Pos", "Gtid_IO_Pos": "0-1-55"}
	if !relayBacklog(maria, backlog, "0-1-5") {
		t.Error("backlog not seen")
	}
	caught := map[string]string{"Master_Log_File": "mariadb-bin.000001", "Read_Master_Log_Pos": "1195",
		"Relay_Master_Log_File": "mariadb-bin.000001", "Exec_Master_Log_Pos": "1195", "Using_Gtid": "Slave_Pos", "Gtid_IO_Pos": "0-1-5"}
	if relayBacklog(maria, caught, "0-1-5") {
		t.Error("no backlog expected")
	}
	// After a restart Gtid_IO_Pos is empty but the coordinates remain.
	restarted := map[string]string{"Master_Log_File": "mariadb-bin.000003", "Read_Master_Log_Pos": "6896",
		"Relay_Master_Log_File": "mariadb-bin.000003", "Exec_Master_Log_Pos": "344", "Using_Gtid": "Slave_Pos"}
	if !relayBacklog(maria, restarted, "0-1-105") {
		t.Error("backlog after a restart not seen")
	}
	fileMode := map[string]string{"Using_Gtid": "No"}
	if !relayBacklog(maria, fileMode, "") {
		t.Error("file mode (an interrupted apply) must count as backlog")
	}
	mysql := Flavor{Major: 8}
	retrieved := map[string]string{"Master_Log_File": "b.1", "Read_Master_Log_Pos": "5", "Relay_Master_Log_File": "b.1", "Exec_Master_Log_Pos": "5",
		"Retrieved_Gtid_Set": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10"}
	if !relayBacklog(mysql, retrieved, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9") {
		t.Error("MySQL retrieved beyond executed is a backlog")
	}
}

func TestDumpGTIDScanner(t *testing.T) {
	long := "INSERT INTO `t` VALUES " + strings.Repeat("(1,'-- SET GLOBAL gtid_slave_pos=''9-9-9'''),", 5000) + "(2,'x');\n"
	dump := "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n" + long +
		"-- CHANGE MASTER TO MASTER_LOG_FILE='mariadb-bin.000004', MASTER_LOG_POS=977;\n" + long +
		"-- SET GLOBAL gtid_slave_pos='0-1-139';\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n"
	g := &gtidScanner{}
	// Feed in odd chunks, as a pipe would.
	for i := 0; i < len(dump); i += 777 {
		_, _ = g.Write([]byte(dump[i:min(i+777, len(dump))]))
	}
	if g.gtid != "0-1-139" {
		t.Errorf("MariaDB dump GTID %q", g.gtid)
	}
	for line, want := range map[string]string{
		"SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77';": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77",
		"SET @@GLOBAL.GTID_PURGED='3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5';":                 "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
		"-- SET GLOBAL gtid_slave_pos='0-1-5,1-2-7';":                                          "0-1-5,1-2-7",
		"SET NAMES utf8mb4;": "",
	} {
		if got := parseDumpGTIDLine(line); got != want {
			t.Errorf("parseDumpGTIDLine(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestErrantAgainst(t *testing.T) {
	maria := Flavor{MariaDB: true, Major: 10, Minor: 11}
	local := serverState{flavor: maria, history: "0-1-540"}
	up := serverState{flavor: maria, history: "0-1-532,0-2-600"}
	e, err := errantAgainst(local, up)
	if err != nil || len(e) != 1 || e[0] != "0-1-533..0-1-540" {
		t.Fatalf("errant %v %v", e, err)
	}
	why := errantReason(maria, e, "m2", "m1")
	for _, want := range []string{"0-1-533..0-1-540", "m2", "steward reinit m1", "cannot be rewound"} {
		if !strings.Contains(why, want) {
			t.Errorf("reason %q lacks %q", why, want)
		}
	}
	clean := serverState{flavor: maria, history: "0-1-532"}
	if e, err := errantAgainst(clean, up); err != nil || e != nil {
		t.Errorf("clean: %v %v", e, err)
	}
	if _, err := errantAgainst(clean, serverState{flavor: Flavor{Major: 8}}); err == nil {
		t.Error("MariaDB against MySQL must fail")
	}
}

func TestSessionFilterAndPlaceholders(t *testing.T) {
	for _, c := range []struct {
		user, cmd string
		client    bool
	}{
		{"app", "Query", true}, {"app", "Sleep", true}, {"steward", "Query", true},
		{"repl", "Binlog Dump", false}, {"repl", "Binlog Dump GTID", false},
		{"system user", "Slave_IO", false}, {"system user", "Slave_SQL", false}, {"system user", "Connect", false},
		{"event_scheduler", "Daemon", false}, {"", "Daemon", false},
	} {
		if got := isClientSession(c.user, c.cmd); got != c.client {
			t.Errorf("isClientSession(%q, %q) = %v", c.user, c.cmd, got)
		}
	}
	if got := createIfNotExists("CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*B6'"); got != "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*B6'" {
		t.Errorf("createIfNotExists: %s", got)
	}
	if !systemAccounts["root"] || !systemAccounts["mariadb.sys"] || !systemAccounts["mysql.session"] || systemAccounts["app"] {
		t.Error("system accounts")
	}
	got := expandPlaceholders([]string{"/bin/clone", "--from={upstream_host}:{upstream_port}", "{data_dir}", "{member}/{upstream_name}"},
		map[string]string{"upstream_host": "10.0.0.1", "upstream_port": "3306", "data_dir": "/d", "member": "m2", "upstream_name": "m1"})
	if strings.Join(got, " ") != "/bin/clone --from=10.0.0.1:3306 /d m2/m1" {
		t.Errorf("placeholders %v", got)
	}
}

func TestNewValidates(t *testing.T) {
	ok := Options{Member: "m1", Address: "127.0.0.1:3306", User: "steward", Replication: Credentials{Username: "repl"}}
	if b, err := New(ok); err != nil {
		t.Fatal(err)
	} else {
		if b.Kind() != "mysql" || b.opts.ConnectAddress != "127.0.0.1:3306" || b.opts.ReplicationHost != "%" {
			t.Errorf("defaults: %+v", b.opts)
		}
		b.Close()
	}
	for _, c := range []struct {
		edit func(*Options)
		want string
	}{
		{func(o *Options) { o.Member = "" }, "name"},
		{func(o *Options) { o.Address = "nope" }, "mysql.address"},
		{func(o *Options) { o.ConnectAddress = "0.0.0.0:3306" }, "wildcard"},
		{func(o *Options) { o.User = "" }, "mysql.user"},
		{func(o *Options) { o.Replication.Username = "" }, "mysql.replication.username"},
		{func(o *Options) { o.DataDir = "rel/dir" }, "absolute"},
		{func(o *Options) { o.StartCommand = []string{""} }, "mysql.start_command"},
	} {
		o := ok
		c.edit(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New: %v, want an error about %s", err, c.want)
		}
	}
}

// After m2 (server 2) promoted at fork 0-1-1600, a deposed m1 with its own
// tail 0-1-1601..1772 may not be promoted (it would discard m2's writes);
// a replica of m2, holding m2's writes, may; so may one still at the fork.
func TestSinceFork(t *testing.T) {
	var b Backend
	fork := backends.Position{LSN: EncodeLSN(2, "binlog.000003", 4711), GTID: "0-1-1600,0-3-900"}
	for _, c := range []struct {
		name, pos, want string
	}{
		{"deposed primary with its tail", "0-1-1772,0-3-900", "0-1-1601..0-1-1772"},
		{"replica that received part of the deposed primary's tail", "0-1-1650,0-2-1601", "0-1-1601..0-1-1650"},
		{"replica of the new primary", "0-1-1600,0-2-1604,0-3-900", ""},
		{"replica at the fork", "0-1-1600,0-3-900", ""},
		{"replica behind the fork", "0-1-1500", ""},
	} {
		got := b.SinceFork(backends.Position{GTID: c.pos}, fork)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%s (%s): %q, want %q", c.name, c.pos, got, c.want)
		}
	}
	// Nothing can be told without the new primary's server (no LSN tag) or
	// for MySQL GTID sets.
	if got := b.SinceFork(backends.Position{GTID: "0-1-1772"}, backends.Position{GTID: "0-1-1600"}); got != "" {
		t.Errorf("untagged fork: %q", got)
	}
	mysqlFork := backends.Position{LSN: EncodeLSN(2, "binlog.000003", 4711), GTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100"}
	if got := b.SinceFork(backends.Position{GTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-120"}, mysqlFork); got != "" {
		t.Errorf("MySQL sets: %q", got)
	}
}
