#!/bin/sh
# /init of the holdfast test guest (busybox sh).
#
# Runs one scenario chosen on the kernel command line and reports on the
# serial console (console=ttyS0), one line each, for tests/guest/guest.py:
#   RESULT: PASS NAME [details]
#   RESULT: FAIL NAME reason
#   SUM SHA256 PATH        checksum of a file the host verifies in the image
#   LOOP-START / STALL / IOERR / LOOP-END   progress of the write loop
# then powers off.  A crash of this script panics the kernel, and with
# panic=-1 and QEMU's -no-reboot that ends the run too.
#
# Parameters (hf_KEY=VALUE on the command line):
#   hf_name     scenario name echoed in the RESULT line
#   hf_disk     virtio  - the disk is QEMU's iSCSI initiator behind virtio-blk
#               iscsi   - log in with open-iscsi over the user-mode network
#               mpath   - log in to two nodes (hf_portal, hf_portal2) and
#                         use the dm-multipath device multipathd makes of
#                         the two paths (two holdfast nodes, ALUA)
#   hf_test     dataset - mkfs, write files with fsync, remount, verify
#               loop    - mkfs, write+fsync loop for hf_dur seconds while
#                         the host breaks the backing store, then verify
#               resize  - print RESIZE-READY, wait for the host to grow
#                         the LUN, see the new size, use the new blocks
#   hf_expect   clean (no I/O error may reach the guest) | error (the
#               control: I/O errors and a read-only ext4 are expected)
#   hf_iqn, hf_portal (10.0.2.100:3260), hf_lun (1)
#   hf_st       strict - SendTargets must answer hf_portal; any - the target
#               may advertise another address, the node is then created
#               by hand with hf_portal (for a baseline target like tgtd)
#   hf_sdtimeout   /sys/block/sdX/device/timeout in seconds (iscsi disk,
#               and each path of the mpath disk)
#   hf_repl, hf_noopint, hf_noopto   open-iscsi replacement_timeout and
#               noop_out_interval/timeout for the node (iscsi disk)
#   hf_digest   CRC32C: header and data digests required (iscsi disk)
#   hf_mb       size of the big file of the data set in MiB
#   hf_dur      write-loop duration in seconds
#   hf_ctl      a serial port (ttyS1) the host writes to: the write loop
#               also ends, before hf_dur, once the host wrote "stop"
#   hf_minstall the loop must have stalled at least this long (s), which
#               shows the outage really reached the guest
#   hf_watchdog fail with diagnostics after this many seconds (0 = never)

export PATH=/usr/sbin:/usr/bin:/sbin:/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/lock/iscsi

param() {
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1"=*) echo "${w#*=}"; return ;; esac
	done
	echo "$2"
}

NAME=$(param hf_name unnamed)
DISKTYPE=$(param hf_disk virtio)
TEST=$(param hf_test dataset)
EXPECT=$(param hf_expect clean)
IQN=$(param hf_iqn "")
PORTAL=$(param hf_portal 10.0.2.100:3260)
PORTAL2=$(param hf_portal2 10.0.2.101:3260)
LUN=$(param hf_lun 1)
ST=$(param hf_st strict)
SDTIMEOUT=$(param hf_sdtimeout "")
REPL=$(param hf_repl "")
NOOPINT=$(param hf_noopint "")
NOOPTO=$(param hf_noopto "")
DIGEST=$(param hf_digest "")
MB=$(param hf_mb 16)
DUR=$(param hf_dur 30)
MINSTALL=$(param hf_minstall 0)
CTL=$(param hf_ctl "")
WATCHDOG=$(param hf_watchdog 0)

DEV=""
LOGGED_IN=0

log() { echo "GUEST: $*"; }

# Centiseconds since boot (monotonic).  The integer part of the uptime is
# never 0 here, so the concatenation never has a leading zero.
now_cs() {
	read -r up _ < /proc/uptime
	echo "${up%.*}${up#*.}"
}

diagnostics() {
	echo "---- diagnostics ----"
	echo "-- /proc/mounts"; cat /proc/mounts
	echo "-- block devices"; ls -l /sys/block/ 2>&1
	if [ "$DISKTYPE" = iscsi ]; then
		echo "-- iscsiadm -m session -P 3"
		iscsiadm -m session -P 3 2>&1 | head -60
		echo "-- iscsid log (tail)"; tail -40 /tmp/iscsid.log 2>/dev/null
	fi
	if [ "$DISKTYPE" = mpath ]; then
		echo "-- multipath -ll"; timeout 10 multipath -ll 2>&1 | head -30
		echo "-- dmsetup status"; dmsetup status 2>&1 | head
		echo "-- multipathd log (tail)"; tail -60 /tmp/multipathd.log 2>/dev/null
	fi
	echo "-- dmesg (tail)"; dmesg | tail -80
	echo "---- end diagnostics ----"
}

finish() {
	timeout 10 sync
	echo "GUEST: poweroff"
	poweroff -f
	sleep 10
}

pass() { echo "RESULT: PASS $NAME $*"; finish; }
fail() {
	echo "RESULT: FAIL $NAME $*"
	diagnostics
	finish
}

load_modules() {
	while read -r m; do
		out=$(insmod "$m" 2>&1) || case "$out" in
			*"File exists"*) ;;
			*) log "insmod $m: $out" ;;
		esac
	done < /etc/modules-load
}

