"""The rbd backend against a real single-node Ceph cluster (tests/ceph.py).

One cluster per test session (1 mon, 1 bluestore OSD on a sparse file,
cephx, loopback only), started by the `ceph` fixture (conftest.py, shared
with tests/guest/test_guest_rbd.py) and stopped by PID at the end even when
tests fail.  Each test gets its own image.  The Makefile
installs Ceph (DEB_TEST), so these tests do not skip: a missing ceph-osd is
a failure.

Data: qemu-io and hangclient through holdfastd, compared byte for byte with
`rbd export`.  Faults: the OSD is frozen (SIGSTOP) or killed (kill -9 and
restart) under writes.  Fencing: a write that timed out must never land
after a newer write to the same block (see test_fence_timed_out_write).
"""

import json
import os
import random
import re
import signal
import time

import pytest

from helpers import (IQN, build_dir, cfg_text, free_tcp_port, port_accepts,
                     qemu_io, run, tscale, wait_for)
from test_hang import HangClient, S

BS = 512
MiB = 1 << 20

HARDWARE_ERROR = 0x04
ASC_LU_COMM_FAILURE = 0x08


_seq = [0]


@pytest.fixture
def image(ceph):
    """A fresh 64 MiB image (default features: layering, exclusive-lock,
    object-map, fast-diff, deep-flatten) for each test."""
    _seq[0] += 1
    name = "t%d-%d" % (os.getpid(), _seq[0])
    ceph.create_image(name, "64M")
    yield name
    # the OSD must be running again for anything to be cleaned up
    ceph.osd_cont()


def rbd_lun(ceph, name, lun=1, **extra):
    lu = {"lun": lun, "backend": "rbd", "path": "rbd/%s" % name,
          "block_size": BS, "ceph_conf": str(ceph.conf),
          "ceph_id": "admin", "ceph_keyring": str(ceph.keyring)}
    lu.update(extra)
    return lu


def show(d):
    return d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "target").stdout


def rbd_line(d):
    m = re.search(r"^.*\brbd rbd/\S+ .*$", show(d), re.M)
    assert m, show(d)
    return m.group(0)


def field(line, key):
    m = re.search(r"\b%s=(\S+)" % key, line)
    return m.group(1) if m else None


def wait_spare(d, timeout=30):
    """The standby instance is open (a fence can move I/O at once)."""
    wait_for(lambda: field(rbd_line(d), "spare") == "ready", S(timeout))


def same(got, want, what=""):
    """Compare bytes without pytest's diff (it takes minutes on MiBs)."""
    if got == want:
        return
    if len(got) != len(want):
        pytest.fail("%s: %d bytes, expected %d" % (what, len(got), len(want)))
    i = next(k for k in range(len(got)) if got[k] != want[k])
    pytest.fail("%s: first difference at byte %d: %r, expected %r" % (
        what, i, got[i:i + 16], want[i:i + 16]), pytrace=False)


def export_blocks(ceph, name, lba, blocks):
    return ceph.export(name)[lba * BS:(lba + blocks) * BS]


# ---------------------------------------------------------------- data path

def test_qemu_io_roundtrip_matches_rbd_export(ceph, image, holdfast):
    d = holdfast(luns=[rbd_lun(ceph, image, thin_provisioning=True)])
    d.require_holdfast("rbd backend")
    url = d.url(1)
    qemu_io(url, "write -P 0xa5 0 1M", "write -P 0x5a 4M 64k",
            "write -P 0x33 63M 1M", "aio_write -P 0x77 8M 128k",
            "aio_flush", "flush")
    qemu_io(url, "read -P 0xa5 0 1M", "read -P 0x5a 4M 64k",
            "read -P 0x33 63M 1M", "read -P 0x77 8M 128k",
            "read -P 0 2M 1M")
    data = ceph.export(image)
    assert len(data) == 64 * MiB
    same(data[0:MiB], b"\xa5" * MiB, "image bytes")
    same(data[4 * MiB:4 * MiB + 65536], b"\x5a" * 65536, "image bytes")
    same(data[63 * MiB:], b"\x33" * MiB, "image bytes")
    same(data[8 * MiB:8 * MiB + 131072], b"\x77" * 131072, "image bytes")
    same(data[2 * MiB:3 * MiB], bytes(MiB), "image bytes")
    # discard and write-zeroes reach the image
    qemu_io(url, "discard 0 64k", "write -z 4M 64k")
    data = ceph.export(image)
    same(data[0:65536], bytes(65536), "image bytes")
    same(data[65536:MiB], b"\xa5" * (MiB - 65536), "image bytes")
    same(data[4 * MiB:4 * MiB + 65536], bytes(65536), "image bytes")
    # completions came back through the instance's eventfd, collected on
    # the reactor (rbd_poll_io_events), not through librbd's callback
    line = rbd_line(d)
    assert field(line, "completions") == "eventfd", line
    polled, wakeups = int(field(line, "polled")), int(field(line, "wakeups"))
    assert polled >= 12 and 1 <= wakeups <= polled, line


def test_size_from_image_and_4k_blocks(ceph, image, holdfast):
    d = holdfast(luns=[rbd_lun(ceph, image, block_size=4096)])
    out = run(["iscsi-readcapacity16", d.url(1)], timeout=30).stdout
    assert re.search(r"Logical\s+block\s+length\s*:\s*4096", out, re.I) or \
        "4096" in out, out
    qemu_io(d.url(1), "write -P 0x42 4096 8192", "read -P 0x42 4096 8192")
    same(export_blocks(ceph, image, 8, 16), b"\x42" * 8192, "image bytes")


@pytest.mark.parametrize("cache", [False, True], ids=["nocache", "cache"])
def test_hangclient_writes_fua_sync_unmap(ceph, image, holdfast, cache):
    """With the librbd cache on, a FUA write is a write then a flush, both
    completions collected from the eventfd."""
    d = holdfast(luns=[rbd_lun(ceph, image, thin_provisioning=True,
                               rbd_cache=cache)])
    c = HangClient(d.url(1))
    try:
        for cmd in ("write 0 8 0x11 fua", "write 8 8 0x22", "sync",
                    "writesame 100 16 0x00 unmap", "unmap 16 8",
                    "read 0 8 expect 0x11"):
            r = c.do(cmd, timeout=S(30))
            assert r["status"] == "GOOD", r
            if "expect" in cmd:
                assert r.get("match") is True, r
        assert field(rbd_line(d), "cache") == ("on" if cache else "off")
    finally:
        c.close()
    data = export_blocks(ceph, image, 0, 24)
    same(data[:8 * BS], b"\x11" * 8 * BS, "image bytes")
    same(data[8 * BS:16 * BS], b"\x22" * 8 * BS, "image bytes")


@pytest.mark.longrun
def test_conformance_cu_full(ceph, holdfast):
    """libiscsi's whole suite against a thin RBD LUN, two I_T nexuses:
    0 failed, and only the skips the file LUN run documents."""
    from test_conformance_full import DOCUMENTED_SKIPS
    from test_conformance_cu import parse_cunit, run_family
    name = "cu-%d" % os.getpid()
    ceph.create_image(name, "128M")
    d = holdfast(luns=[rbd_lun(ceph, name, thin_provisioning=True)])
    url = d.url(1)
    cp, text = run_family(None, url, url, timeout=S(900),
                          initiators=("iqn.2026-11.org.example:cu-init1",
                                      "iqn.2026-11.org.example:cu-init2"))
    assert parse_cunit(text)[1] >= 600, text[-3000:]
    skips = set(s.strip() for s in re.findall(r"\[SKIPPED\](.*)", text))
    undocumented = [s for s in skips
                    if not any(re.search(p, s) for p in DOCUMENTED_SKIPS)]
    assert not undocumented, undocumented


def test_tgtadm_bstype_rbd(ceph, image, holdfast):
    """tgt's spelling: --bstype rbd -b POOL/IMAGE --bsopts conf=...;id=..."""
    d = holdfast(luns=[{"lun": 1, "backend": "null", "size": "16M"}])
    d.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit",
             "--tid", "1", "--lun", "2", "--bstype", "rbd", "-b",
             "rbd/" + image, "--bsopts",
             "conf=%s;id=admin;osd_op_timeout=7" % ceph.conf)
    line = rbd_line(d)
    assert "rbd rbd/%s " % image in line
    assert field(line, "osd_op_timeout") == "7s"
    assert field(line, "cache") == "off"
    assert field(line, "id") == "client.admin"
    assert re.search(r"\bstate=ok instance=client\.\d+@\S+", line), line
    qemu_io(d.url(2), "write -P 0x6c 1M 64k")
    same(export_blocks(ceph, image, 2048, 128), b"\x6c" * 65536, "image bytes")
    # a bad image name is refused, not half-created
    r = d.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit",
                 "--tid", "1", "--lun", "3", "--bstype", "rbd", "-b",
                 "rbd/no-such-image", "--bsopts", "conf=%s" % ceph.conf,
                 check=False)
    assert r.returncode != 0, r.stdout
    assert "rbd/no-such-image" not in show(d)


def test_json_shows_rbd(ceph, image, holdfast):
    d = holdfast(luns=[rbd_lun(ceph, image, rbd_osd_op_timeout=4)])
    adm = build_dir() / "holdfastadm"
    sock = "%s.%d" % (d.sock_base, d.ctl_port)
    wait_for(lambda: os.path.exists(sock), S(5))
    out = run([str(adm), "-C", str(d.ctl_port), "--json", "-o", "show",
               "-m", "target"], env=d.env, timeout=30).stdout
    lun = json.loads(out)["targets"][0]["luns"][1]
    assert lun["backing_store_type"] == "rbd"
    assert lun["backing_store_path"] == "rbd/" + image
    assert lun["size_bytes"] == 64 * MiB
    st = lun["backend_state"]
    assert st["osd_op_timeout"] == "4s" and st["fences"] == "0", st
    assert st["state"] == "ok" and st["cache"] == "off", st
    assert re.match(r"client\.\d+@127\.0\.0\.1:", st["instance"]), st
    assert st["conf"] == str(ceph.conf), st


