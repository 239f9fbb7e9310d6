"""Hang-on-error against real backend failures (DESIGN.md "Hang-on-error").

LUN 1 lives on a fusefail mount (tests/fusefs.py): its O_DIRECT reads,
writes and flushes get genuine kernel errors (EIO, ENOSPC) when the test
switches them on.  LUN 2 is a second file on the same mount that never
fails (every failure rule carries match=disk1.img).  build/tools/hangclient
drives the daemon with asynchronous libiscsi commands and reports every
command's start, end, status and sense, so the tests can check that a
command was held (and for how long), what sense it ended with, and what
reached the backing file.

Timing margins are generous (shared, noisy machines; HOLDFAST_TIMEOUT_SCALE
stretches them) but still fail when behaviour is wrong: a command that
should be held for a second and returns in a few milliseconds was not held.
"""

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import build_dir, tscale, wait_for

BS = 512
HC_IQN = "iqn.2026-01.io.holdfast:hangclient"   # tools/hangclient.c
LUN_BLOCKS = 16 * 1024 * 1024 // BS

# sense keys and additional sense codes (SPC-4 4.5.6, DESIGN.md table)
MEDIUM_ERROR = 0x03
DATA_PROTECT = 0x07
UNIT_ATTENTION = 0x06
ASC_WRITE_ERROR = 0x0C          # 0C/00 WRITE ERROR
ASC_UNRECOVERED_READ = 0x11     # 11/00 UNRECOVERED READ ERROR
ASC_SPACE_ALLOC_FAILED = 0x27   # 27/07 SPACE ALLOCATION FAILED WRITE PROTECT
ASCQ_SPACE_ALLOC_FAILED = 0x07
ASC_RESET_OCCURRED = 0x29       # 29/xx POWER ON, RESET, OR BUS DEVICE RESET
HARDWARE_ERROR = 0x04
MISCOMPARE = 0x0E
ASC_MISCOMPARE = 0x1D           # 1D/00 MISCOMPARE DURING VERIFY OPERATION
ASC_LU_COMM_FAILURE = 0x08      # 08/00 LOGICAL UNIT COMMUNICATION FAILURE
ASC_WRITE_PROTECTED = 0x27      # 27/00 WRITE PROTECTED

# RFC 7143 11.6.1 task management response
TMF_FUNCTION_COMPLETE = 0
# how a command the target never answered ends in hangclient
NOT_ANSWERED = ("CANCELLED", "TASK_ABORTED")


def S(seconds):
    """A timeout or upper bound, stretched for slow builds and machines."""
    return seconds * tscale()


# --------------------------------------------------------------------------
# hangclient driver

class HangClient:
    """One hangclient process driven line by line over stdin.

    issue() sends a command and returns its label at once; get() waits for
    that command's result line.  Results are dicts as hangclient prints
    them (id, op, start, end, ms, status, sense_key, asc, ascq, data,
    match, response)."""

    def __init__(self, url, luns=(1,), args=(), name="hangclient",
                 prefix=()):
        """prefix: a command to run the client under (e.g. `ip netns exec
        NS` for tests/test_gateway.py)."""
        binary = build_dir() / "tools" / "hangclient"
        if not binary.exists():
            pytest.fail("%s not built (run make)" % binary)
        self.name = name
        self.proc = subprocess.Popen(
            list(prefix) + [str(binary)] + list(args) + [url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1)
        self.results = {}
        self.events = []
        self.lines = []
        self.cv = threading.Condition()
        self.n = 0
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        with self.cv:
            self.cv.wait_for(lambda: self.eof or any(
                e.get("op") in ("login", "exit") for e in self.events),
                S(15))
        login = [e for e in self.events if e.get("op") == "login"]
        if not login or login[0].get("status") == "ERROR":
            err = self.proc.stderr.read() if self.eof else ""
            self.close()
            pytest.fail("%s: login to %s failed: %s %s" %
                        (name, url, self.lines, err))
        # a LUN's first command after login may get a power-on unit
        # attention (SAM-5 6.3.1); clear them so results are about the test
        for lun in luns:
            r = self.do("clearua lun=%d" % lun)
            assert r["status"] == "GOOD", r

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"op": "garbage", "text": line}
            with self.cv:
                self.lines.append(line)
                if "id" in obj:
                    self.results[obj["id"]] = obj
                else:
                    self.events.append(obj)
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def issue(self, cmd, label=None):
        """Send one command; returns its label."""
        if label is None:
            self.n += 1
            label = "c%d" % self.n
        self.proc.stdin.write("%s: %s\n" % (label, cmd))
        self.proc.stdin.flush()
        return label

    def get(self, label, timeout=10):
        with self.cv:
            self.cv.wait_for(lambda: label in self.results or self.eof,
                             S(timeout))
            if label in self.results:
                return self.results[label]
            tail = "\n".join(self.lines[-30:])
        raise AssertionError("%s: no result for %s within %.1fs (eof=%s)\n%s"
                             % (self.name, label, S(timeout), self.eof, tail))

    def done(self, label):
        with self.cv:
            return label in self.results

    def do(self, cmd, timeout=10):
        return self.get(self.issue(cmd), timeout)

    def sync(self):
        """Round trip through the client: everything it had received before
        is reported by the time this returns."""
        self.do("nop")

    def lost(self):
        with self.cv:
            return any(e.get("op") == "connection_lost" for e in self.events)

    def close(self, timeout=10):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(S(timeout))
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.reader.join(5)
        return self.proc.returncode


def now_ms():
    return time.monotonic() * 1000.0


def assert_sense(r, key, asc, ascq=0):
    assert r["status"] == "CHECK_CONDITION", r
    assert (r["sense_key"], r["asc"], r["ascq"]) == (key, asc, ascq), r


def assert_good(r):
    assert r["status"] == "GOOD", r


# --------------------------------------------------------------------------
# the test environment: fusefail mount + daemon + clients