# wait_for SECONDS COMMAND...: poll COMMAND every 0.2 s.
wait_for() {
	n=$(($1 * 5)); shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.2
		n=$((n - 1))
	done
	return 1
}

# ------------------------------------------------------------------ disks

virtio_disk() {
	wait_for 20 test -b /dev/vda || fail "no /dev/vda (QEMU iSCSI drive)"
	DEV=/dev/vda
}

# The sd disk of LUN $LUN of our session, or nothing.
scsi_disk_of_lun() {
	for b in /sys/bus/scsi/devices/*:*:*:"$LUN"/block/*; do
		[ -e "$b" ] && { echo "${b##*/}"; return 0; }
	done
	return 1
}

iscsi_disk() {
	[ -n "$IQN" ] || fail "hf_iqn not given"
	ip link set lo up
	ip link set eth0 up || fail "no eth0"
	ip addr add 10.0.2.15/24 dev eth0 || fail "ip addr add"
	iscsid -f > /tmp/iscsid.log 2>&1 &
	# iscsiadm answers "no active sessions" (exit 21) once iscsid is up
	wait_for 10 sh -c 'iscsiadm -m session >/dev/null 2>&1; [ $? = 21 ]' ||
		fail "iscsid did not start"

	disc=$(iscsiadm -m discovery -t sendtargets -p "$PORTAL" 2>&1)
	rc=$?
	echo "$disc" | sed 's/^/DISCOVERY: /'
	[ $rc = 0 ] || fail "discovery on $PORTAL failed (exit $rc)"
	if echo "$disc" | grep -q "^$PORTAL,[0-9]* $IQN\$"; then
		log "SendTargets advertised $PORTAL for $IQN"
	elif [ "$ST" = any ] && echo "$disc" | grep -q " $IQN\$"; then
		log "SendTargets advertised another address; adding node $PORTAL"
		iscsiadm -m node -o new -T "$IQN" -p "$PORTAL" >/dev/null ||
			fail "iscsiadm -m node -o new"
	else
		fail "SendTargets did not answer $PORTAL $IQN"
	fi
	node="-m node -T $IQN -p $PORTAL"
	set_node() {
		[ -n "$2" ] || return 0
		iscsiadm $node -o update -n "$1" -v "$2" ||
			fail "iscsiadm update $1"
	}
	set_node node.session.timeo.replacement_timeout "$REPL"
	set_node "node.conn[0].timeo.noop_out_interval" "$NOOPINT"
	set_node "node.conn[0].timeo.noop_out_timeout" "$NOOPTO"
	set_node "node.conn[0].iscsi.HeaderDigest" "$DIGEST"
	set_node "node.conn[0].iscsi.DataDigest" "$DIGEST"
	t0=$(now_cs)
	out=$(iscsiadm $node --login 2>&1) || {
		echo "$out"; fail "login to $IQN at $PORTAL failed"; }
	echo "$out" | sed 's/^/LOGIN: /'
	LOGGED_IN=1
	if [ -n "$DIGEST" ]; then
		neg=$(iscsiadm -m session -P 2 2>&1 | grep -E "(Header|Data)Digest")
		echo "$neg" | sed 's/^[[:space:]]*/NEGOTIATED: /'
		[ "$(echo "$neg" | grep -c ": $DIGEST\$")" = 2 ] ||
			fail "digests not negotiated as $DIGEST"
	fi
	wait_for 20 scsi_disk_of_lun > /dev/null ||
		fail "no sd disk for LUN $LUN after login"
	sd=$(scsi_disk_of_lun)
	log "LUN $LUN is /dev/$sd (login took $(( ($(now_cs) - t0) * 10 )) ms)"
	wait_for 10 test -b "/dev/$sd" || fail "no /dev/$sd node"
	if [ -n "$SDTIMEOUT" ]; then
		echo "$SDTIMEOUT" > "/sys/block/$sd/device/timeout" ||
			fail "cannot set the sd timeout"
		log "sd timeout $(cat /sys/block/$sd/device/timeout) s"
	fi
	DEV=/dev/$sd
}

