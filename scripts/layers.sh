#!/bin/sh
# layers.sh LAYER... - fail when a layer includes a header of a layer above
# it, or another layer's private (*_internal.h) header.
#
# The layers are given lowest first (the Makefile's LAYERS).  A file may
# include headers of its own folder and the public headers of the folders
# before it; target/main.c (the top) may include any public header.  Quoted
# includes are resolved by base name, as the compiler does with one -I per
# layer folder.
#
# A layer that must talk only to some of the layers below it says so in
# NARROW below: the iSCSI layer sees the SCSI layer and the core, never the
# hang engine, the LUN internals or a backend (task management and "may I
# solicit data?" are SCSI-layer calls).
NARROW="target/iscsi:target/core,target/scsi"
set -eu
[ $# -gt 0 ] || { echo "usage: $0 LAYER..." >&2; exit 2; }
rank=0
map=$(mktemp)
trap 'rm -f "$map"' EXIT
for dir in "$@"; do
	rank=$((rank + 1))
	for h in "$dir"/*.h; do
		[ -e "$h" ] || continue
		printf '%s %s %s\n' "$(basename "$h")" "$rank" "$dir" >>"$map"
	done
done
top=$((rank + 1))
bad=0
check() {	# file rank dir
	grep -n '^#include "' "$1" | while IFS= read -r line; do
		inc=$(printf '%s\n' "$line" | sed 's/.*#include "\([^"]*\)".*/\1/')
		ln=${line%%:*}
		hit=$(awk -v h="$(basename "$inc")" '$1 == h { print $2, $3 }' "$map")
		[ -n "$hit" ] || continue	# not a project header
		hrank=${hit%% *}
		hdir=${hit#* }
		allowed=$(printf '%s\n' $NARROW | awk -F: -v d="$3" '$1 == d { print $2 }')
		if [ -n "$allowed" ] && [ "$hdir" != "$3" ] &&
		   ! printf ',%s,' "$allowed" | grep -q ",$hdir,"; then
			echo "$1:$ln: includes $inc from $hdir; $3 may only use $allowed" >&2
			echo x
		elif [ "$hrank" -gt "$2" ]; then
			echo "$1:$ln: includes $inc from $hdir, a higher layer than $3" >&2
			echo x
		elif [ "$hdir" != "$3" ] && case $inc in *_internal.h) true ;; *) false ;; esac; then
			echo "$1:$ln: includes $hdir's private header $inc" >&2
			echo x
		fi
	done
}
rank=0
for dir in "$@"; do
	rank=$((rank + 1))
	for f in "$dir"/*.[ch]; do
		[ -e "$f" ] || continue
		[ -z "$(check "$f" "$rank" "$dir")" ] || bad=1
	done
done
for f in target/main.c; do
	[ -e "$f" ] || continue
	[ -z "$(check "$f" "$top" target)" ] || bad=1
done
if [ "$bad" -ne 0 ]; then
	echo "layers.sh: layering violated (order, lowest first: $*)" >&2
	exit 1
fi
echo "layers.sh: ok ($*)"