class HangEnv:
    def __init__(self, fusefs, holdfast, request):
        self.fs = fusefs
        self.holdfast = holdfast
        self.request = request
        self.clients = []
        self.d = None

    def start(self, lun1=None, lun2=None):
        """Start a daemon with LUN 1 (disk1.img, the one that fails) and
        LUN 2 (disk2.img, never fails) on the fusefail mount.  lun1/lun2
        add or override per-LUN settings."""
        l1 = {"lun": 1, "backend": "file",
              "path": str(self.fs.path("disk1.img")), "size": "16M",
              "block_size": BS}
        l1.update(lun1 or {})
        l2 = {"lun": 2, "backend": "file",
              "path": str(self.fs.path("disk2.img")), "size": "16M",
              "block_size": BS}
        l2.update(lun2 or {})
        self.d = self.holdfast(luns=[l1, l2])
        self.d.require_holdfast("hang-on-error is holdfast's own")
        return self.d

    def client(self, luns=(1, 2), args=(), name=None):
        c = HangClient(self.d.url(1), luns=luns, args=args,
                       name=name or "client%d" % (len(self.clients) + 1))
        self.clients.append(c)
        return c

    # backend failures on LUN 1 only
    def fail(self, spec):
        self.fs.set("match=disk1.img " + spec)

    def ok(self):
        """Back to healthy; returns the monotonic ms it happened at."""
        self.fs.ok()
        return now_ms()

    def stats(self):
        return self.fs.stats()

    def backing(self, lba, blocks, lun=1):
        return self.fs.read_backing("disk%d.img" % lun, lba * BS, blocks * BS)

    def lun_update(self, params, lun=1, check=True):
        return self.d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                             "logicalunit", "--tid", "1", "--lun", lun,
                             "--params", params, check=check)

    def finish(self):
        # healthy storage first, so the daemon can stop cleanly
        self.fs.ok()
        for c in self.clients:
            c.close()
            self.request.node.add_report_section(
                "teardown", "%s output" % c.name, "\n".join(c.lines[-200:]))


@pytest.fixture
def hang(request, fusefs, holdfast):  # noqa: F811
    """fusefs is set up before holdfast, so the daemon is stopped before the
    mount goes away."""
    env = HangEnv(fusefs, holdfast, request)
    yield env
    env.finish()


def held(c, label, for_s):
    """Let for_s seconds pass, then check label is still open (held)."""
    time.sleep(for_s)
    c.sync()
    assert not c.done(label), "command was not held: %r" % c.results[label]


def prefill(c, lba, blocks, pattern, lun=1):
    assert_good(c.do("write %d %d %#x lun=%d" % (lba, blocks, pattern, lun)))


# --------------------------------------------------------------------------
# holding and recovering

def test_write_outage_shorter_than_timeout(hang):
    """An outage shorter than retry_timeout: the write is held, no error
    reaches the initiator, the data lands, latency is about the outage."""
    interval = 100
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 10000})
    c = hang.client()
    prefill(c, 0, 8, 0x11)
    hang.fail("write=EIO")
    f0 = hang.stats()["failed_writes"]
    w = c.issue("write 0 8 0xab")
    outage = 1.0
    held(c, w, outage)
    t_ok = hang.ok()
    r = c.get(w, 10)
    assert_good(r)
    # held for (about) the outage, released within one interval of the end
    assert r["ms"] >= outage * 1000 * 0.9, r
    assert r["end"] - t_ok <= interval + S(400), (r, t_ok)
    r = c.do("read 0 8 expect 0xab")
    assert_good(r)
    assert r["match"] is True, r
    assert hang.backing(0, 8) == b"\xab" * 8 * BS
    # the backend was probed about every interval: not once, not a busy loop
    tries = hang.stats()["failed_writes"] - f0
    assert 3 <= tries <= outage * 1000 / interval * 2 + 5, tries


