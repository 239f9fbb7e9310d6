#!/bin/bash
# bench.sh - holdfastd against tgtd, side by side, in one run.
#
# Starts build/holdfastd and the stock tgtd on loopback, each on its own
# port and control port, each serving
#   LUN 1: a file of BENCH_SIZE on the same filesystem, opened O_DIRECT
#          (holdfast's default; tgtd's rdwr store with --bsoflags direct),
#          filled with the same random data so reads touch real blocks,
#   LUN 2: a null LUN (no storage: measures the target's own path),
# then runs the same qemu-img bench workloads against both, alternating
# which target goes first, repeats each BENCH_REPEAT times and prints the
# medians and the ratio holdfast/tgtd (> 1.00 = holdfast faster), and each
# target's CPU per I/O (utime+stime deltas of the daemon from /proc/PID/stat
# over each run) and IOPS per core of target CPU.
#
# In the same run it measures the floors the target is held against
# (issue 16): loopback TCP throughput (iperf3) and the round trip of a
# minimal 4 KiB TCP echo over loopback (build/tools/tcpecho), and holdfastd's
# memory: RSS idle, per session and per 1,000 outstanding commands.  The
# last lines are ratios: QD1 latency / echo floor (from qemu-img bench and
# from tools/iscsiqd1, the leanest initiator), 1 MiB read throughput /
# iperf3, hang-on-error retry / report on a healthy LUN, IOPS with 2 and 4
# sessions / 1 session.
#
# CPU per I/O is the number that survives a busy machine best; IOPS and
# latency on a shared machine are noise.  Instruction and syscall counts
# per I/O, which do not depend on load at all: scripts/profile.sh.
#
# Not a test: `make test` never runs it.  Loopback only.  Both daemons are
# stopped by PID when the script exits, however it exits.
#
# Environment (defaults in brackets):
#   BENCH_SIZE=256M        file LUN size (a power of two keeps the 4k
#                          stride a full permutation of the LUN)
#   BENCH_REPEAT=3         runs per workload and target; the median counts
#   BENCH_SECONDS=1.5      target length of one run; counts are calibrated
#                          on holdfastd once, then used for both targets
#   BENCH_BUDGET=170       stop starting new runs after this many seconds
#   BENCH_DIR=             work directory (default: a fresh one under
#                          /var/tmp, removed at exit; give one on the
#                          filesystem you want to measure)
#   BENCH_WORKLOADS=       space-separated subset of the names below
#                          ("none": only the gateway comparison)
#   BENCH_TGTD_PARAMS=match  "match": give tgtd the data-segment and burst
#                          sizes holdfastd offers (engine against engine);
#                          "default": tgtd out of the box
#   BENCH_FLOORS=1         0: skip iperf3, the TCP echo and the lean QD1
#   QD1_REPEAT=3           runs of tools/iscsiqd1 per target and op
#   BENCH_BUSY_POLL=50     the lean QD1 runs also go to a second holdfastd
#                          started with --busy-poll this many us ("0": not)
#   BENCH_MEMORY=1         0: skip the RSS measurements
#   HOLDFAST_BUILD=build   where holdfastd (and tools/tcpecho) are
#   BENCH_GATEWAY=         workloads of the gateway comparison (default:
#                          rand4k-read-qd1 rand4k-read-qd32 rand4k-write-qd32
#                          seq1m-read-qd8 seq1m-write-qd8; "none" skips it)
#   BENCH_GATEWAY_BUDGET=90  seconds for the gateway comparison
#   BENCH_GATEWAY_DD=      workloads of the data digest comparison (default:
#                          rand4k-read-qd32 seq1m-read-qd8 seq1m-write-qd8;
#                          "none" skips it)
#   BENCH_GATEWAY_DD_BUDGET=60  seconds for the data digest comparison
#
# Gateway comparison: holdfastd's LUN 3 is a gateway LUN (backend iscsi,
# added with tgtadm --bstype iscsi) on tgtd's LUN 1.  The same workloads
# run through holdfast to tgtd ("gateway") and straight at tgtd ("san");
# gw/san is what the extra hop costs (1.00 = nothing).
#
# Data digest comparison: holdfastd's LUN 6 is the same gateway LUN with
# data_digest=crc32c (tgtd's target set to DataDigest=CRC32C,None, which
# leaves None for initiators that offer only None), through holdfast's
# digest relay ("gwdd") against LUN 3 ("gateway"): gwdd/gateway is what
# the relay's loopback hop, copy and CRC32C both ways cost.
#
# Workloads (qemu-img bench, one initiator session each):
#   rand4k-read-qd1/qd32, rand4k-write-qd1/qd32
#       4 KiB requests at a stride of an odd number of 4 KiB blocks
#       (about 60% of the LUN), which visits every block of a power-of-two
#       LUN once in a scattered order - random-like, reproducible, no
#       readahead benefit.  qemu-img bench has no true random mode.
#   seq1m-read-qd8, seq1m-write-qd8   1 MiB sequential, 8 in flight
#   null4k-read-qd32, null1m-read-qd8 the same against the null LUN
#   null4k-read-qd32-x2, -x4          2 and 4 concurrent sessions (one
#                                     qemu-img each, COUNT each), IOPS summed
#   null4k-read-qd32-retry            holdfast only: a null LUN (4) with
#                                     rerror=retry, werror=retry (healthy),
#                                     to compare with null4k-read-qd32
#   rand4k-write-qd32-retry           holdfast only: the file LUN's image
#                                     through a second LUN (5) with retry

