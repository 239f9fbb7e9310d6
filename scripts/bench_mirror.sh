#!/bin/bash
# bench_mirror.sh - what moving a LUN to new storage costs (issue 11).
#
#   1. Copy throughput: a mirror job of an idle file LUN (BENCH_SIZE of
#      random data) from its start until it is ready with every byte
#      written to the destination (bytes_done), synced, against
#      `qemu-img convert` of the same file to the same directory, best of BENCH_REPEAT runs each;
#      the ratio mirror/convert (goal >= 0.80).  convert reads and writes
#      with O_DIRECT (-T none -t none), as the LUN does.
#   2. Guest write latency in write-blocking mode: 4 KiB writes at queue
#      depth 1 (qemu-img bench over iSCSI) on a LUN whose store is on one
#      FUSE mount (fusefail, write_delay=SRC_US), mirroring in
#      write-blocking mode to a file on a second FUSE mount
#      (write_delay=DST_US); against the same writes, in turn, to a LUN
#      on each mount alone.  Reported: latency(write-blocking) / max(source,
#      destination) (goal ~ 1.0: source and destination are written in
#      parallel) and / (source + destination) (what writing one after
#      the other would cost).
#
# Not a test.  Loopback only; holdfastd and the fusefail mounts are
# stopped by PID / unmounted at exit.
#
# Environment: BENCH_PARTS="copy latency" (either or both)
#              BENCH_MIRROR_PARAMS= (more job params for part 1, e.g.
#                max_inflight=67108864)
#              BENCH_SIZE=1G  BENCH_REPEAT=3  BENCH_LAT_COUNT=500
#              BENCH_SRC_US=4000  BENCH_DST_US=8000
#              BENCH_DIR= (default: a fresh one under /var/tmp)
#              HOLDFAST_BUILD=build
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
SIZE=${BENCH_SIZE:-1G}
REPEAT=${BENCH_REPEAT:-3}
LAT_COUNT=${BENCH_LAT_COUNT:-500}
PARTS=${BENCH_PARTS:-copy latency}
MPARAMS=${BENCH_MIRROR_PARAMS:+,$BENCH_MIRROR_PARAMS}
SRC_US=${BENCH_SRC_US:-4000}
DST_US=${BENCH_DST_US:-8000}
BUILD=${HOLDFAST_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
IQN=iqn.2026-11.org.example:benchmirror
FUSEFAIL=$BUILD/tools/fusefail

die() { echo "bench_mirror: $*" >&2; exit 1; }
[ -x "$BUILD/holdfastd" ] && [ -x "$BUILD/holdfastadm" ] || die "make first"
[ -x "$FUSEFAIL" ] || die "$FUSEFAIL not built (make $FUSEFAIL)"
command -v qemu-img >/dev/null || die "qemu-img not found"
command -v fusermount3 >/dev/null || die "fusermount3 not found"
[ -e /dev/fuse ] || die "no /dev/fuse"

if [ -n "${BENCH_DIR:-}" ]; then
	DIR=$BENCH_DIR; mkdir -p "$DIR" || die "cannot create $DIR"; OWN_DIR=0
else
	DIR=$(mktemp -d /var/tmp/holdfast-bench-mirror.XXXXXX) || die "mktemp"
	OWN_DIR=1
fi
HF_PID=
FF_PIDS=
stop_daemon() {
	if [ -n "$HF_PID" ] && kill -0 "$HF_PID" 2>/dev/null; then
		kill -TERM "$HF_PID"; wait "$HF_PID" 2>/dev/null
	fi
	HF_PID=
}
cleanup() {
	stop_daemon
	for m in "$DIR/mnt-src" "$DIR/mnt-dst"; do
		mountpoint -q "$m" 2>/dev/null || continue
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null
	done
	for p in $FF_PIDS; do
		kill -0 "$p" 2>/dev/null && { kill -TERM "$p"; wait "$p" 2>/dev/null; }
	done
	if [ "$OWN_DIR" = 1 ]; then rm -rf "$DIR"
	else rm -rf "$DIR"/src.img "$DIR"/mirror.raw "$DIR"/convert.raw \
		"$DIR"/fs-src "$DIR"/fs-dst; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
CTL=$((1000 + RANDOM % 30000))
adm() { TGT_IPC_SOCKET=$DIR/hf.sock "$BUILD/holdfastadm" -C "$CTL" "$@"; }

# start_daemon CONF_LUNS: holdfastd on a fresh port with these LUNs
start_daemon() {
	PORT=$(free_port)
	cat >"$DIR/mirror.conf" <<EOF
portals = [ "127.0.0.1:$PORT" ];
targets = (
  { name = "$IQN"; initiators = [ "127.0.0.1" ];
    luns = ( $1 ); } );
EOF
	TGT_IPC_SOCKET=$DIR/hf.sock "$BUILD/holdfastd" -f -c "$DIR/mirror.conf" \
		-C "$CTL" >>"$DIR/holdfastd.log" 2>&1 </dev/null &
	HF_PID=$!
	for i in $(seq 150); do
		(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
		kill -0 "$HF_PID" 2>/dev/null || { cat "$DIR/holdfastd.log"; die "holdfastd died"; }
		sleep 0.1
	done
	die "holdfastd did not listen"
}

# job_state ID: prints "STATE MODE", exits 2 if the job is gone
job_state() {
	adm --op show --mode job --json | python3 -c "
import json, sys
js = [x for x in json.load(sys.stdin)['jobs'] if x['id'] == $1]
if not js: sys.exit(2)
j = js[0]
print(j['state'], j['active_mode'], j.get('error') or '')"
}

# wait_ready ID: poll every 20 ms until ready; dies on failed/cancelled
wait_ready() {
	local s
	while :; do
		s=$(job_state "$1") || die "job $1 vanished"
		case $s in
			ready*|completed*) return 0 ;;
			failed*|cancelled*) die "job $1: $s" ;;
		esac
		sleep 0.02
	done
}

# wait_copied ID BYTES: poll every 20 ms until the job is ready and BYTES
# have been written to the destination (ready alone may still have up to
# a second of copies in flight).  This loop is timed: it reads the text
# form of show with shell builtins only, because starting an interpreter
# per poll (python3 takes 0.1-0.6 s on a busy machine) would add most of
# a poll interval to the mirror's time and nothing to convert's.
wait_copied() {
	local line in st done err
	while :; do
		in=0 st= done=0 err=
		while IFS= read -r line; do
			case $line in
				"Job: $1") in=1 ;;
				Job:*) in=0 ;;
				*"State: "*) [ "$in" = 1 ] && st=${line##*State: } ;;
				*"Progress: "*)
					[ "$in" = 1 ] || continue
					done=${line##*Progress: }; done=${done%%/*} ;;
				*"Error: "*) [ "$in" = 1 ] && err=${line##*Error: } ;;
			esac
		done < <(adm --op show --mode job)
		case $st in
			ready|completed) [ "$done" -ge "$2" ] && return 0 ;;
			failed|cancelled) die "job $1: $st $err" ;;
			"") die "job $1 vanished" ;;
		esac
		sleep 0.02
	done
}

