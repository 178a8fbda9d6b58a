# Prints, for every test that failed in a `go test -v` log, the lines its own
# test files logged (file_test.go:N: ...), last 20 each. make test prints this
# at the very end of a failed run: the agent logs a failing e2e test dumps can
# push its error message out of the part of the console CI shows.
#   awk -f scripts/test-failures.awk .test-output/test.log
/^=== (RUN|NAME|CONT|PAUSE) / { cur = $3; next }
/^[[:space:]]*--- FAIL: / {
	name = $0; sub(/^[[:space:]]*--- FAIL: /, "", name); sub(/ .*/, "", name)
	if (!(name in failed)) { failed[name] = 1; order[++nf] = name }
	next
}
/_test\.go:[0-9]+: / && cur != "" {
	n = ++count[cur]; lines[cur, n] = $0
}
END {
	if (nf == 0) exit
	print "== failed tests and what they logged (last 20 lines each; full log in .test-output/test.log)"
	for (i = 1; i <= nf; i++) {
		t = order[i]
		print "--- FAIL: " t
		from = count[t] > 20 ? count[t] - 19 : 1
		for (j = from; j <= count[t]; j++) print lines[t, j]
	}
}