def test_read_hang(hang):
    interval = 100
    hang.start(lun1={"rerror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 16, 8, 0x5a)
    hang.fail("read=EIO")
    r_ = c.issue("read 16 8 expect 0x5a")
    held(c, r_, 1.0)
    t_ok = hang.ok()
    r = c.get(r_, 10)
    assert_good(r)
    assert r["match"] is True, r
    assert r["ms"] >= 900, r
    assert r["end"] - t_ok <= interval + S(400), (r, t_ok)


def test_write_timeout_then_fail_fast_then_recovery(hang):
    interval, timeout = 100, 1000
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": timeout})
    c = hang.client()
    prefill(c, 0, 8, 0x22)
    # flushes fail too: the background probe after a write error is a
    # flush (README), so the LUN stays failed until the store is back
    hang.fail("write=EIO flush=EIO")
    w1 = c.issue("write 0 8 0x33")
    r1 = c.get(w1, 10)
    # MEDIUM ERROR / WRITE ERROR, at about retry_timeout
    assert_sense(r1, MEDIUM_ERROR, ASC_WRITE_ERROR)
    assert timeout * 0.9 <= r1["ms"] <= timeout + S(1500), r1
    # failed state: new commands go to the backend and fail at once
    f0 = hang.stats()["failed_writes"]
    r2 = c.do("write 8 8 0x44")
    assert_sense(r2, MEDIUM_ERROR, ASC_WRITE_ERROR)
    assert r2["ms"] < S(300), r2
    assert hang.stats()["failed_writes"] > f0, "fail-fast write skipped " \
        "the backend"
    # still failed a few intervals later, while the store is broken
    time.sleep(3 * interval / 1000.0)
    r2 = c.do("write 8 8 0x44")
    assert_sense(r2, MEDIUM_ERROR, ASC_WRITE_ERROR)
    assert r2["ms"] < S(300), r2
    # storage back: the background probe returns the LUN to ok within
    # about one interval; then writes succeed at once
    hang.ok()
    time.sleep((interval + 300) / 1000.0 * tscale())
    assert re.search(r"LUN 1: recovered from failed", hang.d.log_text()), \
        hang.d.log_text()[-3000:]
    r3 = c.do("write 16 8 0x55")
    assert_good(r3)
    assert r3["ms"] < S(300), r3
    r4 = c.do("read 16 8 expect 0x55")
    assert r4["match"] is True, r4
    # the timed-out write did not land later behind the initiator's back
    assert hang.backing(0, 8) == b"\x22" * 8 * BS


def test_queued_commands_time_out_with_the_held_one(hang):
    """At retry_timeout every held and queued command completes with CHECK
    CONDITION, reads and writes each with their own sense, from every
    session."""
    interval, timeout = 100, 1000
    hang.start(lun1={"werror": "retry", "rerror": "retry",
                     "retry_interval": interval, "retry_timeout": timeout})
    a = hang.client(name="A")
    b = hang.client(name="B")
    prefill(a, 0, 32, 0x2a)
    hang.fail("write=EIO read=EIO")
    t0 = now_ms()
    w1 = a.issue("write 0 8 0x2b")
    time.sleep(0.2)
    w2 = b.issue("write 8 8 0x2c")
    r3 = a.issue("read 16 8")
    for cl, lab in ((a, w1), (b, w2), (a, r3)):
        r = cl.get(lab, 10)
        if r["op"] == "write":
            assert_sense(r, MEDIUM_ERROR, ASC_WRITE_ERROR)
        else:
            assert_sense(r, MEDIUM_ERROR, ASC_UNRECOVERED_READ)
        # all end at about t0 + retry_timeout, not each after its own
        assert timeout * 0.9 <= r["end"] - t0 <= timeout + S(1500), r
    hang.ok()
    time.sleep(0.5)
    # none of the reported writes landed later
    assert hang.backing(0, 16) == b"\x2a" * 16 * BS


def test_flush_probe_recovery_does_not_rearm_a_write_hang(hang):
    """README: after a write error the failed state's probe is a flush; a
    flush cannot see every write failure (a full thin pool flushes fine),
    so if a flush probe brought the LUN back and a write fails again
    before any write succeeded, it is reported at once instead of hanging
    for another retry_timeout."""
    interval, timeout = 100, 600
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": timeout})
    c = hang.client()
    hang.fail("write=ENOSPC")                 # flushes keep working
    r1 = c.do("write 0 8 0x56", 10)
    assert_sense(r1, DATA_PROTECT, ASC_SPACE_ALLOC_FAILED,
                 ASCQ_SPACE_ALLOC_FAILED)
    time.sleep(3 * interval / 1000.0)         # a flush probe succeeds
    r2 = c.do("write 8 8 0x57")
    assert_sense(r2, DATA_PROTECT, ASC_SPACE_ALLOC_FAILED,
                 ASCQ_SPACE_ALLOC_FAILED)
    assert r2["ms"] < S(300), r2
    hang.ok()
    r3 = c.do("write 8 8 0x58")
    assert_good(r3)
    # a write succeeded: the next failure starts a real hang again
    hang.fail("write=ENOSPC")
    w = c.issue("write 16 8 0x59")
    held(c, w, 0.3)
    hang.ok()
    assert_good(c.get(w))


def test_read_timeout_sense(hang):
    interval, timeout = 100, 800
    hang.start(lun1={"rerror": "retry", "retry_interval": interval,
                     "retry_timeout": timeout})
    c = hang.client()
    hang.fail("read=EIO")
    r = c.do("read 0 8", 10)
    assert_sense(r, MEDIUM_ERROR, ASC_UNRECOVERED_READ)
    assert timeout * 0.9 <= r["ms"] <= timeout + S(1500), r
    # fail fast now
    r = c.do("read 8 8")
    assert_sense(r, MEDIUM_ERROR, ASC_UNRECOVERED_READ)
    assert r["ms"] < S(300), r
    # and back to normal once the store answers again
    hang.ok()
    time.sleep((interval + 300) / 1000.0 * tscale())
    r = c.do("read 8 8")
    assert_good(r)
    assert r["ms"] < S(300), r


def test_report_mode_fails_at_once(hang):
    """rerror/werror = report (the default): no holding at all."""
    hang.start()
    c = hang.client()
    hang.fail("write=EIO read=EIO")
    r = c.do("write 0 8 0x66")
    assert_sense(r, MEDIUM_ERROR, ASC_WRITE_ERROR)
    assert r["ms"] < S(300), r
    r = c.do("read 0 8")
    assert_sense(r, MEDIUM_ERROR, ASC_UNRECOVERED_READ)
    assert r["ms"] < S(300), r
    hang.ok()
    assert_good(c.do("write 0 8 0x67"))


@pytest.mark.parametrize("err,op,key,asc,ascq", [
    ("EDQUOT", "write", DATA_PROTECT, ASC_SPACE_ALLOC_FAILED,
     ASCQ_SPACE_ALLOC_FAILED),
    ("EROFS", "write", DATA_PROTECT, ASC_WRITE_PROTECTED, 0),
    ("ENOTCONN", "write", HARDWARE_ERROR, ASC_LU_COMM_FAILURE, 0),
    ("ENOTCONN", "read", HARDWARE_ERROR, ASC_LU_COMM_FAILURE, 0),
    ("ETIMEDOUT", "read", HARDWARE_ERROR, ASC_LU_COMM_FAILURE, 0),
])
def test_report_sense_mapping(hang, err, op, key, asc, ascq):
    """DESIGN.md's table: which sense a real backend errno becomes."""
    hang.start()
    c = hang.client()
    hang.fail("%s=%s" % (op, err))
    r = c.do("write 0 8 0x12" if op == "write" else "read 0 8")
    assert_sense(r, key, asc, ascq)
    assert r["ms"] < S(300), r


def test_erofs_is_never_held(hang):
    """EROFS describes the store, not a passing failure: reported at once
    even with werror = retry."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EROFS")
    r = c.do("write 0 8 0x13")
    assert_sense(r, DATA_PROTECT, ASC_WRITE_PROTECTED)
    assert r["ms"] < S(300), r


def test_runtime_switch_to_report_fails_held(hang):
    """werror changed to report during an episode fails the held commands
    now instead of waiting."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0x14")
    time.sleep(0.1)
    w2 = c.issue("write 8 8 0x15")
    held(c, w1, 0.4)
    t = now_ms()
    hang.lun_update("werror=report")
    for w in (w1, w2):
        r = c.get(w, 5)
        assert_sense(r, MEDIUM_ERROR, ASC_WRITE_ERROR)
        assert r["end"] - t < S(1000), r


def test_runtime_timeout_counts_from_hang_start(hang):
    """A retry_timeout set during an episode counts from when the hang
    began, not from the update."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0x16")
    held(c, w, 1.0)
    hang.lun_update("retry_timeout=1600")
    r = c.get(w, 10)
    assert_sense(r, MEDIUM_ERROR, ASC_WRITE_ERROR)
    # ~1.6 s after the write began, i.e. ~0.6 s after the update
    assert 1600 * 0.9 <= r["ms"] <= 1600 + S(800), r


def test_enospc_held_then_ok(hang):
    interval = 100
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=ENOSPC")
    w = c.issue("write 0 8 0x70")
    held(c, w, 0.8)
    t_ok = hang.ok()
    r = c.get(w)
    assert_good(r)
    assert r["end"] - t_ok <= interval + S(400), r
    assert hang.backing(0, 8) == b"\x70" * 8 * BS


def test_enospc_report_is_data_protect(hang):
    hang.start()                    # werror = report
    c = hang.client()
    hang.fail("write=ENOSPC")
    r = c.do("write 0 8 0x71")
    assert_sense(r, DATA_PROTECT, ASC_SPACE_ALLOC_FAILED,
                 ASCQ_SPACE_ALLOC_FAILED)
    assert r["ms"] < S(300), r


def test_enospc_timeout_is_data_protect(hang):
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 600})
    c = hang.client()
    hang.fail("write=ENOSPC")
    r = c.do("write 0 8 0x72")
    assert_sense(r, DATA_PROTECT, ASC_SPACE_ALLOC_FAILED,
                 ASCQ_SPACE_ALLOC_FAILED)
    assert r["ms"] >= 540, r


def test_retry_errors_limits_what_is_held(hang):
    """retry_errors = ENOSPC only: EIO is reported at once even though
    werror = retry."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0, "retry_errors": "ENOSPC"})
    c = hang.client()
    hang.fail("write=EIO")
    r = c.do("write 0 8 0x73")
    assert_sense(r, MEDIUM_ERROR, ASC_WRITE_ERROR)
    assert r["ms"] < S(300), r
    hang.fail("write=ENOSPC")
    w = c.issue("write 0 8 0x74")
    held(c, w, 0.5)
    hang.ok()
    assert_good(c.get(w))


def test_flush_held(hang):
    """SYNCHRONIZE CACHE is covered by werror."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0, "write_cache": True})
    c = hang.client()
    prefill(c, 0, 8, 0x10)
    hang.fail("flush=EIO")
    s = c.issue("sync")
    held(c, s, 0.6)
    hang.ok()
    assert_good(c.get(s))


def test_unmap_and_write_same_held(hang):
    """werror also covers UNMAP (a hole punched with fallocate, which
    fusefail fails like a write) and WRITE SAME."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0, "thin_provisioning": True})
    c = hang.client()
    prefill(c, 0, 16, 0x61)
    hang.fail("write=EIO")
    u = c.issue("unmap 0 8")
    held(c, u, 0.4)
    hang.ok()
    assert_good(c.get(u))
    assert hang.backing(0, 8) == bytes(8 * BS)         # reads back zero
    hang.fail("write=EIO")
    ws = c.issue("writesame 8 8 0x62")
    held(c, ws, 0.4)
    hang.ok()
    assert_good(c.get(ws))
    assert hang.backing(8, 8) == b"\x62" * 8 * BS


def test_compare_and_write_held(hang):
    """COMPARE AND WRITE whose write fails is held like any write, then
    compares and writes once the store is back; a miscompare is not a
    backend error and is reported at once (SBC-4 5.3: MISCOMPARE 1D/00)."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 0, 8, 0x41)
    hang.fail("write=EIO")
    w = c.issue("caw 0 1 0x41 0x42")
    held(c, w, 0.4)
    hang.ok()
    assert_good(c.get(w))
    assert hang.backing(0, 1) == b"\x42" * BS
    r = c.do("caw 1 1 0x99 0x43")
    assert_sense(r, MISCOMPARE, ASC_MISCOMPARE)
    assert hang.backing(1, 1) == b"\x41" * BS


def test_buffered_lun_failed_flush_stays_failed(hang):
    """DESIGN.md: after a failed flush on a buffered (page-cache) LUN every
    later flush fails too, because the page cache may have dropped the
    data."""
    hang.start(lun1={"direct": False, "write_cache": True})
    c = hang.client()
    prefill(c, 0, 8, 0x63)
    assert_good(c.do("sync"))
    hang.fail("flush=EIO")
    r = c.do("sync")
    assert r["status"] == "CHECK_CONDITION", r
    assert r["sense_key"] == MEDIUM_ERROR, r
    hang.ok()
    r = c.do("sync")
    assert r["status"] == "CHECK_CONDITION", r


def test_recovery_within_one_interval(hang):
    interval = 500
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0x80")
    held(c, w, 1.3)
    t_ok = hang.ok()
    r = c.get(w)
    assert_good(r)
    assert r["end"] - t_ok <= interval + S(300), (r["end"] - t_ok, r)


# --------------------------------------------------------------------------
# ordering

def test_newer_write_queued_behind_held_one_wins(hang):
    interval = 100
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 0, 8, 0x01)
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0x11")
    time.sleep(0.2)
    w2 = c.issue("write 0 8 0x22")
    w3 = c.issue("write 4 8 0x33")         # overlaps the second half
    f0 = hang.stats()["failed_writes"]
    t0 = time.monotonic()
    held(c, w1, 1.0)
    assert not c.done(w2) and not c.done(w3)
    # queued commands are not sent to the backend: only the probe is
    tries = hang.stats()["failed_writes"] - f0
    elapsed_ms = (time.monotonic() - t0) * 1000
    assert tries <= elapsed_ms / interval + 4, \
        "queued writes reached the backend while hung (%d tries)" % tries
    hang.ok()
    for w in (w1, w2, w3):
        assert_good(c.get(w))
    assert c.results[w1]["end"] <= c.results[w3]["end"]
    want = b"\x22" * 4 * BS + b"\x33" * 8 * BS
    assert hang.backing(0, 12) == want
    r = c.do("read 0 4 expect 0x22")
    assert r["match"] is True, r


def test_two_sessions_keep_arrival_order(hang):
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    a = hang.client(name="A")
    b = hang.client(name="B")
    prefill(a, 0, 32, 0x00)
    hang.fail("write=EIO")
    seq = [(a, 0, 0xa1), (b, 0, 0xb1), (a, 0, 0xa2),     # block 0: A last
           (b, 16, 0xb2), (a, 16, 0xa3), (b, 16, 0xb3)]  # block 16: B last
    labels = []
    for cl, lba, pat in seq:
        labels.append((cl, cl.issue("write %d 8 %#x" % (lba, pat))))
        cl.sync()                 # sent before the next one is issued
        time.sleep(0.05)
    time.sleep(0.5)
    for cl, lab in labels:
        assert not cl.done(lab), cl.results[lab]
    hang.ok()
    for cl, lab in labels:
        assert_good(cl.get(lab))
    assert hang.backing(0, 8) == b"\xa2" * 8 * BS
    assert hang.backing(16, 8) == b"\xb3" * 8 * BS


# --------------------------------------------------------------------------
# task management and session loss: no write may land afterwards

def test_hold_limit_gives_task_set_full(hang):
    """A LUN holds at most 1024 commands (README); beyond that new commands
    get TASK SET FULL at once instead of pinning more memory, and what was
    held still completes once storage is back."""
    # 120 per session stays inside the 128-command CmdSN window, so the
    # NOP-Out round trips of sync() still pass
    limit, per_session, sessions = 1024, 120, 9
    hang.start(lun1={"werror": "retry", "retry_interval": 200,
                     "retry_timeout": 0})
    clients = [hang.client(luns=(1,), name="s%d" % i)
               for i in range(sessions)]
    hang.fail("write=EIO")
    issued = []
    for i, cl in enumerate(clients):
        for j in range(per_session):
            lba = i * per_session + j
            issued.append((cl, cl.issue("write %d 1 %#x" % (lba, 1 + i)),
                           lba))
        cl.sync()
    time.sleep(0.5)
    for cl in clients:
        cl.sync()
    full = [(cl, lab, lba) for cl, lab, lba in issued if cl.done(lab)]
    for cl, lab, lba in full:
        r = cl.results[lab]
        assert r["status"] == "TASK_SET_FULL", r
        assert r["ms"] < S(1000), r
    assert len(full) >= len(issued) - limit, len(full)
    assert len(full) <= len(issued) - limit + 8, len(full)
    hang.ok()
    for cl, lab, lba in issued:
        r = cl.get(lab, 30)
        if (cl, lab, lba) not in full:
            assert_good(r)
    for cl, lab, lba in full:
        assert hang.backing(lba, 1) == bytes(BS), lba


def test_abort_task_of_held_write(hang):
    interval = 100
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 0, 16, 0x0a)
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0x77")          # held
    time.sleep(0.2)
    w2 = c.issue("write 8 8 0x78")          # queued behind it
    held(c, w1, 0.3)
    a1 = c.issue("abort %s" % w1)
    ra = c.get(a1, 5)
    assert ra["status"] == "GOOD" and \
        ra["response"] == TMF_FUNCTION_COMPLETE, ra
    assert ra["ms"] < S(500), ra
    assert c.get(w1)["status"] in NOT_ANSWERED, c.results[w1]
    a2 = c.issue("abort %s" % w2)
    ra = c.get(a2, 5)
    assert ra["response"] == TMF_FUNCTION_COMPLETE, ra
    assert c.get(w2)["status"] in NOT_ANSWERED, c.results[w2]
    # storage back: neither aborted write may reach the file
    hang.ok()
    time.sleep((3 * interval + 300) / 1000.0)
    assert hang.backing(0, 16) == b"\x0a" * 16 * BS
    r = c.do("read 0 16 expect 0x0a")
    assert r["match"] is True, r
    assert_good(c.do("write 0 8 0x79"))


def test_abort_during_in_flight_attempt(hang):
    """ABORT TASK while the command's attempt is in the backend (a slow,
    failing store): answered when that attempt finishes, and the write
    never lands afterwards."""
    delay = 800
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 0, 8, 0x3c)
    hang.fail("write=EIO delay=%d" % delay)
    w = c.issue("write 0 8 0x3d")
    time.sleep(0.3)                    # the first attempt is still running
    ra = c.do("abort %s" % w, 10)
    assert ra["response"] == TMF_FUNCTION_COMPLETE, ra
    start = c.results[w]["start"]
    assert ra["end"] - start >= delay * 0.85, (ra, start)
    assert ra["end"] - start <= 2 * delay + S(800), (ra, start)
    assert c.results[w]["status"] in NOT_ANSWERED, c.results[w]
    hang.ok()
    time.sleep(0.6)
    assert hang.backing(0, 8) == b"\x3c" * 8 * BS
    r = c.do("write 8 8 0x3e")
    assert_good(r)


def test_abort_queued_write_keeps_held_one(hang):
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 0, 16, 0x0b)
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0x81")
    time.sleep(0.2)
    w2 = c.issue("write 8 8 0x82")
    held(c, w1, 0.3)
    ra = c.do("abort %s" % w2, 5)
    assert ra["response"] == TMF_FUNCTION_COMPLETE, ra
    assert c.get(w2)["status"] in NOT_ANSWERED
    assert not c.done(w1)
    hang.ok()
    assert_good(c.get(w1))
    time.sleep(0.4)
    assert hang.backing(0, 8) == b"\x81" * 8 * BS
    assert hang.backing(8, 8) == b"\x0b" * 8 * BS


def test_lun_reset_drops_held_and_queued(hang):
    interval = 100
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 0, 16, 0x0c)
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0x91")
    time.sleep(0.2)
    w2 = c.issue("write 8 8 0x92")
    held(c, w1, 0.3)
    rr = c.do("lunreset lun=1", 5)
    assert rr["status"] == "GOOD" and \
        rr["response"] == TMF_FUNCTION_COMPLETE, rr
    assert rr["ms"] < S(500), rr
    for w in (w1, w2):
        assert c.get(w)["status"] in NOT_ANSWERED, c.results[w]
    hang.ok()
    time.sleep((3 * interval + 300) / 1000.0)
    assert hang.backing(0, 16) == b"\x0c" * 16 * BS
    # the reset raised a unit attention (SAM-5 5.11.? LOGICAL UNIT RESET)
    r = c.do("tur lun=1")
    if r["status"] == "CHECK_CONDITION":
        assert r["sense_key"] == UNIT_ATTENTION and \
            r["asc"] == ASC_RESET_OCCURRED, r
    assert_good(c.do("clearua lun=1"))
    # nothing held any more: the LUN is usable at once
    r = c.do("write 0 8 0x93")
    assert_good(r)
    assert r["ms"] < S(300), r


def test_dropped_session_leaves_no_write(hang):
    interval = 100
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client(name="dropper")
    prefill(c, 0, 16, 0x0d)
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0x99")
    time.sleep(0.2)
    c.issue("write 8 8 0x9a")
    held(c, w1, 0.3)
    c.do("drop")
    time.sleep(0.3)
    hang.ok()
    time.sleep((3 * interval + 500) / 1000.0)
    assert hang.d.alive()
    assert hang.backing(0, 16) == b"\x0d" * 16 * BS
    c2 = hang.client(name="after")
    r = c2.do("read 0 16 expect 0x0d")
    assert r["match"] is True, r
    r = c2.do("write 0 8 0x9b")
    assert_good(r)
    assert r["ms"] < S(300), r


@pytest.mark.parametrize("tmf", ["abortset", "clearset"])
def test_task_set_tmf_drops_held_and_queued(hang, tmf):
    """ABORT TASK SET and CLEAR TASK SET (SAM-5 7.3, 7.4)."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 0, 16, 0x0f)
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0xa5")
    time.sleep(0.2)
    w2 = c.issue("write 8 8 0xa6")
    held(c, w1, 0.3)
    r = c.do("%s lun=1" % tmf, 5)
    assert r["status"] == "GOOD" and r["response"] == TMF_FUNCTION_COMPLETE, r
    assert r["ms"] < S(500), r
    for w in (w1, w2):
        assert c.get(w)["status"] in NOT_ANSWERED, c.results[w]
    hang.ok()
    time.sleep(0.6)
    assert hang.backing(0, 16) == b"\x0f" * 16 * BS
    r = c.do("write 0 8 0xa7")
    assert_good(r)
    assert r["ms"] < S(300), r


