# Sourced by the vmsnapshot database hooks (bash): a client session kept open
# as a coprocess, so a lock or an online backup lives exactly as long as the
# hook holds it, and the held-hook protocol (READY, hold until EOF).
#
# The caller sets PROG and MARK_FORMAT (a printf format that makes the
# client echo its argument: "SELECT '%s';" or "\\echo %s").

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 077
cd / || exit 1
trap '' PIPE    # a dead client must give EPIPE, not kill us unreleased

DB_IN='' DB_OUT='' DB_PID='' MARKS=0 REPLY_LINES=()

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { local rc=$1; shift; log "$*"; exit "$rc"; }

# Secrets never go on a command line (ps shows them): only in a file that
# no one but root can read.
check_credentials() {
	local owner mode
	[ -f "$1" ] || die 1 "credentials file $1 not found"
	read -r owner mode < <(stat -L -c '%u %a' -- "$1")
	[ "$owner" = 0 ] && [ $((8#$mode & 8#077)) = 0 ] ||
		die 1 "credentials file $1 must be owned by root with no" \
			"group/other access (chown root:root, chmod 600)"
}

# Run unheld, a lock would be gone before the freeze while the report still
# claimed application consistency: refuse instead.
require_held() {
	[ "$(readlink /proc/self/fd/0)" != /dev/null ] &&
		{ [ -z "${VMSNAPSHOT_PHASE-}" ] || [ "${VMSNAPSHOT_HOLD-}" = 1 ]; } ||
		die 1 "pre $1 until EOF on stdin: configure this plugin with" \
			"hold = true"
}

make_state_dir() {
	mkdir -p -m 700 -- "$1" || die 1 "cannot create state directory $1"
}

write_state() {    # write_state PATH: stdin -> PATH, atomically
	local tmp="${1%/*}/.${1##*/}.$$"
	cat >"$tmp" && mv -f -- "$tmp" "$1"
}

session_start() {    # session_start ARGV...
	coproc DBCLIENT { exec "$@"; }
	DB_PID=$DBCLIENT_PID
	# Own copies: bash closes the coproc's fds as soon as it exits, which
	# would lose its last output.
	local rfd=${DBCLIENT[0]} wfd=${DBCLIENT[1]}
	exec {DB_IN}>&"$wfd" {DB_OUT}<&"$rfd"
	exec {wfd}>&- {rfd}<&-
}

# session_query TIMEOUT STATEMENT...: run statements in the held session;
# result lines land in REPLY_LINES. Fails when the session ends (the clients
# run so that they exit at the first error) or TIMEOUT seconds pass.
session_query() {
	local timeout=$1 mark line
	shift
	MARKS=$((MARKS + 1))
	mark="vmsnapshot-mark-$MARKS-$$"
	REPLY_LINES=()
	# shellcheck disable=SC2059
	printf '%s\n' "$@" "$(printf "$MARK_FORMAT" "$mark")" 1>&"$DB_IN" \
		2>/dev/null || return 1
	while IFS= read -r -t "$timeout" -u "$DB_OUT" line; do
		[ "$line" = "$mark" ] && return 0
		REPLY_LINES+=("$line")
	done
	return 1
}

session_end() {    # EOF to the client, then reap it
	[ -n "$DB_IN" ] && exec {DB_IN}>&-
	DB_IN=''
	[ -n "$DB_PID" ] && wait "$DB_PID" 2>/dev/null
	DB_PID=''
}

# hold MAX_HOLD PING: after READY, wait for EOF on stdin. Returns 0 on EOF
# (release now), 3 when the client session died (the lock is lost), 5 after
# MAX_HOLD seconds (0 = never). Touches no disk: filesystems may be frozen.
hold() {
	local max=$1 ping=$2 start=$SECONDS last_ping=$SECONDS line rc
	while :; do
		IFS= read -r -t 1 line
		rc=$?
		[ "$rc" -le 128 ] && [ "$rc" -ne 0 ] && return 0
		[ -z "$DB_PID" ] || kill -0 "$DB_PID" 2>/dev/null || return 3
		[ "$max" -gt 0 ] && [ $((SECONDS - start)) -ge "$max" ] && return 5
		# The ping makes the client notice a killed session and exit. Its
		# reply is not awaited: a server log on a frozen disk may stall it,
		# which is no lost lock.
		if [ -n "$DB_PID" ] && [ $((SECONDS - last_ping)) -ge 2 ]; then
			last_ping=$SECONDS
			printf '%s\n' "$ping" 1>&"$DB_IN" 2>/dev/null
		fi
	done
}