# ---------------------------------------------------------------- faults

def _writes(c, base, n, pattern, blocks=8):
    return [c.issue("write %d %d %s" % (base + i * blocks, blocks, pattern))
            for i in range(n)]


def test_osd_sigstop_rides_through(ceph, image, holdfast):
    """OSD frozen for 15 s under writes, rerror/werror=retry with no
    timeout: every command is held and completes GOOD after SIGCONT, and
    the image holds every write."""
    d = holdfast(luns=[rbd_lun(ceph, image, rerror="retry", werror="retry",
                               retry_interval=500, retry_timeout=0,
                               rbd_osd_op_timeout=2)])
    wait_spare(d)
    c = HangClient(d.url(1))
    try:
        before = _writes(c, 0, 8, "0x31")
        for lb in before:
            assert c.get(lb, S(30))["status"] == "GOOD"
        ceph.osd_stop()
        t0 = time.monotonic()
        during = _writes(c, 64, 16, "0x32") + [c.issue("read 0 8")]
        time.sleep(15)
        c.sync()
        assert not any(c.done(lb) for lb in during), \
            "a command completed while the OSD was frozen"
        assert "hung" in show(d)
        ceph.osd_cont()
        for lb in during:
            r = c.get(lb, S(90))
            assert r["status"] == "GOOD", r
        assert time.monotonic() - t0 >= 15
    finally:
        ceph.osd_cont()
        c.close()
    data = export_blocks(ceph, image, 0, 64 + 16 * 8)
    same(data[:64 * BS], b"\x31" * 64 * BS, "image bytes")
    same(data[64 * BS:], b"\x32" * 128 * BS, "image bytes")
    line = rbd_line(d)
    assert int(field(line, "timeouts")) >= 1, line


def test_osd_kill9_restart_rides_through(ceph, image, holdfast):
    """kill -9 of the OSD under writes, restarted 5 s later: held, then
    GOOD, nothing lost."""
    d = holdfast(luns=[rbd_lun(ceph, image, rerror="retry", werror="retry",
                               retry_interval=500, retry_timeout=0,
                               rbd_osd_op_timeout=2)])
    wait_spare(d)
    c = HangClient(d.url(1))
    try:
        ceph.osd_kill()
        labels = _writes(c, 0, 16, "0x41")
        time.sleep(5)
        c.sync()
        assert not any(c.done(lb) for lb in labels)
        ceph.osd_restart(wait=False)
        for lb in labels:
            r = c.get(lb, S(120))
            assert r["status"] == "GOOD", r
        r = c.do("read 0 128 expect 0x41", timeout=S(30))
        assert r["status"] == "GOOD" and r["match"] is True, r
    finally:
        if ceph.procs["osd.0"].poll() is not None:
            ceph.osd_restart()
        c.close()
    ceph.wait_osd_up(90)
    same(export_blocks(ceph, image, 0, 128), b"\x41" * 128 * BS, "image bytes")


def test_outage_beyond_retry_timeout(ceph, image, holdfast):
    """An outage longer than retry_timeout: the held write fails at about
    the timeout with LOGICAL UNIT COMMUNICATION FAILURE; after SIGCONT
    writes work again."""
    d = holdfast(luns=[rbd_lun(ceph, image, rerror="retry", werror="retry",
                               retry_interval=500, retry_timeout=4000,
                               rbd_osd_op_timeout=2)])
    wait_spare(d)
    c = HangClient(d.url(1))
    try:
        ceph.osd_stop()
        lb = c.issue("write 0 8 0x51")
        r = c.get(lb, S(40))
        assert r["status"] == "CHECK_CONDITION", r
        assert r["sense_key"] == HARDWARE_ERROR and \
            r["asc"] == ASC_LU_COMM_FAILURE, r
        # first error after ~2 s (op timeout), reported 4 s later
        assert 5000 <= r["ms"] <= S(20000), r
        ceph.osd_cont()

        def ok():
            return c.do("write 0 8 0x52", timeout=S(30))["status"] == "GOOD"
        wait_for(ok, S(60), interval=0.5)
        r = c.do("read 0 8 expect 0x52", timeout=S(30))
        assert r["match"] is True, r
    finally:
        ceph.osd_cont()
        c.close()
    same(export_blocks(ceph, image, 0, 8), b"\x52" * 8 * BS, "image bytes")


@pytest.mark.parametrize("features", ["layering", "default"])
def test_fence_timed_out_write(ceph, holdfast, features):
    """No zombie writes.  The OSD is frozen; 16 writes of 0xaa time out
    in librbd (osd_op_timeout 3 s), are held by the hang engine and
    reported failed at retry_timeout (no probe in between: the retry
    interval is long).  Then 0xbb goes to the same blocks while the OSD is
    still frozen, through the new client instance, and the OSD is thawed.
    The 0xaa writes are still in the frozen OSD's socket; without the
    blocklist they could be applied after 0xbb.  Every block must hold
    0xbb, and the old instance must be on the cluster's blocklist.  The
    fence is counted before the first failure is reported."""
    # layering only: without the exclusive lock the new instance sends at
    # once, so stale and new writes wait in the frozen OSD side by side.
    # With the blocklist call taken out, this variant failed 3 runs of 3
    # (0xaa landed over 0xbb).  "default" (exclusive lock, object map)
    # checks the fence with the lock handover real images go through.
    image = "fence-%s-%d" % (features, os.getpid())
    ceph.create_image(image, "64M",
                      features=None if features == "default" else features)
    d = holdfast(luns=[rbd_lun(ceph, image, rerror="retry", werror="retry",
                               retry_interval=600000, retry_timeout=1000,
                               rbd_osd_op_timeout=3)])
    wait_spare(d)
    old = rbd_line(d)
    old_addr = re.search(r"\bstate=ok instance=client\.\d+@(\S+)", old).group(1)
    c = HangClient(d.url(1))
    try:
        r = c.do("write 0 128 0x99", timeout=S(30))
        assert r["status"] == "GOOD", r
        ceph.osd_stop()
        a = [c.issue("write %d 8 0xaa" % (i * 8)) for i in range(16)]
        for lb in a:
            r = c.get(lb, S(40))
            assert r["status"] == "CHECK_CONDITION", r
            assert r["ms"] >= 3000, r
        line = rbd_line(d)
        assert int(field(line, "fences")) >= 1, line
        assert old_addr in field(line, "last_fenced"), line
        b = [c.issue("write %d 8 0xbb" % (i * 8)) for i in range(16)]
        time.sleep(0.5)
        c.sync()
        assert not any(c.done(lb) for lb in b)
        ceph.osd_cont()
        for lb in b:
            r = c.get(lb, S(60))
            assert r["status"] == "GOOD", r
        # give any late 0xaa a chance to land before looking
        time.sleep(2)
        r = c.do("read 0 128 expect 0xbb", timeout=S(30))
        assert r["match"] is True, r
    finally:
        ceph.osd_cont()
        c.close()
    same(export_blocks(ceph, image, 0, 128), b"\xbb" * 128 * BS, "image bytes")
    bl = ceph.blocklist()
    assert old_addr.split("/")[0].replace("v2:", "").replace("v1:", "") \
        .strip("[]") in bl or old_addr in bl, (old_addr, bl)


@pytest.mark.parametrize("features", ["layering", "default"])
def test_fence_backoff_resends_on_the_new_instance(ceph, holdfast, features):
    """No fence storm (issue 14).  After a fence, until a write succeeds
    again, a write that times out on the new instance is re-sent there
    (same data, same client: no zombie) before that instance is fenced in
    turn.  The OSD is frozen: write A times out (2 s op timeout), fences
    the first instance and is held; the hang engine's probe (3 s later)
    sends it to the standby instance, which took over; when that copy has
    timed out too and was re-sent (show: resends=1), the OSD thaws, and A
    completes GOOD with no second fence.  Before the backoff the probe's
    timeout fenced again (fences=2): each fresh instance that met a
    still-stuck OSD was fenced in turn, the storm of the guest test."""
    image = "backoff-%s-%d" % (features, os.getpid())
    ceph.create_image(image, "64M",
                      features=None if features == "default" else features)
    d = holdfast(luns=[rbd_lun(ceph, image, rerror="retry", werror="retry",
                               retry_interval=3000, retry_timeout=0,
                               rbd_osd_op_timeout=2)])
    wait_spare(d)
    c = HangClient(d.url(1))
    try:
        assert c.do("write 0 128 0x11", timeout=S(30))["status"] == "GOOD"
        assert field(rbd_line(d), "fence_after") == "2s", rbd_line(d)
        ceph.osd_stop()
        a = c.issue("write 0 8 0x12")

        seen = []

        def moved_on():
            seen[:] = [rbd_line(d)]
            return int(field(seen[0], "resends")) >= 1 or \
                int(field(seen[0], "fences")) >= 2
        assert wait_for(moved_on, S(40), interval=0.1), rbd_line(d)
        ceph.osd_cont()
        # as it was before the thaw (a success resets the backoff)
        assert int(field(seen[0], "fences")) == 1, seen[0]
        assert field(seen[0], "fence_after") == "4s", seen[0]
        r = c.get(a, S(30))
        assert r["status"] == "GOOD", r
        line = rbd_line(d)
        assert int(field(line, "fences")) == 1, line
        # writes work again: the next timeout fences at once
        assert field(line, "fence_after") == "2s", line
        r = c.do("read 0 128", timeout=S(30))
        assert r["status"] == "GOOD", r
    finally:
        ceph.osd_cont()
        c.close()
    data = export_blocks(ceph, image, 0, 128)
    same(data[:8 * BS], b"\x12" * 8 * BS, "image bytes")
    same(data[8 * BS:], b"\x11" * 120 * BS, "image bytes")


