"""Two holdfastd nodes in front of one shared file LUN (scsi_alua.c; README
"Two nodes in front of shared storage").

Node A is target port group 1, node B group 2; both serve the same file.
Checked here with raw iSCSI sessions: REPORT TARGET PORT GROUPS and the
identity both nodes report, what a standby node answers, the unit
attentions of a state change, the refusal of a second active node, a
handover through management and through SET TARGET PORT GROUPS, a forced
takeover, reservations across a handover, and that a write held by the
hang engine at handover never lands after the other node serves.
"""

import errno
import json
import os
import re
import signal
import subprocess
import struct
import time

import pytest

import rawiscsi as r
from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import build_dir, qemu_io, run, tscale, wait_for

GOOD, CHECK, CONFLICT = 0, 2, 0x18
NOT_READY, HW_ERROR, UA = 2, 4, 6
STANDBY, TRANSITIONING = 0x040b, 0x040a
STATE_CHANGED = 0x2a06
STPG_FAILED = 0x670a
AO_STATE, SB_STATE = 0, 2
MIB = 1 << 20


def lun(path, group, peer, state="active", **extra):
    d = {"lun": 1, "backend": "file", "path": str(path), "size": "16M",
         "alua_group": group, "alua_peer_group": peer, "alua_state": state}
    d.update(extra)
    return [d]


def two_nodes(holdfast, tmp_path, a_extra=None, b_extra=None):
    shared = tmp_path / "shared.img"
    a = holdfast(luns=lun(shared, 1, 2, "active", **(a_extra or {})))
    a.require_holdfast()
    b = holdfast(luns=lun(shared, 2, 1, "standby", **(b_extra or {})))
    return a, b, shared


