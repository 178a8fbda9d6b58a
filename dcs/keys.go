package dcs

import (
	"fmt"
	"strconv"
	"strings"
)

// Keys builds the key names of one cluster.
type Keys struct {
	Prefix string // "/<namespace>/<cluster>/", always ending in "/"
}

// NewKeys returns the key layout for a namespace (e.g. "/steward") and a
// cluster name.
func NewKeys(namespace, cluster string) Keys {
	ns := strings.TrimRight(namespace, "/")
	if !strings.HasPrefix(ns, "/") {
		ns = "/" + ns
	}
	if ns == "/" {
		ns = ""
	}
	return Keys{Prefix: ns + "/" + cluster + "/"}
}

func (k Keys) Leader() string     { return k.Prefix + "leader" }
func (k Keys) MembersDir() string { return k.Prefix + "members/" }
func (k Keys) Member(name string) string {
	return k.Prefix + "members/" + name
}
func (k Keys) Status() string     { return k.Prefix + "status" }
func (k Keys) Config() string     { return k.Prefix + "config" }
func (k Keys) Initialize() string { return k.Prefix + "initialize" }
func (k Keys) Switchover() string { return k.Prefix + "switchover" }
func (k Keys) Sync() string       { return k.Prefix + "sync" }
func (k Keys) HistoryDir() string { return k.Prefix + "history/" }

// History is the key of history record n. The index is zero-padded so that
// the keys sort in append order.
func (k Keys) History(n int64) string { return fmt.Sprintf("%shistory/%010d", k.Prefix, n) }

// HistoryIndex parses the index out of a history key.
func (k Keys) HistoryIndex(key string) (int64, bool) {
	s, ok := strings.CutPrefix(key, k.HistoryDir())
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
