#!/bin/sh
# STONITH hook: power the former primary's host off through its BMC.
#
#   fencing:
#     hooks:
#       - name: ipmi
#         command: [/usr/local/lib/steward/fence-ipmi.sh, "{target_name}"]
#         timeout: 20s
#
# The BMC address of each member is looked up in /etc/steward/bmc/<member>
# (one line: address); the password in /etc/steward/bmc/password (mode 0600).
# Exit 0 only once the chassis reports power off.
set -eu
member="$1"
bmc=$(cat "/etc/steward/bmc/$member")
ipmitool -I lanplus -H "$bmc" -U steward -f /etc/steward/bmc/password chassis power off
for i in 1 2 3 4 5 6 7 8 9 10; do
	if ipmitool -I lanplus -H "$bmc" -U steward -f /etc/steward/bmc/password chassis power status | grep -q "is off"; then
		exit 0
	fi
	sleep 1
done
echo "chassis of $member did not report power off" >&2
exit 1