set -u
cd "$(dirname "$0")/.."
REPO=$PWD

SIZE=${BENCH_SIZE:-256M}
REPEAT=${BENCH_REPEAT:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-1.5}
BUDGET=${BENCH_BUDGET:-170}
TGTD_PARAMS=${BENCH_TGTD_PARAMS:-match}
BUILD=${HOLDFAST_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
HOLDFASTD=$BUILD/holdfastd
TGTD=${TGTD:-/usr/sbin/tgtd}
TGTADM=${TGTADM:-/usr/sbin/tgtadm}
IQN=iqn.2026-11.org.example:bench
ALL_WORKLOADS="rand4k-read-qd1 rand4k-read-qd32 rand4k-write-qd1
rand4k-write-qd32 seq1m-read-qd8 seq1m-write-qd8 null4k-read-qd32
null1m-read-qd8 null4k-read-qd32-x2 null4k-read-qd32-x4
null4k-read-qd32-retry rand4k-write-qd32-retry"
WORKLOADS=$(echo ${BENCH_WORKLOADS:-$ALL_WORKLOADS})
[ "$WORKLOADS" = none ] && WORKLOADS=	# only the gateway comparison
GW_WORKLOADS=$(echo ${BENCH_GATEWAY:-rand4k-read-qd1 rand4k-read-qd32 rand4k-write-qd32 seq1m-read-qd8 seq1m-write-qd8})
[ "$GW_WORKLOADS" = none ] && GW_WORKLOADS=
DD_WORKLOADS=$(echo ${BENCH_GATEWAY_DD:-rand4k-read-qd32 seq1m-read-qd8 seq1m-write-qd8})
[ "$DD_WORKLOADS" = none ] && DD_WORKLOADS=
DD_BUDGET=${BENCH_GATEWAY_DD_BUDGET:-60}
GW_BUDGET=${BENCH_GATEWAY_BUDGET:-90}

die() { echo "bench: $*" >&2; exit 1; }

for t in "$HOLDFASTD" "$TGTD" "$TGTADM"; do
	[ -x "$t" ] || die "$t not found (make; apt-get install tgt)"
done
command -v qemu-img >/dev/null || die "qemu-img not found (apt-get install qemu-utils)"
command -v python3 >/dev/null || die "python3 not found"
FLOORS=${BENCH_FLOORS:-1}
MEMORY=${BENCH_MEMORY:-1}
TCPECHO=$BUILD/tools/tcpecho
QD1TOOL=$BUILD/tools/iscsiqd1
if [ "$FLOORS" = 1 ]; then
	command -v iperf3 >/dev/null || die "iperf3 not found (apt-get install iperf3)"
	[ -x "$TCPECHO" ] || die "$TCPECHO not found (make)"
	[ -x "$QD1TOOL" ] || die "$QD1TOOL not found (make)"
fi

# ---- work directory and cleanup ----------------------------------------

if [ -n "${BENCH_DIR:-}" ]; then
	DIR=$BENCH_DIR
	mkdir -p "$DIR" || die "cannot create $DIR"
	OWN_DIR=0
else
	DIR=$(mktemp -d /var/tmp/holdfast-bench.XXXXXX) || die "mktemp failed"
	OWN_DIR=1
fi
HF_PID=
BP_PID=
TGT_PID=
IPERF_PID=

stop_pid() {	# PID: SIGTERM, then SIGKILL after 10 s
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

cleanup() {
	# tgtd ignores SIGTERM while it has targets and nothing of ours is in
	# flight any more: kill it outright.  holdfastd gets SIGTERM, so its
	# clean shutdown path runs too.
	if [ -n "$TGT_PID" ] && kill -0 "$TGT_PID" 2>/dev/null; then
		kill -KILL "$TGT_PID" 2>/dev/null
		wait "$TGT_PID" 2>/dev/null
	fi
	stop_pid "$HF_PID"
	stop_pid "$BP_PID"
	stop_pid "$IPERF_PID"
	if [ "$OWN_DIR" = 1 ]; then
		rm -rf "$DIR"
	else
		rm -f "$DIR"/holdfast.img "$DIR"/tgtd.img
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- ports -------------------------------------------------------------

free_port() {	# a loopback TCP port nobody listens on, below the ephemeral range
	python3 - "$@" <<'EOF'
import random, socket, sys
taken = {int(p) for p in sys.argv[1:]}
for _ in range(500):
    p = random.randint(20000, 32767)
    if p in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
EOF
}
HF_PORT=$(free_port)
TGT_PORT=$(free_port "$HF_PORT")
[ -n "$HF_PORT" ] && [ -n "$TGT_PORT" ] || die "no free loopback port"
# Control ports only name sockets inside $DIR; tgtadm wants <= 32767.
HF_CTL=$((1000 + RANDOM % 30000))
TGT_CTL=$((HF_CTL + 1))

wait_port() {	# PORT PID: until the port accepts, or the daemon died
	local i
	for i in $(seq 150); do
		kill -0 "$2" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# ---- backing files -----------------------------------------------------

echo "bench: work directory $DIR ($(df -T "$DIR" | awk 'NR==2 {print $2}'))"
echo "bench: filling two $SIZE files with the same random data"
size_mib=$(python3 -c '
import sys
s = sys.argv[1].strip(); m = {"K": 1/1024, "M": 1, "G": 1024, "T": 1 << 20}
print(int(float(s[:-1]) * m[s[-1].upper()]) if s[-1].upper() in m else int(s) >> 20)
' "$SIZE")
[ "$size_mib" -ge 16 ] || die "BENCH_SIZE must be at least 16M"
dd if=/dev/urandom of="$DIR/holdfast.img" bs=1M count="$size_mib" \
	status=none || die "cannot write $DIR/holdfast.img"
cp "$DIR/holdfast.img" "$DIR/tgtd.img" || die "cannot copy the image"
sync

# ---- holdfastd ---------------------------------------------------------

cat >"$DIR/bench.conf" <<EOF
portals = [ "127.0.0.1:$HF_PORT" ];
targets = (
  { name = "$IQN";
    initiators = [ "127.0.0.1" ];
    luns = (
      { lun = 1; backend = "file"; path = "$DIR/holdfast.img";
        direct = true; },
      { lun = 2; backend = "null"; size = "$SIZE"; },
      { lun = 4; backend = "null"; size = "$SIZE";
        rerror = "retry"; werror = "retry"; },
      { lun = 5; backend = "file"; path = "$DIR/holdfast.img";
        direct = true; rerror = "retry"; werror = "retry"; }
    ); } );
EOF
TGT_IPC_SOCKET=$DIR/hf.sock "$HOLDFASTD" -f -c "$DIR/bench.conf" \
	-C "$HF_CTL" >"$DIR/holdfastd.log" 2>&1 </dev/null &
HF_PID=$!
wait_port "$HF_PORT" "$HF_PID" ||
	{ cat "$DIR/holdfastd.log" >&2; die "holdfastd did not start"; }

rss_kib() {	# PID -> VmRSS in KiB
	awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null
}
cpu_ticks() {	# PID -> utime + stime of all its threads, in clock ticks
	# fields 14 and 15; the command name (field 2) may contain spaces
	sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'
}
TICK_HZ=$(getconf CLK_TCK)
sleep 0.5
RSS_IDLE=$(rss_kib "$HF_PID")

# ---- tgtd --------------------------------------------------------------

TGT_IPC_SOCKET=$DIR/tgt.sock "$TGTD" -f -C "$TGT_CTL" \
	--iscsi "portal=127.0.0.1:$TGT_PORT" >"$DIR/tgtd.log" 2>&1 </dev/null &
TGT_PID=$!
wait_port "$TGT_PORT" "$TGT_PID" ||
	{ cat "$DIR/tgtd.log" >&2; die "tgtd did not start"; }
tadm() {
	TGT_IPC_SOCKET=$DIR/tgt.sock timeout 10 "$TGTADM" -C "$TGT_CTL" \
		--lld iscsi "$@" || die "tgtadm $* failed"
}
for i in $(seq 50); do
	[ -S "$DIR/tgt.sock.$TGT_CTL" ] && break
	sleep 0.1
done
tadm --op new --mode target --tid 1 -T "$IQN"
tadm --op new --mode logicalunit --tid 1 --lun 1 -b "$DIR/tgtd.img" \
	--bsoflags direct
tadm --op new --mode logicalunit --tid 1 --lun 2 -b null2 --bstype null
if [ "$TGTD_PARAMS" = match ]; then
	# holdfastd's offers (README): same negotiation results for both.
	for kv in MaxRecvDataSegmentLength=262144 \
		  MaxXmitDataSegmentLength=262144 MaxBurstLength=1048576 \
		  FirstBurstLength=262144 ImmediateData=Yes InitialR2T=No \
		  MaxOutstandingR2T=16; do
		tadm --op update --mode target --tid 1 --name "${kv%%=*}" \
			--value "${kv#*=}"
	done
fi
tadm --op bind --mode target --tid 1 -I 127.0.0.1

# the gateway LUN: holdfastd's LUN 3 is tgtd's LUN 1, through libiscsi
if [ -n "$GW_WORKLOADS$DD_WORKLOADS" ]; then
	TGT_IPC_SOCKET=$DIR/hf.sock timeout 30 "$TGTADM" -C "$HF_CTL" \
		--lld iscsi --op new --mode logicalunit --tid 1 --lun 3 \
		--bstype iscsi -b "iscsi://127.0.0.1:$TGT_PORT/$IQN/1" ||
		{ cat "$DIR/holdfastd.log" >&2; die "cannot add the gateway LUN"; }
fi
# the same with CRC32C data digests (holdfast's relay): LUN 6
if [ -n "$DD_WORKLOADS" ]; then
	tadm --op update --mode target --tid 1 --name DataDigest \
		--value CRC32C,None
	TGT_IPC_SOCKET=$DIR/hf.sock timeout 30 "$TGTADM" -C "$HF_CTL" \
		--lld iscsi --op new --mode logicalunit --tid 1 --lun 6 \
		--bstype iscsi -b "iscsi://127.0.0.1:$TGT_PORT/$IQN/1" \
		--bsopts "data_digest=crc32c" ||
		{ cat "$DIR/holdfastd.log" >&2; die "cannot add the digest gateway LUN"; }
fi

url() {	# TARGET LUN
	case $1 in
	holdfast) echo "iscsi://127.0.0.1:$HF_PORT/$IQN/$2" ;;
	holdfast-bp) echo "iscsi://127.0.0.1:$BP_PORT/$IQN/$2" ;;
	tgtd) echo "iscsi://127.0.0.1:$TGT_PORT/$IQN/$2" ;;
	gateway) echo "iscsi://127.0.0.1:$HF_PORT/$IQN/3" ;;	# = tgtd LUN 1
	gwdd) echo "iscsi://127.0.0.1:$HF_PORT/$IQN/6" ;;	# the same, digests
	san) echo "iscsi://127.0.0.1:$TGT_PORT/$IQN/1" ;;
	esac
}