# ---------------------------------------------------------------- daemon

def _proc_alive(pid):
    """pid runs (a zombie counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_detached_daemon_serves_rbd(ceph, image, tmp_path):
    """holdfastd without -f detaches before the stores open, so librados'
    threads live in the daemon: I/O on an RBD LUN works, the parent exits
    0 only once the daemon serves, the PID file names the daemon (its own
    session, not the parent), and SIGTERM stops it cleanly (PID file
    removed).  Before the fix the daemon lost librados' threads with the
    fork (daemon() ran after the stores were open) and hung or died on the
    first I/O."""
    port = free_tcp_port()
    ctl = random.randint(1000, 32767)
    conf = tmp_path / "targets.conf"
    conf.write_text(cfg_text({
        "portals": ["127.0.0.1:%d" % port],
        "targets": [{"name": IQN, "initiators": ["ALL"],
                     "luns": [rbd_lun(ceph, image)]}]}))
    pidfile = tmp_path / "holdfastd.pid"
    env = dict(os.environ, TGT_IPC_SOCKET=str(tmp_path / "tgtd.sock"))
    pid = None
    try:
        cp = run([str(build_dir() / "holdfastd"), "-c", str(conf), "-C",
                  str(ctl), "-p", str(pidfile)], env=env, timeout=60,
                 check=False)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        # the parent returned only when the daemon was ready
        pid = int(pidfile.read_text())
        assert _proc_alive(pid)
        assert port_accepts(port)
        assert os.getsid(pid) == pid        # setsid: its own session
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            assert str(conf).encode() in f.read()
        url = "iscsi://127.0.0.1:%d/%s/1" % (port, IQN)
        qemu_io(url, "write -P 0x5d 1M 128k", "read -P 0x5d 1M 128k")
        same(export_blocks(ceph, image, 2048, 256), b"\x5d" * 131072,
             "image bytes")
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not _proc_alive(pid), S(30)), \
            "daemon did not stop on SIGTERM"
        assert not pidfile.exists()
        pid = None
    finally:
        if pid is not None and _proc_alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _proc_alive(pid), S(10))


def test_detached_daemon_bad_config_fails_in_parent(ceph, tmp_path):
    """A store that cannot open (no such image) fails in the daemon, after
    the fork: the parent still exits non-zero with the reason, and no
    daemon stays behind (no PID file)."""
    conf = tmp_path / "targets.conf"
    conf.write_text(cfg_text({
        "portals": ["127.0.0.1:%d" % free_tcp_port()],
        "targets": [{"name": IQN, "initiators": ["ALL"],
                     "luns": [rbd_lun(ceph, "no-such-image")]}]}))
    pidfile = tmp_path / "holdfastd.pid"
    env = dict(os.environ, TGT_IPC_SOCKET=str(tmp_path / "tgtd.sock"))
    cp = run([str(build_dir() / "holdfastd"), "-c", str(conf), "-C",
              str(random.randint(1000, 32767)), "-p", str(pidfile)],
             env=env, timeout=60, check=False)
    assert cp.returncode != 0, cp.stdout + cp.stderr
    assert "cannot open the rbd image" in cp.stderr, cp.stderr
    assert not pidfile.exists()


# ---------------------------------------------------------------- resize

def _image_size(ceph, name):
    return json.loads(ceph.rbd("info", "--format", "json",
                               "rbd/%s" % name))["size"]


def test_online_resize_and_rescan(ceph, image, holdfast):
    """size= on a live RBD LUN resizes the image (rbd_resize), a shrink
    needs force=1, and action=rescan picks up an `rbd resize` made outside
    holdfast; each change is a CAPACITY DATA HAS CHANGED unit attention and
    the new blocks take I/O at once."""
    from test_resize import expect_ua, session, update
    d = holdfast(luns=[rbd_lun(ceph, image)])
    s = session(d)
    try:
        pattern = bytes(range(256)) * 2
        assert s.write10(7, pattern).ok
        assert s.read_capacity16() == (64 * MiB // BS, BS)
        update(d, "size=%d" % (128 * MiB))
        assert _image_size(ceph, image) == 128 * MiB
        expect_ua(s)
        assert s.read_capacity16() == (128 * MiB // BS, BS)
        new_lba = 100 * MiB // BS
        assert s.write10(new_lba, pattern).ok
        assert s.read10(new_lba, 1).data == pattern
        assert s.read10(7, 1).data == pattern
        # a shrink is refused without force=1 and changes nothing
        assert update(d, "size=%d" % (32 * MiB), check=False).returncode
        assert _image_size(ceph, image) == 128 * MiB
        assert s.test_unit_ready().ok
        # grown outside holdfast: seen at the rescan, not before
        ceph.rbd("resize", "--size", "192M", "rbd/%s" % image)
        assert s.read_capacity16() == (128 * MiB // BS, BS)
        update(d, "action=rescan")
        expect_ua(s)
        assert s.read_capacity16() == (192 * MiB // BS, BS)
        assert s.write10(190 * MiB // BS, pattern).ok
        # shrink with force
        update(d, "size=%d,force=1" % (96 * MiB))
        assert _image_size(ceph, image) == 96 * MiB
        expect_ua(s)
        assert s.read_capacity16() == (96 * MiB // BS, BS)
        assert s.read16(96 * MiB // BS, 1).key == 5
    finally:
        s.close()
    data = ceph.export(image)
    assert len(data) == 96 * MiB
    same(data[7 * BS:8 * BS], pattern, "image bytes")


# ---------------------------------------------------------------- COMPARE AND WRITE

def _caw_session(d, lun=1):
    import rawiscsi as raw
    s = raw.RawSession("127.0.0.1", d.port)
    s.login(d.iqn)
    for _ in range(3):                              # the unit attention
        if s.wait_status(s.scsi(lun, bytes(6)))[0] == 0:
            break
    return s


def _sense(pdu):
    """(key, asc, ascq, information) of a fixed-format sense in a SCSI
    Response PDU."""
    import struct
    sense = pdu.data[2:]
    return (sense[2] & 0x0f, sense[12], sense[13],
            struct.unpack(">I", sense[3:7])[0] if sense[0] & 0x80 else None)


def test_compare_and_write_through_librbd(ceph, image, holdfast):
    """COMPARE AND WRITE of one 512-byte block goes to librbd as one
    rbd_aio_compare_and_write: atomic on the cluster, not a read and a
    write.  Shown by slowing every read of the LUN by 1.5 s (fault
    filter): the command does not read, so it is fast (the read-compare-
    write emulation it replaced takes over 1.5 s here and fails the test).
    A miscompare is 0E/1D/00 with the offset of the first differing byte
    in INFORMATION, and the image keeps its data."""
    from test_caw_atomic import caw16
    import rawiscsi as raw
    d = holdfast(luns=[rbd_lun(ceph, image)])
    s = _caw_session(d)
    try:
        old, new = b"\x01" * BS, b"\x02" * BS
        assert s.wait_status(s.scsi(1, raw.write10(100, 1), data=old))[0] == 0
        d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
                 "--lun", "1", "--params", "fault=latency=1500:ops=r")
        t0 = time.monotonic()
        st, _, p = s.wait_status(s.scsi(1, caw16(100, 1), data=old + new),
                                 timeout=S(20))
        took = time.monotonic() - t0
        assert st == 0, _sense(p)
        assert took < 1.0, "COMPARE AND WRITE read first (%.2f s)" % took
        # miscompare: byte 37 differs from the medium (now 0x02)
        verify = bytearray(new)
        verify[37] = 0x55
        verify[300] = 0x66
        t0 = time.monotonic()
        st, _, p = s.wait_status(
            s.scsi(1, caw16(100, 1), data=bytes(verify) + b"\x03" * BS),
            timeout=S(20))
        assert st == 2, st
        assert _sense(p) == (0x0e, 0x1d, 0x00, 37), _sense(p)
        assert time.monotonic() - t0 < 1.0
        d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
                 "--lun", "1", "--params", "fault=off")
    finally:
        s.close()
    same(export_blocks(ceph, image, 100, 1), b"\x02" * BS, "image bytes")


def test_compare_and_write_4k_blocks_emulated(ceph, image, holdfast):
    """librbd compares at most one 512-byte sector: on a 4096-byte LUN
    the SCSI layer reads, compares and writes as for files."""
    from test_caw_atomic import caw16
    import rawiscsi as raw
    d = holdfast(luns=[rbd_lun(ceph, image, block_size=4096)])
    s = _caw_session(d)
    try:
        old, new = b"\x0a" * 4096, b"\x0b" * 4096
        w = raw.write10(3, 1)
        assert s.wait_status(s.scsi(1, w, data=old))[0] == 0
        st, _, p = s.wait_status(s.scsi(1, caw16(3, 1), data=old + new),
                                 timeout=S(20))
        assert st == 0, _sense(p)
        bad = bytearray(new)
        bad[4000] = 0
        st, _, p = s.wait_status(s.scsi(1, caw16(3, 1),
                                        data=bytes(bad) + old), timeout=S(20))
        assert st == 2 and _sense(p) == (0x0e, 0x1d, 0x00, 4000), _sense(p)
    finally:
        s.close()
    same(export_blocks(ceph, image, 24, 8), b"\x0b" * 4096, "image bytes")


# ---------------------------------------------------------------- global keys

def test_global_ceph_keys_with_per_lun_override(ceph, holdfast, tmp_path):
    """ceph_conf, ceph_id, ceph_keyring, rbd_osd_op_timeout (and rbd_cache)
    at the top level of targets.conf are the defaults of every RBD LUN;
    a LUN's own key wins."""
    a = "glob-a-%d" % os.getpid()
    b = "glob-b-%d" % os.getpid()
    ceph.create_image(a, "16M")
    ceph.create_image(b, "16M")
    d = holdfast(luns=[{"lun": 1, "backend": "rbd", "path": "rbd/" + a},
                       {"lun": 2, "backend": "rbd", "path": "rbd/" + b,
                        "rbd_osd_op_timeout": 4}],
                 ceph_conf=str(ceph.conf), ceph_id="admin",
                 ceph_keyring=str(ceph.keyring), rbd_osd_op_timeout=7)
    out = show(d)
    la = re.search(r"^.*\brbd rbd/%s .*$" % a, out, re.M).group(0)
    lb = re.search(r"^.*\brbd rbd/%s .*$" % b, out, re.M).group(0)
    assert field(la, "conf") == str(ceph.conf), la
    assert field(la, "id") == "client.admin", la
    assert field(la, "osd_op_timeout") == "7s", la
    assert field(lb, "osd_op_timeout") == "4s", lb
    assert field(lb, "conf") == str(ceph.conf), lb
    qemu_io(d.url(1), "write -P 0x61 0 64k")
    qemu_io(d.url(2), "write -P 0x62 0 64k")
    same(export_blocks(ceph, a, 0, 128), b"\x61" * 65536, "image bytes")
    same(export_blocks(ceph, b, 0, 128), b"\x62" * 65536, "image bytes")
    # a bad top-level value is refused at its own line
    bad = tmp_path / "bad.conf"
    bad.write_text('ceph_conf = "%s";\nrbd_osd_op_timeout = "soon";\n'
                   'targets = ();\n' % ceph.conf)
    cp = run([str(build_dir() / "holdfastd"), "-f", "-c", str(bad), "-C",
              str(random.randint(1000, 32767))],
             env=dict(os.environ, TGT_IPC_SOCKET=str(tmp_path / "s")),
             timeout=30, check=False)
    assert cp.returncode == 1, cp.stderr
    assert "bad.conf:2: rbd_osd_op_timeout:" in cp.stderr, cp.stderr