def test_logout_answered_after_inflight_probe(hang):
    """A Logout Request while a held write's probe is in the store is
    answered only once that attempt finished: nothing of the session
    reaches the store after the initiator saw the logout response."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client(name="leaver")
    prefill(c, 0, 8, 0x5a)
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0x5b")
    held(c, w1, 0.3)
    # the next probe is slow and will succeed: it is in the store when
    # the logout arrives
    hang.fail("delay=1500")
    time.sleep(0.4)
    r = c.do("logout", 10)
    assert r["status"] == "GOOD", r
    at_logout = hang.backing(0, 8)
    time.sleep(2.0)
    assert hang.backing(0, 8) == at_logout, \
        "a write of the logged-out session landed after the logout response"
    hang.ok()


def test_logout_during_hang_drops_held_write(hang):
    """A logout while a write is held is answered (the held and queued
    commands are dropped first) and the write never lands."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client(name="leaver")
    prefill(c, 0, 16, 0x6a)
    hang.fail("write=EIO")
    w1 = c.issue("write 0 8 0x6b")
    time.sleep(0.1)
    c.issue("write 8 8 0x6c")
    held(c, w1, 0.3)
    r = c.do("logout", 10)
    assert r["status"] == "GOOD", r
    assert r["ms"] < S(1000), r
    hang.ok()
    time.sleep(0.6)
    assert hang.backing(0, 16) == b"\x6a" * 16 * BS
    c2 = hang.client(name="after")
    r = c2.do("write 0 8 0x6d")
    assert_good(r)
    assert r["ms"] < S(300), r


