#!/bin/sh
# install-hooks.sh SRCDIR DESTDIR: install the application hooks the way
# vmsnapshot's trust check accepts them (design: scripts owned by root,
# mode 700). Top-level files of SRCDIR are hooks; files in subdirectories
# (lib/*.sh, sourced by the hooks) are support files, 0644. Used by
# debian/rules and rpm/vmsnapshot.spec so both packages ship the same tree.
set -eu
src=$1
dest=$2
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac
[ -d "$src" ] || exit 0
cd "$src"
find . -type f ! -name '*.md' ! -name '.*' | sort | while IFS= read -r f; do
	case $f in
	./*/*) mode=0644 ;;
	*) mode=0700 ;;
	esac
	install -D -m "$mode" "$f" "$dest/${f#./}"
done