class Sess:
    """A raw session kept open (unit attentions are per I_T nexus)."""

    def __init__(self, d, isid=b"\x80\x00\x00\x00\x00\x01",
                 initiator="iqn.2026-11.org.example:alua"):
        self.s = r.RawSession("127.0.0.1", d.port, initiator=initiator,
                              isid=isid)
        self.s.login(d.iqn)

    def cmd(self, cdb, read_len=0, data=b""):
        cdb = bytes.fromhex(cdb) if isinstance(cdb, str) else cdb
        itt = self.s.scsi(1, cdb, read_len=read_len, data=data)
        status, din, p = self.s.wait_status(itt, timeout=20 * tscale())
        key = asc = None
        if status == CHECK and len(p.data) >= 2 + 14:
            sense = p.data[2:]
            key, asc = sense[2] & 0x0f, sense[12] << 8 | sense[13]
        return status, din, key, asc

    def tur(self):
        return self.cmd("000000000000")

    def settle(self):
        """Take the power-on (and any other) unit attention."""
        for _ in range(5):
            if self.tur()[0] == GOOD:
                return
        raise AssertionError("unit attentions do not end")

    def read(self, lba, n=1):
        return self.cmd(struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0),
                        read_len=512 * n)

    def write(self, lba, data):
        return self.cmd(struct.pack(">BBIBHB", 0x2a, 0, lba, 0,
                                    len(data) // 512, 0), data=data)

    def rtpg(self):
        st, b, _, _ = self.cmd("a30a00000000000001000000", read_len=256)
        assert st == GOOD
        out, off = {}, 4
        while off + 8 <= len(b):
            n = b[off + 7]
            ports = [struct.unpack(">H", b[off + 8 + 4 * i + 2:
                                         off + 8 + 4 * i + 4])[0]
                     for i in range(n)]
            out[struct.unpack(">H", b[off + 2:off + 4])[0]] = \
                (b[off] & 0x0f, b[off + 1], b[off + 5], ports)
            off += 8 + 4 * n
        return out

    def stpg(self, group, state):
        data = bytes(4) + bytes([state, 0]) + struct.pack(">H", group)
        return self.cmd(bytes([0xa4, 0x0a, 0, 0, 0, 0]) +
                        struct.pack(">I", len(data)) + bytes(2), data=data)

    def close(self):
        self.s.close()


def update(d, params, check=True):
    return d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                    "logicalunit", "--tid", "1", "--lun", "1", "--params",
                    params, check=check)


def inquiry(s, page=None):
    if page is None:
        return s.cmd("120000006000", read_len=96)[1]
    return s.cmd("1201%02x00ff00" % page, read_len=255)[1]


def vpd83(b):
    out, off = {}, 4
    while off + 4 <= len(b):
        n = b[off + 3]
        out[(b[off + 1] >> 4 & 3, b[off + 1] & 0x0f)] = b[off + 4:off + 4 + n]
        off += 4 + n
    return out


def test_rtpg_identity_and_standby_answers(holdfast, tmp_path):
    a, b, shared = two_nodes(holdfast, tmp_path)
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    # TPGS = implicit and explicit
    assert (inquiry(sa)[5] >> 4) & 3 == 3
    assert (inquiry(sb)[5] >> 4) & 3 == 3
    # the same identity from both nodes (derived from the store's sidecar)
    assert inquiry(sa, 0x80) == inquiry(sb, 0x80)
    va, vb = vpd83(inquiry(sa, 0x83)), vpd83(inquiry(sb, 0x83))
    assert va[(0, 3)] == vb[(0, 3)]                   # NAA
    assert struct.unpack(">H", va[(1, 5)][2:4])[0] == 1   # TPG
    assert struct.unpack(">H", vb[(1, 5)][2:4])[0] == 2
    assert struct.unpack(">H", va[(1, 4)][2:4])[0] == 1   # relative port
    assert struct.unpack(">H", vb[(1, 4)][2:4])[0] == 2
    # REPORT TARGET PORT GROUPS: both groups, a port each
    ga = sa.rtpg()
    assert ga[1][0] == AO_STATE and ga[2][0] == SB_STATE
    assert ga[1][3] == [1] and ga[2][3] == [2]
    assert ga[1][1] & 0x85 == 0x85                     # T, S, AO supported
    assert wait_for(lambda: sb.rtpg()[1][0] == AO_STATE, 5 * tscale())
    assert sb.rtpg()[2][0] == SB_STATE
    # standby: no media, the rest answers
    assert sb.tur()[0] == GOOD
    assert sb.cmd("a000000000000000ff000000", read_len=255)[0] == GOOD
    assert sb.cmd("250000000000000000", read_len=8)[0] == GOOD
    assert sb.read(0)[2:] == (NOT_READY, STANDBY)
    assert sb.write(0, b"\xaa" * 512)[2:] == (NOT_READY, STANDBY)
    assert sb.cmd("350000000000000000")[2:] == (NOT_READY, STANDBY)
    reg = bytes(8) + struct.pack(">Q", 9) + bytes(8)      # PR OUT REGISTER
    assert sb.cmd(bytes([0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
                  data=reg)[2:] == (NOT_READY, STANDBY)
    assert sb.cmd("5e00000000000000ff00", read_len=255)[0] == GOOD
    assert sa.read(0)[0] == GOOD
    assert "ALUA: group 1 active/optimized (owner)" in update_show(a)
    assert "ALUA: group 2 standby" in update_show(b)
    assert "store fenced" in update_show(b)
    assert "store fenced" not in update_show(a)
    assert "ALUA lock: %s.holdfast-owner" % shared in update_show(a)
    sa.close()
    sb.close()


def update_show(d):
    return d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "target").stdout


def test_second_active_refused_and_handover(holdfast, tmp_path):
    a, b, shared = two_nodes(holdfast, tmp_path)
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    assert sa.write(8, b"\x5a" * 512)[0] == GOOD
    # B may not become active while A holds the store
    assert update(b, "alua_state=active", check=False).returncode != 0
    assert "the other node holds the ownership lock" in b.log_text()
    assert sb.read(8)[2:] == (NOT_READY, STANDBY)
    # the pair is fixed once set
    assert update(a, "alua_group=0", check=False).returncode != 0
    assert "fixed once set" in a.log_text()
    # a node that starts active while the other holds the lock: standby
    c = holdfast(luns=lun(shared, 3, 1, "active"))
    assert "comes up standby" in c.log_text()
    # handover: A standby, then B active
    update(a, "alua_state=standby")
    assert sa.tur()[2:] == (UA, STATE_CHANGED)
    assert sa.read(8)[2:] == (NOT_READY, STANDBY)
    assert sa.rtpg()[1][0] == SB_STATE
    update(b, "alua_state=active")
    assert sb.tur()[2:] == (UA, STATE_CHANGED)
    st, data, _, _ = sb.read(8)
    assert st == GOOD and data == b"\x5a" * 512
    assert sb.write(9, b"\x66" * 512)[0] == GOOD
    assert sb.rtpg()[2][0] == AO_STATE
    assert wait_for(lambda: sa.rtpg()[2][0] == AO_STATE, 5 * tscale())
    # and back
    update(b, "alua_state=standby")
    update(a, "alua_state=active")
    sa.settle()
    assert sa.read(9)[1] == b"\x66" * 512
    sa.close()
    sb.close()


def test_resize_on_active_node_seen_by_standby_at_takeover(holdfast,
                                                          tmp_path):
    a, b, shared = two_nodes(holdfast, tmp_path)
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    # the standby node may not change the shared store
    assert update(b, "size=%d" % (32 * MIB), check=False).returncode != 0
    assert "this node is not active" in b.log_text()
    assert os.path.getsize(shared) == 16 * MIB
    update(a, "size=%d" % (32 * MIB))
    assert sa.tur()[2:] == (UA, 0x2a09)
    update(a, "alua_state=standby")
    update(b, "alua_state=active")
    # B re-read the size when it took over: both changes announced
    seen = {sb.tur()[3], sb.tur()[3]}
    assert seen == {STATE_CHANGED, 0x2a09}, seen
    st, d, _, _ = sb.cmd("9e10000000000000000000000020 0000".replace(" ", ""),
                         read_len=32)
    assert st == GOOD and struct.unpack(">Q", d[:8])[0] + 1 == 32 * MIB // 512
    sa.close()
    sb.close()


def test_set_target_port_groups(holdfast, tmp_path):
    a, b, shared = two_nodes(holdfast, tmp_path)
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    # B asks to become active while A holds the store: refused
    st, _, key, asc = sb.stpg(2, AO_STATE)
    assert (st, key, asc) == (CHECK, HW_ERROR, STPG_FAILED)
    # an unknown group is an invalid parameter
    assert sa.stpg(7, AO_STATE)[2] == 5
    # A gives up: making the peer group active makes A standby
    assert sa.stpg(2, AO_STATE)[0] == GOOD
    assert sa.tur()[2:] == (UA, STATE_CHANGED)
    g = sa.rtpg()
    assert g[1][0] == SB_STATE and g[1][2] == 0x01     # altered by STPG
    assert sb.stpg(2, AO_STATE)[0] == GOOD
    assert sb.tur()[2:] == (UA, STATE_CHANGED)
    assert sb.read(0)[0] == GOOD
    assert sb.rtpg()[2][2] == 0x01
    assert "alua_state = \"active\"" not in b.log_text()  # no crash marker
    sa.close()
    sb.close()


def test_unrelated_update_keeps_the_state_stpg_set(holdfast, tmp_path):
    """After an initiator moved the pair by SET TARGET PORT GROUPS, an
    update of another key (hang=retry) on either node changes no ALUA
    state: the old owner must not ask for the lock back (it would be
    refused, failing the whole update, or worse, take the LUN back).  Only
    an update that names alua_state asks again."""
    a, b, shared = two_nodes(holdfast, tmp_path)
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    assert sa.stpg(2, AO_STATE)[0] == GOOD      # A hands over
    assert sb.stpg(2, AO_STATE)[0] == GOOD      # B takes it
    sa.settle()
    sb.settle()
    for d in (a, b):
        update(d, "hang=retry")
    assert "ALUA: group 1 standby" in update_show(a)
    assert "ALUA: group 2 active/optimized (owner)" in update_show(b)
    assert sb.write(2, b"\x52" * 512)[0] == GOOD
    assert sa.write(2, b"\x53" * 512)[2:] == (NOT_READY, STANDBY)
    # naming alua_state asks again: refused while B holds the lock
    assert update(a, "alua_state=active", check=False).returncode != 0
    with open(shared, "rb") as f:
        f.seek(2 * 512)
        assert f.read(512) == b"\x52" * 512
    sa.close()
    sb.close()


def test_forced_takeover_and_lost_lock(holdfast, tmp_path):
    a, b, shared = two_nodes(holdfast, tmp_path)
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    update(b, "alua_state=active,force=1")
    sb.settle()
    assert sb.write(3, b"\x33" * 512)[0] == GOOD
    # A notices it lost the lock and stops serving
    assert wait_for(lambda: "lost the ownership lock" in a.log_text(),
                    5 * tscale()), a.log_text()
    assert sa.tur()[2:] == (UA, STATE_CHANGED)
    assert sa.write(3, b"\x44" * 512)[2:] == (NOT_READY, STANDBY)
    with open(shared, "rb") as f:
        f.seek(3 * 512)
        assert f.read(512) == b"\x33" * 512
    sa.close()
    sb.close()


def test_takeover_after_kill_keeps_reservation(holdfast, tmp_path):
    a, b, shared = two_nodes(holdfast, tmp_path)
    a.ok_exit = {0, -9}
    i1 = Sess(a, isid=b"\x80\x00\x00\x00\x00\x11",
              initiator="iqn.2026-11.org.example:host1")
    i1.settle()
    key = struct.pack(">Q", 0x1234)
    # REGISTER (APTPL not set), then RESERVE Write Exclusive
    reg = bytes(8) + key + bytes(8)
    assert i1.cmd(bytes([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
                  data=reg)[0] == GOOD
    res = key + bytes(16)
    assert i1.cmd(bytes([0x5f, 0x01, 0x01, 0, 0, 0, 0, 0, 24, 0]),
                  data=res)[0] == GOOD
    assert os.path.exists(str(shared) + ".pr")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    # the kernel dropped A's lock with the process: no force needed
    update(b, "alua_state=active")
    j1 = Sess(b, isid=b"\x80\x00\x00\x00\x00\x11",
              initiator="iqn.2026-11.org.example:host1")
    j2 = Sess(b, isid=b"\x80\x00\x00\x00\x00\x22",
              initiator="iqn.2026-11.org.example:host2")
    j1.settle()
    j2.settle()
    # READ KEYS and READ RESERVATION on the new node
    st, d, _, _ = j2.cmd("5e00000000000000ff00", read_len=255)
    assert st == GOOD and d[8:16] == key
    st, d, _, _ = j2.cmd("5e01000000000000ff00", read_len=255)
    assert st == GOOD and d[8:16] == key and d[21] & 0x0f == 1
    # the fence holds: host2 may not write, host1 may
    assert j2.write(0, b"\x01" * 512)[0] == CONFLICT
    assert j1.write(0, b"\x02" * 512)[0] == GOOD
    j1.close()
    j2.close()


def test_held_write_never_lands_after_handover(holdfast, tmp_path):
    hang = {"werror": "retry", "retry_interval": 100}
    a, b, shared = two_nodes(holdfast, tmp_path, a_extra=hang)
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    update(a, "fault=eio:ops=w:lba=16-23")
    itt = sa.s.scsi(1, struct.pack(">BBIBHB", 0x2a, 0, 16, 0, 1, 0),
                    data=b"\xee" * 512)
    assert wait_for(lambda: "hung" in update_show(a).lower(), 5 * tscale())
    update(a, "alua_state=standby")
    status, _, p = sa.s.wait_status(itt, timeout=10 * tscale())
    sense = p.data[2:]
    assert status == CHECK and sense[2] & 0x0f == NOT_READY
    assert sense[12] << 8 | sense[13] == TRANSITIONING
    update(b, "alua_state=active")
    sb.settle()
    assert sb.write(16, b"\x77" * 512)[0] == GOOD
    # the store heals on A: still nothing of A's may land
    update(a, "fault=off")
    time.sleep(1.0)
    with open(shared, "rb") as f:
        f.seek(16 * 512)
        assert f.read(512) == b"\x77" * 512
    assert sb.read(16)[1] == b"\x77" * 512
    sa.close()
    sb.close()


def test_writes_in_flight_at_handover_never_land_later(holdfast, tmp_path):
    """qemu-img bench writes 0xaa at queue depth 16 through node A while A
    hands over; once B serves, B overwrites the region with 0x55 and the
    file must then hold only 0x55: every write A accepted was finished
    before A released the store (the write-gate drain, scsi_alua.c)."""
    import subprocess
    from helpers import qemu_io
    a, b, shared = two_nodes(holdfast, tmp_path)
    region = 8 * MIB
    # slow writes on A, so some are in flight at the handover
    update(a, "fault=latency=1500:ops=w")
    bench = subprocess.Popen(
        ["qemu-img", "bench", "-w", "--pattern=0xaa", "-c", "1000000",
         "-d", "16", "-s", "64k", "-S", "64k", "-f", "raw", a.url(1)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: b"\xaa" in open(shared, "rb").read(region),
                        10 * tscale())
        time.sleep(0.3)
        assert bench.poll() is None, bench.stdout.read()
        update(a, "alua_state=standby")
        update(b, "alua_state=active")
        qemu_io(b.url(1), "write -P 0x55 0 %d" % region)
        time.sleep(2.5)     # longer than A's write latency
    finally:
        bench.kill()
        bench.wait()
    with open(shared, "rb") as f:
        data = f.read(region)
    assert data == b"\x55" * region, "A's write landed after B served"
    # A logged its drain; bench's writes after the switch were refused
    assert "drained and flushed, ownership lock released" in a.log_text()
    m = re.search(r"drain took (\d+) ms", a.log_text())
    assert m, a.log_text()
    print("drain took %s ms" % m.group(1))


def test_handover_through_targets_conf_on_sighup(holdfast, tmp_path):
    a, b, shared = two_nodes(holdfast, tmp_path)
    for d, state in ((a, "standby"), (b, "active")):
        n = d.log_text().count("reload of ")
        d.conf_settings["targets"][0]["luns"][0]["alua_state"] = state
        d._write_conf()
        d.send_signal(signal.SIGHUP)
        assert wait_for(lambda: d.log_text().count("reload of ") > n,
                        10 * tscale()), d.log_text()
    assert "ALUA: group 1 standby" in update_show(a)
    assert "ALUA: group 2 active/optimized (owner)" in update_show(b)
    sb = Sess(b)
    sb.settle()
    assert sb.write(0, b"\x42" * 512)[0] == GOOD
    sb.close()


def test_single_node_lun_keeps_one_implicit_group(holdfast, tmp_path):
    """Without alua_group nothing changes: TPGS implicit only, one
    active/optimized group, SET TARGET PORT GROUPS not supported."""
    d = holdfast()
    s = Sess(d)
    s.settle()
    assert (inquiry(s)[5] >> 4) & 3 == 1
    g = s.rtpg()
    assert list(g.values())[0][0] == AO_STATE and len(g) == 1
    st, _, key, asc = s.stpg(1, AO_STATE)
    assert (st, key, asc) == (CHECK, 5, 0x2000)
    s.close()


def test_stpg_takeovers_during_settings_updates(holdfast, tmp_path):
    """A takeover by SET TARGET PORT GROUPS runs on a worker thread that
    is neither a reactor nor holds the management lock; tgtadm updates
    published (and freed) settings snapshots meanwhile.  The worker must
    read none of them: under `make tsan` a read of a snapshot an update
    frees is a reported race (the conftest fails the test on it).

    The LUN is configured standby and the test moves it to active and
    back by STPG: an update that starts while it is standby changes no
    ALUA state, so it runs beside the next takeover."""
    import threading
    shared = tmp_path / "one.img"
    a = holdfast(luns=lun(shared, 1, 2, "standby"))
    a.require_holdfast()
    s = Sess(a)
    s.settle()
    stop = threading.Event()
    errors = []

    def updater():
        i = 0
        while not stop.is_set():
            i += 1
            res = update(a, "vendor_id=V%d,retry_interval=%d"
                         % (i % 1000, 100 + i % 50), check=False)
            if res.returncode:
                errors.append(res.stderr)
                return

    def stpg(group):
        # the updates change the state under the test too: take those
        # unit attentions
        for _ in range(10):
            st, _, key, _ = s.stpg(group, AO_STATE)
            if key != UA:
                return st
        return None

    t = threading.Thread(target=updater)
    t.start()
    try:
        for _ in range(40):
            # take the store (scsi_lun_refresh on the worker) ...
            assert stpg(1) == GOOD
            # ... and give it up (standby, as configured: an update
            # that starts now changes no ALUA state and runs beside
            # the next takeover)
            assert stpg(2) == GOOD
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    update(a, "alua_state=active")
    s.settle()
    assert s.write(0, b"\x5a" * 512)[0] == GOOD
    assert s.read(0)[1] == b"\x5a" * 512
    assert a.log_text().count("active/optimized (ownership lock") >= 10
    s.close()


def adm_json(d, *args):
    sock = "%s.%d" % (d.sock_base, d.ctl_port)
    wait_for(lambda: os.path.exists(sock), 5 * tscale())
    argv = [str(build_dir() / "holdfastadm"), "-C", str(d.ctl_port),
            "--json"] + list(args)
    return json.loads(run(argv, env=d.env, timeout=30).stdout)


def alua_json(d):
    t = adm_json(d, "-o", "show", "-m", "target")["targets"][0]
    return [x for x in t["luns"] if x["lun"] == 1][0]["alua"]


def test_alua_state_in_json(holdfast, tmp_path):
    """--json show carries the run-time ALUA state (alua_state among the
    keys is only the state asked for): group, peer group, both states,
    who owns the lock, the fence, the identity and the lock file."""
    a, b, shared = two_nodes(holdfast, tmp_path)
    ja = alua_json(a)
    assert ja["group"] == 1 and ja["peer_group"] == 2
    assert ja["state"] == "active/optimized" and ja["owner"] is True
    assert ja["fenced"] is False
    assert ja["lock"] == str(shared) + ".holdfast-owner"
    assert re.fullmatch(r"[0-9a-f]{16}", ja["identity"])
    assert wait_for(lambda: alua_json(b)["peer_state"] ==
                    "active/optimized", 5 * tscale())
    jb = alua_json(b)
    assert jb["group"] == 2 and jb["peer_group"] == 1
    assert jb["state"] == "standby" and jb["owner"] is False
    assert jb["fenced"] is True
    assert jb["identity"] == ja["identity"]
    update(a, "alua_state=standby")
    update(b, "alua_state=active")
    assert alua_json(a)["state"] == "standby"
    assert alua_json(a)["owner"] is False
    assert alua_json(b)["state"] == "active/optimized"
    assert alua_json(b)["owner"] is True and alua_json(b)["fenced"] is False
    # holdfastadm --json show logicalunit carries it too
    lu = adm_json(b, "-o", "show", "-m", "logicalunit", "-t", "1", "-l", "1")
    assert lu["alua"]["state"] == "active/optimized"
    # a LUN without alua_group: null
    c = holdfast()
    assert alua_json(c) is None


def test_forced_takeover_fences_the_old_owner(holdfast, tmp_path):
    """A forced takeover from a node that is still alive, with writes held
    in a slow filter above its store: none of them may land once the new
    owner has acknowledged a write (the old owner's watchdog fences its
    store, the new owner waits out the fencing interval)."""
    a, b, shared = two_nodes(holdfast, tmp_path)
    region = 8 * MIB
    # A's writes sleep 1.5 s in the fault filter before reaching the file
    update(a, "fault=latency=1500:ops=w")
    bench = subprocess.Popen(
        ["qemu-img", "bench", "-w", "--pattern=0xaa", "-c", "1000000",
         "-d", "16", "-s", "64k", "-S", "64k", "-f", "raw", a.url(1)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: b"\xaa" in open(shared, "rb").read(region),
                        10 * tscale())
        time.sleep(0.3)
        assert bench.poll() is None, bench.stdout.read()
        t0 = time.monotonic()
        update(b, "alua_state=active,force=1")
        took = time.monotonic() - t0
        qemu_io(b.url(1), "write -P 0x55 0 %d" % region)
        time.sleep(2.5)     # longer than A's write latency
    finally:
        bench.kill()
        bench.wait()
    with open(shared, "rb") as f:
        data = f.read(region)
    assert data == b"\x55" * region, "A's write landed after B served"
    assert took >= 0.45, "B served before the fencing interval: %.3f" % took
    assert "store fenced, now standby" in a.log_text()
    assert "after the fencing interval" in b.log_text()
    assert alua_json(a)["fenced"] is True


def test_lost_lock_detected_on_io_error(fusefs, holdfast, tmp_path):
    """NFS after a lease the server let expire: I/O on the lock file fails
    with EIO.  The shared directory here is a FUSE mount whose reads of
    the lock file fail on demand; A must notice, fence its store, go
    standby and give up the lock, so B can take over without force."""
    shared = fusefs.path("shared.img")
    a = holdfast(luns=lun(shared, 1, 2, "active"))
    a.require_holdfast()
    b = holdfast(luns=lun(shared, 2, 1, "standby"))
    sa = Sess(a)
    sa.settle()
    assert sa.write(0, b"\x11" * 512)[0] == GOOD
    fusefs.set("read=EIO match=holdfast-owner")
    assert wait_for(lambda: "lost the ownership lock" in a.log_text(),
                    5 * tscale()), a.log_text()
    assert "the lock file cannot be read" in a.log_text()
    assert sa.tur()[2:] == (UA, STATE_CHANGED)
    assert sa.write(0, b"\x22" * 512)[2:] == (NOT_READY, STANDBY)
    assert alua_json(a)["owner"] is False
    fusefs.ok()
    # A gave the lock up: B takes over without force
    update(b, "alua_state=active")
    sb = Sess(b)
    sb.settle()
    st, d, _, _ = sb.read(0)
    assert st == GOOD and d == b"\x11" * 512
    sa.close()
    sb.close()


def test_lost_lock_detected_on_enolck(fusefs, holdfast, tmp_path):
    """NFS after a lease the server let expire, as NFS usually says it:
    re-asserting the lock fails with ENOLCK (fusefail's lock=ENOLCK fails
    fcntl locking of the lock file).  A must notice within its watchdog
    round, fence its store, go standby, say why, and give up the lock, so
    B takes over without force."""
    shared = fusefs.path("shared.img")
    a = holdfast(luns=lun(shared, 1, 2, "active"))
    a.require_holdfast()
    b = holdfast(luns=lun(shared, 2, 1, "standby"))
    sa = Sess(a)
    sa.settle()
    assert sa.write(0, b"\x33" * 512)[0] == GOOD
    # the lock is real on the FUSE mount: B cannot take it from A
    assert update(b, "alua_state=active", check=False).returncode != 0
    failed = fusefs.stats()["failed_locks"]
    fusefs.set("lock=ENOLCK match=holdfast-owner")
    assert wait_for(lambda: "lost the ownership lock" in a.log_text(),
                    5 * tscale()), a.log_text()
    assert "the lock cannot be re-asserted" in a.log_text()
    assert os.strerror(errno.ENOLCK) in a.log_text()
    assert "now standby" in a.log_text()
    assert fusefs.stats()["failed_locks"] > failed
    assert sa.tur()[2:] == (UA, STATE_CHANGED)
    assert sa.write(0, b"\x44" * 512)[2:] == (NOT_READY, STANDBY)
    assert alua_json(a)["owner"] is False
    fusefs.ok()
    # A gave the lock up: B takes over without force
    update(b, "alua_state=active")
    assert "by force" not in b.log_text()
    sb = Sess(b)
    sb.settle()
    st, d, _, _ = sb.read(0)
    assert st == GOOD and d == b"\x33" * 512
    assert sb.write(1, b"\x55" * 512)[0] == GOOD
    sa.close()
    sb.close()


def adm(d, *args, check=True):
    sock = "%s.%d" % (d.sock_base, d.ctl_port)
    wait_for(lambda: os.path.exists(sock), 5 * tscale())
    argv = [str(build_dir() / "holdfastadm"), "-C", str(d.ctl_port)] + \
        [str(x) for x in args]
    return run(argv, env=d.env, timeout=30, check=check)


def extents(d, name="daily"):
    doc = adm_json(d, "-o", "show", "-m", "bitmap", "-t", "1", "-l", "1",
                   "-n", name)
    bm = [x for x in doc["bitmaps"] if x["name"] == name][0]
    return [(e["offset"], e["length"]) for e in bm["extents"]], bm


def test_bitmaps_follow_the_handover(holdfast, tmp_path):
    """A persistent bitmap on A lives in the shared sidecar next to the
    store; B loads it when it takes over and keeps recording; A, standby,
    may not change it; and back on A everything B wrote is in it too."""
    a, b, shared = two_nodes(holdfast, tmp_path)
    chunk = 65536
    adm(a, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "granularity=%d,persistent=1" % chunk)
    assert os.path.exists(str(shared) + ".bitmaps")
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    assert sa.write(0, b"\x01" * 512)[0] == GOOD                # chunk 0
    # the standby node must not touch the shared sidecar
    r = adm(b, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "other",
            "-P", "persistent=1", check=False)
    assert r.returncode != 0
    assert "this node is not active" in b.log_text()
    update(a, "alua_state=standby")
    update(b, "alua_state=active")
    sb.settle()
    assert sb.write(2 * MIB // 512, b"\x02" * 512)[0] == GOOD   # chunk 32
    ext, bm = extents(b)
    assert (0, chunk) in ext and (2 * MIB, chunk) in ext, ext
    assert bm["persistent"] is True and bm["inconsistent"] is False
    # A no longer changes it while B owns it
    assert adm(a, "-o", "update", "-m", "bitmap", "-t", 1, "-l", 1, "-n",
               "daily", "-P", "action=clear", check=False).returncode != 0
    # and back to A, with one more write through A
    update(b, "alua_state=standby")
    update(a, "alua_state=active")
    sa.settle()
    assert sa.write(4 * MIB // 512, b"\x03" * 512)[0] == GOOD
    ext, _ = extents(a)
    assert {(0, chunk), (2 * MIB, chunk), (4 * MIB, chunk)} <= set(ext), ext
    sa.close()
    sb.close()


def test_bitmaps_survive_a_kill9_takeover(holdfast, tmp_path):
    """Write-intent: every write A acknowledged is in the shared sidecar
    when A dies, so B's bitmap covers it after the takeover."""
    a, b, shared = two_nodes(holdfast, tmp_path)
    a.ok_exit = {0, -9}
    adm(a, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "persistent=1")
    qemu_io(a.url(1), "write -P 0x11 3M 64k")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    update(b, "alua_state=active")
    qemu_io(b.url(1), "write -P 0x22 5M 64k")
    ext, bm = extents(b)
    assert (3 * MIB, 65536) in ext and (5 * MIB, 65536) in ext, ext


@pytest.fixture
def loopdev(request, tmp_path):
    """A 16 MiB loop device (root only)."""
    if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
        pytest.skip("needs root and loop devices")
    img = tmp_path / "loop.img"
    with open(img, "wb") as f:
        f.truncate(16 * MIB)
    cp = subprocess.run(["losetup", "-f", "--show", str(img)],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        pytest.skip("losetup: %s" % cp.stderr.strip())
    dev = cp.stdout.strip()
    request.addfinalizer(lambda: subprocess.run(["losetup", "-d", dev]))
    return dev


def test_block_device_state_lives_in_alua_state_dir(holdfast, tmp_path,
                                                     loopdev):
    """A block device has no shared place next to it (/dev is per
    machine): alua_group without alua_state_dir is refused, and with it
    the lock, the reservations and the bitmaps live in that directory,
    named after the target and LUN, and nothing is created in /dev."""
    before = set(os.listdir("/dev"))
    bad = holdfast(luns=[{"lun": 1, "backend": "file", "path": loopdev,
                          "alua_group": 1, "alua_peer_group": 2}],
                   wait=False)
    rc = bad.wait(20)
    assert rc is not None and rc != 0, bad.log_text()
    bad.ok_exit = {rc}
    assert "needs alua_state_dir" in bad.log_text()
    state = tmp_path / "state"
    state.mkdir()

    def node(group, peer, st):
        return holdfast(luns=[{"lun": 1, "backend": "file", "path": loopdev,
                               "alua_group": group, "alua_peer_group": peer,
                               "alua_state": st,
                               "alua_state_dir": str(state)}])
    a = node(1, 2, "active")
    b = node(2, 1, "standby")
    base = state / ("%s.lun1" % a.iqn.replace(":", "_"))
    lock = str(base) + ".holdfast-owner"
    assert os.path.exists(lock)
    assert alua_json(a)["lock"] == lock and alua_json(a)["owner"] is True
    # the second node is refused while the first holds the lock
    assert update(b, "alua_state=active", check=False).returncode != 0
    s1 = Sess(a, initiator="iqn.2026-11.org.example:host1")
    s1.settle()
    key = struct.pack(">Q", 0x77)
    assert s1.cmd(bytes([0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
                  data=bytes(8) + key + bytes(8))[0] == GOOD
    assert os.path.exists(str(base) + ".pr")
    adm(a, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "persistent=1")
    assert os.path.exists(str(base) + ".bitmaps")
    assert s1.write(0, b"\x5a" * 512)[0] == GOOD
    update(a, "alua_state=standby")
    update(b, "alua_state=active")
    s2 = Sess(b, initiator="iqn.2026-11.org.example:host1")
    s2.settle()
    st, d, _, _ = s2.read(0)
    assert st == GOOD and d == b"\x5a" * 512
    st, d, _, _ = s2.cmd("5e00000000000000ff00", read_len=255)
    assert st == GOOD and d[8:16] == key
    assert (0, 65536) in extents(b)[0]
    assert set(os.listdir("/dev")) - before <= {os.path.basename(loopdev)}
    assert not [n for n in os.listdir("/dev") if "holdfast" in n or
                n.endswith(".pr") or n.endswith(".bitmaps")]
    s1.close()
    s2.close()


def hang_json(d):
    t = adm_json(d, "-o", "show", "-m", "target")["targets"][0]
    return [x for x in t["luns"] if x["lun"] == 1][0]["hang"]


@pytest.mark.parametrize("how", ["update", "stpg", "force"])
def test_takeover_resets_hang_state(fusefs, holdfast, how):
    """B's store fails while B is active: its write hangs and, after
    retry_timeout, B is failed (probing paused by the operator, and the
    background probe far away).  B hands over, the store is fixed, A
    serves, and B takes the LUN back — by alua_state=active, by SET
    TARGET PORT GROUPS, or with force=1 after A was killed.  B must then
    start from a clean hang state (ok, nothing held, no last error,
    probing active) and treat the next store error as a new hang rather
    than failing the write at once as its old failed state would."""
    shared = fusefs.path("shared.img")
    hang = {"werror": "retry", "retry_interval": 60000,
            "retry_timeout": 2000}
    a = holdfast(luns=lun(shared, 1, 2, "standby"))
    a.require_holdfast()
    a.ok_exit = {0, -9}
    b = holdfast(luns=lun(shared, 2, 1, "active", **hang))
    sb = Sess(b)
    sb.settle()
    assert sb.write(0, b"\x01" * 512)[0] == GOOD
    # B's store fails: the write is held, then reported at retry_timeout
    fusefs.set("write=EIO match=shared.img")
    t0 = time.monotonic()
    st, _, key, _ = sb.write(8, b"\x02" * 512)
    assert st == CHECK and time.monotonic() - t0 >= 1.5, (st, key)
    h = hang_json(b)
    assert h["state"] == "failed" and h["timeouts"] == 1, h
    update(b, "hang=pause")
    assert hang_json(b)["paused"] is True
    # hand over to A; the store is fixed and A serves
    update(b, "alua_state=standby")
    update(a, "alua_state=active")
    fusefs.ok()
    sa = Sess(a)
    sa.settle()
    assert sa.write(16, b"\x03" * 512)[0] == GOOD
    assert hang_json(b)["state"] == "failed"      # standby: kept so far
    # probes come quickly from now on (B is still paused, so none yet),
    # and the next hang lasts long enough to look at under load; an
    # update now, while B is standby as asked, changes no ALUA state
    update(b, "retry_interval=200,retry_timeout=20000")
    assert hang_json(b)["state"] == "failed"
    # B takes the LUN back
    if how == "update":
        update(a, "alua_state=standby")
        update(b, "alua_state=active")
    elif how == "stpg":
        # A gives up (the peer group active), then B asks for its own
        assert sa.stpg(2, AO_STATE)[0] == GOOD
        sb.settle()
        assert sb.stpg(2, AO_STATE)[0] == GOOD
        assert "active/optimized" in alua_json(b)["state"]
    else:
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        update(b, "alua_state=active,force=1")
    h = hang_json(b)
    assert h["state"] == "ok", h
    assert h["held"] == 0 and h["queued"] == 0 and h["held_bytes"] == 0, h
    assert h["last_error"] == "none" and h["paused"] is False, h
    assert h["episodes"] == 1 and h["timeouts"] == 1, h   # history kept
    assert "state reset (ownership taken over): was failed" in b.log_text()
    show = update_show(b)
    assert "Hang state: ok\n" in show and "Hang last error: none" in show
    # serves at once
    for _ in range(5):
        if sb.read(16)[0] == GOOD:
            break
    st, d, _, _ = sb.read(16)
    assert st == GOOD and d == b"\x03" * 512
    assert sb.write(24, b"\x04" * 512)[0] == GOOD
    # a new store error is a new hang (held), not an immediate failure
    fusefs.set("write=EIO match=shared.img")
    itt = sb.s.scsi(1, struct.pack(">BBIBHB", 0x2a, 0, 32, 0, 1, 0),
                    data=b"\x05" * 512)
    assert wait_for(lambda: hang_json(b)["state"] == "hung", 5 * tscale()), \
        hang_json(b)
    assert hang_json(b)["held"] == 1
    fusefs.ok()             # the next probe (retry_interval) succeeds
    status, _, _ = sb.s.wait_status(itt, timeout=10 * tscale())
    assert status == GOOD
    assert fusefs.read_backing("shared.img", 32 * 512, 512) == b"\x05" * 512
    assert hang_json(b)["state"] == "ok"
    sa.close()
    sb.close()


# ---- a resize and a handover together (README "Resizing a LUN") ----

OLD_BLOCKS = 16 * MIB // 512
NEW_SIZE = 32 * MIB
CAP_CHANGED = 0x2a09


def read_capacity16(s):
    st, d, _, _ = s.cmd("9e10000000000000000000000020" + "0000",
                        read_len=32)
    assert st == GOOD, st
    return struct.unpack(">Q", d[:8])[0] + 1


class Writer:
    """A multipath host in small: writes one block at a time, each to its
    own LBA with its own pattern, through node A's session and, once A
    stops serving, through node B's, retrying a write that was not
    acknowledged on the other path.  `acked` maps each LBA to what an
    acknowledged write put there; once `grown` is set the writes go past
    the LUN's old end."""

    def __init__(self, sa, sb):
        import threading
        self.paths = [sa, sb]
        self.cur = 0
        self.acked = {}
        self.by_node = [0, 0]
        self.new_region = [0, 0]
        self.grown = threading.Event()
        self.stop = threading.Event()
        self.errors = []
        self.t = threading.Thread(target=self.run)

    def start(self):
        self.t.start()
        return self

    def finish(self):
        self.stop.set()
        self.t.join(60 * tscale())
        assert not self.t.is_alive()

    def run(self):
        i = 0
        while not self.stop.is_set() and i < 16000:
            grown = self.grown.is_set()
            lba = (OLD_BLOCKS + i) if grown else i
            data = struct.pack(">II", lba, 0xC0DE0000 + i) * 64
            for _ in range(400):
                if self.stop.is_set() and self.cur == 1 and _ > 50:
                    return
                try:
                    st, _d, key, asc = self.paths[self.cur].write(lba, data)
                except Exception as e:      # the node died under us
                    self.errors.append(repr(e))
                    st, key = None, NOT_READY
                if st == GOOD:
                    self.acked[lba] = data
                    self.by_node[self.cur] += 1
                    if grown:
                        self.new_region[self.cur] += 1
                    break
                if key == NOT_READY or st is None:
                    # standby, transitioning or gone: the other path
                    if key == NOT_READY and st is not None and \
                            asc == TRANSITIONING:
                        time.sleep(0.01)
                        continue
                    self.cur = 1 - self.cur
                    time.sleep(0.02)
                    continue
                # unit attentions (state and capacity changed): again
            else:
                self.errors.append("write %d never acknowledged" % lba)
                return
            i += 1


def check_after_takeover(b, shared, w, s_watch):
    # the new node reads the new size and says so
    sb = Sess(b, isid=b"\x80\x00\x00\x00\x00\x33")
    sb.settle()
    assert read_capacity16(sb) == NEW_SIZE // 512
    assert os.path.getsize(shared) == NEW_SIZE
    # a nexus of B's from before the takeover learns both changes
    seen = set()
    for _ in range(4):
        st, _, key, asc = s_watch.tur()
        if st == GOOD:
            break
        assert key == UA, (st, key, asc)
        seen.add(asc)
    assert {STATE_CHANGED, CAP_CHANGED} <= seen, seen
    # every acknowledged write is there, old region and new
    with open(shared, "rb") as f:
        for lba, data in w.acked.items():
            f.seek(lba * 512)
            assert f.read(512) == data, "acknowledged write at %d lost" % lba
    for lba in sorted(w.acked)[::97]:
        st, d, _, _ = sb.read(lba)
        assert st == GOOD and d == w.acked[lba], lba
    sb.close()


@pytest.mark.parametrize("when", ["after", "during", "during-late"])
def test_handover_right_after_or_during_a_resize(holdfast, tmp_path, when):
    """Writes run through A while A grows the LUN and hands it over
    (alua_state=standby right after the resize, or SET TARGET PORT GROUPS
    sent while the resize runs); B, taking over, reports the new size,
    raises CAPACITY DATA HAS CHANGED and ASYMMETRIC ACCESS STATE CHANGED,
    and every acknowledged write (including those past the old end,
    through either node) is in the store."""
    import threading
    a, b, shared = two_nodes(holdfast, tmp_path)
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    watch = Sess(b, isid=b"\x80\x00\x00\x00\x00\x44")
    watch.settle()
    w = Writer(sa, sb).start()
    try:
        assert wait_for(lambda: w.by_node[0] > 200, 10 * tscale())
        if when == "after":
            update(a, "size=%d" % NEW_SIZE)
            w.grown.set()
            assert wait_for(lambda: w.new_region[0] > 50, 10 * tscale())
            update(a, "alua_state=standby")
        else:
            # the resize (management thread) and the handover (the STPG
            # worker) in one daemon at once: they must not interleave
            stpg = Sess(a, isid=b"\x80\x00\x00\x00\x00\x55")
            stpg.settle()
            res = {}
            t = threading.Thread(target=lambda: res.setdefault(
                "r", update(a, "size=%d" % NEW_SIZE, check=False)))
            t.start()
            if when == "during-late":
                # usually lets the resize start first (tgtadm is a
                # process to start): the handover then waits for it
                time.sleep(0.05)
            for _ in range(5):
                # a resize that came first raised CAPACITY DATA HAS
                # CHANGED on this nexus too: an initiator retries
                st, _, key, _ = stpg.stpg(2, AO_STATE)
                if key != UA:
                    break
            assert st == GOOD
            t.join(60 * tscale())
            stpg.close()
            r = res["r"]
            print("resize during the handover: %s" %
                  ("refused" if r.returncode else "applied first"))
            if r.returncode != 0:
                # refused cleanly: the handover came first
                assert "this node is not active for the LUN" in \
                    a.log_text(), a.log_text()
                assert os.path.getsize(shared) == 16 * MIB
                # and the operator resizes on the new owner
                update(b, "alua_state=active")
                update(b, "size=%d" % NEW_SIZE)
            else:
                # applied before the handover began
                log = a.log_text()
                assert log.index("capacity 32768 -> 65536") < \
                    log.index("standby (drained"), log
            w.grown.set()
        update(b, "alua_state=active")
        assert wait_for(lambda: w.by_node[1] > 100 and
                        w.new_region[1] > 50, 15 * tscale()), \
            (w.by_node, w.new_region, w.errors)
    finally:
        w.finish()
    assert not [e for e in w.errors if "never" in e], w.errors
    print("acknowledged writes: A %d, B %d; past the old end: A %d, B %d" %
          tuple(w.by_node + w.new_region))
    check_after_takeover(b, shared, w, watch)
    for s in (sa, sb, watch):
        s.close()


def test_forced_takeover_right_after_a_resize(holdfast, tmp_path):
    """Writes run through A, A grows the LUN and writes past the old end,
    then A is killed (-9) and B takes over with force=1: B reports the new
    size with both unit attentions, and every write A acknowledged, old
    region and new, is there."""
    a, b, shared = two_nodes(holdfast, tmp_path)
    a.ok_exit = {0, -9}
    sa, sb = Sess(a), Sess(b)
    sa.settle()
    sb.settle()
    watch = Sess(b, isid=b"\x80\x00\x00\x00\x00\x44")
    watch.settle()
    w = Writer(sa, sb).start()
    try:
        assert wait_for(lambda: w.by_node[0] > 200, 10 * tscale())
        update(a, "size=%d" % NEW_SIZE)
        w.grown.set()
        assert wait_for(lambda: w.new_region[0] > 20, 10 * tscale())
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        update(b, "alua_state=active,force=1")
        assert wait_for(lambda: w.new_region[1] > 50, 15 * tscale()), \
            (w.by_node, w.new_region, w.errors)
    finally:
        w.finish()
    assert not [e for e in w.errors if "never" in e], w.errors
    # the kernel dropped the dead node's lock: force=1 took it at once
    assert "taken by force)" in b.log_text()
    check_after_takeover(b, shared, w, watch)
    for s in (sb, watch):
        s.close()


def test_resize_refused_once_another_node_forced_the_lock(holdfast,
                                                          tmp_path):
    """B takes the store by force while A is alive; a resize sent to A at
    once (before A's watchdog has noticed, within 200 ms) must not change
    the store B now owns: A checks that it still holds the lock before it
    resizes, under the same lock as its transitions."""
    import threading
    a, b, shared = two_nodes(holdfast, tmp_path)
    lock = str(shared) + ".holdfast-owner"
    ino = os.stat(lock).st_ino
    res = {}
    t = threading.Thread(target=lambda: res.setdefault(
        "r", update(b, "alua_state=active,force=1", check=False)))
    t.start()
    deadline = time.monotonic() + 20 * tscale()
    while time.monotonic() < deadline:
        try:
            if os.stat(lock).st_ino != ino:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    r = update(a, "size=%d" % NEW_SIZE, check=False)
    t.join(60 * tscale())
    assert res["r"].returncode == 0, b.log_text()
    assert r.returncode != 0, a.log_text()
    log = a.log_text()
    assert "no longer holds the ownership lock" in log or \
        "this node is not active" in log, log
    print("refused: %s" % ("lock check" if "no longer holds" in log
                           else "watchdog first"))
    assert os.path.getsize(shared) == 16 * MIB
    sb = Sess(b)
    sb.settle()
    assert read_capacity16(sb) == 16 * MIB // 512
    sb.close()
