#!/bin/sh
# Veeam Agent for Linux job post-thaw script: release the quiescers, run
# the post-scripts, report.
. "${VMSNAPSHOT_ADAPTERS:-/usr/share/vmsnapshot/adapters}/lib/adapter.sh"
vms_run post
vms_status veeam
