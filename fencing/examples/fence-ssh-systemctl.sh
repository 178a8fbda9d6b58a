#!/bin/sh
# STONITH hook: stop the former primary's database service over ssh.
#
#   fencing:
#     hooks:
#       - name: ssh-stop
#         command: [/usr/local/lib/steward/fence-ssh-systemctl.sh, "{target_host}", "postgresql@15-main"]
#         timeout: 15s
#
# Exit 0 only when the service is confirmed stopped: steward (fencing.mode
# required) promotes only after a hook exits 0.
set -eu
host="$1"
unit="${2:-postgresql}"
ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=yes "steward-fence@$host" \
	"sudo systemctl kill --signal=SIGKILL '$unit'; sudo systemctl stop '$unit'; ! systemctl is-active --quiet '$unit'"
