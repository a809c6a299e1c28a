#!/usr/bin/env bash
# The built-in demo: two loop filesystems (ext4, xfs), a sample application
# plugin in Azure's config format, one snapshot of both disk images taken
# while frozen, and the report. Everything it makes lives under one temporary
# directory and is torn down on exit, also on failure.
set -euo pipefail
PY=${PY:-python3}
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it makes loop devices)" >&2; exit 1; }

# Loop filesystems come from the module the tests and the bench use too.
loopfs() { (cd "$SRC" && "$PY" -m loopfs "$@"); }

work=$(mktemp -d /tmp/vmsnapshot-demo.XXXXXX)
chmod 700 "$work"
cleanup() {
	# Thaws, unmounts and detaches whatever is below $work, made or not.
	loopfs sweep "$work" || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/mnt" "$work/images" "$work/snapshots" "$work/plugin"
make_fs() { # name fstype
	local dev
	dev=$(loopfs make "$work/mnt" "$1" "$2" --image-dir "$work/images")
	echo "demo: $2 on $dev mounted at $work/mnt/$1"
}
make_fs app-ext4 ext4
make_fs app-xfs xfs

# The sample application: its pre-script flushes and records a marker, its
# post-script records that the snapshot is done. Root-owned, 700.
cat > "$work/plugin/pre-script.sh" <<SH
#!/bin/sh
echo "quiesced at \$(date +%T.%N) with args: \$*" > "$work/mnt/app-ext4/app-state"
sync "$work/mnt/app-ext4/app-state"
SH
cat > "$work/plugin/post-script.sh" <<SH
#!/bin/sh
echo "resumed at \$(date +%T.%N)" >> "$work/mnt/app-ext4/app-state"
SH
chmod 700 "$work/plugin/pre-script.sh" "$work/plugin/post-script.sh"
cat > "$work/plugin/VMSnapshotScriptPluginConfig.json" <<JSON
{
    "pluginName": "ScriptRunner",
    "preScriptLocation": "$work/plugin/pre-script.sh",
    "postScriptLocation": "$work/plugin/post-script.sh",
    "preScriptParams": ["demo", ""],
    "postScriptParams": ["", ""],
    "preScriptNoOfRetries": 0,
    "postScriptNoOfRetries": 0,
    "timeoutInSeconds": 30,
    "continueBackupOnFailure": true,
    "fsFreezeEnabled": true
}
JSON
chmod 600 "$work/plugin/VMSnapshotScriptPluginConfig.json"

echo "demo: vmsnapshot check"
(cd "$SRC" && "$PY" -m vmsnapshot check --config "$work/plugin/VMSnapshotScriptPluginConfig.json")

echo "demo: vmsnapshot run (snapshot = copying both disk images while frozen)"
set +e
(cd "$SRC" && "$PY" -m vmsnapshot run \
	--config "$work/plugin/VMSnapshotScriptPluginConfig.json" \
	--mount "$work/mnt/app-ext4" --mount "$work/mnt/app-xfs" \
	--status-file "$work/status.json" -- \
	cp --sparse=always "$work/images/app-ext4.img" "$work/images/app-xfs.img" \
	"$work/snapshots/")
rc=$?
set -e
echo "demo: exit status $rc; status file:"
cat "$work/status.json"

echo "demo: what the snapshot holds (mounted read-only, no journal replay):"
e2fsck -fn "$work/snapshots/app-ext4.img" >/dev/null 2>&1 \
	&& echo "  ext4 image: e2fsck -fn clean"
for fs in ext4 xfs; do
	opts=ro,noload; [ $fs = xfs ] && opts=ro,norecovery,nouuid
	loopfs mount-image "$work/snapshots/app-$fs.img" "$work/mnt/snap-$fs" \
		-o $opts >/dev/null
done
echo "  app-state in the snapshot (written by the pre-script, not the post-script):"
sed 's/^/    /' "$work/mnt/snap-ext4/app-state"
echo "  app-state now:"
sed 's/^/    /' "$work/mnt/app-ext4/app-state"
exit $rc