def test_session_reinstatement_drops_held_write(hang):
    """A second login with the same initiator name and ISID reinstates the
    session (RFC 7143 6.3.5): the old session's held write is dropped and
    never lands.  The new login is answered only once the old session is
    gone, so by the time the new client is logged in nothing of the old
    one is left to land."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    isid = ["-I", "0x4242"]
    a = hang.client(args=isid, name="old")
    prefill(a, 0, 8, 0x1e)
    hang.fail("write=EIO")
    w = a.issue("write 0 8 0xe1")
    held(a, w, 0.3)
    b = hang.client(args=isid, name="new")
    # the target closed the old connection before answering b's login;
    # the old client notices on its next poll
    assert wait_for(a.lost, S(5)), "old session not closed on reinstatement"
    # libiscsi cancels its open tasks when the connection dies
    assert a.get(w)["status"] in ("LOST", "CANCELLED", "ERROR"), \
        a.results[w]
    hang.ok()
    time.sleep(0.6)
    assert hang.backing(0, 8) == b"\x1e" * 8 * BS
    r = b.do("write 8 8 0xe2")
    assert_good(r)
    assert r["ms"] < S(300), r


def test_session_reinstatement_answered_after_inflight_probe(hang):
    """Session reinstatement while the old session's held write has its
    probe in the store: the new login is answered only once that attempt
    finished (its result dropped), so no write of the old session reaches
    the store after the new session started (DESIGN.md, Hang-on-error,
    Task management).  Before the fix the login was answered at once and
    the probe landed about a second later."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    isid = ["-I", "0x4343"]
    a = hang.client(args=isid, name="old")
    prefill(a, 0, 8, 0x2a)
    hang.fail("write=EIO")
    w = a.issue("write 0 8 0x2b")
    held(a, w, 0.3)
    # the next probe is slow and will succeed: it is in the store when
    # the reinstating login arrives
    hang.fail("delay=1500")
    time.sleep(0.4)
    start = now_ms()
    b = hang.client(args=isid, luns=(), name="new")   # logged in: answered
    login_ms = now_ms() - start
    at_login = hang.backing(0, 8)
    time.sleep(2.0)
    assert hang.backing(0, 8) == at_login, \
        "a write of the reinstated session landed after the new login " \
        "was answered (login took %.0f ms)" % login_ms
    assert wait_for(a.lost, S(5)), "old session not closed on reinstatement"
    hang.ok()
    r = b.do("clearua lun=1")
    assert r["status"] == "GOOD", r
    r = b.do("write 8 8 0x2c")
    assert_good(r)
    assert hang.backing(8, 8) == b"\x2c" * 8 * BS


