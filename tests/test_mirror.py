"""Live storage migration (issue 11): a `type=mirror` job copies a LUN's
store to new storage while initiators write, and `action=complete` pivots
the LUN onto it.

Real initiators: qemu-io for patterns and reads, a libiscsi session that
logs every acknowledged write (the reference the destination is checked
against byte for byte).  The destination is slowed with the job's test
parameter dest_rate_limit (a throttle on every destination write) for the
convergence goal, and fails through the FUSE filesystem (tests/fusefs.py)
for the error cases.
"""

import json
import os
import random
import re
import shutil
import signal
import threading
import time

import pytest

from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import (USE_TGTD, IscsiSession, build_dir, qemu_io, run, tscale,
                     wait_for)

KiB = 1024
MiB = 1 << 20
BS = 512

pytestmark = pytest.mark.skipif(USE_TGTD, reason="holdfast-only feature")


def adm(d, *args, check=True):
    argv = [str(build_dir() / "holdfastadm"), "-C", str(d.ctl_port)] + \
        [str(a) for a in args]
    return run(argv, check=check, env=d.env, timeout=90)


def mirror_new(d, params, lun=1, check=True):
    r = adm(d, "--op", "new", "--mode", "job", "--tid", 1, "--lun", lun,
            "--params", "type=mirror," + params, check=check)
    if not check:
        return r
    assert r.stdout.startswith("job "), r.stdout
    return int(r.stdout.split()[1])


def jobs(d):
    return {j["id"]: j for j in
            json.loads(adm(d, "--op", "show", "--mode", "job",
                           "--json").stdout)["jobs"]}


def job_update(d, jid, params, check=True):
    return adm(d, "--op", "update", "--mode", "job", "--params",
               "id=%d,%s" % (jid, params), check=check)


def wait_state(d, jid, states, timeout):
    ok = wait_for(lambda: jobs(d)[jid]["state"] in states,
                  timeout * tscale(), interval=0.1)
    assert ok, (jobs(d)[jid], d.log_text()[-3000:])
    return jobs(d)[jid]


def lun_json(d, lun=1):
    out = adm(d, "--json", "-o", "show", "-m", "logicalunit", "-t", "1",
              "-l", str(lun)).stdout
    return json.loads(out)


def show_path(d, lun=1):
    out = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                   "target").stdout
    m = re.search(r"LUN: %d\n.*?Backing store path: (\S+)" % lun, out, re.S)
    assert m, out
    return m.group(1)


def fds_of(pid):
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
    return out


def restart_on_saved_conf(d, sig=signal.SIGTERM):
    text = d.conf_path.read_text().replace(str(d.port), "@PORT@")
    d.stop(sig)
    d.conf_settings = None
    d.conf_text = text
    d.start()


