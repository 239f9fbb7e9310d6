#!/bin/bash
# bench-rbd.sh - an RBD image served three ways, in one run:
#   holdfast   holdfastd, backend rbd (librbd async, cache off)
#   tgtd       the stock tgtd with Debian's tgt-rbd (bs_rbd)
#   librbd     qemu-img bench straight on rbd: (no iSCSI at all: the ceiling;
#              -t none for every client, or QEMU turns the librbd cache on
#              for rbd: whatever the URL says, unlike holdfast's default)
#   hf+bitmap  holdfastd again (writes only), on a LUN with a persistent
#              dirty bitmap, which lives in the image's metadata
#              (cbt_meta.h): cleared before each run, so every 64 KiB chunk
#              a write touches first is saved to the metadata before the
#              write is acknowledged (the write-intent worst case)
#   hf-snap    holdfastd again (reads only), on a read-only LUN on the
#              snapshot hfs@bench of its own image (what a snapshot job
#              with rbd_snap= exports), against holdfast's reads of the
#              head; its own image, because the OSD copies an object on
#              the first write after a snapshot, which would tax
#              holdfast's writes to hf and no one else's
# on a throw-away single-node Ceph cluster (tests/ceph.py: 1 mon, 1
# bluestore OSD, loopback).  Each target gets its own image filled with the
# same random data; 4 KiB requests at queue depth 16, reads and writes,
# alternating who goes first; medians of BENCH_REPEAT runs and the ratios
# holdfast/librbd (goal >= 0.90) and holdfast/tgtd (goal > 1.00), and
# what the bitmap costs (hf+bitmap/holdfast, writes).
#
# Not a test.  Loopback only.  Every daemon (holdfastd, tgtd, ceph-mon,
# ceph-osd) is stopped by PID when the script exits, however it exits.
#
# Environment: BENCH_RBD_SIZE=128M  BENCH_REPEAT=5  BENCH_RBD_COUNT_R=20000
#              BENCH_RBD_COUNT_W=10000  HOLDFAST_BUILD=build
#              BENCH_RBD_CLIENT_OPTS="key = value;..." (added to ceph.conf's
#              [client] section, so for holdfastd, tgtd and the ceiling alike)
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
SIZE=${BENCH_RBD_SIZE:-128M}
REPEAT=${BENCH_REPEAT:-5}
COUNT_R=${BENCH_RBD_COUNT_R:-20000}
COUNT_W=${BENCH_RBD_COUNT_W:-10000}
BUILD=${HOLDFAST_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
HOLDFASTD=$BUILD/holdfastd
HOLDFASTADM=$BUILD/holdfastadm
TGTD=${TGTD:-/usr/sbin/tgtd}
TGTADM=${TGTADM:-/usr/sbin/tgtadm}
IQN=iqn.2026-11.org.example:bench-rbd

die() { echo "bench-rbd: $*" >&2; exit 1; }
for t in "$HOLDFASTD" "$HOLDFASTADM" "$TGTD" "$TGTADM"; do
	[ -x "$t" ] || die "$t not found (make; make deps)"
done
dpkg-query -W -f='${Status}' tgt-rbd 2>/dev/null | grep -q 'ok installed' ||
	die "tgt-rbd not installed (make deps)"
command -v ceph-osd >/dev/null || die "ceph-osd not installed (make deps)"

DIR=$(mktemp -d /var/tmp/holdfast-bench-rbd.XXXXXX) || die "mktemp failed"
HF_PID= TGT_PID= CEPH_PID=

stop_pid() {	# PID [SIG]: signal, wait up to 15 s, then SIGKILL
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-${2:-TERM}" "$pid" 2>/dev/null
	for i in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}
cleanup() {
	stop_pid "$TGT_PID" KILL	# tgtd ignores SIGTERM with targets
	stop_pid "$HF_PID"
	stop_pid "$CEPH_PID"		# tests/ceph.py stops mon+osd, reaps them
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
	python3 -c '
import random, socket, sys
taken = {int(p) for p in sys.argv[1:]}
for _ in range(500):
    p = random.randint(20000, 32767)
    if p in taken: continue
    s = socket.socket()
    try: s.bind(("127.0.0.1", p))
    except OSError: continue
    finally: s.close()
    print(p); break' "$@"
}
wait_port() {
	local i
	for i in $(seq 150); do
		kill -0 "$2" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# ---- cluster -------------------------------------------------------------
T0=$(date +%s.%N)
mkdir -p "$DIR/ceph"
python3 tests/ceph.py up "$DIR/ceph" >"$DIR/ceph.out" 2>&1 </dev/null &
CEPH_PID=$!
for i in $(seq 600); do
	grep -q '^CEPH_CONF=' "$DIR/ceph.out" && break
	kill -0 "$CEPH_PID" 2>/dev/null || { cat "$DIR/ceph.out" >&2; die "cluster failed"; }
	sleep 0.1
done
grep -q '^CEPH_CONF=' "$DIR/ceph.out" || die "cluster did not come up"
export CEPH_CONF=$DIR/ceph/ceph.conf
# client options for every contender alike (the file ends in [client])
if [ -n "${BENCH_RBD_CLIENT_OPTS:-}" ]; then
	tr ';' '\n' <<<"$BENCH_RBD_CLIENT_OPTS" >>"$CEPH_CONF"
	echo "bench-rbd: [client] options for all: $BENCH_RBD_CLIENT_OPTS"
fi
echo "bench-rbd: cluster up in $(python3 -c "import time,sys; print('%.1f' % (time.time() - float(sys.argv[1])))" "$T0") s"

size_mib=$(( $(numfmt --from=iec "$SIZE") >> 20 ))
dd if=/dev/urandom of="$DIR/rand.img" bs=1M count="$size_mib" status=none
for img in hf tgt q hfbm hfs; do
	rbd import --no-progress "$DIR/rand.img" "rbd/$img" ||
		die "rbd import $img failed"
done
rm -f "$DIR/rand.img"
rbd snap create --no-progress rbd/hfs@bench >/dev/null || die "rbd snap create failed"

# ---- holdfastd -----------------------------------------------------------
HF_PORT=$(free_port)
TGT_PORT=$(free_port "$HF_PORT")
HF_CTL=$((1000 + RANDOM % 30000))
TGT_CTL=$((HF_CTL + 1))
cat >"$DIR/bench.conf" <<EOF
portals = [ "127.0.0.1:$HF_PORT" ];
targets = (
  { name = "$IQN";
    initiators = [ "127.0.0.1" ];
    luns = (
      { lun = 1; backend = "rbd"; path = "rbd/hf"; ceph_conf = "$CEPH_CONF";
        ceph_id = "admin"; },
      { lun = 2; backend = "rbd"; path = "rbd/hfbm"; ceph_conf = "$CEPH_CONF";
        ceph_id = "admin";
        bitmaps = ( { name = "b"; granularity = 65536; persistent = true; } ); },
      { lun = 3; backend = "rbd"; path = "rbd/hfs@bench";
        ceph_conf = "$CEPH_CONF"; ceph_id = "admin"; }
    ); } );
EOF
TGT_IPC_SOCKET=$DIR/hf.sock "$HOLDFASTD" -f -c "$DIR/bench.conf" \
	-C "$HF_CTL" >"$DIR/holdfastd.log" 2>&1 </dev/null &
HF_PID=$!
wait_port "$HF_PORT" "$HF_PID" ||
	{ cat "$DIR/holdfastd.log" >&2; die "holdfastd did not start"; }

# ---- tgtd with tgt-rbd ---------------------------------------------------
TGT_IPC_SOCKET=$DIR/tgt.sock "$TGTD" -f -C "$TGT_CTL" \
	--iscsi "portal=127.0.0.1:$TGT_PORT" >"$DIR/tgtd.log" 2>&1 </dev/null &
TGT_PID=$!
wait_port "$TGT_PORT" "$TGT_PID" ||
	{ cat "$DIR/tgtd.log" >&2; die "tgtd did not start"; }
tadm() {
	TGT_IPC_SOCKET=$DIR/tgt.sock timeout 30 "$TGTADM" -C "$TGT_CTL" \
		--lld iscsi "$@" || die "tgtadm $* failed"
}
for i in $(seq 50); do [ -S "$DIR/tgt.sock.$TGT_CTL" ] && break; sleep 0.1; done
tadm --op new --mode target --tid 1 -T "$IQN"
tadm --op new --mode logicalunit --tid 1 --lun 1 --bstype rbd -b rbd/tgt \
	--bsopts "conf=$CEPH_CONF;id=admin"
for kv in MaxRecvDataSegmentLength=262144 MaxXmitDataSegmentLength=262144 \
	  MaxBurstLength=1048576 FirstBurstLength=262144 ImmediateData=Yes \
	  InitialR2T=No MaxOutstandingR2T=16; do
	tadm --op update --mode target --tid 1 --name "${kv%%=*}" --value "${kv#*=}"
done
tadm --op bind --mode target --tid 1 -I 127.0.0.1

url() {
	case $1 in
	holdfast) echo "iscsi://127.0.0.1:$HF_PORT/$IQN/1" ;;
	hf+bitmap) echo "iscsi://127.0.0.1:$HF_PORT/$IQN/2" ;;
	hf-snap) echo "iscsi://127.0.0.1:$HF_PORT/$IQN/3" ;;
	tgtd) echo "iscsi://127.0.0.1:$TGT_PORT/$IQN/1" ;;
	librbd) echo "rbd:rbd/q:conf=$CEPH_CONF:id=admin:rbd_cache=false" ;;
	esac
}

