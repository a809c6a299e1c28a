#!/bin/sh
# Azure Backup extension (VMSnapshotLinux) post-script: runs after the
# extension's own thaw; vmsnapshot releases the held quiescers, runs the
# post-scripts and reports. See pre-script.sh.
. "${VMSNAPSHOT_ADAPTERS:-/usr/share/vmsnapshot/adapters}/lib/adapter.sh"
vms_run post
vms_status azure
