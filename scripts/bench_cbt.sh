#!/bin/bash
# bench_cbt.sh - what changed-block tracking and backups cost (issue 10).
#
#   1. 4 KiB writes at queue depth 32 on a null LUN with no bitmap and with
#      one enabled (in-memory) bitmap, alternating, BENCH_REPEAT times:
#      median IOPS and holdfastd CPU time per write, and their ratios
#      (the goal: CPU per write within 3% of no bitmap).
#   2. A full raw backup of an idle file LUN (backup job) against
#      `qemu-img convert` of the same file to the same directory: MiB/s
#      and the ratio (the goal: >= 0.80).
#   3. The same for a sparse 1 GiB file LUN holding 8 MiB of data (sync=full
#      skips the holes the store reports; so does qemu-img convert): time
#      and the ratio convert/job (the goal: >= 0.80).
#   4. An incremental (sync=bitmap, qcow2) backup of 1/16 of the LUN
#      against the full one: MiB/s of each (the copy path with a bitmap).
#   5. Reading a snapshot job's export LUN against reading its origin
#      LUN, both over iSCSI with qemu-img convert: MiB/s and the ratio
#      (copy-on-read through the scratch file vs the plain store).
#
# Not a test.  Loopback only; holdfastd is stopped by PID at exit.
#
# Environment: BENCH_SIZE=256M  BENCH_REPEAT=3  BENCH_COUNT=200000
#              BENCH_DIR= (default: a fresh one under /var/tmp)
#              HOLDFAST_BUILD=build
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
SIZE=${BENCH_SIZE:-256M}
REPEAT=${BENCH_REPEAT:-3}
COUNT=${BENCH_COUNT:-200000}
BUILD=${HOLDFAST_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
IQN=iqn.2026-11.org.example:benchcbt

die() { echo "bench_cbt: $*" >&2; exit 1; }
[ -x "$BUILD/holdfastd" ] && [ -x "$BUILD/holdfastadm" ] || die "make first"
command -v qemu-img >/dev/null || die "qemu-img not found"

if [ -n "${BENCH_DIR:-}" ]; then
	DIR=$BENCH_DIR; mkdir -p "$DIR" || die "cannot create $DIR"; OWN_DIR=0
else
	DIR=$(mktemp -d /var/tmp/holdfast-bench-cbt.XXXXXX) || die "mktemp"
	OWN_DIR=1
fi
HF_PID=
cleanup() {
	if [ -n "$HF_PID" ] && kill -0 "$HF_PID" 2>/dev/null; then
		kill -TERM "$HF_PID"; wait "$HF_PID" 2>/dev/null
	fi
	if [ "$OWN_DIR" = 1 ]; then rm -rf "$DIR"
	else rm -f "$DIR"/cbt.img "$DIR"/backup.raw "$DIR"/convert.raw \
		"$DIR"/sparse.img "$DIR"/*.qcow2 "$DIR"/snap.* "$DIR"/read.raw; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CTL=$((1000 + RANDOM % 30000))
size_mib=$(python3 -c '
import sys
s = sys.argv[1].strip(); m = {"M": 1, "G": 1024}
print(int(float(s[:-1]) * m[s[-1].upper()]) if s[-1].upper() in m else int(s) >> 20)
' "$SIZE")
dd if=/dev/urandom of="$DIR/cbt.img" bs=1M count="$size_mib" status=none ||
	die "cannot write $DIR/cbt.img"
rm -f "$DIR/sparse.img"; truncate -s 1G "$DIR/sparse.img"
for off in 0 300 700 1016; do
	dd if=/dev/urandom of="$DIR/sparse.img" bs=1M seek="$off" count=2 \
		conv=notrunc status=none || die "cannot write $DIR/sparse.img"
done
sync
cat >"$DIR/cbt.conf" <<EOF
portals = [ "127.0.0.1:$PORT" ];
targets = (
  { name = "$IQN"; initiators = [ "127.0.0.1" ];
    luns = (
      { lun = 1; backend = "file"; path = "$DIR/cbt.img"; direct = true; },
      { lun = 2; backend = "null"; size = "1G"; },
      { lun = 3; backend = "file"; path = "$DIR/sparse.img"; direct = true; }
    ); } );
EOF
TGT_IPC_SOCKET=$DIR/hf.sock "$BUILD/holdfastd" -f -c "$DIR/cbt.conf" -C "$CTL" \
	>"$DIR/holdfastd.log" 2>&1 </dev/null &
HF_PID=$!
for i in $(seq 150); do
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
	kill -0 "$HF_PID" 2>/dev/null || { cat "$DIR/holdfastd.log"; die "holdfastd died"; }
	sleep 0.1
done
adm() { TGT_IPC_SOCKET=$DIR/hf.sock "$BUILD/holdfastadm" -C "$CTL" "$@"; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$HF_PID/stat"; }

# one run: prints "IOPS TICKS"
run_writes() {
	local t0 c0 t1 c1
	c0=$(cpu_ticks); t0=$(date +%s.%N)
	qemu-img bench -f raw -w -c "$COUNT" -d 32 -s 4k -S 4k -q \
		"iscsi://127.0.0.1:$PORT/$IQN/2" >/dev/null 2>&1 || die "qemu-img bench failed"
	t1=$(date +%s.%N); c1=$(cpu_ticks)
	python3 -c "print('%.0f %d' % ($COUNT / ($t1 - $t0), $c1 - $c0))"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "bench_cbt: 4k writes qd32 on a null LUN, $COUNT per run, $REPEAT runs each"
: >"$DIR/none.txt"; : >"$DIR/bitmap.txt"
for r in $(seq "$REPEAT"); do
	adm --op delete --mode bitmap --tid 1 --lun 2 --name bench >/dev/null 2>&1
	run_writes >>"$DIR/none.txt"
	adm --op new --mode bitmap --tid 1 --lun 2 --name bench || die "bitmap new failed"
	run_writes >>"$DIR/bitmap.txt"
done
n_iops=$(awk '{print $1}' "$DIR/none.txt" | median)
b_iops=$(awk '{print $1}' "$DIR/bitmap.txt" | median)
n_cpu=$(awk '{print $2}' "$DIR/none.txt" | median)
b_cpu=$(awk '{print $2}' "$DIR/bitmap.txt" | median)
python3 - "$n_iops" "$b_iops" "$n_cpu" "$b_cpu" "$COUNT" <<'EOF'
import os, sys
ni, bi, nc, bc, count = map(float, sys.argv[1:])
hz = os.sysconf("SC_CLK_TCK")
us = lambda c: c / hz / count * 1e6
print("  no bitmap:  %8.0f IOPS  %6.2f us CPU/write" % (ni, us(nc)))
print("  one bitmap: %8.0f IOPS  %6.2f us CPU/write" % (bi, us(bc)))
print("  ratio bitmap/none: IOPS %.3f, CPU per write %.3f (goal <= 1.03)"
      % (bi / ni, (bc / nc) if nc else float("nan")))
EOF

echo "bench_cbt: full raw backup of an idle $SIZE LUN vs qemu-img convert"
best_conv=0; best_job=0
for r in $(seq "$REPEAT"); do
	rm -f "$DIR/convert.raw" "$DIR/backup.raw"; sync
	t0=$(date +%s.%N)
	qemu-img convert -f raw -O raw -t none "$DIR/cbt.img" "$DIR/convert.raw" ||
		die "qemu-img convert failed"
	sync; t1=$(date +%s.%N)
	conv=$(python3 -c "print('%.1f' % ($size_mib / ($t1 - $t0)))")
	id=$(adm --op new --mode job --tid 1 --lun 1 --params \
		"type=backup,target=$DIR/backup.raw,format=raw,sync=full" | awk '{print $2}')
	[ -n "$id" ] || die "job new failed"
	while adm --op show --mode job --json | python3 -c "
import json, sys
j = [x for x in json.load(sys.stdin)['jobs'] if x['id'] == $id][0]
sys.exit(0 if j['state'] in ('running', 'paused') else (1 if j['state'] == 'completed' else 2))"; do
		sleep 0.02
	done
	# the job's own rate: start to completion (data synced), without
	# holdfastadm's start-up and this loop's polling
	job=$(adm --op show --mode job --json | python3 -c "
import json, sys
j = [x for x in json.load(sys.stdin)['jobs'] if x['id'] == $id][0]
if j['state'] != 'completed': sys.exit('backup job ' + j['state'] + ': ' + str(j['error']))
print('%.1f' % (j['rate_bps'] / 1048576))") || die "backup job failed"
	adm --op delete --mode job --params "id=$id"
	cmp -s "$DIR/cbt.img" "$DIR/backup.raw" || die "backup differs from the LUN"
	echo "  run $r: qemu-img convert $conv MiB/s, backup job $job MiB/s"
	best_conv=$(python3 -c "print(max($best_conv, $conv))")
	best_job=$(python3 -c "print(max($best_job, $job))")
done
python3 -c "print('  best: convert %.1f MiB/s, job %.1f MiB/s, ratio job/convert %.2f (goal >= 0.80)' % ($best_conv, $best_job, $best_job / $best_conv))"

# Wait for job $1; prints its rate in MiB/s (start to completion).
job_rate() {
	while adm --op show --mode job --json | python3 -c "
import json, sys
j = [x for x in json.load(sys.stdin)['jobs'] if x['id'] == $1][0]
sys.exit(0 if j['state'] in ('running', 'paused') else 1)"; do
		sleep 0.02
	done
	adm --op show --mode job --json | python3 -c "
import json, sys
j = [x for x in json.load(sys.stdin)['jobs'] if x['id'] == $1][0]
if j['state'] != 'completed': sys.exit('job ' + j['state'] + ': ' + str(j['error']))
if '${JOB_SECS:-}': print('%.3f' % (j['bytes_done'] / max(j['rate_bps'], 1)))
else: print('%.1f' % (j['rate_bps'] / 1048576))" || die "job $1 failed"
	adm --op delete --mode job --params "id=$1"
}
job_start() {
	adm --op new --mode job --tid 1 --lun "$1" --params "$2" | awk '{print $2}'
}

echo "bench_cbt: full raw backup of a sparse 1 GiB LUN (8 MiB data) vs qemu-img convert"
best_c=1e9; best_j=1e9
for r in $(seq "$REPEAT"); do
	rm -f "$DIR/convert.raw" "$DIR/backup.raw"; sync
	t0=$(date +%s.%N)
	qemu-img convert -f raw -O raw -t none "$DIR/sparse.img" "$DIR/convert.raw" ||
		die "qemu-img convert failed"
	sync; t1=$(date +%s.%N)
	id=$(job_start 3 "type=backup,target=$DIR/backup.raw,format=raw,sync=full")
	[ -n "$id" ] || die "job new failed"
	JOB_SECS=1
	j=$(job_rate "$id")
	JOB_SECS=
	cmp -s "$DIR/sparse.img" "$DIR/backup.raw" || die "sparse backup differs"
	c=$(python3 -c "print('%.3f' % ($t1 - $t0))")
	echo "  run $r: qemu-img convert ${c}s, backup job ${j}s (the job's own start to end)"
	best_c=$(python3 -c "print(min($best_c, $c))")
	best_j=$(python3 -c "print(min($best_j, $j))")
done
python3 -c "print('  best: convert %.3fs, job %.3fs, ratio convert/job %.2f (goal >= 0.80)' % ($best_c, $best_j, $best_c / $best_j))"

echo "bench_cbt: incremental qcow2 backup (1/16 of the LUN dirty) vs full"
adm --op new --mode bitmap --tid 1 --lun 1 --name inc || die "bitmap new failed"
id=$(job_start 1 "type=backup,target=$DIR/full.qcow2,format=qcow2,sync=full,bitmap=inc")
full=$(job_rate "$id")
qemu-img bench -f raw -w -c $((size_mib / 16)) -d 8 -s 1M -S 16M -q \
	"iscsi://127.0.0.1:$PORT/$IQN/1" >/dev/null 2>&1 || die "qemu-img bench failed"
id=$(job_start 1 "type=backup,target=$DIR/inc.qcow2,format=qcow2,sync=bitmap,bitmap=inc,backing=$DIR/full.qcow2")
inc=$(job_rate "$id")
echo "  full qcow2 $full MiB/s, incremental qcow2 $inc MiB/s, ratio inc/full $(python3 -c "print('%.2f' % ($inc / $full))")"

echo "bench_cbt: reading a snapshot export LUN vs its origin (qemu-img convert over iSCSI)"
read_rate() {
	rm -f "$DIR/read.raw"
	local t0 t1
	t0=$(date +%s.%N)
	qemu-img convert -f raw -O raw "iscsi://127.0.0.1:$PORT/$IQN/$1" "$DIR/read.raw" ||
		die "qemu-img convert of LUN $1 failed"
	t1=$(date +%s.%N)
	python3 -c "print('%.1f' % ($size_mib / ($t1 - $t0)))"
}
best_o=0; best_s=0
for r in $(seq "$REPEAT"); do
	o=$(read_rate 1)
	id=$(job_start 1 "type=snapshot,export_lun=4,scratch=$DIR/snap.scratch")
	[ -n "$id" ] || die "snapshot job failed"
	s=$(read_rate 4)
	adm --op delete --mode job --params "id=$id"
	echo "  run $r: origin $o MiB/s, snapshot export $s MiB/s"
	best_o=$(python3 -c "print(max($best_o, $o))")
	best_s=$(python3 -c "print(max($best_s, $s))")
done
python3 -c "print('  best: origin %.1f MiB/s, snapshot %.1f MiB/s, ratio snapshot/origin %.2f' % ($best_o, $best_s, $best_s / $best_o))"
