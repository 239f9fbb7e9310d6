"""Online resize of a LUN (README "Resizing a LUN"; scsi_lun_refresh()).

`tgtadm --op update --mode logicalunit --params size=BYTES` grows a live
LUN (the backing file is extended), a smaller size is refused unless
force=1 comes with it, `action=rescan` re-reads a store grown outside
holdfast, and a changed `size` in targets.conf does the same on SIGHUP.
Every I_T nexus then gets UNIT ATTENTION CAPACITY DATA HAS CHANGED and
READ CAPACITY, the Block Limits VPD page and GET LBA STATUS follow at once.
"""

import os
import signal
import struct
import subprocess
import time

from helpers import IQN, IscsiSession, qemu_io, run, tscale, wait_for

MIB = 1 << 20
UA = 6
CAPACITY_CHANGED = 0x2a09
LBA_OUT_OF_RANGE = 0x2100


def lun_file(size="64M"):
    return [{"lun": 1, "backend": "file", "path": "disk1.img", "size": size,
             "block_size": 512}]


def update(d, params, check=True):
    return d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                    "logicalunit", "--tid", "1", "--lun", "1", "--params",
                    params, check=check)


def session(d):
    s = IscsiSession(d.portal, d.iqn, 1)
    s.test_unit_ready()             # the power-on unit attention
    assert s.test_unit_ready().ok
    return s


def expect_ua(s, ascq=CAPACITY_CHANGED):
    r = s.test_unit_ready()
    assert r.status == 2 and r.key == UA and r.ascq == ascq, r
    assert s.test_unit_ready().ok   # reported once