# ---------------------------------------------------------------- two gateways

def test_two_gateways_exclusive_lock_handover_and_forced_takeover(
        ceph, image, holdfast):
    """Two holdfastd serve one image as an ALUA pair; the image's exclusive
    lock is the ownership.  The standby gateway cannot become active while
    the other holds it; a handover (standby, then active) moves it with the
    data; a forced takeover breaks the holder's lock, which blocklists it,
    and the old holder notices, goes standby and writes nothing more."""
    from test_alua import (NOT_READY, STANDBY, UA, STATE_CHANGED, GOOD, Sess,
                           inquiry, update)
    a = holdfast(luns=[rbd_lun(ceph, image, alua_group=1, alua_peer_group=2,
                               alua_state="active")])
    b = holdfast(luns=[rbd_lun(ceph, image, alua_group=2, alua_peer_group=1,
                               alua_state="standby")])
    sa, sb = Sess(a), Sess(b)
    try:
        sa.settle()
        sb.settle()
        assert "active/optimized (owner)" in show(a)
        assert inquiry(sa, 0x80) == inquiry(sb, 0x80)   # one identity
        assert sa.write(8, b"\x5a" * 512)[0] == GOOD
        assert update(b, "alua_state=active", check=False).returncode != 0
        assert "the other gateway holds the image's exclusive lock" in \
            b.log_text()
        assert sb.read(8)[2:] == (NOT_READY, STANDBY)
        assert wait_for(lambda: sb.rtpg()[1][0] == 0, S(5))  # peer AO
        # handover
        update(a, "alua_state=standby")
        assert sa.tur()[2:] == (UA, STATE_CHANGED)
        assert sa.read(8)[2:] == (NOT_READY, STANDBY)
        update(b, "alua_state=active")
        assert sb.tur()[2:] == (UA, STATE_CHANGED)
        st, data, _, _ = sb.read(8)
        assert st == GOOD and data == b"\x5a" * 512
        assert sb.write(9, b"\x66" * 512)[0] == GOOD
        # forced takeover from B (as if B were dead or cut off)
        update(a, "alua_state=active,force=1")
        assert "broke the exclusive lock" in a.log_text()
        # B is alive: its standby instance answers A's probe of the
        # watchers on B's host and is not blocklisted
        assert wait_for(lambda: field(rbd_line(a), "watcher_probes") == "1",
                        S(15)), rbd_line(a)
        assert field(rbd_line(a), "stale_watchers_fenced") == "0"
        sa.settle()
        assert sa.write(3, b"\x33" * 512)[0] == GOOD
        assert wait_for(lambda: "lost the store's ownership lock" in
                        b.log_text(), S(10)), b.log_text()
        assert sb.write(3, b"\x44" * 512)[2:] in ((UA, STATE_CHANGED),
                                                  (NOT_READY, STANDBY))
        assert sb.write(3, b"\x44" * 512)[2:] == (NOT_READY, STANDBY)
        assert ceph.blocklist().strip(), "the broken holder is not blocklisted"
    finally:
        sa.close()
        sb.close()
    data = ceph.export(image)
    same(data[3 * 512:4 * 512], b"\x33" * 512, "image bytes")
    same(data[8 * 512:10 * 512], b"\x5a" * 512 + b"\x66" * 512, "image bytes")


def test_two_gateways_explicit_alua_stpg(ceph, image, holdfast):
    """SET TARGET PORT GROUPS from an initiator moves the image's exclusive
    lock the way holdfastadm does (explicit ALUA, as dm-multipath's alua
    handler sends it): the standby gateway refuses to become active while
    the other holds the lock; the active one, told to make the peer group
    active, drains, releases the lock and goes standby; then the peer takes
    it and serves the data.  No force, so nobody is blocklisted."""
    from test_alua import (AO_STATE, CHECK, GOOD, HW_ERROR, NOT_READY,
                           SB_STATE, STANDBY, STATE_CHANGED, STPG_FAILED, UA,
                           Sess)
    a = holdfast(luns=[rbd_lun(ceph, image, alua_group=1, alua_peer_group=2,
                               alua_state="active")])
    b = holdfast(luns=[rbd_lun(ceph, image, alua_group=2, alua_peer_group=1,
                               alua_state="standby")])
    fenced_before = set(ceph.blocklist().split("\n"))
    sa, sb = Sess(a), Sess(b)
    try:
        sa.settle()
        sb.settle()
        assert sa.write(5, b"\x5c" * 512)[0] == GOOD
        # B cannot take the lock A holds
        st, _, key, asc = sb.stpg(2, AO_STATE)
        assert (st, key, asc) == (CHECK, HW_ERROR, STPG_FAILED)
        assert sb.read(5)[2:] == (NOT_READY, STANDBY)
        # A hands over: making the peer group active makes A standby
        assert sa.stpg(2, AO_STATE)[0] == GOOD
        assert sa.tur()[2:] == (UA, STATE_CHANGED)
        g = sa.rtpg()
        assert g[1][0] == SB_STATE and g[1][2] == 0x01     # altered by STPG
        assert sa.write(5, b"\x44" * 512)[2:] == (NOT_READY, STANDBY)
        # B takes the lock A released
        assert sb.stpg(2, AO_STATE)[0] == GOOD
        assert sb.tur()[2:] == (UA, STATE_CHANGED)
        st, data, _, _ = sb.read(5)
        assert st == GOOD and data == b"\x5c" * 512
        assert sb.write(6, b"\x6d" * 512)[0] == GOOD
        assert "active/optimized (owner)" in show(b)
        assert "broke the exclusive lock" not in b.log_text()
        fenced = set(ceph.blocklist().split("\n")) - fenced_before
        assert not fenced, "a clean handover fenced someone: %s" % fenced
    finally:
        sa.close()
        sb.close()
    data = ceph.export(image)
    same(data[5 * 512:7 * 512], b"\x5c" * 512 + b"\x6d" * 512, "image bytes")


