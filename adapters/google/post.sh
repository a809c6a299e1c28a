#!/bin/sh
# Google guest agent post-snapshot script (/etc/google/snapshots/post.sh):
# thaw, release the quiescers, run the post-scripts, report. The one
# argument (the disk list) is not needed. See pre.sh.
. "${VMSNAPSHOT_ADAPTERS:-/usr/share/vmsnapshot/adapters}/lib/adapter.sh"
vms_exec post
