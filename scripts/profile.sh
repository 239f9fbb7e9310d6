#!/bin/bash
# profile.sh - load-independent cost of one I/O in holdfastd.
#
# Wall-clock numbers on a shared machine are noise; instruction and syscall
# counts are not.  This script serves a null LUN from build/holdfastd -t 1
# on loopback, drives it with `qemu-img bench -c N -d DEPTH -s 4k` (reads)
# and reports, per I/O:
#   - user-space instructions of the daemon (valgrind --tool=callgrind),
#     as the difference of two runs of N1 and N2 I/Os, so that login and
#     logout cancel out; the callgrind file of the long run is kept for
#     callgrind_annotate;
#   - system calls and context switches of the daemon (perf stat on the
#     raw_syscalls:sys_enter tracepoint and the context-switches software
#     event; hardware counters are often unavailable in VMs), same
#     difference method, without valgrind.
#
# Environment (defaults in brackets):
#   PROFILE_N1=1000 PROFILE_N2=11000   the two run lengths
#   PROFILE_DEPTH=32                   I/Os in flight
#   PROFILE_WRITE=0                    1: writes instead of reads
#   PROFILE_OUT=build/profile          where callgrind.out and the log go
#   PROFILE_SKIP=                      "callgrind" or "syscalls" to skip one
#   PROFILE_LUN_OPTS=                  extra LUN keys, e.g. 'rerror = "retry";
#                                      werror = "retry";' (hang-on-error's
#                                      cost on a healthy LUN)
#   HOLDFAST_BUILD=build
#
# Caveat: valgrind counts each iteration of a `rep stos/movs` string
# instruction as one instruction, so glibc's memset/memcpy of 4 KiB (ERMS
# variants) show up as ~4,100 "instructions" that cost ~100 cycles on real
# hardware.  Read memset/memcpy lines in that light.

set -u
cd "$(dirname "$0")/.."
REPO=$PWD
BUILD=${HOLDFAST_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
N1=${PROFILE_N1:-1000}
N2=${PROFILE_N2:-11000}
DEPTH=${PROFILE_DEPTH:-32}
WRITE=${PROFILE_WRITE:-0}
OUT=${PROFILE_OUT:-$BUILD/profile}
SKIP=${PROFILE_SKIP:-}
LUN_OPTS=${PROFILE_LUN_OPTS:-}
IQN=iqn.2026-11.org.example:profile

die() { echo "profile: $*" >&2; exit 1; }
[ -x "$BUILD/holdfastd" ] || die "$BUILD/holdfastd not found (make)"
command -v qemu-img >/dev/null || die "qemu-img not found"
mkdir -p "$OUT" || die "cannot create $OUT"
DIR=$(mktemp -d /tmp/holdfast-profile.XXXXXX) || die "mktemp failed"
PID=
cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill -TERM "$PID" 2>/dev/null
		for _ in $(seq 100); do
			kill -0 "$PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$PID" 2>/dev/null
	fi
	rm -rf "$DIR"
}
trap cleanup EXIT