def test_session_reinstatement_refused_when_old_attempt_outlasts_5s(hang):
    """The old session's held write has a probe in the store that takes
    8 s, longer than the 5 s a reinstating login is held: the login is
    refused with 0x0301 (RFC 7143 11.13.5, service unavailable) instead
    of being answered while that attempt can still land.  Before the fix
    it was answered at 5 s.  Once the old session is gone a login
    succeeds."""
    from rawiscsi import Closed, RawSession
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    a = hang.client(args=["-I", "0x4343"], name="old")
    prefill(a, 0, 8, 0x2a)
    hang.fail("write=EIO")
    w = a.issue("write 0 8 0x2b")
    held(a, w, 0.3)
    hang.fail("delay=8000")       # the next probe: 8 s in the store
    time.sleep(0.4)
    # hangclient's name and ISID (iscsi_set_isid_random(0x4343, 0))
    s = RawSession("127.0.0.1", hang.d.port, initiator=HC_IQN,
                   isid=b"\x80\x00\x43\x43\x00\x00", timeout=S(15))
    start = now_ms()
    with pytest.raises(Closed) as e:
        s.login(hang.d.iqn)
    took = now_ms() - start
    assert "0x0301" in str(e.value), e.value
    assert 4500 <= took <= S(7000), took
    s.close()
    assert "login refused (0x0301)" in hang.d.log_text()
    assert wait_for(a.lost, S(5)), "old session not closed"
    hang.ok()
    # the old attempt ends (about 8 s after it began); then a login
    # succeeds
    def login_ok():
        t = RawSession("127.0.0.1", hang.d.port, initiator=HC_IQN,
                       isid=b"\x80\x00\x43\x43\x00\x00", timeout=S(15))
        try:
            t.login(hang.d.iqn)
            return True
        except Closed:
            return False
        finally:
            t.close()
    assert wait_for(login_ok, S(20), interval=0.5)


