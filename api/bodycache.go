package api

import (
	"encoding/json"
	"maps"
	"sync/atomic"

	"github.com/stewardha/steward/backends"
	"github.com/stewardha/steward/dcs"
)

// bodyCache keeps the last encoded health body: load balancers poll the
// health endpoints many times per view change, and the body (the same for
// every health endpoint) only changes when the member's state does.
// Lock-free: concurrent requests that see a change may both encode; the
// last store wins, both answers are right.
type bodyCache struct {
	last atomic.Pointer[cachedBody]
}

// bodyKey is what the health body is made of, read straight from the
// snapshot (comparable, no allocation): a request compares it with the
// cached one and builds and encodes the body only when it changed.
type bodyKey struct {
	name, role, state, leader, replState, syncState string
	position                                        backends.Position
	timeline, lag                                   int64
	isLeader, paused                                bool
}

func keyOf(sn *snapshot) bodyKey {
	m := &sn.v.Member
	k := bodyKey{name: m.Name, role: m.Role, state: m.State, replState: m.ReplicationState, position: m.Position,
		timeline: m.Timeline, lag: m.LagBytes, isLeader: sn.leaderNow(), paused: sn.v.Config.Paused}
	if m.Role == dcs.RoleReplica {
		k.lag = byteLag(&sn.v)
		k.syncState = syncState(m)
	}
	if sn.v.Cluster != nil && sn.v.Cluster.Leader != nil {
		k.leader = sn.v.Cluster.Leader.Name
	}
	return k
}

type cachedBody struct {
	key  bodyKey
	tags map[string]string
	json []byte
}

// get returns the encoded health body of sn.
func (bc *bodyCache) get(sn *snapshot) []byte {
	k := keyOf(sn)
	tags := sn.v.Member.Tags
	if c := bc.last.Load(); c != nil && c.key == k && maps.Equal(c.tags, tags) {
		return c.json
	}
	js, err := json.Marshal(healthBody(sn))
	if err != nil { // cannot happen: strings, numbers and a string map
		js = []byte(`{"error":"encoding the health body failed"}`)
	}
	js = append(js, '\n')
	// The cache keeps its own copy of the tags: the agent's map is not ours.
	bc.last.Store(&cachedBody{key: k, tags: maps.Clone(tags), json: js})
	return js
}