# ---- workloads ---------------------------------------------------------

# name -> "LUN BUFSIZE DEPTH STEP WRITE(0/1) PILOTCOUNT SESSIONS HFLUN"
# (HFLUN: holdfast's LUN when it differs; "-" = the same LUN)
BLK4K=4096
STRIDE4K=$((BLK4K * 40503))	# odd number of blocks: a full permutation
spec() {
	case $1 in
	rand4k-read-qd1)   echo "1 4k 1 $STRIDE4K 0 400 1 -" ;;
	rand4k-read-qd32)  echo "1 4k 32 $STRIDE4K 0 2000 1 -" ;;
	rand4k-write-qd1)  echo "1 4k 1 $STRIDE4K 1 400 1 -" ;;
	rand4k-write-qd32) echo "1 4k 32 $STRIDE4K 1 2000 1 -" ;;
	seq1m-read-qd8)    echo "1 1M 8 1M 0 64 1 -" ;;
	seq1m-write-qd8)   echo "1 1M 8 1M 1 64 1 -" ;;
	null4k-read-qd32)  echo "2 4k 32 4k 0 2000 1 -" ;;
	null1m-read-qd8)   echo "2 1M 8 1M 0 64 1 -" ;;
	null4k-read-qd32-x2) echo "2 4k 32 4k 0 2000 2 -" ;;
	null4k-read-qd32-x4) echo "2 4k 32 4k 0 2000 4 -" ;;
	null4k-read-qd32-retry) echo "2 4k 32 4k 0 2000 1 4" ;;
	rand4k-write-qd32-retry) echo "1 4k 32 $STRIDE4K 1 2000 1 5" ;;
	*) return 1 ;;
	esac
}
hf_only() { case $1 in *-retry) return 0 ;; esac; return 1; }
for w in $WORKLOADS $GW_WORKLOADS $DD_WORKLOADS; do
	spec "$w" >/dev/null || die "unknown workload $w"
	case $w in null*) case " $GW_WORKLOADS $DD_WORKLOADS " in *" $w "*)
		die "$w has no gateway form (the gateway LUN is a file LUN)" ;;
		esac ;; esac