def test_two_gateways_reservation_in_image_metadata(ceph, image, holdfast):
    """Without alua_state_dir the gateways share no file: the reservation
    state lives in the image's metadata (key holdfast.pr), written by the
    active gateway on every change and read by the other when it becomes
    active.  Mirrors test_alua.py's reservation-across-takeover test (no
    APTPL): after a handover and after a forced takeover from a killed
    gateway, the new active one reports the registrations and the
    reservation, and fences the initiator that does not hold it."""
    import struct
    from test_alua import CONFLICT, GOOD, Sess, update
    a = holdfast(luns=[rbd_lun(ceph, image, alua_group=1, alua_peer_group=2,
                               alua_state="active")])
    b = holdfast(luns=[rbd_lun(ceph, image, alua_group=2, alua_peer_group=1,
                               alua_state="standby")])
    b.ok_exit = {0, -9}
    h1 = dict(isid=b"\x80\x00\x00\x00\x00\x11",
              initiator="iqn.2026-11.org.example:host1")
    h2 = dict(isid=b"\x80\x00\x00\x00\x00\x22",
              initiator="iqn.2026-11.org.example:host2")
    key1, key2 = struct.pack(">Q", 0x1234), struct.pack(">Q", 0x5678)
    sess = []

    def login(d, h):
        s = Sess(d, **h)
        sess.append(s)
        s.settle()
        return s

    def register(s, key):
        assert s.cmd(bytes([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
                     data=bytes(8) + key + bytes(8))[0] == GOOD

    def keys_and_holder(s):
        st, d, _, _ = s.cmd("5e00000000000000ff00", read_len=255)
        assert st == GOOD
        n = struct.unpack(">I", d[4:8])[0]
        keys = sorted(d[8 + i:16 + i] for i in range(0, n, 8))
        st, d, _, _ = s.cmd("5e01000000000000ff00", read_len=255)
        assert st == GOOD
        held = (d[8:16], d[21] & 0x0f) if struct.unpack(
            ">I", d[4:8])[0] else None
        return keys, held

    try:
        i1 = login(a, h1)
        register(i1, key1)
        # RESERVE, Write Exclusive, APTPL not set
        assert i1.cmd(bytes([0x5f, 0x01, 0x01, 0, 0, 0, 0, 0, 24, 0]),
                      data=key1 + bytes(16))[0] == GOOD
        meta = ceph.rbd("image-meta", "get", "rbd/%s" % image,
                        "holdfast.pr")
        assert "reservation 1 0" in meta and "aptpl 0" in meta, meta
        # handover: A standby, B active
        update(a, "alua_state=standby")
        update(b, "alua_state=active")
        j1, j2 = login(b, h1), login(b, h2)
        assert keys_and_holder(j2) == ([key1], (key1, 1))
        assert j2.write(0, b"\x01" * 512)[0] == CONFLICT
        assert j1.write(0, b"\x02" * 512)[0] == GOOD
        # B (active) changes the state: host2 registers too
        register(j2, key2)
        # B dies holding the image's lock; A takes over by force
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        update(a, "alua_state=active,force=1")
        k1, k2 = login(a, h1), login(a, h2)
        assert keys_and_holder(k2) == ([key1, key2], (key1, 1))
        assert k2.write(0, b"\x03" * 512)[0] == CONFLICT
        assert k1.write(0, b"\x04" * 512)[0] == GOOD
    finally:
        for s in sess:
            try:
                s.close()
            except Exception:   # the killed gateway's sessions
                pass
    same(ceph.export(image)[:512], b"\x04" * 512, "image bytes")


def test_two_gateways_state_in_alua_state_dir(ceph, image, holdfast,
                                               tmp_path):
    """With alua_state_dir the reservation state and the persistent
    bitmaps of an rbd LUN live in that shared directory, as for a shared
    file store, not in the image's metadata; the ownership stays the
    image's exclusive lock.  After a handover the new active gateway
    reports the registration and the reservation and has the bitmap."""
    import struct
    from test_alua import CONFLICT, GOOD, Sess, adm, extents, update
    state = tmp_path / "state"
    state.mkdir()
    a = holdfast(luns=[rbd_lun(ceph, image, alua_group=1, alua_peer_group=2,
                               alua_state="active",
                               alua_state_dir=str(state))])
    a.require_holdfast("alua_state_dir is holdfast's")
    b = holdfast(luns=[rbd_lun(ceph, image, alua_group=2, alua_peer_group=1,
                               alua_state="standby",
                               alua_state_dir=str(state))])
    key = struct.pack(">Q", 0xabc)
    adm(a, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "persistent=1")
    qemu_io(a.url(1), "write -P 0x11 2M 64k")
    s1 = Sess(a, isid=b"\x80\x00\x00\x00\x00\x31",
              initiator="iqn.2026-11.org.example:h1")
    s2 = None
    try:
        s1.settle()
        assert s1.cmd(bytes([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
                      data=bytes(8) + key + bytes(8))[0] == GOOD
        assert s1.cmd(bytes([0x5f, 0x01, 0x01, 0, 0, 0, 0, 0, 24, 0]),
                      data=key + bytes(16))[0] == GOOD
        names = sorted(p.name for p in state.iterdir())
        assert any(n.endswith(".lun1.pr") for n in names), names
        assert any(n.endswith(".lun1.bitmaps") for n in names), names
        meta = ceph.rbd("image-meta", "list", "rbd/%s" % image)
        assert "holdfast." not in meta, meta
        update(a, "alua_state=standby")
        update(b, "alua_state=active")
        s2 = Sess(b, isid=b"\x80\x00\x00\x00\x00\x32",
                  initiator="iqn.2026-11.org.example:h2")
        s2.settle()
        st, d, _, _ = s2.cmd("5e01000000000000ff00", read_len=255)
        assert st == GOOD and d[8:16] == key, d
        assert s2.write(0, b"\x01" * 512)[0] == CONFLICT
        ext, bm = extents(b)
        assert (2 << 20, 65536) in ext and bm["persistent"] is True, ext
    finally:
        s1.close()
        if s2:
            s2.close()
    assert "holdfast." not in ceph.rbd("image-meta", "list",
                                       "rbd/%s" % image)


def test_forced_takeover_fences_the_dead_gateways_standby_watcher(
        ceph, image, holdfast):
    """A gateway killed with kill -9 leaves two watchers on the image
    header: its serving instance, which holds the lock and is blocklisted
    when the lock is broken, and its standby instance, which nothing
    blocklisted.  Until the OSD expires that watch (30 s) every librbd
    notification waits 5 s for it, so each metadata update (a reservation
    change here) took 5-10 s.  The taker probes the watchers on the dead
    gateway's host and blocklists the one that does not answer; its own
    standby and the dead one's serving instance are left alone."""
    import struct
    from test_alua import GOOD, Sess, update
    a = holdfast(luns=[rbd_lun(ceph, image, alua_group=1, alua_peer_group=2,
                               alua_state="active")])
    b = holdfast(luns=[rbd_lun(ceph, image, alua_group=2, alua_peer_group=1,
                               alua_state="standby")])
    a.ok_exit = {0, -9}
    wait_spare(a)
    wait_spare(b)

    def watchers():
        out = ceph.rbd("status", "rbd/%s" % image)
        return set(re.findall(r"watcher=(\S+)", out))

    before = watchers()
    assert len(before) == 4, before         # two instances per gateway
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    update(b, "alua_state=active,force=1")
    assert wait_for(lambda: field(rbd_line(b), "stale_watchers_fenced") ==
                    "1", S(15)), rbd_line(b)
    assert field(rbd_line(b), "watcher_probes") == "1"
    assert "a watcher on the host of the gateway we took over from" in \
        b.log_text()
    left = watchers()
    assert len(left) == 2 and left < before, (before, left)
    line = rbd_line(b)
    assert field(line, "fences") == "0" and field(line, "spare") == "ready", \
        line
    s = Sess(b)
    try:
        s.settle()
        t0 = time.monotonic()
        assert s.cmd(bytes([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
                     data=bytes(8) + struct.pack(">Q", 0x77) + bytes(8)
                     )[0] == GOOD
        took = time.monotonic() - t0
        assert "reg 0x0000000000000077 " in ceph.rbd(
            "image-meta", "get", "rbd/%s" % image, "holdfast.pr")
    finally:
        s.close()
    # a librbd notification no longer waits 5 s for a dead watcher
    assert took < 2.5, "PERSISTENT RESERVE OUT took %.1f s" % took


def test_single_gateway_restart_after_kill9_breaks_the_dead_lock(
        ceph, image, holdfast):
    """One gateway (no ALUA) killed with kill -9 and started again: its
    previous life still holds the image's exclusive lock, and librbd
    breaks a lock only once the holder's watch is gone, which the OSD
    notices 30 s after the crash: the first write after the restart
    waited 29.8 s.  Now the worker sees writes wait, probes the holder,
    and breaks the lock of the one that does not answer (blocklisting
    it), then fences the dead life's silent standby as well."""
    import struct
    from test_alua import GOOD, Sess
    d = holdfast(luns=[rbd_lun(ceph, image, rerror="retry",
                               werror="retry")])
    d.ok_exit = {0, -9}
    wait_spare(d)
    s = Sess(d)
    try:
        s.settle()
        assert s.write(0, b"\x11" * 512)[0] == GOOD    # takes the lock
    finally:
        s.close()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.start()
    wait_spare(d)
    s = Sess(d)
    try:
        s.settle()
        t0 = time.monotonic()
        assert s.write(8, b"\x22" * 512)[0] == GOOD
        took = time.monotonic() - t0
        # the dead life's standby is probed and fenced right after the
        # break (3 s to answer) ...
        assert wait_for(lambda: field(rbd_line(d), "stale_watchers_fenced")
                        == "1", S(15)), rbd_line(d)
        # ... so a reservation change (a metadata update: librbd notifies
        # every watcher) does not wait 5 s for it
        t1 = time.monotonic()
        assert s.cmd(bytes([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
                     data=bytes(8) + struct.pack(">Q", 0x55) + bytes(8)
                     )[0] == GOOD
        pr_took = time.monotonic() - t1
    finally:
        s.close()
    line = rbd_line(d)
    assert field(line, "stale_locks_broken") == "1", line
    assert "writes waited for it and it did not answer" in d.log_text()
    # detection (1-2 s), the probe (3 s), librbd's next attempt
    assert took < 15, "the first write took %.1f s" % took
    assert pr_took < 2.5, "PERSISTENT RESERVE OUT took %.1f s" % pr_took
    data = export_blocks(ceph, image, 0, 9)
    same(data[:512], b"\x11" * 512, "block 0")
    same(data[8 * 512:], b"\x22" * 512, "block 8")


LOCK_HOLDER = """
import sys, rados, rbd
c = rados.Rados(conffile=sys.argv[1], rados_id="admin",
                conf={"keyring": sys.argv[2]})
c.connect()
io = c.open_ioctx("rbd")
img = rbd.Image(io, sys.argv[3])
img.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
print("LOCKED", c.get_addrs() if hasattr(c, "get_addrs") else "", flush=True)
sys.stdin.readline()
img.lock_release()
print("RELEASED", flush=True)
sys.stdin.readline()
img.close()
io.close()
c.shutdown()
"""


def test_live_lock_holder_is_not_broken(ceph, image, holdfast):
    """A live client holding the exclusive lock explicitly (librbd does
    not hand such a lock over on request): our write is refused at once
    (librbd answers EROFS, the initiator gets DATA PROTECT), nothing
    waits, so nothing is probed, broken or blocklisted; once the client
    releases the lock, writes go."""
    import subprocess
    from test_alua import GOOD, Sess
    d = holdfast(luns=[rbd_lun(ceph, image, rerror="retry",
                               werror="retry")])
    wait_spare(d)
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c", LOCK_HOLDER, str(ceph.conf),
         str(ceph.keyring), image],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().startswith("LOCKED")
        bl_before = ceph.blocklist()
        s = Sess(d)
        try:
            s.settle()
            t0 = time.monotonic()
            st, _, key, asc = s.write(4, b"\x33" * 512)
            took = time.monotonic() - t0
            print("write while held: status %s key %s asc %s, %.2f s" % (
                st, key, asc, took))
            assert st != GOOD and key == 0x07, (st, key, asc)
            assert took < 5, took
            time.sleep(2.5)     # a stuck write would be probed by now
            line = rbd_line(d)
            assert field(line, "stale_lock_probes") == "0", line
            assert field(line, "stale_locks_broken") == "0", line
            assert ceph.blocklist() == bl_before
            holder.stdin.write("release\n")
            holder.stdin.flush()
            assert holder.stdout.readline().startswith("RELEASED")
            assert s.write(4, b"\x44" * 512)[0] == GOOD
        finally:
            s.close()
        assert export_blocks(ceph, image, 4, 1) == b"\x44" * 512
        holder.stdin.write("exit\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# A stand-in for a live librbd client that owns the image's exclusive lock
# the managed way -- cls lock "rbd_lock", tag "internal", cookie "auto
# <its watch cookie>", its watch on the header alive -- and answers every
# notification, but with an empty payload, so it never hands the lock over
# (a gateway whose librbd is wedged, as far as a peer can tell).  librbd
# sees a live owner and neither breaks the lock nor fails the write: the
# write waits.  Encoding of cls_lock_lock_op: ENCODE_START(1, 1) (u8 v, u8
# compat, u32 length), then name, u8 type (1 exclusive), cookie, tag,
# description (each u32 length + bytes), utime_t duration (u32 s, u32 ns),
# u8 flags.
ANSWERING_HOLDER = """
import struct, sys, rados, rbd
def s(x):
    x = x.encode()
    return struct.pack("<I", len(x)) + x
c = rados.Rados(conffile=sys.argv[1], rados_id="admin",
                conf={"keyring": sys.argv[2]})
c.connect()
io = c.open_ioctx("rbd")
img = rbd.Image(io, sys.argv[3], read_only=True)
oid = "rbd_header." + img.id()
img.close()
w = io.watch(oid, lambda *a: b"")
cookie = "auto %d" % w.get_id()
body = (s("rbd_lock") + bytes([1]) + s(cookie) + s("internal") + s("") +
        struct.pack("<II", 0, 0) + bytes([0]))
ret, _ = io.execute(oid, "lock", "lock",
                    bytes([1, 1]) + struct.pack("<I", len(body)) + body)
print("LOCKED", ret, flush=True)
sys.stdin.readline()
io.unlock(oid, "rbd_lock", cookie)
w.close()
print("RELEASED", flush=True)
sys.stdin.readline()
io.close()
c.shutdown()
"""


def test_answering_lock_holder_is_probed_and_left_alone(ceph, image,
                                                        holdfast):
    """The stale-lock probe's other side: another client owns the
    exclusive lock, is alive (answers notifications) and does not hand the
    lock over.  Our write waits on it; after a second the worker probes
    the holder, which answers, so its lock is not broken and nothing is
    blocklisted: the write stays held (no split brain with a live owner).
    When the holder lets go, the held write completes GOOD."""
    import subprocess
    d = holdfast(luns=[rbd_lun(ceph, image, rerror="retry", werror="retry",
                               retry_interval=1000, retry_timeout=0)])
    wait_spare(d)
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c", ANSWERING_HOLDER, str(ceph.conf),
         str(ceph.keyring), image],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    c = None
    try:
        assert holder.stdout.readline().split() == ["LOCKED", "0"]
        bl_before = ceph.blocklist()
        c = HangClient(d.url(1))
        lb = c.issue("write 0 8 0x5a")
        assert wait_for(lambda: field(rbd_line(d), "stale_lock_probes")
                        not in (None, "0"), S(20)), rbd_line(d)
        time.sleep(4)       # the probe's 3 s, and the verdict
        c.sync()
        assert not c.done(lb), "the write completed while the lock was held"
        line = rbd_line(d)
        assert field(line, "stale_locks_broken") == "0", line
        assert ceph.blocklist() == bl_before
        assert "broke the exclusive lock" not in d.log_text()
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.stdout.readline().startswith("RELEASED")
        r = c.get(lb, S(60))
        assert r["status"] == "GOOD", r
        holder.stdin.write("exit\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
    finally:
        if c is not None:
            c.close()
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    line = rbd_line(d)
    assert field(line, "stale_locks_broken") == "0", line
    assert export_blocks(ceph, image, 0, 8) == b"\x5a" * 8 * BS


def test_aptpl_reservation_in_image_metadata_survives_restart(ceph, image,
                                                             holdfast):
    """A single gateway keeps APTPL state in the image's metadata too (an
    RBD LUN has no file next to it): it survives a restart, and clearing
    APTPL removes the key."""
    import struct
    from test_alua import CONFLICT, GOOD, Sess
    d = holdfast(luns=[rbd_lun(ceph, image)])
    key = struct.pack(">Q", 0xabc)
    h1 = dict(isid=b"\x80\x00\x00\x00\x00\x11",
              initiator="iqn.2026-11.org.example:host1")
    h2 = dict(isid=b"\x80\x00\x00\x00\x00\x22",
              initiator="iqn.2026-11.org.example:host2")
    s = Sess(d, **h1)
    try:
        s.settle()
        # REGISTER with APTPL (byte 20 bit 0), RESERVE Exclusive Access
        assert s.cmd(bytes([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
                     data=bytes(8) + key + bytes(4) + b"\x01" +
                     bytes(3))[0] == GOOD
        assert s.cmd(bytes([0x5f, 0x01, 0x03, 0, 0, 0, 0, 0, 24, 0]),
                     data=key + bytes(16))[0] == GOOD
    finally:
        s.close()
    meta = ceph.rbd("image-meta", "get", "rbd/%s" % image, "holdfast.pr")
    assert "reservation 3 0" in meta and "aptpl 0" not in meta, meta
    d.restart()
    s1, s2 = Sess(d, **h1), Sess(d, **h2)
    try:
        s1.settle()
        s2.settle()
        st, data, _, _ = s2.cmd("5e01000000000000ff00", read_len=255)
        assert st == GOOD and data[8:16] == key and data[21] & 0x0f == 3
        assert s2.read(0)[0] == CONFLICT
        assert s1.read(0)[0] == GOOD
        # REGISTER with the key and service action key 0, APTPL clear:
        # unregisters (and releases); the state is no longer kept
        assert s1.cmd(bytes([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
                      data=key + bytes(16))[0] == GOOD
    finally:
        s1.close()
        s2.close()
    assert "holdfast.pr" not in ceph.rbd("image-meta", "list",
                                         "rbd/%s" % image)


# ------------------------------------------------ bitmaps in image metadata

def rbd_meta(ceph, name):
    """The image's metadata as a dict (rbd image-meta list)."""
    out = ceph.rbd("image-meta", "list", "--format", "json",
                   "rbd/%s" % name)
    return json.loads(out) if out.strip() else {}


def bitmap_keys(meta, name):
    """{generation: [shard indexes]} of bitmap name's shard keys."""
    gens = {}
    for k in meta:
        m = re.match(r"holdfast\.bitmap\.%s\.(\d+)\.(\d+)$" % re.escape(name),
                     k)
        if m:
            gens.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    return {g: sorted(v) for g, v in gens.items()}


def header_line(meta, name):
    for line in meta["holdfast.bitmaps"].splitlines():
        if line.startswith("bitmap %s " % name):
            return line.split()
    raise AssertionError(meta["holdfast.bitmaps"])


def test_two_gateways_bitmaps_follow_the_handover_in_image_metadata(
        ceph, image, holdfast, tmp_path):
    """The gateways share no file: a persistent bitmap lives in the image's
    metadata (holdfast.bitmaps and its shards).  A adds it and writes; after
    the handover B's bitmap holds exactly A's chunks and keeps recording; an
    incremental backup from B copies exactly those chunks with A's and B's
    data; the cleared bitmap goes back to A with the next handover.
    Mirrors test_alua.py::test_bitmaps_follow_the_handover."""
    from test_alua import GOOD, Sess, adm, extents, update
    from test_cbt import job_new, job_wait
    chunk = 65536
    a = holdfast(luns=[rbd_lun(ceph, image, alua_group=1, alua_peer_group=2,
                               alua_state="active")])
    a.require_holdfast("bitmaps are holdfast's")
    b = holdfast(luns=[rbd_lun(ceph, image, alua_group=2, alua_peer_group=1,
                               alua_state="standby")])
    adm(a, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "granularity=%d,persistent=1" % chunk)
    meta = rbd_meta(ceph, image)
    assert meta["holdfast.bitmaps"].startswith("holdfast-bitmaps 1\n"), meta
    assert bitmap_keys(meta, "daily") == {1: [0]}, meta.keys()
    assert header_line(meta, "daily")[2:5] == ["1", str(chunk), "1"]
    assert not list(tmp_path.rglob("*.bitmaps")), "no sidecar file"
    # the standby gateway may not touch them
    r = adm(b, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "other",
            "-P", "persistent=1", check=False)
    assert r.returncode != 0
    qemu_io(a.url(1), "write -P 0x11 3M 64k", "write -P 0x12 40M 128k")
    # handover
    update(a, "alua_state=standby")
    update(b, "alua_state=active")
    ext, bm = extents(b)
    assert ext == [(3 * MiB, chunk), (40 * MiB, 2 * chunk)], ext
    assert bm["persistent"] is True and bm["inconsistent"] is False
    qemu_io(b.url(1), "write -P 0x22 5M 64k")
    ext, _ = extents(b)
    assert ext == [(3 * MiB, chunk), (5 * MiB, chunk),
                   (40 * MiB, 2 * chunk)], ext
    # what B wrote to the metadata (write-intent) has B's chunk too
    assert int(header_line(rbd_meta(ceph, image), "daily")[2]) >= 2
    # an incremental backup from B: exactly the dirty chunks, right data
    inc = b.path("inc.qcow2")
    info = job_wait(b, job_new(
        b, "type=backup,target=%s,format=qcow2,sync=bitmap,bitmap=daily" %
        inc))
    assert info["state"] == "completed" and info["error"] is None, info
    assert info["bytes_total"] == 4 * chunk, info
    cp = run(["qemu-img", "map", "--output=json", "-f", "qcow2", str(inc)])
    data = []
    for e in json.loads(cp.stdout):
        if not e["data"]:
            continue
        if data and data[-1][0] + data[-1][1] == e["start"]:
            data[-1] = (data[-1][0], data[-1][1] + e["length"])
        else:
            data.append((e["start"], e["length"]))
    assert data == [(3 * MiB, chunk), (5 * MiB, chunk),
                    (40 * MiB, 2 * chunk)], data
    cp = run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x11 3M 64k",
              "-c", "read -P 0x22 5M 64k", "-c", "read -P 0x12 40M 128k",
              str(inc)])
    assert "Pattern verification failed" not in cp.stdout, cp.stdout
    # the backup cleared the bitmap (on-success); A gets it cleared
    assert extents(b)[0] == []
    update(b, "alua_state=standby")
    update(a, "alua_state=active")
    assert extents(a)[0] == []
    sa = Sess(a)
    try:
        sa.settle()
        assert sa.write(7 * MiB // BS, b"\x33" * BS)[0] == GOOD
    finally:
        sa.close()
    ext, bm = extents(a)
    assert ext == [(7 * MiB, chunk)] and not bm["inconsistent"], ext


def test_two_gateways_bitmaps_survive_a_kill9_takeover(ceph, image,
                                                        holdfast):
    """Write-intent on the image's metadata: every write A acknowledged is
    in the metadata when A dies (kill -9), so B's bitmap covers it after a
    forced takeover, and B records on.  Mirrors
    test_alua.py::test_bitmaps_survive_a_kill9_takeover."""
    from test_alua import adm, extents, update
    chunk = 65536
    a = holdfast(luns=[rbd_lun(ceph, image, alua_group=1, alua_peer_group=2,
                               alua_state="active")])
    a.require_holdfast("bitmaps are holdfast's")
    b = holdfast(luns=[rbd_lun(ceph, image, alua_group=2, alua_peer_group=1,
                               alua_state="standby")])
    a.ok_exit = {0, -9}
    adm(a, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "persistent=1")
    qemu_io(a.url(1), "write -P 0x11 3M 64k", "write -P 0x13 60M 4k",
            "write -P 0x14 9M 192k")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    update(b, "alua_state=active,force=1")
    ext, bm = extents(b)
    assert ext == [(3 * MiB, chunk), (9 * MiB, 3 * chunk),
                   (60 * MiB, chunk)], ext
    assert bm["persistent"] is True and bm["inconsistent"] is False
    qemu_io(b.url(1), "write -P 0x22 5M 64k")
    ext, _ = extents(b)
    assert (5 * MiB, chunk) in ext and (3 * MiB, chunk) in ext, ext


def test_bitmap_shards_in_image_metadata(ceph, holdfast, tmp_path):
    """A bitmap too big for one value: a 4 GiB image in 4 KiB chunks has
    128 KiB of bits, stored as six shards of at most 32 KiB of base64
    under one generation; a bitmap that did not change keeps its shards; a
    restart reads every shard back (extents exact, first and last chunk
    included); shards nothing refers to (a save that died) are removed by
    the next save; removing the bitmaps removes every key."""
    from test_alua import adm, extents
    name = "shards-%d" % os.getpid()
    ceph.create_image(name, "4G")
    d = holdfast(luns=[rbd_lun(ceph, name)])
    d.require_holdfast("bitmaps are holdfast's")
    adm(d, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "big",
        "-P", "granularity=4096,persistent=1")
    adm(d, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "small",
        "-P", "granularity=1048576,persistent=1")
    adm(d, "-o", "update", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "small",
        "-P", "action=disable")
    meta = rbd_meta(ceph, name)
    (g0, idx), = bitmap_keys(meta, "big").items()
    assert idx == list(range(6)), idx
    assert all(len(v) <= 32768 for k, v in meta.items()
               if k.startswith("holdfast.")), "a value near 64 KiB"
    assert header_line(meta, "big")[3:5] == ["4096", "6"]
    (s0, _), = bitmap_keys(meta, "small").items()
    writes = [(0x41, 0), (0x42, 1 << 30 | 8192), (0x43, 3 << 30),
              (0x44, (4 << 30) - 4096)]
    qemu_io(d.url(1), *["write -P 0x%x %d 4k" % w for w in writes])
    want = [(off, 4096) for _, off in writes]
    # the old generation goes once the writes are released
    assert wait_for(lambda: len(bitmap_keys(rbd_meta(ceph, name),
                                            "big")) == 1, S(10))
    meta = rbd_meta(ceph, name)
    (g1, idx), = bitmap_keys(meta, "big").items()
    assert g1 > g0 and idx == list(range(6)), bitmap_keys(meta, "big")
    assert bitmap_keys(meta, "small") == {s0: [0]}, \
        "a disabled bitmap did not change: its shard stays"
    # a save that died before its switch left shards behind
    ceph.rbd("image-meta", "set", "rbd/%s" % name,
             "holdfast.bitmap.big.%d.0" % (g1 + 1), "AAAA")
    ceph.rbd("image-meta", "set", "rbd/%s" % name,
             "holdfast.bitmap.gone.3.0", "AAAA")
    d.restart()
    assert extents(d, "big")[0] == want
    assert extents(d, "small")[0] == []
    qemu_io(d.url(1), "write -P 0x45 2G 4k")
    assert wait_for(lambda: "holdfast.bitmap.gone.3.0" not in
                    rbd_meta(ceph, name), S(10)), sorted(rbd_meta(ceph, name))
    meta = rbd_meta(ceph, name)
    assert list(bitmap_keys(meta, "big").values()) == [list(range(6))], \
        bitmap_keys(meta, "big")
    assert sorted(extents(d, "big")[0]) == sorted(want + [(2 << 30, 4096)])
    assert not list(tmp_path.rglob("*.bitmaps")), "no sidecar file"
    for n in ("big", "small"):
        adm(d, "-o", "delete", "-m", "bitmap", "-t", 1, "-l", 1, "-n", n)
    assert not [k for k in rbd_meta(ceph, name)
                if k.startswith("holdfast.bitmap")]


def chunks_of(extents, chunk):
    """(offset, length) extents rounded out to chunk and merged."""
    out = []
    for off, length in sorted(extents):
        a, b = off // chunk * chunk, -(-(off + length) // chunk) * chunk
        if out and a <= out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], b)
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((a, b - a))
    return out


def test_bitmap_merge_from_rbd_snapshot(ceph, image, holdfast):
    """action=merge,snapshot=SNAP (issue 14's "the image's own diff can
    seed a dirty bitmap"): a bitmap created after the fact gets every
    chunk the image changed since an RBD snapshot taken outside holdfast,
    writes and zeroes alike, exactly what `rbd diff --from-snap` says
    rounded out to the chunks; a chunk written only before the snapshot
    stays clean; an incremental backup with the seeded bitmap carries the
    new data.  No such snapshot, or a store without snapshots: refused,
    the bitmap unchanged."""
    from test_alua import adm, extents
    from test_cbt import job_new, job_wait
    chunk = 65536
    d = holdfast(luns=[rbd_lun(ceph, image),
                       {"lun": 2, "backend": "null", "size": "64M"}])
    d.require_holdfast("bitmaps are holdfast's")
    qemu_io(d.url(1), "write -P 0x11 1M 64k", "write -P 0x33 30M 64k")
    ceph.rbd("snap", "create", "rbd/%s@base" % image)
    qemu_io(d.url(1), "write -P 0x22 8M 4k", "write -P 0x44 20M 128k",
            "write -P 0x55 1280k 4k", "write -z 30M 64k")
    adm(d, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "granularity=%d" % chunk)
    assert extents(d)[0] == []
    # refused: a snapshot the image does not have
    r = adm(d, "-o", "update", "-m", "bitmap", "-t", 1, "-l", 1, "-n",
            "daily", "-P", "action=merge,snapshot=nope", check=False)
    assert r.returncode != 0, r.stdout
    assert wait_for(lambda: "merge from snapshot nope: no such snapshot"
                    in d.log_text(), S(5)), d.log_text()[-2000:]
    assert extents(d)[0] == []
    adm(d, "-o", "update", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "action=merge,snapshot=base")
    got, bm = extents(d)
    diff = json.loads(ceph.rbd("diff", "--from-snap", "base", "--format",
                               "json", "rbd/%s" % image))
    want = chunks_of([(e["offset"], e["length"]) for e in diff], chunk)
    assert got == want, (got, diff)
    for off in (8 << 20, 20 << 20, (20 << 20) + chunk, 30 << 20,
                (1 << 20) + 256 * 1024):
        assert any(a <= off < a + n for a, n in got), (off, got)
    assert not any(a <= (1 << 20) < a + n for a, n in got), \
        "a chunk written only before the snapshot is clean"
    assert bm["inconsistent"] is False
    assert "changed since snapshot base" in d.log_text()
    # the seeded bitmap drives an incremental backup
    inc = d.path("inc.qcow2")
    info = job_wait(d, job_new(
        d, "type=backup,target=%s,format=qcow2,sync=bitmap,bitmap=daily" %
        inc))
    assert info["state"] == "completed" and info["error"] is None, info
    assert info["bytes_total"] == sum(n for _, n in want), info
    cp = run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x22 8M 4k",
              "-c", "read -P 0x44 20M 128k", "-c", "read -P 0x55 1280k 4k",
              "-c", "read -P 0 30M 64k", str(inc)])
    assert "Pattern verification failed" not in cp.stdout, cp.stdout
    # a store that keeps no snapshots
    adm(d, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 2, "-n", "n",
        "-P", "granularity=%d" % chunk)
    r = adm(d, "-o", "update", "-m", "bitmap", "-t", 1, "-l", 2, "-n", "n",
            "-P", "action=merge,snapshot=base", check=False)
    assert r.returncode != 0, r.stdout
    assert wait_for(lambda: "keeps no snapshots" in d.log_text(), S(5))
    ceph.rbd("snap", "rm", "rbd/%s@base" % image)


def test_snapshot_job_on_an_rbd_snapshot(ceph, image, holdfast):
    """type=snapshot,rbd_snap=NAME (issue 14's "RBD snapshots can back the
    snapshot LUNs"): the job freezes the bitmap, waits for the writes in
    flight, takes the image's snapshot NAME and exports the image at it as
    a read-only LUN; guest writes afterwards change neither the export
    nor the snapshot, and copy nothing (no scratch file).  The job shows
    the frozen extents; deleting it removes the LUN and the snapshot and
    clears the frozen bits, keeping the writes since.  A name the image
    has already, a store without snapshots, and scratch= with rbd_snap=
    are refused with nothing left behind.  A LUN configured on
    POOL/IMAGE@SNAP serves the snapshot read-only."""
    from test_alua import adm, extents
    from test_cbt import job_new, jobs
    chunk = 65536
    ceph.rbd("snap", "create", "rbd/%s@empty" % image)
    d = holdfast(luns=[rbd_lun(ceph, image),
                       {"lun": 2, "backend": "null", "size": "64M"},
                       rbd_lun(ceph, image + "@empty", lun=3)])
    d.require_holdfast("snapshot jobs are holdfast's")
    qemu_io(d.url(1), "write -P 0x11 1M 64k")
    adm(d, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 1, "-n", "daily",
        "-P", "granularity=%d" % chunk)
    qemu_io(d.url(1), "write -P 0x22 5M 64k")
    # refused: a snapshot name the image has; a store without snapshots;
    # both kinds of point in time at once
    for lun, params in ((1, "type=snapshot,export_lun=9,rbd_snap=empty"),
                        (2, "type=snapshot,export_lun=9,rbd_snap=x"),
                        (1, "type=snapshot,export_lun=9,rbd_snap=x,"
                            "scratch=%s" % d.path("s.raw"))):
        if lun == 2:
            adm(d, "-o", "new", "-m", "bitmap", "-t", 1, "-l", 2, "-n", "n")
        r = adm(d, "--op", "new", "--mode", "job", "--tid", 1, "--lun", lun,
                "--params", params, check=False)
        assert r.returncode != 0, (params, r.stdout)
    assert "has a snapshot of that name already" in d.log_text()
    assert "takes no snapshots of itself" in d.log_text()
    assert jobs(d) == {} and not re.search(r"LUN: 9\b", show(d)), jobs(d)
    assert "rbd/%s@x" % image not in ceph.rbd("snap", "ls",
                                              "rbd/%s" % image)
    assert extents(d)[0] == [(5 << 20, chunk)]
    assert extents(d)[1]["busy"] is False
    # the snapshot job
    jid = job_new(d, "type=snapshot,export_lun=9,rbd_snap=nightly,"
                     "bitmap=daily")
    assert "nightly" in ceph.rbd("snap", "ls", "rbd/%s" % image)
    qemu_io(d.url(1), "write -P 0x33 5M 64k", "write -P 0x44 1M 4k",
            "write -P 0x55 9M 64k")
    j = jobs(d)[jid]
    assert j["type"] == "snapshot" and j["state"] == "running", j
    assert j["rbd_snap"] == "nightly" and j["export_lun"] == 9, j
    assert j["extents"] == [{"offset": 5 << 20, "length": chunk}], j
    cp = run(["qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 1M 64k",
              "-c", "read -P 0x22 5M 64k", "-c", "read -P 0 9M 64k",
              d.url(9)])
    assert "Pattern verification failed" not in cp.stdout, cp.stdout
    snap = ceph.export(image + "@nightly")
    run(["qemu-img", "convert", "-O", "raw", d.url(9), d.path("exp.raw")])
    same(open(d.path("exp.raw"), "rb").read(), snap, "export LUN")
    # read-only: a write is refused, the snapshot unchanged
    r = qemu_io(d.url(9), "write -P 0x66 0 4k", check=False)
    assert "write protected" in r.stdout + r.stderr, r.stdout
    same(ceph.export(image + "@nightly"), snap, "the snapshot")
    assert "rbd rbd/%s@nightly" % image in show(d)
    # delete: the LUN and the snapshot go, the frozen bits are cleared
    adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % jid)
    assert jid not in jobs(d)
    assert not re.search(r"LUN: 9\b", show(d)), show(d)
    assert "nightly" not in ceph.rbd("snap", "ls", "rbd/%s" % image)
    assert "rbd snapshot nightly removed" in d.log_text()
    ext, bm = extents(d)
    assert ext == [(1 << 20, chunk), (5 << 20, chunk), (9 << 20, chunk)], \
        ext
    assert bm["busy"] is False
    # POOL/IMAGE@SNAP in the configuration: read-only, the old data
    cp = run(["qemu-io", "-r", "-f", "raw", "-c", "read -P 0 1M 64k",
              d.url(3)])
    assert "Pattern verification failed" not in cp.stdout, cp.stdout
    r = qemu_io(d.url(3), "write -P 0x66 0 4k", check=False)
    assert "write protected" in r.stdout + r.stderr, r.stdout
    assert field(re.search(r"^.*\brbd rbd/\S+@empty .*$", show(d),
                           re.M).group(0), "state") == "ok"
    lun3 = re.search(r"LUN: 3\n(?:.*\n)*?\s+Readonly: (\w+)", show(d))
    assert lun3 and lun3.group(1) == "Yes", show(d)


def test_two_gateways_osd_freeze_keeps_ownership(ceph, image, holdfast):
    """The active gateway of a pair keeps serving through an OSD freeze
    (SIGSTOP, 8 s) with writes and WRITE SAME (write-zeroes) in flight:
    the lock check that times out while the OSD is frozen is "cannot
    tell", not "lost" (before the fix the gateway went standby and
    dropped the held commands), and the fence of its own instance (the
    first write timed out) leaves the lock with that blocklisted instance,
    which the gateway breaks and takes again through the new one (before
    the fix it took the lock for a peer's, went standby, and neither
    gateway could become active without force=1).  Every command
    completes GOOD after SIGCONT and the image holds the data."""
    lun = dict(rerror="retry", werror="retry", retry_interval=500,
               retry_timeout=0, rbd_osd_op_timeout=2)
    a = holdfast(luns=[rbd_lun(ceph, image, alua_group=1, alua_peer_group=2,
                               alua_state="active", **lun)])
    b = holdfast(luns=[rbd_lun(ceph, image, alua_group=2, alua_peer_group=1,
                               alua_state="standby", **lun)])
    wait_spare(a)
    c = HangClient(a.url(1))
    try:
        assert c.do("write 0 8 0x61", timeout=S(30))["status"] == "GOOD"
        assert c.do("write 1000 64 0x64", timeout=S(30))["status"] == "GOOD"
        ceph.osd_stop()
        labels = _writes(c, 64, 8, "0x62") + \
            [c.issue("writesame %d 16 0x00" % (1000 + 16 * i))
             for i in range(4)]
        time.sleep(8)
        c.sync()
        assert not any(c.done(lb) for lb in labels), \
            "a command completed while the OSD was frozen"
        assert "active/optimized (owner)" in show(a), show(a)
        ceph.osd_cont()
        for lb in labels:
            r = c.get(lb, S(60))
            assert r["status"] == "GOOD", r
        assert "active/optimized (owner)" in show(a), show(a)
        assert "lost the store's ownership lock" not in a.log_text()
        # writes go on through the gateway, and the peer still cannot
        # take the lock without force
        r = c.do("write 200 8 0x63", timeout=S(30))
        assert r["status"] == "GOOD", r
        assert update_lun(b, "alua_state=active").returncode != 0
    finally:
        ceph.osd_cont()
        c.close()
    if int(field(rbd_line(a), "fences")):
        assert "took the exclusive lock back from our own fenced" in \
            a.log_text(), a.log_text()
    data = export_blocks(ceph, image, 0, 1064)
    same(data[:8 * BS], b"\x61" * 8 * BS, "image bytes")
    same(data[64 * BS:128 * BS], b"\x62" * 64 * BS, "image bytes")
    same(data[200 * BS:208 * BS], b"\x63" * 8 * BS, "image bytes")
    same(data[1000 * BS:1064 * BS], bytes(64 * BS), "image bytes")


def update_lun(d, params):
    return d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                    "logicalunit", "--tid", "1", "--lun", "1", "--params",
                    params, check=False)
