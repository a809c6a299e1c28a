# adapter.sh: sourced by every adapter under /usr/share/vmsnapshot/adapters.
# POSIX sh (dash runs it on Debian): no bashisms.
#
# What all adapters share: how to call vmsnapshot and how to turn its exit
# status into what the calling agent understands. Each agent gives some
# statuses a meaning of its own (Azure: 2 = "warning", counted as success;
# Google: 124 = timeout), so a failure must never come out as one of them.

# The command to run; tests point it at a work tree (no agent sets it).
: "${VMSNAPSHOT:=/usr/sbin/vmsnapshot}"

# vms_run ARG...: run vmsnapshot with stdin from /dev/null (an agent's stdin
# is nothing to read); its status is left in vms_rc.
vms_run() {
	# VMSNAPSHOT may hold words ("python3 -m vmsnapshot"): split on purpose.
	# shellcheck disable=SC2086
	$VMSNAPSHOT "$@" </dev/null
	vms_rc=$?
}

# vms_exec ARG...: become vmsnapshot (same pid), for agents that kill the
# script itself at their timeout: the signal must reach vmsnapshot, not a
# shell that would leave it running. Only where no exit status needs
# translating.
vms_exec() {
	# shellcheck disable=SC2086
	exec $VMSNAPSHOT "$@" </dev/null
}

# vms_status AGENT: the exit status to hand to AGENT for vms_rc.
# 0 stays 0; any failure becomes 1 unless AGENT reads 1 wrongly.
vms_status() {
	case $vms_rc in
	0) return 0 ;;
	esac
	case $1 in
	azure)
		# Microsoft's ScriptRunner counts 2 (PrePost_ScriptStatus_Warning)
		# as success: never hand it a 2 (vmsnapshot's usage error).
		[ "$vms_rc" -eq 2 ] && return 1
		return "$vms_rc" ;;
	google)
		# The guest agent reads 124 as SCRIPT_TIMED_OUT: keep it for that.
		[ "$vms_rc" -eq 124 ] && return 1
		return "$vms_rc" ;;
	*)
		return "$vms_rc" ;;
	esac
}

# vms_ini_get FILE SECTION KEY: the value of KEY in [SECTION] of an INI
# file (key = value or key: value, case-insensitive names), empty if absent.
vms_ini_get() {
	[ -r "$1" ] || return 0
	awk -v want_sec="$2" -v want_key="$3" '
		function trim(s) { gsub(/^[ \t]+|[ \t\r]+$/, "", s); return s }
		/^[ \t]*[#;]/ { next }
		/^[ \t]*\[/ {
			s = $0; sub(/^[ \t]*\[/, "", s); sub(/\].*$/, "", s)
			insec = (tolower(trim(s)) == tolower(want_sec)); next
		}
		insec && match($0, /[=:]/) {
			k = trim(substr($0, 1, RSTART - 1))
			if (tolower(k) == tolower(want_key)) {
				v = trim(substr($0, RSTART + 1))
			}
		}
		END { if (v != "") print v }' "$1"
}