done

START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }

# run_one TARGET WORKLOAD COUNT -> prints "seconds cpu_seconds", or nothing
# on failure.  With several sessions every qemu-img sends COUNT requests
# (at its own offset) and seconds is the slowest one's.
run_one() {
	local lun bs depth step wr pilot sess hflun out secs i pid c0 c1
	read -r lun bs depth step wr pilot sess hflun <<<"$(spec "$2")"
	[ "$1" = holdfast ] && [ "$hflun" != - ] && lun=$hflun
	local args=(-c "$3" -d "$depth" -s "$bs" -S "$step" -f raw)
	[ "$wr" = 1 ] && args+=(-w)
	case $1 in	# whose CPU: the gateway is holdfastd, the SAN is tgtd
	holdfast|gateway|gwdd) pid=$HF_PID ;;
	*) pid=$TGT_PID ;;
	esac
	c0=$(cpu_ticks "$pid")
	local pids=()
	for i in $(seq "$sess"); do
		timeout 60 qemu-img bench "${args[@]}" -o $(((i - 1) * 1048576)) \
			"$(url "$1" "$lun")" >"$DIR/run.$i" 2>&1 &
		pids+=($!)
	done
	wait "${pids[@]}"	# not a bare wait: the daemons are children too
	c1=$(cpu_ticks "$pid")
	secs=
	for i in $(seq "$sess"); do
		out=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' "$DIR/run.$i")
		if [ -z "$out" ]; then
			echo "bench: $1 $2 failed: $(cat "$DIR/run.$i")" >&2
			return 1
		fi
		secs=$(python3 -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' $secs $out)
	done
	echo "$secs $(python3 -c 'import sys; print((int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]))' "$c0" "$c1" "$TICK_HZ")"
}