# 4 KiB at a stride of an odd number of blocks: a scattered permutation
# of a power-of-two image (as bench.sh).
STRIDE=$((4096 * 40503))
TICK_HZ=$(getconf CLK_TCK)
cpu_ticks() {	# PID -> utime + stime in clock ticks (0 when gone)
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
	sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
child_secs() {	# -> CHILD_S: CPU seconds of this shell's reaped children
	times >"$DIR/times"	# (bash times, run in this shell, not a subshell)
	CHILD_S=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/);
		printf "%.3f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$DIR/times")
}
target_pid() {
	case $1 in holdfast|hf+bitmap|hf-snap) echo "$HF_PID" ;; tgtd) echo "$TGT_PID" ;; esac
}
# TARGET read|write -> "seconds client_cpu_s target_cpu_s osd_cpu_s": the
# CPU the initiator (qemu-img, with librbd itself for the ceiling), the
# target daemon and the OSD spent in the run.
run_one() {
	local args=(-t none -d 16 -s 4k -S "$STRIDE" -f raw)
	local out secs c0 t0 o0 tp osd
	tp=$(target_pid "$1")
	osd=$(cat "$DIR/ceph/pids/osd.0.pid" 2>/dev/null)
	if [ "$2" = write ]; then args+=(-w -c "$COUNT_W"); else args+=(-c "$COUNT_R"); fi
	child_secs; c0=$CHILD_S; t0=$(cpu_ticks "$tp"); o0=$(cpu_ticks "$osd")
	out=$(timeout 120 qemu-img bench "${args[@]}" "$(url "$1")" 2>&1)
	secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
	[ -n "$secs" ] || { echo "bench-rbd: $1 $2 failed: $out" >&2; return 1; }
	child_secs
	echo "$secs $(python3 -c 'import sys; a = sys.argv[1:]; hz = float(a[6])
print("%.3f %.3f %.3f" % (float(a[1]) - float(a[0]), (int(a[3]) - int(a[2])) / hz,
      (int(a[5]) - int(a[4])) / hz))' "$c0" "$CHILD_S" "$t0" \
		"$(cpu_ticks "$tp")" "$o0" "$(cpu_ticks "$osd")" "$TICK_HZ")"
}

