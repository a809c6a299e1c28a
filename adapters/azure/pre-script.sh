#!/bin/sh
# Azure Backup extension (VMSnapshotLinux) pre-script.
#
# Microsoft's extension runs `sh THIS [preScriptParams...]`, then freezes
# with its own helper, snapshots, thaws and runs the post-script. So here
# vmsnapshot only quiesces: pre-scripts and held quiescers, no freeze.
# `vmsnapshot azure enable` points /etc/azure/VMSnapshotScriptPluginConfig.json
# at this file. The extension's params are ignored: vmsnapshot's own
# configuration says what to run.
. "${VMSNAPSHOT_ADAPTERS:-/usr/share/vmsnapshot/adapters}/lib/adapter.sh"
vms_run pre --no-freeze --trigger azure
vms_status azure