echo "bench: holdfastd pid $HF_PID port $HF_PORT, tgtd pid $TGT_PID port $TGT_PORT" \
	"(tgtd parameters: $TGTD_PARAMS)"
echo "bench: $(nproc) CPUs, $(uname -r), load average" \
	"$(cut -d' ' -f1-3 /proc/loadavg) (initiator and both targets share them)"
# ---- floors: what the machine itself does ------------------------------

IPERF_MBS=
ECHO_US=
if [ "$FLOORS" = 1 ]; then
	IPERF_PORT=$(free_port "$HF_PORT" "$TGT_PORT")
	iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT" >"$DIR/iperf3-s.log" 2>&1 &
	IPERF_PID=$!
	sleep 0.5
	IPERF_MBS=$(iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t 3 -J 2>/dev/null |
		python3 -c 'import json, sys
print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6))' 2>/dev/null)
	stop_pid "$IPERF_PID"
	IPERF_PID=
	ECHO_LINE=$("$TCPECHO" -s 4096 -n 20000)
	ECHO_US=$(sed -n 's/.* mean_us=\([0-9.]*\).*/\1/p' <<<"$ECHO_LINE")
	echo "bench: floor: iperf3 loopback ${IPERF_MBS:-?} MB/s (1 stream, 3 s)"
	echo "bench: floor: $ECHO_LINE"
fi

# ---- QD1 from the leanest initiator ---------------------------------------

# qemu-img bench's QD1 round trip carries QEMU's block layer and event loop
# as well as the target; tools/iscsiqd1 (libiscsi's synchronous calls: one
# poll and the socket's send/recv per command) against the null LUN is the
# like-for-like partner of the TCP echo.  Both targets, reads and writes,
# alternating, QD1_REPEAT runs each; the target's CPU per command from
# /proc as for the workloads.  Lines "target op mean_us p50_us init_cpu_us
# target_cpu_us" in $DIR/qd1.
QD1_FILE=$DIR/qd1
: >"$QD1_FILE"
# holdfast-bp: the same daemon with --busy-poll (a null LUN)
BUSY_US=${BENCH_BUSY_POLL:-50}
QD1_TARGETS="holdfast tgtd"
if [ "$FLOORS" = 1 ] && [ -x "$QD1TOOL" ] && [ "$BUSY_US" != 0 ]; then
	BP_PORT=$(free_port "$HF_PORT" "$TGT_PORT" "${IPERF_PORT:-0}")
	cat >"$DIR/bp.conf" <<EOF
portals = [ "127.0.0.1:$BP_PORT" ];
targets = (
  { name = "$IQN";
    initiators = [ "127.0.0.1" ];
    luns = ( { lun = 2; backend = "null"; size = "$SIZE"; } ); } );
EOF
	TGT_IPC_SOCKET=$DIR/bp.sock "$HOLDFASTD" -f -c "$DIR/bp.conf" \
		-C "$((HF_CTL + 1))" -b "$BUSY_US" >"$DIR/bp.log" 2>&1 \
		</dev/null &
	BP_PID=$!
	if wait_port "$BP_PORT" "$BP_PID"; then
		QD1_TARGETS="holdfast holdfast-bp tgtd"
	else
		cat "$DIR/bp.log" >&2
		echo "bench: holdfastd --busy-poll did not start" >&2
	fi
fi
if [ "$FLOORS" = 1 ] && [ -x "$QD1TOOL" ]; then
	for r in $(seq "${QD1_REPEAT:-3}"); do
		# the echo floor again in every round: it moves with the
		# machine as much as the targets do
		line=$("$TCPECHO" -s 4096 -n 10000) &&
			python3 -c '