echo "bench-rbd: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg);" \
	"image $SIZE each, 4 KiB QD16, $COUNT_R reads / $COUNT_W writes per run"
RESULTS=$DIR/results.txt
: >"$RESULTS"
for r in $(seq "$REPEAT"); do
	for op in read write; do
		case $(( (r + ${#op}) % 3 )) in
		0) order="holdfast tgtd librbd" ;;
		1) order="tgtd librbd holdfast" ;;
		*) order="librbd holdfast tgtd" ;;
		esac
		[ $op = write ] && order="$order hf+bitmap"
		[ $op = read ] && order="$order hf-snap"
		for t in $order; do
			[ "$t" = hf+bitmap ] && { TGT_IPC_SOCKET=$DIR/hf.sock \
				timeout 30 "$HOLDFASTADM" -C "$HF_CTL" --op update \
				--mode bitmap --tid 1 --lun 2 --name b \
				--params action=clear >/dev/null ||
				die "clearing the bitmap failed"; }
			n=$([ $op = write ] && echo "$COUNT_W" || echo "$COUNT_R")
			res=$(run_one "$t" "$op") && echo "$t $op $res $n" >>"$RESULTS"
		done
	done
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
cpu = defaultdict(list)     # (t, op) -> [(client, target, osd) us per I/O]
for line in open(sys.argv[1]):
    t, op, secs, c, tg, o, n = line.split()
    runs[t, op].append(int(n) / float(secs))
    cpu[t, op].append(tuple(float(x) * 1e6 / int(n) for x in (c, tg, o)))
def med(t, op):
    v = runs.get((t, op))
    return statistics.median(v) if v else None
def f(v, w=9, p=0):
    return ("%*.*f" % (w, p, v)) if v else "%*s" % (w, "-")
print()
print("%-16s %9s %9s %9s %9s %9s" % ("rbd 4k qd16", "holdfast", "tgt-rbd",
                                     "librbd", "hf/librbd", "hf/tgt"))
for op in ("read", "write"):
    h, t, q = med("holdfast", op), med("tgtd", op), med("librbd", op)
    print("%-16s %s %s %s %s %s" % (op + " IOPS", f(h), f(t), f(q),
          f(h / q if h and q else None, 9, 2),
          f(h / t if h and t else None, 9, 2)))
def variant(name, op, what):
    """holdfast's plain LUN against one of its variants, same op"""
    h, v = med("holdfast", op), med(name, op)
    print("%-16s %9s %9s %9s" % ("", "hf", name, "ratio"))
    print("%-16s %s %s %s" % (op + " IOPS", f(h), f(v),
          f(v / h if h and v else None, 9, 2)))
    print("  (" + what + ")")
variant("hf+bitmap", "write", "a persistent 64 KiB bitmap in the image's "
        "metadata, cleared before each run: the first write to each chunk "
        "waits for a metadata save")
variant("hf-snap", "read", "an image at its snapshot, rbd/hfs@bench, "
        "read-only: what a snapshot job with rbd_snap= exports")
print()
print("CPU us per I/O    %9s %9s %9s %9s" % ("initiator", "target", "OSD",
                                             "total"))
for op in ("read", "write"):
    for t in ("holdfast", "tgtd", "librbd"):
        v = cpu.get((t, op))
        if not v:
            continue
        m = [statistics.median(x[i] for x in v) for i in range(3)]
        print("%-16s  %9.0f %9.0f %9.0f %9.0f" % ("%s %s" % (op, t), m[0],
              m[1], m[2], sum(m)))
print("  (initiator = qemu-img: libiscsi, or librbd itself for the ceiling; "
      "2 cores shared by all three)")
print()
print("medians of %d runs; librbd = qemu-img bench on rbd: directly (the "
      "ceiling)" % max(len(v) for v in runs.values()))
EOF