# Two holdfast nodes of one target, a path each: discovery and login on
# both portals, then multipathd builds one map of the two sd disks (no
# udev here: multipath reads the WWID from sysfs).
mpath_disk() {
	[ -n "$IQN" ] || fail "hf_iqn not given"
	ip link set lo up
	ip link set eth0 up || fail "no eth0"
	ip addr add 10.0.2.15/24 dev eth0 || fail "ip addr add"
	iscsid -f > /tmp/iscsid.log 2>&1 &
	wait_for 10 sh -c 'iscsiadm -m session >/dev/null 2>&1; [ $? = 21 ]' ||
		fail "iscsid did not start"
	for p in "$PORTAL" "$PORTAL2"; do
		disc=$(iscsiadm -m discovery -t sendtargets -p "$p" 2>&1) ||
			{ echo "$disc"; fail "discovery on $p failed"; }
		echo "$disc" | sed 's/^/DISCOVERY: /'
		node="-m node -T $IQN -p $p"
		# a dead node must not hold I/O in the session for long: the
		# path fails and dm-multipath sends it down the other one
		iscsiadm $node -o update -n node.session.timeo.replacement_timeout -v 5 ||
			fail "iscsiadm update"
		out=$(iscsiadm $node --login 2>&1) || {
			echo "$out"; fail "login to $IQN at $p failed"; }
		echo "$out" | sed 's/^/LOGIN: /'
	done
	wait_for 20 sh -c '[ $(ls -d /sys/bus/scsi/devices/*:*:*:'"$LUN"'/block/* 2>/dev/null | wc -l) = 2 ]' ||
		fail "not two sd disks for LUN $LUN after login"
	for b in /sys/bus/scsi/devices/*:*:*:"$LUN"/block/*; do
		sd=${b##*/}
		wait_for 10 test -b "/dev/$sd" || fail "no /dev/$sd node"
		if [ -n "$SDTIMEOUT" ]; then
			echo "$SDTIMEOUT" > "/sys/block/$sd/device/timeout" ||
				fail "cannot set the sd timeout of $sd"
		fi
		log "path /dev/$sd: dh $(cat /sys/block/$sd/device/dh_state 2>/dev/null) timeout $(cat /sys/block/$sd/device/timeout)s"
	done
	mkdir -p /etc/multipath /etc/multipath/conf.d /run/udev/data
	# No udevd here: multipath-tools lists only block devices udev has
	# initialized, which is a database entry per device.  Make one per
	# path (the WWID is read from sysfs, uid_attribute "").
	for b in /sys/bus/scsi/devices/*:*:*:"$LUN"/block/*; do
		echo "I:1" > "/run/udev/data/b$(cat "$b/dev")"
	done
	log "starting multipathd"
	multipathd -d -s -v2 > /tmp/multipathd.log 2>&1 &
	wait_for 30 sh -c 'dmsetup ls --target multipath 2>/dev/null | grep -qv "No devices"' || {
		tail -60 /tmp/multipathd.log; fail "multipathd made no map"; }
	timeout 10 multipath -ll 2>&1 | sed 's/^/MPATH: /'
	map=$(dmsetup ls --target multipath | awk '!/No devices/ { print $1; exit }')
	[ -n "$map" ] || fail "no multipath map"
	dmsetup mknodes "$map" 2>/dev/null
	wait_for 10 test -b "/dev/mapper/$map" || fail "no /dev/mapper/$map"
	DEV=/dev/mapper/$map
}

iscsi_logout() {
	[ "$DISKTYPE" = mpath ] && return 0	# one node is dead by now
	[ "$LOGGED_IN" = 1 ] || return 0
	sd=${DEV#/dev/}
	out=$(iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout 2>&1) || {
		echo "$out"; fail "logout failed"; }
	echo "$out" | sed 's/^/LOGOUT: /'
	LOGGED_IN=0
	wait_for 10 sh -c "! test -e /sys/block/$sd" ||
		fail "/dev/$sd still present after logout"
	iscsiadm -m session > /dev/null 2>&1
	[ $? = 21 ] || fail "a session is left after logout"
}

# ------------------------------------------------------------------ checks

ERR_PATTERNS='I/O error|EXT4-fs error|EXT4-fs warning|Aborting journal|Remounting filesystem read-only|critical medium error|critical target error|blk_update_request|Buffer I/O'
KMSG_MARK="hf: scenario starts"

# Kernel messages about failed I/O since the scenario started.  With
# multipath a path's sd disk failing is what moves I/O to the other path;
# only errors above the map (dm, ext4) count.
kernel_errors() {
	if [ "$DISKTYPE" = mpath ]; then
		dmesg | sed -n "/$KMSG_MARK/,\$p" | grep -E "$ERR_PATTERNS" |
			grep -vE "dev sd[a-z]|sd [0-9]+:|\[sd[a-z]\]"
		return
	fi
	dmesg | sed -n "/$KMSG_MARK/,\$p" | grep -E "$ERR_PATTERNS"
}

# Kernel initiator messages of a session that failed and recovered.
session_drops() {
	dmesg | sed -n "/$KMSG_MARK/,\$p" |
		grep -E "detected conn error|session recovery timed out|ping timeout"
}

mnt_mode() { awk '$2 == "/mnt" { split($4, o, ","); print o[1] }' /proc/mounts; }
# ro, rw or broken.  Debian's 6.1 kernel no longer flips the superblock to
# read-only after an error ("Remounting filesystem read-only" but
# /proc/mounts still says rw; writes fail with EROFS), so try a write.
mnt_state() {
	if [ "$(mnt_mode)" = ro ]; then echo ro; return; fi
	probe=/mnt/.rwprobe$(now_cs)
	if (: > "$probe") 2> /tmp/touch.err && rm "$probe" 2>> /tmp/touch.err
	then
		echo rw
	elif grep -q "Read-only" /tmp/touch.err; then
		echo ro
	else
		echo "broken($(cat /tmp/touch.err))" | tr ' ' _
	fi
}
mnt_is_ro() { [ "$(mnt_state)" = ro ]; }

make_fs() {
	mkfs.ext4 -q -F "$DEV" > /tmp/mkfs.log 2>&1 || {
		cat /tmp/mkfs.log; fail "mkfs.ext4 $DEV failed"; }
	mount -t ext4 -o errors=remount-ro "$DEV" /mnt || fail "mount $DEV failed"
}

remount_verify() {
	umount /mnt || fail "umount failed"
	echo 3 > /proc/sys/vm/drop_caches
	mount -t ext4 -o errors=remount-ro "$DEV" /mnt || fail "remount failed"
	( cd / && sha256sum -c /tmp/sums ) > /tmp/verify.log 2>&1 || {
		grep -v ': OK$' /tmp/verify.log | head -20
		fail "checksums differ after remount"; }
	log "verified $(wc -l < /tmp/sums) files after remount"
	umount /mnt || fail "final umount failed"
	e2fsck -fn "$DEV" > /tmp/fsck.log 2>&1 || {
		cat /tmp/fsck.log; fail "e2fsck -fn found problems"; }
	log "e2fsck -fn clean"
	sed 's/^\([0-9a-f]*\)  \(.*\)$/SUM \1 \2/' /tmp/sums
}

# Files of several sizes and a small tree, each written with fsync.
test_dataset() {
	make_fs
	t0=$(now_cs)
	mkdir -p /mnt/data/sub/deeper
	dd if=/dev/urandom of=/mnt/data/big bs=1M count="$MB" conv=fsync \
		2>/dev/null || fail "writing big failed"
	for i in 1 2 3 4 5 6 7 8; do
		dd if=/dev/urandom of=/mnt/data/m$i bs=128k count=8 conv=fsync \
			2>/dev/null || fail "writing m$i failed"
	done
	for i in $(seq 1 32); do
		dd if=/dev/urandom of=/mnt/data/sub/s$i bs=$((i * 97)) count=1 \
			conv=fsync 2>/dev/null || fail "writing s$i failed"
	done
	echo "holdfast guest test" > /mnt/data/sub/deeper/note
	sync
	( cd / && find mnt/data -type f | sort | xargs sha256sum ) > /tmp/sums
	log "wrote $(du -sk /mnt/data | cut -f1) KiB in $(( ($(now_cs) - t0) * 10 )) ms"
	remount_verify
	errs=$(kernel_errors)
	[ -z "$errs" ] || { echo "$errs"; fail "kernel reported errors"; }
}

# Online resize: the host grows the LUN once it sees RESIZE-READY.  A
# read gets UNIT ATTENTION CAPACITY DATA HAS CHANGED (the kernel logs
# it); the sysfs rescan is what udev does on that event.  Then the last
# MiB of the new space is written and read back with O_DIRECT.
test_resize() {
	dev=${DEV#/dev/}
	before=$(cat /sys/block/$dev/size)
	now=$before
	echo "RESIZE-READY sectors=$before"
	i=0
	while [ "$i" -lt 60 ] && [ "$now" -le "$before" ]; do
		sleep 1
		dd if="$DEV" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null
		echo 1 > /sys/block/$dev/device/rescan
		now=$(cat /sys/block/$dev/size)
		i=$((i + 1))
	done
	[ "$now" -gt "$before" ] || fail "still $now sectors 60 s after RESIZE-READY"
	echo "RESIZE-SEEN sectors=$now"
	last=$((now / 2048 - 1))
	dd if=/dev/urandom of=/tmp/pat bs=1M count=1 2>/dev/null
	dd if=/tmp/pat of="$DEV" bs=1M seek=$last count=1 oflag=direct \
		conv=fsync 2>/dev/null || fail "writing the new last MiB failed"
	dd if="$DEV" of=/tmp/back bs=1M skip=$last count=1 iflag=direct \
		2>/dev/null || fail "reading the new last MiB failed"
	cmp -s /tmp/pat /tmp/back || fail "the new last MiB reads back different"
	log "capacity-changed messages: $(dmesg | grep -c 'Capacity data has changed')"
	errs=$(kernel_errors)
	[ -z "$errs" ] || { echo "$errs"; fail "kernel reported errors"; }
}

# Write+fsync small files for $DUR seconds, reading each one back with
# O_DIRECT after the next is written.  The host breaks the LUN's backing
# store meanwhile; every stall of 2 s or more is reported.
test_loop() {
	make_fs
	mkdir /mnt/loop
	: > /tmp/sums
	start=$(now_cs)
	i=0; nerr=0; maxstall=0; first_err=""; after_stall=0; prev=""
	if [ -n "$CTL" ]; then
		[ -c "/dev/$CTL" ] || fail "no /dev/$CTL for hf_ctl"
		: > /tmp/hostctl
		cat "/dev/$CTL" > /tmp/hostctl 2>/dev/null &
	fi
	echo "LOOP-START"
	while :; do
		t0=$(now_cs)
		el=$(( (t0 - start) / 100 ))
		[ "$el" -ge "$DUR" ] && break
		# the host is done: stop once the loop shows it resumed (as
		# checked below: 3 writes since the last stall)
		if [ -n "$CTL" ] && [ "$after_stall" -ge 3 ] &&
			grep -q stop /tmp/hostctl; then
			echo "LOOP-STOP by the host at ${el}s"
			break
		fi
		f=mnt/loop/f$i
		dd if=/dev/urandom of=/tmp/chunk bs=64k count=2 2>/dev/null
		op=write
		if dd if=/tmp/chunk of="/$f" bs=64k conv=fsync 2>/tmp/dd.err; then
			sum=$(sha256sum < /tmp/chunk | cut -d' ' -f1)
			echo "$sum  $f" >> /tmp/sums
			ok=1
			# read the previous file back with O_DIRECT, so reads
			# reach the LUN (and its rerror policy) too
			if [ -n "$prev" ]; then
				op=read
				if dd if="/$prev" of=/tmp/readback bs=64k \
					iflag=direct 2>/tmp/dd.err; then
					[ "$(sha256sum < /tmp/readback | cut -d' ' -f1)" = "$prevsum" ] ||
						fail "/$prev read back differs from what was written"
				else
					ok=0
				fi
			fi
			prev=$f; prevsum=$sum
		else
			ok=0
		fi
		stall=$(( $(now_cs) - t0 ))
		[ "$stall" -gt "$maxstall" ] && maxstall=$stall
		if [ "$ok" = 1 ]; then
			after_stall=$((after_stall + 1))
			if [ "$stall" -ge 200 ]; then
				echo "STALL i=$i ms=$((stall * 10)) at=${el}s"
				after_stall=0
			fi
		else
			nerr=$((nerr + 1))
			[ -n "$first_err" ] || first_err=$el
			echo "IOERR i=$i op=$op t=${el}s after_ms=$((stall * 10)) $(tail -1 /tmp/dd.err)"
			# the control only needs to see the failure and the
			# read-only remount (at the next journal commit)
			[ "$EXPECT" = error ] && mnt_is_ro && break
			sleep 1
		fi
		i=$((i + 1))
	done
	if [ "$EXPECT" = error ] && [ "$nerr" -gt 0 ]; then
		# a journal commit that fails aborts the journal and remounts
		# read-only; sync forces one (bounded: syncing a failing disk
		# can take long)
		timeout 10 sync
		wait_for 15 mnt_is_ro
	fi
	mode=$(mnt_state)
	echo "LOOP-END iterations=$i errors=$nerr maxstall_ms=$((maxstall * 10)) after_stall=$after_stall mount=$mode"
	errs=$(kernel_errors)
	if [ "$EXPECT" = error ]; then
		[ -n "$errs" ] && echo "$errs" | head -20
		[ "$nerr" -gt 0 ] || fail "no write failed during the outage"
		[ -n "$errs" ] || fail "the kernel logged no I/O error"
		[ "$mode" = ro ] || fail "ext4 is still $mode after the errors"
		umount /mnt
		pass "errors=$nerr first_error_at=${first_err}s mount=$mode"
	fi
	[ -z "$errs" ] || { echo "$errs" | head -40; fail "the guest saw I/O errors"; }
	[ "$nerr" = 0 ] || fail "$nerr writes failed"
	# The target must keep the session alive while it holds commands
	# (NOP-Outs answered); a drop would be hidden by the initiator's
	# recovery and replacement_timeout, so look for it.
	# (with multipath one node is killed on purpose: its session drops)
	drops=$(session_drops)
	[ "$DISKTYPE" = mpath ] || [ -z "$drops" ] ||
		{ echo "$drops"; fail "the iSCSI session dropped during the outage"; }
	[ "$mode" = rw ] || fail "ext4 is $mode, expected rw"
	[ $((maxstall / 100)) -ge "$MINSTALL" ] ||
		fail "longest stall $((maxstall * 10)) ms < ${MINSTALL}s: the outage never reached the guest"
	# the loop resumed: several writes completed after the last stall
	[ "$after_stall" -ge 3 ] ||
		fail "only $after_stall writes after the last stall: the loop did not resume"
	remount_verify
}

# Report a stuck scenario from inside the guest, with the blocked tasks'
# stacks, before the host's hard time limit kills QEMU without a word.
start_watchdog() {
	[ "$WATCHDOG" -gt 0 ] || return 0
	(
		sleep "$WATCHDOG"
		echo "RESULT: FAIL $NAME guest watchdog: still running after ${WATCHDOG}s"
		echo w > /proc/sysrq-trigger 2>/dev/null
		diagnostics
		poweroff -f
	) &
}

# ------------------------------------------------------------------ main

log "scenario $NAME disk=$DISKTYPE test=$TEST expect=$EXPECT kernel $(uname -r)"
start_watchdog
load_modules
echo "$KMSG_MARK" > /dev/kmsg
case "$DISKTYPE" in
	virtio) virtio_disk ;;
	iscsi) iscsi_disk ;;
	mpath) mpath_disk ;;
	*) fail "unknown hf_disk $DISKTYPE" ;;
esac
log "disk $DEV: $(($(blockdev --getsize64 "$DEV") / 1048576)) MiB"
case "$TEST" in
	dataset) test_dataset ;;
	loop) test_loop ;;
	resize) test_resize ;;
	*) fail "unknown hf_test $TEST" ;;
esac
iscsi_logout
pass "disk=$DEV"