import sys
kv = dict(x.split("=") for x in sys.argv[1].split()[1:])
print("echo rt", kv["mean_us"], kv["p50_us"], kv["cpu_us_per_rt"], 0)' \
				"$line" >>"$QD1_FILE"
		for op in read write; do
			order=$QD1_TARGETS
			[ $((r % 2)) = 0 ] &&
				order=$(echo $order | tr ' ' '\n' | tac)
			for t in $order; do
				pid=$HF_PID; [ "$t" = tgtd ] && pid=$TGT_PID
				[ "$t" = holdfast-bp ] && pid=$BP_PID
				c0=$(cpu_ticks "$pid")
				line=$("$QD1TOOL" "$(url "$t" 2)" -n 10000 \
					$([ $op = write ] && echo -w) 2>&1) || {
					echo "bench: iscsiqd1 $t $op failed: $line" >&2
					continue; }
				c1=$(cpu_ticks "$pid")
				python3 -c '
import sys
t, op, line, c0, c1, hz = sys.argv[1:7]
kv = dict(x.split("=") for x in line.split()[1:])
n = int(kv["count"])
print(t, op, kv["mean_us"], kv["p50_us"], kv["cpu_us_per_io"],
      "%.2f" % ((int(c1) - int(c0)) / float(hz) * 1e6 / n))' \
					"$t" "$op" "$line" "$c0" "$c1" \
					"$TICK_HZ" >>"$QD1_FILE"
			done
		done
	done
fi

# ---- memory ------------------------------------------------------------

# RSS of holdfastd sampled in the middle of 2 s runs against the null LUN,
# before any workload: 1 session with 1 command in flight, 4 sessions with
# 1 each, 4 sessions with 128 each (the command window).  Each probe needs
# a superset of the previous one's memory, so what the allocator retains
# from one probe is reused by the next and the differences stay honest.
RSS_SESS=
RSS_CMDS=
rss_during() {	# SESSIONS DEPTH -> VmRSS KiB sampled mid-run
	local i r pids=()
	for i in $(seq "$1"); do
		timeout 60 qemu-img bench -c 100000000 -d "$2" -s 4k -f raw \
			"$(url holdfast 2)" >/dev/null 2>&1 &
		pids+=($!)
	done
	sleep 2
	r=$(rss_kib "$HF_PID")
	# stop the timeouts we started (they pass the signal on to qemu-img)
	kill "${pids[@]}" 2>/dev/null
	wait "${pids[@]}" 2>/dev/null
	echo "$r"
}
if [ "$MEMORY" = 1 ]; then
	r1=$(rss_during 1 1)
	r4=$(rss_during 4 1)
	r4q=$(rss_during 4 128)
	RSS_SESS=$(( (r4 - r1) / 3 ))
	RSS_CMDS=$(( (r4q - r4) * 1000 / (4 * 127) ))
	echo "bench: memory: idle $RSS_IDLE KiB, 1 session $r1, 4 sessions $r4," \
		"4 x 128 commands $r4q"
fi