def test_large_writes_held_and_recovered(hang):
    """Writes that need R2T and Data-Out PDUs (1 MiB each, several in
    flight) are held and land intact."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    big = 2048                          # blocks = 1 MiB
    labels = [c.issue("write %d %d %#x" % (i * big, big, 0x30 + i))
              for i in range(6)]
    held(c, labels[0], 0.8)
    for lab in labels:
        assert not c.done(lab)
    hang.ok()
    for lab in labels:
        assert_good(c.get(lab, 20))
    for i in range(6):
        assert hang.backing(i * big, big) == bytes([0x30 + i]) * big * BS, i


def test_qemu_io_sees_a_pause_not_an_error(hang):
    """A real initiator (QEMU's iscsi driver) during a 1.5 s outage: the
    write takes longer and succeeds; nothing is reported to it."""
    hang.start(lun1={"werror": "retry", "rerror": "retry",
                     "retry_interval": 100, "retry_timeout": 0})
    hang.fail("write=EIO read=EIO")
    argv = ["qemu-io", "-f", "raw", "-c", "write -P 0x5c 0 256k",
            "-c", "read -P 0x5c 0 256k", hang.d.url(1)]
    t = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)
        assert p.poll() is None, p.stdout.read()
        hang.ok()
        out, _ = p.communicate(timeout=S(30))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    took = time.monotonic() - t
    assert p.returncode == 0, out
    assert "error" not in out.lower() and "fail" not in out.lower() and \
        "verification" not in out.lower(), out
    assert took >= 1.4, took
    assert hang.backing(0, 512) == b"\x5c" * 256 * 1024


def test_retry_on_buffered_lun_is_refused(hang):
    """DESIGN.md safety rule: retrying is only honest with O_DIRECT, so
    werror = retry on a page-cache LUN is refused, with a reason."""
    d = hang.holdfast(luns=[{"lun": 1, "backend": "file",
                             "path": str(hang.fs.path("disk1.img")),
                             "size": "16M", "direct": False,
                             "werror": "retry"}], wait=False)
    d.require_holdfast()
    rc = d.wait(15)
    assert rc is not None and rc != 0, d.log_text()
    d.ok_exit = {rc}
    assert "direct" in d.log_text(), d.log_text()


# persistent reservations (SPC-4 5.13) during a hang
PR_WRITE_EXCLUSIVE = 1


def test_reservation_checked_at_dispatch(hang):
    """DESIGN.md: a queued command's reservation is checked when it is
    finally dispatched, not only when it arrived."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    a = hang.client(luns=(1,), args=["-I", "0x11"], name="A")
    b = hang.client(luns=(1,), args=["-I", "0x22"], name="B")
    assert_good(a.do("prout register 0xa"))
    assert_good(b.do("prout register 0xb"))
    prefill(a, 0, 16, 0x4a)
    hang.fail("write=EIO")
    w1 = a.issue("write 0 8 0x4b")
    time.sleep(0.1)
    w2 = b.issue("write 8 8 0x4c")          # queued, no reservation yet
    held(a, w1, 0.3)
    # PERSISTENT RESERVE OUT is not a media command: answered at once
    r = a.do("prout reserve 0xa %d" % PR_WRITE_EXCLUSIVE, 5)
    assert_good(r)
    assert r["ms"] < S(300), r
    hang.ok()
    assert_good(a.get(w1))
    assert b.get(w2)["status"] == "RESERVATION_CONFLICT", b.results[w2]
    assert hang.backing(8, 8) == b"\x4a" * 8 * BS
    assert_good(a.do("prout clear 0xa"))


def test_preempt_and_abort_drops_held_write(hang):
    """PREEMPT AND ABORT drops the preempted nexus's held commands before
    it completes; none of them reaches the backend afterwards."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    a = hang.client(luns=(1,), args=["-I", "0x11"], name="A")
    b = hang.client(luns=(1,), args=["-I", "0x22"], name="B")
    assert_good(a.do("prout register 0xa"))
    assert_good(a.do("prout reserve 0xa %d" % PR_WRITE_EXCLUSIVE))
    assert_good(b.do("prout register 0xb"))
    prefill(a, 0, 8, 0x5d)
    hang.fail("write=EIO")
    w = a.issue("write 0 8 0x5e")
    held(a, w, 0.3)
    r = b.do("prout preempt-abort 0xb 0xa %d" % PR_WRITE_EXCLUSIVE, 5)
    assert_good(r)
    assert r["ms"] < S(500), r
    hang.ok()
    time.sleep(0.6)
    assert hang.backing(0, 8) == b"\x5d" * 8 * BS
    if a.done(w):
        assert a.results[w]["status"] != "GOOD", a.results[w]
    r = b.do("write 0 8 0x5f")
    assert_good(r)
    assert_good(b.do("prout clear 0xb"))


# --------------------------------------------------------------------------
# a hung LUN must not slow anything else

def test_other_lun_keeps_latency(hang):
    hang.start(lun1={"werror": "retry", "rerror": "retry",
                     "retry_interval": 100, "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO read=EIO")
    w = c.issue("write 0 8 0xc1")
    r1 = c.issue("read 64 8")
    time.sleep(0.2)
    lat = []
    for i in range(20):
        r = c.do("write %d 8 %#x lun=2" % (i * 8, 0x20 + i))
        assert_good(r)
        lat.append(r["ms"])
        r = c.do("read %d 8 expect %#x lun=2" % (i * 8, 0x20 + i))
        assert r["match"] is True, r
        lat.append(r["ms"])
    lat.sort()
    assert lat[len(lat) // 2] < S(50), lat
    assert lat[-1] < S(300), lat
    assert not c.done(w) and not c.done(r1)
    hang.ok()
    assert_good(c.get(w))
    assert_good(c.get(r1))


def test_two_hung_luns_recover_independently(hang):
    """Two LUNs hung at once; the one whose store comes back recovers while
    the other stays held (hang state is per LUN)."""
    interval = 100
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0},
               lun2={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fs.set("write=EIO")                 # both files fail
    w1 = c.issue("write 0 8 0x71 fua lun=1")
    w2 = c.issue("write 0 8 0x72 lun=2")
    held(c, w1, 0.5)
    assert not c.done(w2)
    t = now_ms()
    hang.fs.set("match=disk2.img write=EIO")  # LUN 1's store is back
    r1 = c.get(w1)
    assert_good(r1)
    assert r1["end"] - t <= interval + S(400), r1
    held(c, w2, 0.5)
    hang.ok()
    assert_good(c.get(w2))
    assert hang.backing(0, 8, lun=1) == b"\x71" * 8 * BS
    assert hang.backing(0, 8, lun=2) == b"\x72" * 8 * BS


def test_non_media_commands_answered_during_hang(hang):
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0xd1")
    time.sleep(0.3)
    for cmd in ("nop", "tur lun=1", "inquiry lun=1", "readcap lun=1",
                "tur lun=2"):
        r = c.do(cmd, 5)
        assert_good(r)
        assert r["ms"] < S(300), r
    assert not c.done(w)
    hang.ok()
    assert_good(c.get(w))


def test_second_session_login_during_hang(hang):
    """A new session logs in and reads another LUN while LUN 1 is hung."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0xd2")
    time.sleep(0.3)
    c2 = hang.client(name="late")
    r = c2.do("read 0 8 lun=2")
    assert_good(r)
    assert r["ms"] < S(300), r
    assert not c.done(w)
    hang.ok()
    assert_good(c.get(w))


