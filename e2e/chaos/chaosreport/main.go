// Command chaosreport summarises the JSON reports of chaos runs
// (.test-output/chaos/*.json, written by e2e/chaos TestChaos) as the
// Markdown tables of docs/reliability.md: faults by kind with their count,
// recovery-time distribution, longest write outage, failovers, lost
// writes and violations.
//
//	go run ./e2e/chaos/chaosreport .test-output/chaos/seed*.json
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/stewardha/steward/e2e/chaos"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: chaosreport REPORT.json...")
		os.Exit(2)
	}
	var reps []chaos.Report
	for _, p := range os.Args[1:] {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var r chaos.Report
		if err := json.Unmarshal(b, &r); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p, err)
			os.Exit(1)
		}
		reps = append(reps, r)
	}
	if err := render(os.Stdout, reps); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type kindStats struct {
	n, failovers, lost, violations int
	recovery, gaps                 []time.Duration
	lostBytes                      uint64
}

func render(w io.Writer, reps []chaos.Report) error {
	by := map[string]*kindStats{}
	var all kindStats
	writes, finalLost, finalViol := 0, 0, 0
	var elapsed time.Duration
	seeds := map[string]bool{}
	var viol []string
	for _, r := range reps {
		writes += r.Writes
		finalLost += r.Final.Lost
		finalViol += len(r.FinalViol)
		elapsed += r.Elapsed
		seeds[fmt.Sprintf("%d (count %d, sync %s, fencing %s)", r.Seed, r.Count, r.Settings.SynchronousMode, r.Settings.FencingMode)] = true
		for _, s := range r.Steps {
			k := s.Kind
			if s.Target == "replica" {
				k += " (replica)"
			}
			if s.Variant != "" {
				k += " (" + s.Variant + ")"
			}
			st := by[k]
			if st == nil {
				st = &kindStats{}
				by[k] = st
			}
			for _, x := range []*kindStats{st, &all} {
				x.n++
				if s.LeaderAfter != "" && s.LeaderAfter != s.LeaderBefore {
					x.failovers++
				}
				x.lost += s.Lost
				if s.LostBytes > x.lostBytes {
					x.lostBytes = s.LostBytes
				}
				x.violations += len(s.Violations)
				if s.LeaderAfter != "" {
					x.recovery = append(x.recovery, s.Recovery)
				}
				x.gaps = append(x.gaps, s.WriteGap)
			}
			for _, v := range s.Violations {
				viol = append(viol, fmt.Sprintf("seed %d step %s: %s", r.Seed, s.Step, v))
			}
		}
		for _, v := range r.FinalViol {
			viol = append(viol, fmt.Sprintf("seed %d end of run: %s", r.Seed, v))
		}
	}
	var ss []string
	for s := range seeds {
		ss = append(ss, s)
	}
	sort.Strings(ss)
	fmt.Fprintf(w, "Runs: %d chunk(s), seeds %s; %d faults, %d acknowledged writes, %v of fault time.\n\n",
		len(reps), strings.Join(ss, ", "), all.n, writes, elapsed.Round(time.Minute))
	fmt.Fprintln(w, "| fault | count | leader changed | recovery after heal min / median / p95 / max | longest write outage through HAProxy median / max | acked writes lost (largest, bytes past the switch point) | violations |")
	fmt.Fprintln(w, "|---|---:|---:|---|---|---|---:|")
	kinds := make([]string, 0, len(by))
	for k := range by {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		row(w, k, by[k])
	}
	row(w, "**all**", &all)
	fmt.Fprintf(w, "\nEnd-of-run re-check of every acknowledged write: %d lost, %d violation(s).\n", finalLost, finalViol)
	if len(viol) > 0 {
		fmt.Fprintln(w, "\nViolations:")
		for _, v := range viol {
			fmt.Fprintln(w, "- "+strings.ReplaceAll(v, "\n", " "))
		}
	}
	return nil
}

func row(w io.Writer, k string, s *kindStats) {
	fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %d (%d) | %d |\n", k, s.n, s.failovers, dist(s.recovery, true), dist(s.gaps, false), s.lost, s.lostBytes, s.violations)
}

// dist renders min/median/p95/max (or median/max).
func dist(d []time.Duration, full bool) string {
	if len(d) == 0 {
		return "–"
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	f := func(x time.Duration) string { return fmt.Sprintf("%.1fs", x.Seconds()) }
	if full {
		return fmt.Sprintf("%s / %s / %s / %s", f(s[0]), f(q(0.5)), f(q(0.95)), f(s[len(s)-1]))
	}
	return fmt.Sprintf("%s / %s", f(q(0.5)), f(s[len(s)-1]))
}