# bench_pair A B WORKLOADS BUDGET: calibrate on A, then run every workload
# REPEAT times on both, alternating who goes first; appends to $RESULTS
# ("target workload seconds count bytes sessions cpu_seconds").  Sets partial=1 if the budget
# ran out.
bench_pair() {
	local a=$1 b=$2 works=$3 budget=$4 start r i w t order secs bytes
	local -A count
	start=$(date +%s)
	echo "bench: $a vs $b: calibrating counts for ${SECONDS_PER_RUN}s runs"
	for w in $works; do
		read -r _ _ _ _ _ pilot _ <<<"$(spec "$w")"
		secs=$(run_one "$a" "$w" "$pilot") || die "calibration of $w failed"
		secs=${secs%% *}
		count[$w]=$(python3 -c '
import sys
pilot, secs, want = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
n = int(pilot * want / max(secs, 1e-3))
print(max(pilot, min(n, pilot * 1000)))' "$pilot" "$secs" "$SECONDS_PER_RUN")
	done
	for r in $(seq "$REPEAT"); do
		i=0
		for w in $works; do
			i=$((i + 1))
			if [ $(( $(date +%s) - start )) -ge "$budget" ]; then
				partial=1
				return
			fi
			# alternate who goes first, per repeat and per workload
			if [ $(((r + i) % 2)) = 0 ]; then order="$a $b"
			else order="$b $a"; fi
			for t in $order; do
				[ "$t" = "$b" ] && hf_only "$w" && continue
				read -r _ bs _ _ _ _ sess _ <<<"$(spec "$w")"
				bytes=$([ "$bs" = 1M ] && echo 1048576 || echo 4096)
				if res=$(run_one "$t" "$w" "${count[$w]}"); then
					read -r secs cpu <<<"$res"
					echo "$t $w $secs ${count[$w]} $bytes $sess $cpu" >>"$RESULTS"
				fi
			done
			[ -t 2 ] && printf '\rbench: repeat %d/%d, %-18s (%ss)   ' \
				"$r" "$REPEAT" "$w" "$(elapsed)" >&2
		done
	done
}

RESULTS=$DIR/results.txt	# target workload seconds count bytes sessions cpu_s
: >"$RESULTS"
partial=0
[ -n "$WORKLOADS" ] && bench_pair holdfast tgtd "$WORKLOADS" "$BUDGET"
hf_partial=$partial
partial=0
[ -n "$GW_WORKLOADS" ] && bench_pair gateway san "$GW_WORKLOADS" "$GW_BUDGET"
gw_partial=$partial
partial=0
[ -n "$DD_WORKLOADS" ] && bench_pair gwdd gateway "$DD_WORKLOADS" "$DD_BUDGET"
dd_partial=$partial
[ -t 2 ] && echo >&2
echo "bench: $(wc -l <"$RESULTS") runs in $(elapsed)s"

# ---- table -------------------------------------------------------------

# table A B WORKLOADS PARTIAL RATIO-NAME MEANING
table() {
python3 - "$RESULTS" "$4" "$3" "$1" "$2" "$5" "$6" "$IPERF_MBS" "$ECHO_US" \
	"$RSS_IDLE" "$RSS_SESS" "$RSS_CMDS" "$QD1_FILE" <<'EOF'
import statistics, sys
from collections import defaultdict

path, partial, order = sys.argv[1], sys.argv[2] == "1", sys.argv[3].split()
A, B, rname, meaning = sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
num = lambda x: float(x) if x else None
iperf_mbs, echo_us = num(sys.argv[8]), num(sys.argv[9])
rss_idle, rss_sess, rss_cmds = (num(x) for x in sys.argv[10:13])
main = A == "holdfast"      # the holdfast/tgtd table carries the ratios
runs = defaultdict(list)    # (target, workload) -> [(iops, MB/s, cpu us/IO, lat us)]
for line in open(path):
    t, w, secs, count, size, sess, cpu = line.split()
    secs, count, size, sess = float(secs), int(count), int(size), int(sess)
    n = count * sess
    runs[t, w].append((n / secs, n * size / secs / 1e6,
                       float(cpu) * 1e6 / n, secs * 1e6 / count))

def med(t, w, k):
    v = [r[k] for r in runs.get((t, w), [])]
    return statistics.median(v) if v else None

def spread(t, w):
    """(max - min) / median of the IOPS runs, in percent: the noise."""
    v = [r[0] for r in runs.get((t, w), [])]
    if len(v) < 2:
        return None
    return 100.0 * (max(v) - min(v)) / statistics.median(v)

def fmt(v, width, prec=0):
    return ("%*.*f" % (width, prec, v)) if v is not None else "%*s" % (width, "-")

def div(a, b):
    return a / b if a is not None and b else None

print()
print("%-24s %9s %9s %8s %8s %6s %6s %6s %8s %7s %3s %5s %5s" % ("workload",
      A, B, A[:3] + " MB/s", B[:3] + " MB/s", rname, A[:3], B[:3],
      A[:3], rname, "n", A[:3] + "+-", B[:3] + "+-"))
print("%-24s %9s %9s %8s %8s %6s %6s %6s %8s %7s %3s %5s %5s" % ("", "IOPS",
      "IOPS", "", "", "IOPS", "us/IO", "us/IO", "IOPS/", "CPU/IO", "", "%",
      "%"))
print("%-24s %9s %9s %8s %8s %6s %6s %6s %8s %7s %3s %5s %5s" % ("", "", "",
      "", "", "", "CPU", "CPU", "core", "", "", "", ""))
for w in order:
    hi, ti = med(A, w, 0), med(B, w, 0)
    hm, tm = med(A, w, 1), med(B, w, 1)
    hc, tc = med(A, w, 2), med(B, w, 2)
    n = len(runs.get((A, w), []))
    if runs.get((B, w)):
        n = min(n, len(runs[(B, w)]))
    print("%-24s %s %s %s %s %s %s %s %s %s %3d %s %s" % (w, fmt(hi, 9),
          fmt(ti, 9), fmt(hm, 8, 1), fmt(tm, 8, 1), fmt(div(hi, ti), 6, 2),
          fmt(hc, 6, 1), fmt(tc, 6, 1), fmt(div(1e6, hc), 8),
          fmt(div(hc, tc), 7, 2), n, fmt(spread(A, w), 5),
          fmt(spread(B, w), 5)))
print()
print("medians of n runs per target; %s IOPS %s;" % (rname, meaning))
print("us/IO CPU is the daemon's utime+stime per I/O (all threads);")
print("IOPS/core = I/Os per second of target CPU; +- is (max - min) / median")
print("of a target's IOPS runs: a ratio closer to 1.00 than that is noise")
if partial:
    print("NOTE: time budget reached - some workloads have fewer runs")

if main:
    print()
    print("ratios (issue 16 goals in brackets):")
    def ratio_line(label, a, b, goal, unit=""):
        r = div(a, b)
        print("  %-44s %s  (%s / %s%s) [%s]" % (label, fmt(r, 6, 3),
              fmt(a, 1, 1), fmt(b, 1, 1), unit, goal))
    for w in ("rand4k-read-qd1", "rand4k-write-qd1"):
        if ("holdfast", w) in runs:
            ratio_line(w + " latency / TCP echo", med("holdfast", w, 3),
                       echo_us, "<= 1.10", " us")
    for w in ("seq1m-read-qd8", "null1m-read-qd8"):
        if ("holdfast", w) in runs:
            ratio_line(w + " / iperf3", med("holdfast", w, 1), iperf_mbs,
                       ">= 0.90", " MB/s")
    for w, base in (("null4k-read-qd32-retry", "null4k-read-qd32"),
                    ("rand4k-write-qd32-retry", "rand4k-write-qd32")):
        if ("holdfast", w) in runs and ("holdfast", base) in runs:
            ratio_line("retry / report IOPS, " + base, med("holdfast", w, 0),
                       med("holdfast", base, 0), "0.98 .. 1.02")
            ratio_line("retry / report CPU/IO, " + base, med("holdfast", w, 2),
                       med("holdfast", base, 2), "0.98 .. 1.02", " us")
    for w in ("null4k-read-qd32-x2", "null4k-read-qd32-x4"):
        if ("holdfast", w) in runs and ("holdfast", "null4k-read-qd32") in runs:
            ratio_line(w + " / 1 session IOPS", med("holdfast", w, 0),
                       med("holdfast", "null4k-read-qd32", 0), "grows")
    if ("holdfast", "null4k-read-qd32") in runs:
        print("  %-44s %6.2f us [<= 3]" % ("null4k-read-qd32 target CPU/IO",
              med("holdfast", "null4k-read-qd32", 2)))
    qd1 = defaultdict(list)     # (target, op) -> [(mean, p50, init cpu, tgt cpu)]
    try:
        for line in open(sys.argv[13]):
            t, op, *v = line.split()
            qd1[t, op].append(tuple(float(x) for x in v))
    except (IndexError, OSError):
        pass
    if qd1:
        print()
        print("QD1 from a lean initiator (tools/iscsiqd1: libiscsi sync calls,"
              " null LUN, 4 KiB;")
        print("medians of %d runs of 10,000):" % max(len(v) for v in
                                                   qd1.values()))
        print("  %-16s %9s %9s %12s %12s" % ("", "mean us", "p50 us",
              "init CPU/IO", "target CPU/IO"))
        for op in ("read", "write"):
            for t in ("holdfast", "holdfast-bp", "tgtd"):
                v = qd1.get((t, op))
                if v:
                    m = [statistics.median(x[i] for x in v) for i in range(4)]
                    print("  %-16s %9.1f %9.1f %12.1f %12.1f" % (
                          "%s %s" % (t, op), *m))
        e = qd1.get(("echo", "rt"))
        if e:
            print("  %-16s %9.1f %9.1f %12.1f %12s" % ("TCP echo", *(
                  statistics.median(x[i] for x in e) for i in range(3)),
                  "(both ends)"))
        floor = statistics.median(x[0] for x in e) if e else echo_us
        for t, label in (("holdfast", "null4k-%s-qd1 (lean) latency"),
                         ("holdfast-bp", "null4k-%s-qd1 lean+busy-poll")):
            for op in ("read", "write"):
                v = qd1.get((t, op))
                if v:
                    ratio_line(label % op + " / TCP echo",
                               statistics.median(x[0] for x in v), floor,
                               "<= 1.10", " us")
        for op in ("read", "write"):
            v, b = qd1.get(("holdfast", op)), qd1.get(("holdfast-bp", op))
            if v and b:
                ratio_line("busy-poll / off, %s-qd1 target CPU/IO" % op,
                           statistics.median(x[3] for x in b),
                           statistics.median(x[3] for x in v), "-", " us")
    if rss_idle is not None:
        print()
        print("memory (holdfastd VmRSS): idle %.0f KiB, per session %s KiB, per"
              " 1,000 outstanding commands %s KiB" % (rss_idle,
              fmt(rss_sess, 1), fmt(rss_cmds, 1)))
EOF
}

if [ -n "$WORKLOADS" ]; then
	table holdfast tgtd "$WORKLOADS" "$hf_partial" hf/tgt \
		"> 1.00 means holdfast is faster"
fi
if [ -n "$GW_WORKLOADS" ]; then
	echo
	echo "gateway: holdfastd LUN 3 (backend iscsi) in front of tgtd LUN 1," \
		"against tgtd LUN 1 directly"
	table gateway san "$GW_WORKLOADS" "$gw_partial" gw/san \
		"< 1.00 is what the gateway hop costs"
fi
if [ -n "$DD_WORKLOADS" ]; then
	echo
	echo "data digest: holdfastd LUN 6 (gateway, data_digest=crc32c through" \
		"the relay) against LUN 3 (the same gateway without)"
	table gwdd gateway "$DD_WORKLOADS" "$dd_partial" dd/gw \
		"< 1.00 is what the data digest relay costs"
fi
