#!/bin/sh
# Google guest agent pre-snapshot script (link or copy it to the agent's
# fixed path /etc/google/snapshots/pre.sh). The agent passes one argument,
# the disk list ("1/2,3/4", possibly empty), discards the output, reads exit
# 124 as a timeout and any other non-zero status as a script error (then no
# snapshot is taken). It does not freeze on Linux, so vmsnapshot does.
#
# The agent SIGKILLs this script after [Snapshots] timeout_in_seconds of
# /etc/default/instance_configs.cfg (default 60): pre-scripts and the
# freeze must fit in it. The same value bounds the freeze (watchdog
# deadline, --freeze-timeout): if post.sh has not come by then, the agent's
# request is over anyway and vmsnapshot thaws (the report says crash).
# exec: the agent's SIGKILL at its timeout must hit vmsnapshot itself (its
# guardian then undoes the freeze), and vmsnapshot never exits 124.
. "${VMSNAPSHOT_ADAPTERS:-/usr/share/vmsnapshot/adapters}/lib/adapter.sh"
cfg=${VMSNAPSHOT_GOOGLE_CONFIG:-/etc/default/instance_configs.cfg}
timeout=$(vms_ini_get "$cfg" Snapshots timeout_in_seconds)
case $timeout in
'' | *[!0-9]* | 0) timeout=60 ;;
esac
[ "$timeout" -le 3600 ] || timeout=3600
vms_exec pre --trigger google --freeze-timeout "$timeout"
