package chaos

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// The fault kinds. Each is injected, held, then healed; targets are roles
// ("primary", "replica"), resolved when the step runs.
const (
	KillAgent            = "kill-agent"             // kill -9 of the agent; restarted at heal
	KillDB               = "kill-db"                // kill -9 of PostgreSQL (postmaster and children); the agent restarts it
	CrashHost            = "crash-host"             // both at once; the agent is restarted at heal
	StopAgent            = "stop-agent"             // SIGSTOP of the agent for 2 x ttl, then SIGCONT
	StopDB               = "stop-db"                // SIGSTOP of every PostgreSQL process, SIGCONT at heal
	PartitionPrimary     = "partition-primary"      // the primary cut off from the other members, etcd and HAProxy
	PartitionPrimaryEtcd = "partition-primary-etcd" // the primary cut off from etcd only
	PartitionReplica     = "partition-replica"      // a replica cut off from everyone
	KillEtcdLeader       = "kill-etcd-leader"       // kill -9 of the etcd raft leader; restarted at heal
	EtcdQuorumLoss       = "etcd-quorum-loss"       // kill -9 of two of three etcd nodes; restarted at heal
	LatencyLoss          = "latency-loss"           // +200 ms round trip (delay proxies) and 10% packet loss (nftables)
	WALDiskFull          = "wal-disk-full"          // the member's data/WAL tmpfs filled; emptied at heal
	RestartCluster       = "restart-cluster"        // every agent and database stopped at once, then all started
	// Compound faults: a second fault before the first has healed.
	CrashTwice         = "crash-twice"          // host crash of the primary, then of the new primary as soon as it takes writes
	PartitionThenCrash = "partition-then-crash" // the primary cut off; once a new primary takes writes, healed and the new primary crashed at once
)

// AllKinds lists every fault kind, in a fixed order.
var AllKinds = []string{KillAgent, KillDB, CrashHost, StopAgent, StopDB, PartitionPrimary, PartitionPrimaryEtcd,
	PartitionReplica, KillEtcdLeader, EtcdQuorumLoss, LatencyLoss, WALDiskFull, RestartCluster, CrashTwice, PartitionThenCrash}

// Step is one fault of a schedule.
type Step struct {
	N       int           `json:"n"`
	Kind    string        `json:"kind"`
	Target  string        `json:"target"`            // primary | replica | etcd | cluster
	Pick    int           `json:"pick"`              // which replica / second etcd node
	Hold    time.Duration `json:"hold"`              // how long the fault lasts
	Variant string        `json:"variant,omitempty"` // restart-cluster: crash | clean
}

func (s Step) String() string {
	v := ""
	if s.Variant != "" {
		v = " " + s.Variant
	}
	return fmt.Sprintf("#%d %s%s target=%s pick=%d hold=%v", s.N, s.Kind, v, s.Target, s.Pick, s.Hold.Round(100*time.Millisecond))
}

// Schedule derives count steps from seed: the kinds come in shuffled
// rounds, so every kind gets an equal share; targets, picks and hold times
// are random. The same seed, count and kinds give the same schedule.
func Schedule(seed uint64, count int, kinds []string, ttl time.Duration) []Step {
	rng := rand.New(rand.NewPCG(seed, seed^0x5deece66d))
	var out []Step
	var round []string
	for i := 0; i < count; i++ {
		if len(round) == 0 {
			round = append([]string(nil), kinds...)
			rng.Shuffle(len(round), func(a, b int) { round[a], round[b] = round[b], round[a] })
		}
		k := round[0]
		round = round[1:]
		s := Step{N: i, Kind: k, Pick: rng.IntN(16), Hold: ttl + time.Duration(rng.Float64()*float64(2*ttl))}
		primary := rng.IntN(4) != 0 // 3 in 4 hit the primary
		switch k {
		case KillAgent, KillDB, CrashHost, StopAgent, StopDB, LatencyLoss, WALDiskFull:
			s.Target = "replica"
			if primary {
				s.Target = "primary"
			}
		case PartitionPrimary, PartitionPrimaryEtcd, CrashTwice, PartitionThenCrash:
			s.Target = "primary"
		case PartitionReplica:
			s.Target = "replica"
		case KillEtcdLeader, EtcdQuorumLoss:
			s.Target = "etcd"
		case RestartCluster:
			s.Target = "cluster"
			s.Variant = "crash"
			if rng.IntN(2) == 0 {
				s.Variant = "clean"
			}
		}
		if k == StopAgent {
			s.Hold = 2 * ttl
		}
		out = append(out, s)
	}
	return out
}

// ParseKinds reads a comma-separated list of kinds ("" or "all": every
// kind).
func ParseKinds(s string) ([]string, error) {
	if s == "" || s == "all" {
		return AllKinds, nil
	}
	var out []string
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		ok := false
		for _, a := range AllKinds {
			ok = ok || a == k
		}
		if !ok {
			return nil, fmt.Errorf("unknown fault kind %q (known: %s)", k, strings.Join(AllKinds, ", "))
		}
		out = append(out, k)
	}
	return out, nil
}
