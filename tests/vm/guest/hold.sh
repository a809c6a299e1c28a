#!/bin/sh
# A held pre-script (native config, hold = true): quiesce as pre.sh does,
# print READY, and stay running until vmsnapshot closes stdin.
set -e
/etc/vmtest/pre.sh >&2
echo "held $$" > /run/vmtest/hold.state
echo READY
cat > /dev/null
echo released > /run/vmtest/hold.state
