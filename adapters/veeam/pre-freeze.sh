#!/bin/sh
# Veeam Agent for Linux job pre-freeze script: Veeam's snapshot driver
# freezes and snapshots the block devices itself, so vmsnapshot only
# quiesces the applications (pre --no-freeze).
. "${VMSNAPSHOT_ADAPTERS:-/usr/share/vmsnapshot/adapters}/lib/adapter.sh"
vms_run pre --no-freeze --trigger veeam
vms_status veeam
