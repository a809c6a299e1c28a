#!/bin/sh
# install-adapters.sh SRCDIR DESTDIR: install the backup-agent adapters
# (adapters/<platform>/...) the way agents and vmsnapshot's trust rules
# want them: what is executable in the tree is a script run as root, 0700;
# the rest (the sourced lib, documents for the agents) is 0644. Used by
# debian/rules and rpm/vmsnapshot.spec so both packages ship the same tree.
set -eu
src=$1
dest=$2
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac
[ -d "$src" ] || exit 0
cd "$src"
find . -type f ! -name '*.md' ! -name '.*' | sort | while IFS= read -r f; do
	if [ -x "$f" ]; then mode=0700; else mode=0644; fi
	install -D -m "$mode" "$f" "$dest/${f#./}"
done