size_mib=$(python3 -c '
import sys
s = sys.argv[1].strip(); m = {"M": 1, "G": 1024}
print(int(float(s[:-1]) * m[s[-1].upper()]) if s[-1].upper() in m else int(s) >> 20)
' "$SIZE")

# ------------------------------------------------------------ 1. throughput
copy_part() {
echo "bench_mirror: mirror job of an idle $SIZE LUN vs qemu-img convert"
dd if=/dev/urandom of="$DIR/src.img" bs=1M count="$size_mib" status=none ||
	die "cannot write $DIR/src.img"
sync
start_daemon "{ lun = 1; backend = \"file\"; path = \"$DIR/src.img\"; direct = true; }"
best_conv=0; best_job=0
for r in $(seq "$REPEAT"); do
	rm -f "$DIR/convert.raw" "$DIR/mirror.raw"; sync
	t0=$(date +%s.%N)
	qemu-img convert -f raw -O raw -T none -t none "$DIR/src.img" "$DIR/convert.raw" ||
		die "qemu-img convert failed"
	sync; t1=$(date +%s.%N)
	conv=$(python3 -c "print('%.1f' % ($size_mib / ($t1 - $t0)))")
	rm -f "$DIR/convert.raw"; sync
	t0=$(date +%s.%N)
	id=$(adm --op new --mode job --tid 1 --lun 1 --params \
		"type=mirror,target=$DIR/mirror.raw,copy_mode=background$MPARAMS" | awk '{print $2}')
	[ -n "$id" ] || die "job new failed"
	wait_copied "$id" $((size_mib << 20))
	sync; t1=$(date +%s.%N)
	job=$(python3 -c "print('%.1f' % ($size_mib / ($t1 - $t0)))")
	# the job's own clock, for reference (from its start to the last
	# copy landing; no holdfastadm, no poll, no sync)
	own=$(adm --op show --mode job --json | python3 -c "
import json, sys
j = [x for x in json.load(sys.stdin)['jobs'] if x['id'] == $id][0]
print('%.1f' % ($size_mib * 1000 / max(j['ready_ms'], 1)))")
	if [ "$r" = 1 ]; then
		cmp -s "$DIR/src.img" "$DIR/mirror.raw" ||
			die "the ready mirror differs from the LUN"
	fi
	adm --op update --mode job --params "id=$id,action=cancel" ||
		die "cancel failed"
	for i in $(seq 100); do
		case $(job_state "$id") in cancelled*) break ;; esac
		sleep 0.05
	done
	adm --op delete --mode job --params "id=$id" >/dev/null 2>&1
	echo "  run $r: qemu-img convert $conv MiB/s, mirror $job MiB/s (job's own ready_ms: $own MiB/s)"
	best_conv=$(python3 -c "print(max($best_conv, $conv))")
	best_job=$(python3 -c "print(max($best_job, $job))")
done
python3 -c "print('  best: convert %.1f MiB/s, mirror %.1f MiB/s, ratio mirror/convert %.2f (goal >= 0.80)' % ($best_conv, $best_job, $best_job / $best_conv))"
stop_daemon
rm -f "$DIR/src.img" "$DIR/mirror.raw" "$DIR/convert.raw"
}

# ------------------------------------------------------------ 2. latency
latency_part() {
echo "bench_mirror: 4k write latency at qd1, source +${SRC_US}us, destination +${DST_US}us (fusefail write_delay)"
for side in src dst; do
	mkdir -p "$DIR/fs-$side" "$DIR/mnt-$side"
	echo ok >"$DIR/ctl-$side"
	"$FUSEFAIL" "$DIR/fs-$side" "$DIR/mnt-$side" "$DIR/ctl-$side" \
		>>"$DIR/fusefail-$side.log" 2>&1 </dev/null &
	FF_PIDS="$FF_PIDS $!"
	for i in $(seq 100); do
		mountpoint -q "$DIR/mnt-$side" && break
		sleep 0.05
	done
	mountpoint -q "$DIR/mnt-$side" || die "fusefail did not mount $DIR/mnt-$side"
done
truncate -s 64M "$DIR/fs-src/lun.img" "$DIR/fs-src/probe.img" "$DIR/fs-dst/probe.img"
# the delays in microseconds (write_delay= applies to writes only)
set_delay() { echo "write_delay=$2" >"$DIR/ctl-$1.tmp"; mv "$DIR/ctl-$1.tmp" "$DIR/ctl-$1"; }
set_delay src "$SRC_US"
set_delay dst "$DST_US"
sleep 0.05
start_daemon "{ lun = 1; backend = \"file\"; path = \"$DIR/mnt-src/lun.img\"; direct = true; },
    { lun = 2; backend = \"file\"; path = \"$DIR/mnt-dst/probe.img\"; direct = true; },
    { lun = 3; backend = \"file\"; path = \"$DIR/mnt-src/probe.img\"; direct = true; }"

# lat LUN: mean microseconds per 4 KiB write at queue depth 1
lat() {
	local t0 t1
	t0=$(date +%s.%N)
	qemu-img bench -f raw -w -c "$LAT_COUNT" -d 1 -s 4k -q \
		"iscsi://127.0.0.1:$PORT/$IQN/$1" >/dev/null 2>&1 || die "qemu-img bench failed"
	t1=$(date +%s.%N)
	python3 -c "print('%.0f' % (($t1 - $t0) / $LAT_COUNT * 1e6))"
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# While LUN 1 mirrors: a LUN alone on the source's mount (3), one alone
# on the destination's (2) and the mirrored LUN 1, in turn; medians of
# BENCH_REPEAT runs each (the delays are sleeps, so a loaded machine
# adds noise)
all_src=; all_dst=; all_wb=
id=$(adm --op new --mode job --tid 1 --lun 1 --params \
	"type=mirror,target=$DIR/mnt-dst/mirror.img,copy_mode=write-blocking" | awk '{print $2}')
[ -n "$id" ] || die "job new failed"
wait_ready "$id"
s=$(job_state "$id")
case $s in *write-blocking*) ;; *) die "job $id not write-blocking: $s" ;; esac
for r in $(seq "$REPEAT"); do
	all_src="$all_src $(lat 3)"
	all_dst="$all_dst $(lat 2)"
	all_wb="$all_wb $(lat 1)"
done
s=$(job_state "$id")
case $s in ready*) ;; *) die "job $id after the writes: $s" ;; esac
echo "  runs (us): source$all_src; destination$all_dst; write-blocking$all_wb"
l_src=$(echo "$all_src" | median)
l_dst=$(echo "$all_dst" | median)
l_wb=$(echo "$all_wb" | median)
echo "  median: source alone $l_src us, destination alone $l_dst us"
adm --op update --mode job --params "id=$id,action=cancel" >/dev/null
python3 - "$l_src" "$l_dst" "$l_wb" <<'EOF'
import sys
s, d, wb = map(float, sys.argv[1:])
print("  write-blocking mirror %.0f us" % wb)
print("  ratio write-blocking/max(source,destination) %.2f (goal ~1.0), "
      "write-blocking/(source+destination) %.2f (serial would be 1.0)"
      % (wb / max(s, d), wb / (s + d)))
EOF
}

case " $PARTS " in *" copy "*) copy_part ;; esac
case " $PARTS " in *" latency "*) latency_part ;; esac