def test_show_reports_hung_state(hang):
    """`tgtadm --op show` tells the operator a LUN is hung, and that it
    recovered (DESIGN.md: show lists per LUN the state)."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0xd3")
    time.sleep(0.1)
    q1 = c.issue("write 8 8 0xd4")
    q2 = c.issue("read 8 8")
    held(c, w, 0.3)
    out = hang.d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                        "target").stdout
    hung_line = re.compile(r"state\W+hung", re.I)
    assert hung_line.search(out), out
    # README: "Hang held: 1, queued: 2, bytes: ..."
    assert re.search(r"held\W+1\b.*queued\W+2\b", out, re.I), out
    hang.ok()
    for lab in (w, q1, q2):
        assert_good(c.get(lab))
    out = hang.d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                        "target").stdout
    assert not hung_line.search(out), out
    assert re.search(r"episodes\W+1\b", out), out
    assert re.search(r"recoveries\W+1\b", out), out
    # one log line on entering hung and one on leaving it
    log = hang.d.log_text()
    assert re.search(r"LUN 1: hung: EIO on write", log), log[-3000:]
    assert re.search(r"LUN 1: recovered", log), log[-3000:]


# --------------------------------------------------------------------------
# run-time verbs: tgtadm --params hang=pause|resume|retry|fail

def test_hang_pause_and_resume(hang):
    interval = 200
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0xe1")
    held(c, w, 0.3)
    hang.lun_update("hang=pause")
    time.sleep(0.05)
    n0 = hang.stats()["writes"]
    hang.ok()
    # paused: no probe, so the write stays held although storage is back
    held(c, w, 3 * interval / 1000.0 + 0.3)
    assert hang.stats()["writes"] == n0, "probes ran while paused"
    t = now_ms()
    hang.lun_update("hang=resume")
    r = c.get(w)
    assert_good(r)
    assert r["end"] - t <= interval + S(400), r


def test_hang_retry_now(hang):
    interval = 5000
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0xe2")
    held(c, w, 0.3)
    hang.ok()
    t = now_ms()
    hang.lun_update("hang=retry")
    r = c.get(w)
    assert_good(r)
    assert r["end"] - t < S(1000), r       # far sooner than the interval


def test_hang_fail_now(hang):
    interval = 300
    hang.start(lun1={"werror": "retry", "retry_interval": interval,
                     "retry_timeout": 0})
    c = hang.client()
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0xe3")
    held(c, w, 0.3)
    t = now_ms()
    hang.lun_update("hang=fail")
    r = c.get(w)
    assert_sense(r, MEDIUM_ERROR, ASC_WRITE_ERROR)
    assert r["end"] - t < S(1000), r
    # failed state: new writes fail fast while storage is still broken
    r = c.do("write 8 8 0xe4")
    assert_sense(r, MEDIUM_ERROR, ASC_WRITE_ERROR)
    assert r["ms"] < S(300), r
    # the background probe brings it back
    hang.ok()
    time.sleep((interval + 400) / 1000.0 * tscale())
    r = c.do("write 8 8 0xe5")
    assert_good(r)
    assert r["ms"] < S(300), r


def test_hang_verbs_rejected_when_bad(hang):
    hang.start(lun1={"werror": "retry"})
    cp = hang.lun_update("hang=sideways", check=False)
    assert cp.returncode != 0, cp.stdout + cp.stderr


# --------------------------------------------------------------------------
# fault injection (backends/fault.c) on top of any LUN

def test_fault_injection_held_and_cleared(hang):
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.lun_update("fault=eio,ops=w")
    w = c.issue("write 0 8 0xf1")
    held(c, w, 0.5)
    # fault injected above the file: the backing store was never failing
    assert hang.stats()["failed_writes"] == 0
    # a read of the hung LUN queues behind the held write (DESIGN.md)
    r_ = c.issue("read 0 8 expect 0xf1")
    held(c, r_, 0.2)
    t = now_ms()
    hang.lun_update("fault=off")
    r = c.get(w)
    assert_good(r)
    assert r["end"] - t < 100 + S(400), r
    r = c.get(r_)
    assert r["match"] is True, r        # ran after the write it queued behind
    assert hang.backing(0, 8) == b"\xf1" * 8 * BS


def test_fault_injection_report_and_lba_range(hang):
    hang.start()                     # report mode
    c = hang.client()
    hang.lun_update("fault=enospc,ops=w,lba=100-199")
    assert_good(c.do("write 0 8 0xf2"))
    r = c.do("write 150 8 0xf3")
    assert_sense(r, DATA_PROTECT, ASC_SPACE_ALLOC_FAILED,
                 ASCQ_SPACE_ALLOC_FAILED)
    assert_good(c.do("write 300 8 0xf4"))
    hang.lun_update("fault=eio,ops=r")
    r = c.do("read 0 8")
    assert_sense(r, MEDIUM_ERROR, ASC_UNRECOVERED_READ)
    hang.lun_update("fault=off")
    assert_good(c.do("read 0 8 expect 0xf2"))


def test_fault_duration_is_a_self_healing_outage(hang):
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    hang.lun_update("fault=eio,ops=w,duration=1000")
    r = c.do("write 0 8 0xf5", 10)
    assert_good(r)
    assert 700 <= r["ms"] <= 1000 + S(600), r


# --------------------------------------------------------------------------
# shutdown

def test_sigterm_while_hung(hang):
    """The daemon stops cleanly even with commands held (they are dropped,
    not written later)."""
    hang.start(lun1={"werror": "retry", "retry_interval": 100,
                     "retry_timeout": 0})
    c = hang.client()
    prefill(c, 0, 8, 0x0e)
    hang.fail("write=EIO")
    w = c.issue("write 0 8 0xef")
    held(c, w, 0.3)
    rc = hang.d.stop(signal.SIGTERM, timeout=10)
    assert rc == 0, hang.d.log_text()[-3000:]
    wait_for(lambda: c.lost() or c.done(w), S(5))
    hang.ok()
    assert hang.backing(0, 8) == b"\x0e" * 8 * BS
