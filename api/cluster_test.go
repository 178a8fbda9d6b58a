package api

import (
	"encoding/json"
	"testing"

	"github.com/stewardha/steward/dcs"
)

// GET /cluster shows the sync key (who holds every acknowledged commit) and
// each member's sync state; a broken key is shown as such, not as "off".
func TestClusterBodySync(t *testing.T) {
	cl := &dcs.Cluster{
		Leader: &dcs.Leader{Name: "a", Term: 3},
		Members: map[string]dcs.Member{
			"a": {Name: "a", Role: dcs.RolePrimary},
			"b": {Name: "b", Role: dcs.RoleReplica, Sync: "quorum"},
			"c": {Name: "c", Role: dcs.RoleReplica, Sync: "async"},
		},
		Sync: &dcs.Versioned[dcs.SyncState]{Value: dcs.SyncState{Leader: "a", Mode: "quorum", Members: []string{"b"}, Quorum: 1}, Version: 4},
	}
	b, err := json.Marshal(ClusterBody("main", cl))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Synchronous *ClusterSync `json:"synchronous"`
		Members     []struct {
			Name string `json:"name"`
			Sync string `json:"sync_state"`
		} `json:"members"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if s := v.Synchronous; s == nil || s.Mode != "quorum" || s.Leader != "a" || len(s.Members) != 1 || s.Members[0] != "b" || s.Quorum != 1 {
		t.Fatalf("synchronous section %+v in %s", v.Synchronous, b)
	}
	got := map[string]string{}
	for _, m := range v.Members {
		got[m.Name] = m.Sync
	}
	if got["b"] != "quorum" || got["c"] != "async" || got["a"] != "" {
		t.Fatalf("member sync states %v", got)
	}

	cl.Sync, cl.SyncError = &dcs.Versioned[dcs.SyncState]{Version: 5}, "unexpected end of JSON input"
	if s := ClusterBody("main", cl).Synchronous; s == nil || s.Error == "" || len(s.Members) != 0 {
		t.Fatalf("an undecodable key shown as %+v", s)
	}
	cl.Sync, cl.SyncError = nil, ""
	if s := ClusterBody("main", cl).Synchronous; s != nil {
		t.Fatalf("no sync key, but /cluster shows %+v", s)
	}
}