def test_grow_live_with_unit_attention_on_every_nexus(holdfast):
    d = holdfast(luns=lun_file())
    d.require_holdfast()
    a, b = session(d), session(d)
    pattern = bytes(range(256)) * 2
    assert a.write10(7, pattern).ok
    assert a.read_capacity16() == (64 * MIB // 512, 512)
    assert a.read16(64 * MIB // 512, 1).key == 5       # past the end

    update(d, "size=%d" % (128 * MIB))
    assert os.path.getsize(d.path("disk1.img")) == 128 * MIB
    expect_ua(a)
    expect_ua(b)
    assert a.read_capacity16() == (128 * MIB // 512, 512)
    assert b.read_capacity16() == (128 * MIB // 512, 512)
    # the new blocks are there, the old data is kept
    new_lba = 100 * MIB // 512
    assert a.write10(new_lba, pattern).ok
    assert b.read10(new_lba, 1).data == pattern
    assert b.read10(7, 1).data == pattern
    r = a.read16(128 * MIB // 512, 1)
    assert r.key == 5 and r.ascq == LBA_OUT_OF_RANGE
    assert "capacity 131072 -> 262144 blocks" in d.log_text()
    a.close()
    b.close()


def test_shrink_refused_without_force(holdfast):
    d = holdfast(luns=lun_file())
    d.require_holdfast()
    s = session(d)
    r = update(d, "size=%d" % (32 * MIB), check=False)
    assert r.returncode != 0
    assert "shrinking a LUN loses the data" in d.log_text()
    assert os.path.getsize(d.path("disk1.img")) == 64 * MIB
    assert s.test_unit_ready().ok                    # no unit attention
    assert s.read_capacity16() == (64 * MIB // 512, 512)
    # not a multiple of the block size
    assert update(d, "size=1000000", check=False).returncode != 0

    update(d, "size=%d,force=1" % (32 * MIB))
    assert os.path.getsize(d.path("disk1.img")) == 32 * MIB
    expect_ua(s)
    assert s.read_capacity16() == (32 * MIB // 512, 512)
    assert s.read16(32 * MIB // 512, 1).key == 5
    s.close()


def test_rescan_after_outside_growth(holdfast):
    d = holdfast(luns=lun_file())
    d.require_holdfast()
    s = session(d)
    os.truncate(d.path("disk1.img"), 96 * MIB)
    assert s.read_capacity16() == (64 * MIB // 512, 512)   # not yet
    update(d, "action=rescan")
    expect_ua(s)
    assert s.read_capacity16() == (96 * MIB // 512, 512)
    # a rescan that finds the same size raises nothing
    update(d, "action=rescan")
    assert s.test_unit_ready().ok
    # unknown action
    assert update(d, "action=grow", check=False).returncode != 0
    s.close()


def block_limits_and_lba_status(d, lba):
    """GET LBA STATUS at lba through scsicdb (a new session)."""
    from test_scsi_config import cdb
    return cdb(d, 1, "9e12%016x00000020000000" % lba, alloc=32)


def test_get_lba_status_and_null_store_follow(holdfast):
    d = holdfast(luns=lun_file() + [{"lun": 2, "backend": "null",
                                     "size": "1G"}])
    d.require_holdfast()
    past = 64 * MIB // 512 + 8
    r = block_limits_and_lba_status(d, past)
    assert r["status"] == 2 and r["key"] == 5
    update(d, "size=%d" % (128 * MIB))
    r = block_limits_and_lba_status(d, past)
    assert r["status"] == 0, r
    assert struct.unpack(">Q", r["bytes"][8:16])[0] == past
    # a null store resizes too
    d.tgtadm("--lld", "iscsi", "--op", "update", "--mode", "logicalunit",
             "--tid", "1", "--lun", "2", "--params", "size=2G")
    with IscsiSession(d.portal, d.iqn, 2) as s:
        assert s.read_capacity16() == ((2 << 30) // 512, 512)


def test_size_change_on_sighup(holdfast):
    d = holdfast(luns=lun_file())
    d.require_holdfast()
    s = session(d)
    n = d.log_text().count("reload of ")
    d.conf_settings["targets"][0]["luns"][0]["size"] = "80M"
    d._write_conf()
    d.send_signal(signal.SIGHUP)
    assert wait_for(lambda: d.log_text().count("reload of ") > n,
                    10 * tscale()), d.log_text()
    expect_ua(s)
    assert s.read_capacity16() == (80 * MIB // 512, 512)
    assert os.path.getsize(d.path("disk1.img")) == 80 * MIB
    # a smaller size in the file is refused and logged; the LUN stays
    n = d.log_text().count("reload of ")
    d.conf_settings["targets"][0]["luns"][0]["size"] = "16M"
    d._write_conf()
    d.send_signal(signal.SIGHUP)
    assert wait_for(lambda: d.log_text().count("reload of ") > n,
                    10 * tscale()), d.log_text()
    assert "size 16777216 refused" in d.log_text()
    assert s.read_capacity16() == (80 * MIB // 512, 512)
    s.close()


def test_qemu_sees_new_size_and_io_under_resize(holdfast):
    d = holdfast(luns=lun_file())
    d.require_holdfast()
    url = d.url(1)
    bench = subprocess.Popen(
        ["qemu-img", "bench", "-w", "-c", "20000", "-d", "8", "-s", "4k",
         "-f", "raw", url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5 * tscale())
    for i, size in enumerate((72, 80, 96, 128)):
        update(d, "size=%d" % (size * MIB))
        time.sleep(0.2)
    out, _ = bench.communicate(timeout=120 * tscale())
    assert bench.returncode == 0, out.decode(errors="replace")
    info = run(["qemu-img", "info", "-f", "raw", url]).stdout
    assert "134217728" in info, info
    qemu_io(url, "write -P 0x5a 120M 1M", "read -P 0x5a 120M 1M")


def test_resize_through_a_filter_in_the_block_stack(holdfast):
    """The stack's root resizes its store and every filter above takes the
    new size (backends/stack.c), so I/O passes the filters' range checks."""
    d = holdfast(luns=lun_file())
    d.require_holdfast()
    update(d, "filter_add=passthrough,filter_pos=above:file")
    s = session(d)
    update(d, "size=%d" % (96 * MIB))
    expect_ua(s)
    assert s.read_capacity16() == (96 * MIB // 512, 512)
    lba = 90 * MIB // 512
    assert s.write10(lba, b"\x3c" * 512).ok
    assert s.read10(lba, 1).data == b"\x3c" * 512
    s.close()


class Qmp:
    """A minimal QMP client on a unix socket (one command at a time;
    events are kept in `events`)."""

    def __init__(self, path, timeout):
        import socket
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.f = self.sock.makefile("rwb")
        self.events = []
        greeting = self._recv()
        assert "QMP" in greeting, greeting
        assert "return" in self.cmd("qmp_capabilities")

    def _recv(self):
        import json
        line = self.f.readline()
        assert line, "QEMU closed the QMP socket"
        return json.loads(line)

    def cmd(self, name, **args):
        import json
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            r = self._recv()
            if "event" in r:
                self.events.append(r)
                continue
            return r

    def hmp(self, line):
        r = self.cmd("human-monitor-command", **{"command-line": line})
        assert "return" in r, r
        return r["return"]

    def close(self):
        self.f.close()
        self.sock.close()


def qemu_sizes(qmp):
    """The drive's size as query-block and query-named-block-nodes say."""
    blk = [b for b in qmp.cmd("query-block")["return"]
           if b["device"] == "d0"][0]
    node = blk["inserted"]["node-name"]
    nodes = [n for n in qmp.cmd("query-named-block-nodes")["return"]
             if n["node-name"] == node]
    return blk["inserted"]["image"]["virtual-size"], \
        nodes[0]["image"]["virtual-size"]


def test_qemu_block_resize_after_grow(holdfast, tmp_path):
    """A running QEMU (qemu-system-x86_64 -machine none, the drive on
    QEMU's iscsi driver) and QMP block_resize: growing the LUN with tgtadm
    lets block_resize to the new size succeed and query-block and
    query-named-block-nodes show it; asking for more than the LUN has is
    refused as QEMU's iscsi driver refuses it (it cannot grow an iSCSI
    device), and asking for less does not shrink the LUN."""
    d = holdfast(luns=lun_file())
    d.require_holdfast()
    sock = str(tmp_path / "qmp.sock")
    log = open(str(tmp_path / "qemu.log"), "wb")
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "none", "-nodefaults",
         "-no-user-config", "-display", "none", "-serial", "none",
         "-monitor", "none", "-qmp", "unix:%s,server=on,wait=off" % sock,
         "-iscsi", "initiator-name=iqn.2026-11.org.example:qemu-resize",
         "-drive", "driver=iscsi,transport=tcp,portal=%s,target=%s,lun=1,"
         "if=none,id=d0,cache.direct=on" % (d.portal, d.iqn)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    qmp = None
    try:
        qmp = Qmp(sock, 30 * tscale())
        assert qemu_sizes(qmp) == (64 * MIB, 64 * MIB)
        logpath = str(tmp_path / "qemu.log")

        def qio(cmd, expect):
            # HMP qemu-io prints to QEMU's stdout (the log), not the reply
            n = os.path.getsize(logpath)
            qmp.hmp('qemu-io d0 "%s"' % cmd)
            with open(logpath, "rb") as f:
                f.seek(n)
                out = f.read().decode(errors="replace")
            assert expect in out and "fail" not in out.lower(), (cmd, out)

        qio("write -P 0x11 60M 1M", "wrote 1048576/1048576")

        # more than the LUN has: the iscsi driver refuses, nothing changes
        r = qmp.cmd("block_resize", device="d0", size=96 * MIB)
        assert "error" in r, r
        assert "Cannot grow" in r["error"]["desc"], r
        assert qemu_sizes(qmp) == (64 * MIB, 64 * MIB)

        # grow the LUN: now block_resize to the new size succeeds
        update(d, "size=%d" % (96 * MIB))
        r = qmp.cmd("block_resize", device="d0", size=96 * MIB)
        assert r == {"return": {}}, r
        assert qemu_sizes(qmp) == (96 * MIB, 96 * MIB)
        qio("write -P 0x5a 90M 1M", "wrote 1048576/1048576")
        qio("read -P 0x5a 90M 1M", "read 1048576/1048576")

        # grow again; past the new size is refused, the new size is not
        update(d, "size=%d" % (128 * MIB))
        r = qmp.cmd("block_resize", device="d0", size=160 * MIB)
        assert "error" in r and "Cannot grow" in r["error"]["desc"], r
        assert qemu_sizes(qmp) == (96 * MIB, 96 * MIB)
        r = qmp.cmd("block_resize", device="d0", size=128 * MIB)
        assert r == {"return": {}}, r
        assert qemu_sizes(qmp) == (128 * MIB, 128 * MIB)
        qio("write -P 0x77 127M 1M", "wrote 1048576/1048576")

        # smaller: QEMU's iscsi driver accepts the request without
        # changing the device (it re-reads the capacity, which is the
        # LUN's): nothing shrinks, neither in QEMU nor in holdfast
        r = qmp.cmd("block_resize", device="d0", size=64 * MIB)
        assert r == {"return": {}}, r
        assert qemu_sizes(qmp) == (128 * MIB, 128 * MIB)
        assert os.path.getsize(d.path("disk1.img")) == 128 * MIB
        assert d.log_text().count("capacity ") == 2, d.log_text()
        # what QEMU wrote is in the store, past both old ends too
        with open(d.path("disk1.img"), "rb") as f:
            for off, pat in ((60 * MIB, 0x11), (90 * MIB, 0x5a),
                             (127 * MIB, 0x77)):
                f.seek(off)
                assert f.read(MIB) == bytes([pat]) * MIB, off
    finally:
        if qmp:
            try:
                qmp.cmd("quit")
            except Exception:
                pass
            qmp.close()
        try:
            qemu.wait(10 * tscale())
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
        log.close()
    assert qemu.returncode == 0, open(str(tmp_path / "qemu.log")).read()
