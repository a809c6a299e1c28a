#!/bin/sh
# The guest's post-script: leave a marker on both disks (which must not be
# in the snapshot) and resume the application.
set -e
run=/run/vmtest
token=$(cat $run/quiesce-token 2>/dev/null || echo none)
echo "$token" > /var/lib/vmtest/post-marker
echo "$token" > /data/app/post-marker
kill -USR2 "$(cat $run/app.pid)"
echo "post: application resumed after $token"