class Writer:
    """A libiscsi initiator writing in a loop on its own thread, logging
    every acknowledged write; model() replays the log over a base image."""

    def __init__(self, d, offsets, length, lun=1, seed=1):
        self.d = d
        self.offsets = offsets
        self.length = length
        self.lun = lun
        self.log = []           # (offset, data) in acknowledgement order
        self.failed = []
        self.stop_ev = threading.Event()
        self.rng = random.Random(seed)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        s = IscsiSession(self.d.portal, self.d.iqn, self.lun)
        try:
            n = 0
            while not self.stop_ev.is_set():
                off = self.offsets[n % len(self.offsets)]
                data = bytes([(n * 7 + 1) & 0xff]) * 8 + \
                    n.to_bytes(8, "little") * (self.length // 8 - 1)
                r = s.write10(off // BS, data)
                if r.ok:
                    self.log.append((off, data))
                else:
                    self.failed.append((off, r))
                n += 1
        finally:
            s.close()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.thread.join(120)
        assert not self.thread.is_alive()

    def model(self, base):
        img = bytearray(base)
        for off, data in self.log:
            img[off:off + len(data)] = data
        return bytes(img)


def first_diff(a, b):
    for i in range(0, min(len(a), len(b)), 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@pytest.fixture
def d(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "32M", "block_size": 512}])
    if not shutil.which("qemu-io"):
        pytest.skip("qemu-io missing")
    return d


def test_mirror_idle_lun_and_complete(d):
    """An idle LUN: holes stay holes, ready, complete pivots; show, JSON,
    dump and the saved targets.conf name the new store, the source is
    closed, and new writes go to the destination only."""
    qemu_io(d.url(1), "write -P 0x11 0 1M", "write -P 0x22 8M 3M",
            "write -P 0x33 31M 1M")
    src = d.path("disk1.img")
    dst = d.path("moved.img")
    ref = src.read_bytes()
    j = mirror_new(d, "target=%s,copy_mode=background" % dst)
    info = wait_state(d, j, ("ready",), 30)
    assert info["type"] == "mirror" and info["target"] == str(dst), info
    assert info["active_mode"] == "background"
    assert info["bytes_done"] >= 5 * MiB and info["dirty_bytes"] == 0, info
    assert "fault -> mirror -> file" in d.tgtadm(
        "--lld", "iscsi", "--op", "show", "--mode", "target").stdout
    text = adm(d, "--op", "show", "--mode", "job").stdout
    assert "Job: %d\n    Type: mirror\n" % j in text, text
    assert "State: ready" in text and "Dirty: 0 bytes" in text, text
    assert "Copy mode: background (in force: background)" in text, text
    assert "Destination: %s" % dst in text, text
    job_update(d, j, "action=complete")
    info = jobs(d)[j]
    assert info["state"] == "completed", info
    assert dst.read_bytes() == ref
    # holes were not written (the destination is sparse)
    assert os.stat(dst).st_blocks * 512 < 8 * MiB
    assert show_path(d) == str(dst)
    assert lun_json(d)["chain"] == ["fault", "file"]
    assert str(dst) in adm(d, "--dump").stdout
    assert str(dst) in d.conf_path.read_text(), "complete saves the config"
    assert str(src) not in fds_of(d.proc.pid), "the source is closed"
    qemu_io(d.url(1), "write -P 0x44 0 64k")
    assert dst.read_bytes()[:64 * KiB] == b"\x44" * (64 * KiB)
    assert src.read_bytes() == ref, "the source no longer changes"
    log = d.log_text()
    for needle in ("mirror of tid 1 lun 1 to %s started" % dst,
                   "mirror ready", "completed: the LUN now serves from"):
        assert needle in log
    # a SIGHUP re-reads the (saved) file: the LUN stays on the destination
    d.send_signal(signal.SIGHUP)
    time.sleep(1.0 * tscale())
    assert show_path(d) == str(dst)
    qemu_io(d.url(1), "read -P 0x44 0 64k", "read -P 0x22 8M 3M")
    adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    assert j not in jobs(d)
    # and a restart serves the destination (on the saved file, not the
    # one the fixture wrote)
    restart_on_saved_conf(d)
    assert show_path(d) == str(dst)
    qemu_io(d.url(1), "read -P 0x44 0 64k", "read -P 0x33 31M 1M")
    assert "had not ended" not in d.log_text()


def test_ready_at_once_when_nothing_is_left(d):
    """An all-hole LUN to a fresh destination has nothing to copy: the job
    is ready as soon as it starts, not at its first 100 ms tick (the
    tick's rate-based judgement is for the case with data still left)."""
    dst = d.path("moved-empty.img")
    j = mirror_new(d, "target=%s,copy_mode=background" % dst)
    info = wait_state(d, j, ("ready",), 30)
    assert info["bytes_done"] == info["bytes_total"] == 0, info  # holes
    assert info["dirty_bytes"] == 0, info
    assert info["ready_ms"] < 100, info
    job_update(d, j, "action=cancel")
    wait_state(d, j, ("cancelled",), 30)


def test_mirror_refusals(d):
    r = mirror_new(d, "target=relative.img", check=False)
    assert r.returncode != 0
    r = mirror_new(d, "target=%s" % d.path("disk1.img"), check=False)
    assert r.returncode != 0
    small = d.path("small.img")
    small.write_bytes(b"x" * MiB)
    r = mirror_new(d, "target=%s" % small, check=False)
    assert r.returncode != 0
    r = mirror_new(d, "target=%s,copy_mode=fast" % d.path("x.img"),
                   check=False)
    assert r.returncode != 0
    assert jobs(d) == {}


def test_mirror_under_writes_then_complete(d):
    """A writer keeps writing (every acknowledged write logged) while the
    mirror copies, becomes ready and completes; the destination equals
    the base image with the logged writes applied, byte for byte."""
    qemu_io(d.url(1), "write -P 0x5a 0 32M")
    base = d.path("disk1.img").read_bytes()
    dst = d.path("moved.img")
    rng = random.Random(7)
    offsets = [rng.randrange(0, 32 * MiB // (4 * KiB)) * 4 * KiB
               for _ in range(4096)]
    w = Writer(d, offsets, 4 * KiB).start()
    try:
        time.sleep(0.3)
        j = mirror_new(d, "target=%s,copy_mode=auto,switch_after=3" % dst)
        wait_state(d, j, ("ready",), 60)
        time.sleep(0.5)
        job_update(d, j, "action=complete")
        assert jobs(d)[j]["state"] == "completed"
        time.sleep(0.5)         # writes after the pivot, to the destination
    finally:
        w.stop()
    assert not w.failed, w.failed[:3]
    assert len(w.log) > 50, len(w.log)
    want = w.model(base)
    got = dst.read_bytes()
    assert first_diff(got, want) is None, first_diff(got, want)


def test_cancel_leaves_the_source_serving(d):
    qemu_io(d.url(1), "write -P 0x61 0 32M")
    dst = d.path("moved.img")
    j = mirror_new(d, "target=%s,rate_limit=%d" % (dst, 2 * MiB))
    time.sleep(1.0 * tscale())
    info = jobs(d)[j]
    assert info["state"] == "running" and 0 < info["bytes_done"] < 32 * MiB
    qemu_io(d.url(1), "write -P 0x62 1M 1M")
    job_update(d, j, "action=cancel")
    info = jobs(d)[j]
    assert info["state"] == "cancelled", info
    assert lun_json(d)["chain"] == ["fault", "file"]
    assert show_path(d) == str(d.path("disk1.img"))
    qemu_io(d.url(1), "write -P 0x63 2M 1M")
    qemu_io(d.url(1), "read -P 0x61 0 1M", "read -P 0x62 1M 1M",
            "read -P 0x63 2M 1M", "read -P 0x61 3M 29M")
    # a cancelled job cannot complete; delete forgets it
    assert job_update(d, j, "action=complete", check=False).returncode != 0
    adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    assert j not in jobs(d)
    assert "cancelled: the source serves on" in d.log_text()
    # a new mirror can start again on the LUN
    j2 = mirror_new(d, "target=%s" % d.path("again.img"))
    wait_state(d, j2, ("ready",), 60)
    job_update(d, j2, "action=cancel")


def converge_run(d, mode, seconds, dest_rate, dst):
    """Start a mirror in mode under a writer that rewrites 1 KiB in every
    64 KiB chunk of the LUN, round and round, as fast as it can; return
    (job id, writer, seconds until ready or None)."""
    offsets = list(range(0, 32 * MiB, 64 * KiB))
    w = Writer(d, offsets, 1 * KiB).start()
    time.sleep(0.5)
    j = mirror_new(d, "target=%s,copy_mode=%s,switch_after=3,"
                   "max_inflight=%d,dest_rate_limit=%d"
                   % (dst, mode, 2 * MiB, dest_rate))
    t0 = time.monotonic()
    ready = None
    while time.monotonic() - t0 < seconds:
        if jobs(d)[j]["state"] == "ready":
            ready = time.monotonic() - t0
            break
        time.sleep(0.1)
    return j, w, ready


def test_convergence_auto_reaches_ready_background_does_not(d):
    """The seed's case: a writer rewriting 1 KiB as fast as it can over a
    destination throttled to 8 MiB/s.  background never gets ready (the
    dirty set stays the whole disk); auto switches to write-blocking after
    switch_after and is ready within switch_after + the copy time, then
    completes, with every acknowledged write in the destination."""
    qemu_io(d.url(1), "write -P 0x3c 0 32M")
    rate = 8 * MiB
    copy_s = 32 * MiB / rate
    budget = (3 + copy_s) * 1.5 * tscale() + 2
    # the control: background
    j, w, ready = converge_run(d, "background", budget, rate,
                               d.path("bg.img"))
    try:
        info = jobs(d)[j]
        assert ready is None, (ready, info)
        assert info["active_mode"] == "background"
        assert info["dirty_bytes"] > rate, info
        assert len(w.log) > 1000, "the writer kept writing"
        job_update(d, j, "action=cancel")
    finally:
        w.stop()
    assert not w.failed
    adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    base = d.path("disk1.img").read_bytes()
    # auto
    dst = d.path("auto.img")
    j, w, ready = converge_run(d, "auto", budget, rate, dst)
    try:
        info = jobs(d)[j]
        assert ready is not None, (info, d.log_text()[-2000:])
        assert info["active_mode"] == "write-blocking", info
        job_update(d, j, "action=complete")
        assert jobs(d)[j]["state"] == "completed"
        time.sleep(0.5)
    finally:
        w.stop()
    assert not w.failed
    log = d.log_text()
    assert "copy mode now write-blocking (auto: not ready after switch_after)" \
        in log
    got = dst.read_bytes()
    want = w.model(base)
    assert first_diff(got, want) is None, first_diff(got, want)
    print("auto ready after %.1f s (budget %.1f s), %d writes"
          % (ready, budget, len(w.log)))


def test_mode_update(d):
    qemu_io(d.url(1), "write -P 0x12 0 32M")
    j = mirror_new(d, "target=%s,copy_mode=background,rate_limit=%d"
                   % (d.path("m.img"), 4 * MiB))
    assert jobs(d)[j]["copy_mode"] == "background"
    job_update(d, j, "copy_mode=write-blocking")
    assert wait_for(lambda: jobs(d)[j]["active_mode"] == "write-blocking",
                    5 * tscale())
    assert jobs(d)[j]["copy_mode"] == "write-blocking"
    job_update(d, j, "copy_mode=background")
    assert wait_for(lambda: jobs(d)[j]["active_mode"] == "background",
                    5 * tscale())
    assert job_update(d, j, "copy_mode=bogus", check=False).returncode != 0
    assert job_update(d, j, "action=pause", check=False).returncode != 0
    # complete before ready is refused
    assert job_update(d, j, "action=complete", check=False).returncode != 0
    # the mirror node is not a `filters` entry (dump), and the filters
    # cannot be rebuilt under it while it runs
    dump = adm(d, "--dump").stdout
    assert "mirror" not in dump, dump
    r = d.tgtadm("--lld", "iscsi", "--op", "update", "--mode", "logicalunit",
                 "--tid", "1", "--lun", "1", "--params",
                 "filters=fault,passthrough", check=False)
    assert r.returncode != 0
    assert lun_json(d)["chain"] == ["fault", "mirror", "file"]
    # an online resize waits for the mirror to end
    r = d.tgtadm("--lld", "iscsi", "--op", "update", "--mode", "logicalunit",
                 "--tid", "1", "--lun", "1", "--params", "size=%d" % (64 * MiB),
                 check=False)
    assert r.returncode != 0
    assert "a mirror job runs on the LUN" in d.log_text()
    assert lun_json(d)["size_bytes"] == 32 * MiB
    job_update(d, j, "action=cancel")
    log = d.log_text()
    assert "copy mode now write-blocking (asked for)" in log
    assert "copy mode now background (asked for)" in log


@pytest.mark.parametrize("mode", ["background", "write-blocking"])
def test_destination_eio(d, fusefs, mode):
    """The destination fails (FUSE EIO): guest writes keep succeeding, the
    job fails, the LUN serves the source, which holds every write."""
    qemu_io(d.url(1), "write -P 0x71 0 32M")
    base = d.path("disk1.img").read_bytes()
    dst = fusefs.path("moved.img")
    rng = random.Random(3)
    offsets = [rng.randrange(0, 32 * MiB // (4 * KiB)) * 4 * KiB
               for _ in range(2048)]
    j = mirror_new(d, "target=%s,copy_mode=%s,rate_limit=%d"
                   % (dst, mode, 4 * MiB))
    w = Writer(d, offsets, 4 * KiB).start()
    try:
        time.sleep(1.0)
        fusefs.set("write=EIO")
        info = wait_state(d, j, ("failed",), 30)
        assert "writing the destination" in info["error"], info
        n = len(w.log)
        time.sleep(1.0)
        assert len(w.log) > n, "writes go on after the failure"
    finally:
        w.stop()
        fusefs.ok()
    assert not w.failed, w.failed[:3]
    assert fusefs.stats()["failed_writes"] > 0
    got = d.path("disk1.img").read_bytes()
    want = w.model(base)
    assert first_diff(got, want) is None, first_diff(got, want)
    assert show_path(d) == str(d.path("disk1.img"))
    assert "failed: writing the destination" in d.log_text()
    # delete takes the node out of the stack
    adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    assert lun_json(d)["chain"] == ["fault", "file"]
    qemu_io(d.url(1), "write -P 0x72 0 64k", "read -P 0x72 0 64k")


def test_kill9_mid_mirror_serves_the_source(d):
    qemu_io(d.url(1), "write -P 0x55 0 32M")
    ref = d.path("disk1.img").read_bytes()
    j = mirror_new(d, "target=%s,rate_limit=%d" % (d.path("m.img"), 2 * MiB))
    time.sleep(1.0 * tscale())
    assert jobs(d)[j]["state"] == "running"
    d.ok_exit = {0, -9}
    restart_on_saved_conf(d, signal.SIGKILL)
    assert show_path(d) == str(d.path("disk1.img"))
    assert jobs(d) == {}
    assert lun_json(d)["chain"] == ["fault", "file"]
    assert "a mirror job to %s had not ended when holdfastd stopped: the " \
        "job is gone" % d.path("m.img") in d.log_text()
    qemu_io(d.url(1), "read -P 0x55 0 32M")
    assert d.path("disk1.img").read_bytes() == ref


def fuse_lun(fusefs, **extra):
    lun = {"lun": 1, "backend": "file", "path": str(fusefs.path("disk1.img")),
           "size": "32M", "block_size": 512}
    lun.update(extra)
    return [lun]


def test_complete_while_the_source_hangs(fusefs, holdfast):
    """The source fails writes (FUSE EIO) with werror=retry: the hang
    engine holds the guest's write.  A write-blocking mirror is complete
    (the write reached the destination; nothing is dirty), so complete
    pivots; the held write is retried by the hang engine and now lands on
    the destination: held commands follow the pivot, nothing is lost."""
    d = holdfast(luns=fuse_lun(fusefs, werror="retry", rerror="retry",
                               retry_interval=100))
    qemu_io(d.url(1), "write -P 0x21 0 4M")
    dst = d.path("moved.img")
    j = mirror_new(d, "target=%s,copy_mode=write-blocking" % dst)
    wait_state(d, j, ("ready",), 30)
    fusefs.set("write=EIO match=disk1")
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=qemu_io(d.url(1), "write -P 0x77 1M 64k", check=False)))
    t.start()
    try:
        assert wait_for(lambda: "hung" in d.log_text(), 10 * tscale())
        time.sleep(0.5)
        assert t.is_alive(), "the write is held"
        job_update(d, j, "action=complete")
        t.join(30 * tscale())
        assert not t.is_alive()
    finally:
        fusefs.ok()
        t.join(60)
    assert result["r"].returncode == 0, result["r"].stdout + result["r"].stderr
    assert "recovered" in d.log_text()
    assert jobs(d)[j]["state"] == "completed"
    qemu_io(d.url(1), "read -P 0x77 1M 64k", "read -P 0x21 0 1M",
            "read -P 0x21 1088k 2944k")
    data = dst.read_bytes()
    assert data[MiB:MiB + 64 * KiB] == b"\x77" * (64 * KiB)
    assert data[:MiB] == b"\x21" * MiB


def write_latencies(d, n, offset):
    s = IscsiSession(d.portal, d.iqn, 1)
    out = []
    try:
        for i in range(n):
            t0 = time.monotonic()
            r = s.write10((offset + i * 4096) // BS, b"\x5e" * 4096)
            out.append(time.monotonic() - t0)
            assert r.ok, r
    finally:
        s.close()
    return sorted(out)


def test_write_blocking_latency_is_max_not_sum(fusefs, holdfast):
    """Source and destination both answer 60 ms late (FUSE delay): a
    write-blocking guest write takes about 60 ms (both in parallel), not
    120 ms."""
    d = holdfast(luns=fuse_lun(fusefs))
    dst = fusefs.path("moved.img")
    fusefs.set("delay=60 match=.img")
    base = write_latencies(d, 9, 0)
    j = mirror_new(d, "target=%s,copy_mode=write-blocking" % dst)
    wait_state(d, j, ("ready",), 60)
    wb = write_latencies(d, 9, 4 * MiB)
    fusefs.ok()
    job_update(d, j, "action=cancel")
    assert base[4] >= 0.055, base
    assert wb[4] < base[4] * 1.5, (base, wb)
    print("median write latency: %.0f ms alone, %.0f ms write-blocking"
          % (base[4] * 1000, wb[4] * 1000))


def test_identity_and_reservations_carry_over(d):
    """Across a pivot the LUN keeps its INQUIRY identity (VPD 0x80 serial,
    0x83 NAA), its registrations and reservation (the APTPL state file is
    renamed after the new store and read back after a restart); sessions
    open across the pivot see no error."""
    from test_reservations import (GOOD, INIT1, INIT2, ISID1, ISID2,
                                   RESERVATION_CONFLICT, REGISTER,
                                   REGISTER_IGNORE, RESERVE, WE, Nexus,
                                   assert_good)
    qemu_io(d.url(1), "write -P 0x19 0 4M")
    a, b = Nexus(d, INIT1, ISID1), Nexus(d, INIT2, ISID2)

    def vpd(n, page):
        st, data, _ = n.cmd(bytes([0x12, 1, page, 0, 255, 0]), read_len=255)
        assert st == GOOD
        return data

    ident = (vpd(a, 0x80), vpd(a, 0x83))
    assert_good(a.prout(REGISTER, sakey=0xA1, aptpl=True))
    assert_good(b.prout(REGISTER_IGNORE, sakey=0xB1, aptpl=True))
    assert_good(a.prout(RESERVE, key=0xA1, ptype=WE))
    gen, keys = a.keys()
    dst = d.path("moved.img")
    j = mirror_new(d, "target=%s" % dst)
    wait_state(d, j, ("ready",), 30)
    job_update(d, j, "action=complete")
    assert (vpd(a, 0x80), vpd(a, 0x83)) == ident
    assert (vpd(b, 0x80), vpd(b, 0x83)) == ident
    assert a.keys() == (gen, keys)
    assert a.reservation() == (0xA1, WE)
    assert a.write() == GOOD
    assert b.write() == RESERVATION_CONFLICT
    assert d.path("moved.img.pr").exists()
    assert not d.path("disk1.img.pr").exists()
    a.close()
    b.close()
    restart_on_saved_conf(d)
    a, b = Nexus(d, INIT1, ISID1), Nexus(d, INIT2, ISID2)
    assert a.keys() == (gen, keys)
    assert a.reservation() == (0xA1, WE)
    assert b.write() == RESERVATION_CONFLICT
    assert vpd(a, 0x83) == ident[1]
    a.close()
    b.close()


def test_sigterm_during_a_mirror(d):
    """A clean stop with a mirror running exits 0; the next start serves
    the source and logs that the job is gone."""
    qemu_io(d.url(1), "write -P 0x56 0 8M")
    j = mirror_new(d, "target=%s,rate_limit=%d,copy_mode=write-blocking"
                   % (d.path("m.img"), 1 * MiB))
    assert jobs(d)[j]["state"] == "running"
    qemu_io(d.url(1), "write -P 0x57 0 64k")
    d.restart()
    assert show_path(d) == str(d.path("disk1.img"))
    assert "had not ended when holdfastd stopped" in d.log_text()
    qemu_io(d.url(1), "read -P 0x57 0 64k", "read -P 0x56 64k 8128k")


def test_bitmaps_carry_over(d):
    """A dirty bitmap keeps its bits and keeps recording across the pivot
    (the tracking node stays above the swapped store)."""
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b0")
    qemu_io(d.url(1), "write -P 0x1b 0 64k", "write -P 0x1c 1M 64k")

    def dirty():
        out = adm(d, "--op", "show", "--mode", "bitmap", "--tid", 1, "--lun",
                  1, "--name", "b0", "--json").stdout
        return json.loads(out)["bitmaps"][0]["dirty_bytes"]

    assert dirty() == 128 * KiB
    dst = d.path("moved.img")
    j = mirror_new(d, "target=%s" % dst)
    assert lun_json(d)["chain"] == ["cbt", "fault", "mirror", "file"]
    wait_state(d, j, ("ready",), 30)
    job_update(d, j, "action=complete")
    assert lun_json(d)["chain"] == ["cbt", "fault", "file"]
    assert dirty() == 128 * KiB
    qemu_io(d.url(1), "write -P 0x1d 2M 64k")
    assert dirty() == 192 * KiB
    assert dst.read_bytes()[2 * MiB:2 * MiB + 64 * KiB] == b"\x1d" * (64 * KiB)
