#!/bin/sh
# STONITH hook: stop the former primary's EC2 instance (force) with the AWS CLI.
#
#   fencing:
#     hooks:
#       - name: aws-stop
#         command: [/usr/local/lib/steward/fence-aws-ec2.sh, "{target_name}"]
#         timeout: 120s
#
# Instances carry the tag steward-member=<member name>. The agent's instance
# role needs ec2:DescribeInstances and ec2:StopInstances.
set -eu
member="$1"
id=$(aws ec2 describe-instances --filters "Name=tag:steward-member,Values=$member" "Name=instance-state-name,Values=pending,running,stopping" \
	--query 'Reservations[].Instances[].InstanceId' --output text)
[ -n "$id" ] || { echo "no running instance tagged steward-member=$member: nothing to fence"; exit 0; }
aws ec2 stop-instances --force --instance-ids $id >/dev/null
aws ec2 wait instance-stopped --instance-ids $id
