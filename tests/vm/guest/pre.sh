#!/bin/sh
# The guest's pre-script (Azure format config): quiesce the application
# (checkpoint, fsync, pause) and leave a marker on both disks, so the host
# can tell that the snapshot holds what the pre-script wrote.
# /run/vmtest/pre-mode "hang" makes it hang, for the timeout scenario.
set -e
run=/run/vmtest
if [ "$(cat $run/pre-mode 2>/dev/null)" = hang ]; then
	echo "pre: hanging on purpose"
	exec sleep 3600
fi
token=$(cat /proc/sys/kernel/random/uuid)
echo "$token" > $run/quiesce-token
echo "$token" > /var/lib/vmtest/pre-marker
echo "$token" > /data/app/pre-marker
kill -USR1 "$(cat $run/app.pid)"
n=0
until grep -q "^paused $token" $run/app.state 2>/dev/null; do
	n=$((n + 1))
	if [ $n -gt 400 ]; then
		echo "pre: the application did not pause" >&2
		exit 1
	fi
	sleep 0.05
done
echo "pre: application quiesced at checkpoint $token"