PORT=$(python3 -c '
import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
CTL=$((1000 + RANDOM % 30000))
cat >"$DIR/p.conf" <<EOF
portals = [ "127.0.0.1:$PORT" ];
targets = (
  { name = "$IQN";
    initiators = [ "127.0.0.1" ];
    luns = ( { lun = 1; backend = "null"; size = "256M"; $LUN_OPTS } ); } );
EOF
URL=iscsi://127.0.0.1:$PORT/$IQN/1

start() {	# [wrapper...]: start holdfastd, wait for the port
	TGT_IPC_SOCKET=$DIR/hf.sock "$@" "$BUILD/holdfastd" -f -t 1 \
		-c "$DIR/p.conf" -C "$CTL" >"$OUT/holdfastd.log" 2>&1 </dev/null &
	PID=$!
	for _ in $(seq 300); do
		kill -0 "$PID" 2>/dev/null || die "holdfastd died (see $OUT/holdfastd.log)"
		(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
		sleep 0.1
	done
	die "holdfastd did not start"
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null; PID=; }
bench() {	# COUNT
	local args=(-c "$1" -d "$DEPTH" -s 4k -f raw)
	[ "$WRITE" = 1 ] && args+=(-w)
	timeout 300 qemu-img bench "${args[@]}" "$URL" >/dev/null 2>&1 ||
		die "qemu-img bench -c $1 failed"
}
what="4 KiB $([ "$WRITE" = 1 ] && echo writes || echo reads) QD$DEPTH, null LUN, 1 reactor"

if [[ $SKIP != *callgrind* ]]; then
	command -v valgrind >/dev/null || die "valgrind not found"
	start valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p"
	bench 200	# warm up: first-touch allocations, lazy binding
	ir() {	# COUNT -> instructions of that run
		local tag=run$1 f
		callgrind_control -z "$PID" >/dev/null
		bench "$1"
		callgrind_control -d "$tag" "$PID" >/dev/null
		for _ in $(seq 50); do
			f=$(grep -l "^desc: Trigger: dump $tag" "$OUT"/callgrind.out.$PID.* 2>/dev/null)
			[ -n "$f" ] && break
			sleep 0.2
		done
		[ -n "$f" ] || die "no callgrind dump for $tag"
		[ "$1" = "$N2" ] && cp "$f" "$OUT/callgrind.out"
		sed -n 's/^summary: //p' "$f"
	}
	rm -f "$OUT"/callgrind.out.*
	i1=$(ir "$N1"); i2=$(ir "$N2")
	stop
	# glibc's memset/memcpy: rep-string instructions, see the caveat above
	rep=$(callgrind_annotate --threshold=100 "$OUT/callgrind.out" 2>/dev/null |
		awk '/Auto-annotated source/ { exit }
		     /__mem(set|cpy|move)_/ && $1 ~ /^[0-9,]+$/ {
			g = $1; gsub(",", "", g); t += g }
		     END { print t + 0 }')
	echo "profile: $what: $(( (i2 - i1) / (N2 - N1) )) instructions/IO" \
		"(user space; callgrind, $N2 - $N1 I/Os);" \
		"$(( (i2 - i1) / (N2 - N1) - rep / N2 )) without glibc memset/memcpy"
	callgrind_annotate --threshold=100 "$OUT/callgrind.out" 2>/dev/null |
		sed -n '/^Ir .*file:function/,$p' | grep -v -e clone.S \
		-e start_thread -e reactor_thread -e '^--' | sed -n '2,21p' |
		sed "s|$REPO/||g; s| \[.*\]||" | awk -v n=$N2 '{ g = $1; gsub(",", "", g);
			printf "  %6.0f/IO %s\n", g / n, $0 }'
	echo "  (exclusive, whole run of $N2 I/Os; $OUT/callgrind.out)"
fi

if [[ $SKIP != *syscalls* ]]; then
	command -v perf >/dev/null || die "perf not found"
	start
	bench 200
	# per kind too: the tracepoints of the calls the data path makes
	KINDS="read readv recvfrom recvmsg write writev sendmsg sendto
	       epoll_wait epoll_pwait epoll_ctl io_uring_enter futex sched_yield"
	evs=(-e raw_syscalls:sys_enter -e context-switches)
	for k in $KINDS; do evs+=(-e "syscalls:sys_enter_$k"); done
	sc() {	# COUNT -> "name count" lines: the bench is perf's workload,
		# so the daemon is counted exactly while it runs
		local f=$DIR/perf.$1 args=(-c "$1" -d "$DEPTH" -s 4k -f raw)
		[ "$WRITE" = 1 ] && args+=(-w)
		perf stat -x, "${evs[@]}" \
			-p "$PID" -o "$f" -- timeout 300 qemu-img bench \
			"${args[@]}" "$URL" >/dev/null 2>&1 ||
			die "perf stat / qemu-img bench -c $1 failed"
		awk -F, '$3 ~ /:|context-switches/ {
			sub(/.*:(sys_enter_)?/, "", $3); print $3, $1 }' "$f"
	}
	sc "$N1" >"$DIR/sc1"
	sc "$N2" >"$DIR/sc2"
	stop
	python3 - "$DIR/sc1" "$DIR/sc2" "$N1" "$N2" "$what" <<'EOF'
import sys
def load(f):
    d = {}
    for line in open(f):
        k, v = line.split()
        try:
            d[k] = float(v)
        except ValueError:	# <not counted>
            d[k] = 0.0
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
n = float(sys.argv[4]) - float(sys.argv[3])
per = {k: (b[k] - a.get(k, 0)) / n for k in b}
print("profile: %s: %.2f syscalls/IO, %.3f context switches/IO (perf stat)"
      % (sys.argv[5], per.get("sys_enter", 0),
         per.get("context-switches", 0)))
print("  by kind (perf stat, per I/O): " + ", ".join(
    "%s %.3f" % (k, v) for k, v in sorted(per.items(), key=lambda x: -x[1])
    if k not in ("sys_enter", "context-switches") and v >= 0.0005))
EOF
	if command -v strace >/dev/null; then
		start strace -f -c -o "$DIR/strace.out"
		bench "$N2"
		# stop holdfastd itself: strace then writes its summary and exits
		kill -TERM $(pgrep -P "$PID") 2>/dev/null
		wait "$PID" 2>/dev/null
		PID=
		echo "  strace -c -f, one run of $N2 I/Os incl. login (calls/IO):"
		awk -v n="$N2" '$1 ~ /^[0-9.]+$/ && NF >= 5 {
			printf "  %8.3f %s\n", $4 / n, $NF }' "$DIR/strace.out" |
			sort -rn | head -8
	fi
fi
