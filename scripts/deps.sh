#!/usr/bin/env bash
# Install the Debian packages given as arguments when any is missing.
# Idempotent and quiet when everything is present. Needs root (or sudo) to
# install; without it, it says what is missing and fails.
set -euo pipefail
missing=()
for p in "$@"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
		echo "deps: missing packages ${missing[*]} and not root (run: apt-get install ${missing[*]})" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
# Packaged services must not start on install: steward starts its own
# instances on free ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
	$SUDO chmod +x "$policy"
	created_policy=1
fi
cleanup() { if [ $created_policy -eq 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed ${missing[*]}"
