#!/bin/sh
# debian-version.sh DESCRIBE [COMMITS]: a Debian version from the output of
# `git describe --tags --always --dirty` (the Makefile's VERSION), so that
# newer builds always sort higher in dpkg:
#
#   v1.2.3                  -> 1.2.3
#   v1.2.3-4-gabc1234       -> 1.2.3+git4.gabc1234
#   v1.2.3-4-gabc1234-dirty -> 1.2.3+git4.gabc1234.dirty
#   v1.2.3-dirty            -> 1.2.3+dirty
#   abc1234[-dirty]         -> 0.0.0~git<COMMITS>.abc1234[.dirty]  (no tag yet)
#   dev, empty              -> 0.0.0~dev
#
# COMMITS defaults to `git rev-list --count HEAD`. The result never contains
# '-' (which would make dpkg read a Debian revision) or '_'.
set -eu
d="${1:-}"
d="${d#v}"
dirty=""
case "$d" in *-dirty) dirty=".dirty"; d="${d%-dirty}" ;; esac
if [ -z "$d" ] || [ "$d" = dev ]; then
	echo "0.0.0~dev"
elif echo "$d" | grep -Eq '^[0-9a-f]{7,40}$'; then
	# No tag yet: describe printed just the abbreviated commit.
	n="${2:-$(git rev-list --count HEAD 2>/dev/null || echo 0)}"
	echo "0.0.0~git$n.$d$dirty"
else
	base="${d%%-*}"
	if [ "$base" = "$d" ]; then
		[ -n "$dirty" ] && echo "$base+dirty" || echo "$base"
	else
		echo "$base+git$(echo "${d#*-}" | tr -- '-_' '..')$dirty"
	fi
fi
