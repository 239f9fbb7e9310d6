"""Gateway LUNs (backend "iscsi") in front of a real IP-SAN that fails.

The SAN is Debian's tgtd, in a network namespace of its own; holdfastd and
the test clients run in a second namespace, joined to the first by a veth
pair (192.0.2.1 gateway side, 192.0.2.2 SAN side: addresses that exist only
inside the two namespaces).  The root namespace is never touched, and both
namespaces are deleted at teardown, even when a test fails.  Outages are
real: `ip link set DEV down` on the SAN's end of the pair, or kill -9 of
tgtd.

What is checked, per issue 13: with rerror/werror = retry no error
reaches the client during a ~10 s outage or a SAN crash, every write lands
byte for byte in the SAN's backing file, and the commands issued during the
outage take about as long as the outage; an outage longer than
retry_timeout gives errors at about the timeout and recovers afterwards;
report mode gives errors at once (the control); a different LUN behind the
same URL after a reconnect is refused, not silently used.
"""

import itertools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SANITIZER_MARKS
from helpers import build_dir, cfg_text, tscale, wait_for
from test_hang import HangClient, assert_good, now_ms, S

BS = 512
SAN_SIZE = 32 * 1024 * 1024
SAN_IQN = "iqn.2026-11.org.example:san"
GW_IQN = "iqn.2026-11.org.example:gw"
GW_ADDR, SAN_ADDR = "192.0.2.1", "192.0.2.2"
SAN_PORT, GW_PORT = 3260, 3260
REMOTE_URL = "iscsi://%s:%d/%s/1" % (SAN_ADDR, SAN_PORT, SAN_IQN)
GW_URL = "iscsi://127.0.0.1:%d/%s/1" % (GW_PORT, GW_IQN)

HARDWARE_ERROR = 0x04
ASC_LU_COMM_FAILURE = 0x08      # 08/00 LOGICAL UNIT COMMUNICATION FAILURE
ASC_INTERNAL_FAILURE = 0x44     # 44/00 INTERNAL TARGET FAILURE

# short timeouts so a test takes seconds, not minutes
FAST = {"remote_timeout": 1500, "connect_timeout": 1000,
        "reconnect_max": 500}

_seq = itertools.count()


def sh(*cmd, check=True, timeout=30, env=None):
    cp = subprocess.run(list(cmd), stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True,
                        timeout=timeout * tscale(), env=env)
    if check and cp.returncode != 0:
        raise AssertionError("%s: exit %d\n%s" % (" ".join(cmd),
                                                   cp.returncode, cp.stdout))
    return cp


def kill_pid(proc):
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


class SanNet:
    """Two namespaces joined by a veth pair; everything started in them is
    killed by PID and both are deleted at teardown."""

    def __init__(self, request):
        tag = "%d%d" % (os.getpid() % 100000, next(_seq))
        self.gw = "hfgw%s-g" % tag
        self.san = "hfgw%s-s" % tag
        self.gw_dev = "hg%sg" % tag         # <= 15 characters
        self.san_dev = "hg%ss" % tag
        self.procs = []
        request.addfinalizer(self.teardown)
        sh("ip", "netns", "add", self.gw)
        sh("ip", "netns", "add", self.san)
        sh("ip", "link", "add", self.gw_dev, "netns", self.gw, "type",
           "veth", "peer", "name", self.san_dev, "netns", self.san)
        for ns, dev, addr in ((self.gw, self.gw_dev, GW_ADDR),
                              (self.san, self.san_dev, SAN_ADDR)):
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def in_gw(self, *cmd):
        return ["ip", "netns", "exec", self.gw] + list(cmd)

    def in_san(self, *cmd):
        return ["ip", "netns", "exec", self.san] + list(cmd)

    def link(self, up):
        """The SAN's end of the pair: down is the SAN dropping off the
        network (its packets neither arrive nor leave)."""
        sh("ip", "-n", self.san, "link", "set", self.san_dev,
           "up" if up else "down")

    def spawn(self, argv, log, env=None):
        # `ip netns exec` execs the command: the PID is the daemon's own
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        return p

    def teardown(self):
        for p in self.procs:
            kill_pid(p)
        for ns in (self.gw, self.san):
            sh("ip", "netns", "del", ns, check=False)


class San:
    """tgtd in the SAN namespace with target 1, LUN 1 on a file."""

    def __init__(self, net, tmp):
        self.net = net
        self.tmp = Path(tmp)
        self.ctl = 2000 + (os.getpid() + next(_seq) * 7) % 20000
        self.env = dict(os.environ, TGT_IPC_SOCKET=str(self.tmp / "san.sock"))
        self.proc = None

    def tgtadm(self, *args):
        return sh(*self.net.in_san("tgtadm", "-C", str(self.ctl), "--lld",
                                   "iscsi", *args), env=self.env)

    def start(self, image, params=None, setup=()):
        """setup: tgtadm argument lists run before the target is bound
        (before anyone can log in)."""
        log = open(self.tmp / "tgtd.log", "ab")
        self.proc = self.net.spawn(self.net.in_san(
            "tgtd", "-f", "-C", str(self.ctl), "--iscsi",
            "portal=%s:%d" % (SAN_ADDR, SAN_PORT)), log, env=self.env)
        assert wait_for(lambda: self.proc.poll() is not None or sh(
            *self.net.in_san("tgtadm", "-C", str(self.ctl), "--lld", "iscsi",
                             "--op", "show", "--mode", "target"),
            check=False, env=self.env).returncode == 0, S(10)), \
            "tgtd did not start"
        assert self.proc.poll() is None, (self.tmp / "tgtd.log").read_text()
        self.tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T",
                    SAN_IQN)
        self.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1",
                    "--lun", "1", "-b", str(image))
        if params:
            self.tgtadm("--op", "update", "--mode", "logicalunit", "--tid",
                        "1", "--lun", "1", "--params", params)
        for args in setup:
            self.tgtadm(*args)
        self.tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "-I",
                    "ALL")
        return self

    def kill9(self):
        kill_pid(self.proc)


class Gateway:
    """holdfastd in the gateway namespace serving the remote LUN as LUN 1
    of GW_IQN on 127.0.0.1 (that namespace's own loopback)."""

    def __init__(self, net, tmp, name="holdfastd", port=GW_PORT):
        """name, port: a second node in the same namespace (the scsi-pr
        tests) has its own log, configuration and portal."""
        self.net = net
        self.tmp = Path(tmp)
        self.name = name
        self.port = port
        self.url = "iscsi://127.0.0.1:%d/%s/1" % (port, GW_IQN)
        self.ctl = 2000 + (os.getpid() + 13 + next(_seq) * 11) % 20000
        self.env = dict(os.environ, TGT_IPC_SOCKET=str(
            self.tmp / ("gw.sock" if name == "holdfastd" else
                        name + ".sock")))
        self.log_path = self.tmp / (name + ".log")
        self.proc = None

    def start(self, lun=None, luns=None, expect_fail=False):
        l1 = {"lun": 1, "backend": "iscsi", "path": REMOTE_URL}
        l1.update(FAST)
        l1.update(lun or {})
        conf = {"portals": ["127.0.0.1:%d" % self.port],
                "targets": [{"name": GW_IQN, "initiators": ["ALL"],
                             "luns": [l1] if luns is None else luns}]}
        cpath = self.tmp / ("gw.conf" if self.name == "holdfastd" else
                            self.name + ".conf")
        cpath.write_text(cfg_text(conf))
        log = open(self.log_path, "ab")
        self.proc = self.net.spawn(self.net.in_gw(
            str(build_dir() / "holdfastd"), "-f", "-c",
            str(cpath), "-C", str(self.ctl)), log,
            env=self.env)
        assert wait_for(lambda: self.proc.poll() is not None or
                        "holdfastd ready" in self.log(), S(15)), self.log()
        if expect_fail:
            # a LUN that cannot open refuses the whole configuration:
            # returns the log, or None if the daemon started after all
            if self.proc.poll() is None:
                kill_pid(self.proc)
                return None
            assert self.proc.returncode != 0, self.log()
            return self.log()
        assert self.proc.poll() is None, self.log()
        return self

    def log(self):
        return self.log_path.read_text(errors="replace")

    def tgtadm(self, *args, check=True):
        return sh(*self.net.in_gw("tgtadm", "-C", str(self.ctl), "--lld",
                                  "iscsi", *args), check=check, env=self.env)

    def show(self):
        return self.tgtadm("--op", "show", "--mode", "target").stdout

    def client(self, name="hangclient"):
        return HangClient(self.url, prefix=self.net.in_gw(), name=name)

    def stop(self):
        """SIGTERM must end the daemon cleanly (exit 0) even with the
        remote session up."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(S(20))
            except subprocess.TimeoutExpired:
                kill_pid(self.proc)
                pytest.fail("holdfastd did not stop on SIGTERM\n" +
                            self.log())
        assert self.proc.returncode == 0, self.log()
        # a sanitizer build (HOLDFAST_BUILD=build-san) reports here
        assert not any(m in self.log() for m in SANITIZER_MARKS), self.log()


@pytest.fixture
def env(request, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if not (build_dir() / "holdfastd").exists():
        pytest.fail("holdfastd not built (run make)")
    net = SanNet(request)
    image = tmp_path / "san.img"
    with open(image, "wb") as f:
        f.truncate(SAN_SIZE)
    san = San(net, tmp_path)
    gw = Gateway(net, tmp_path)

    def dump_logs():
        for p in sorted(tmp_path.glob("*.log")):
            if p.exists():
                print("==== %s\n%s" % (p.name, p.read_text(errors="replace")
                                        [-6000:]))
    request.addfinalizer(dump_logs)
    return net, san, gw, image


def pattern(i):
    return 1 + i % 250


def read_san(image, lba, blocks):
    with open(image, "rb") as f:
        f.seek(lba * BS)
        return f.read(blocks * BS)


class Stream:
    """A stream of 4 KiB writes (each to its own blocks, its own pattern)
    and reads of earlier writes through one client, one every `every`
    seconds.  Remembers what it issued, for the checks."""

    def __init__(self, client, every=0.1, blocks=8, base=0):
        self.c = client
        self.every = every
        self.blocks = blocks
        self.base = base
        self.writes = []        # (label, lba, pattern, issue time ms)
        self.reads = []
        self.read_of = []       # for each read, the index of its write
        self.i = 0

    def step(self):
        i = self.i
        self.i += 1
        lba = self.base + i * self.blocks
        p = pattern(i)
        label = self.c.issue("write %d %d 0x%02x" % (lba, self.blocks, p))
        self.writes.append((label, lba, p, now_ms()))
        if i % 4 == 3:
            # read back a write issued earlier (completed or held: the
            # hang engine keeps the order, so it must see the data)
            j = i - 2
            self.reads.append((self.c.issue("read %d %d expect 0x%02x" % (
                self.base + j * self.blocks, self.blocks, pattern(j))),
                now_ms()))
            self.read_of.append(j)

    def run_for(self, seconds, *others):
        """Step this stream (and others, interleaved) for seconds."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()
            for o in others:
                o.step()
            time.sleep(self.every)

    def results(self, timeout):
        w = [(self.c.get(lb, timeout), lba, p, t)
             for lb, lba, p, t in self.writes]
        r = [(self.c.get(lb, timeout), t) for lb, t in self.reads]
        return w, r


def scsicdb(net, url, hexcdb, alloc=0, count=3):
    """One raw CDB from the gateway namespace (count times on one new
    session, past the power-on unit attention); the last answer."""
    cp = sh(*net.in_gw(str(build_dir() / "tools" / "scsicdb"), "-n",
                       str(count), url, hexcdb, "-r", str(alloc)))
    r = json.loads(cp.stdout.strip().splitlines()[-1])
    r["bytes"] = bytes.fromhex(r["data"])
    return r


RC16 = "9e10" + "00" * 8 + "00000020" + "0000"
VPD_B2 = "1201b200ff00"


def gls_cdb(lba, alloc=1024):
    return "9e12" + "%016x" % lba + "%08x" % alloc + "0000"


def gls_descs(r):
    """GET LBA STATUS answer -> [(lba, blocks, status)]."""
    b = r["bytes"]
    # PARAMETER DATA LENGTH may announce more than the allocation length
    # let through (SBC-3 5.16.2)
    n = min((int.from_bytes(b[0:4], "big") - 4) // 16, (len(b) - 8) // 16)
    return [(int.from_bytes(b[8 + 16 * i:16 + 16 * i], "big"),
             int.from_bytes(b[16 + 16 * i:20 + 16 * i], "big"),
             b[20 + 16 * i] & 0xf) for i in range(n)]


def check_all_good_and_landed(stream, image, timeout=40, ordered_reads=True):
    """Every command GOOD, every read saw its write, every write on the
    SAN.  ordered_reads=False: a read issued while its write was still in
    flight at a live (slow) SAN may see the old data - two SIMPLE
    commands in the store are not ordered (SAM-5 8.6); only what the hang
    engine holds is - so only reads issued after their write completed
    are compared."""
    w, r = stream.results(timeout)
    for res, _, _, _ in w:
        assert_good(res)
    for k, (res, t_read) in enumerate(r):
        assert_good(res)
        if not ordered_reads:
            wres, _, _, t_write = w[stream.read_of[k]]
            if t_write + wres["ms"] > t_read:
                continue
        assert res.get("match") is True, res
    for res, lba, p, _ in w:
        data = read_san(image, lba, stream.blocks)
        assert data == bytes([p]) * len(data), \
            "write at LBA %d (0x%02x) did not land on the SAN" % (lba, p)
    return w, r


# --------------------------------------------------------------------------

def test_gateway_serves_remote_lun(env):
    """Data written through holdfast is on the SAN's file, capacity is the
    remote's, show says connected; a LUN added with tgtadm --bstype iscsi
    works the same."""
    net, san, gw, image = env
    # a thin SAN LUN: the gateway LUN is thin because the SAN's is
    san.start(image, params="thin_provisioning=1")
    gw.start()
    c = gw.client()
    r = c.do("readcap")
    assert_good(r)
    for i in range(8):
        assert_good(c.do("write %d 8 0x%02x" % (i * 8, pattern(i))))
    assert_good(c.do("write 64 8 0x77 fua"))
    assert_good(c.do("sync"))
    r = c.do("read 0 8 expect 0x01")
    assert r.get("match") is True, r
    assert_good(c.do("write 128 16 0x99"))
    assert_good(c.do("writesame 128 16 0x00"))
    assert_good(c.do("write 256 16 0x98"))
    assert_good(c.do("unmap 256 8"))
    r = c.do("read 256 8 expect 0x00")
    assert r.get("match") is True, r
    c.close()
    # zeroes reached the SAN (WRITE SAME passed through), the unmapped
    # half reads back zero there too, the rest is untouched
    assert read_san(image, 128, 16) == bytes(16 * BS)
    assert read_san(image, 256, 8) == bytes(8 * BS)
    assert read_san(image, 264, 8) == b"\x98" * 4096
    for i in range(8):
        assert read_san(image, i * 8, 8) == bytes([pattern(i)]) * 4096
    assert read_san(image, 64, 8) == b"\x77" * 4096
    text = gw.show()
    assert "Size: %d MB" % round(SAN_SIZE / 1e6) in text, text
    assert "connected since" in text and "reconnects 0" in text, text

    # run time: a second gateway LUN on the same remote, through tgtadm
    gw.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1",
              "--lun", "2", "--bstype", "iscsi", "-b", REMOTE_URL,
              "--bsopts", "remote_timeout=2000;initiator_name="
              "iqn.2026-11.org.example:gw2")
    c2 = HangClient(GW_URL.rsplit("/", 1)[0] + "/2", luns=(2,),
                    prefix=net.in_gw())
    r = c2.do("read 0 8 expect 0x01")
    assert r.get("match") is True, r
    c2.close()
    # deleting it closes its session to the SAN from the management
    # thread while its session reactor runs
    gw.tgtadm("--op", "delete", "--mode", "logicalunit", "--tid", "1",
              "--lun", "2")
    assert wait_for(lambda: gw.log().count(": closed") >= 1, S(5)), gw.log()
    assert "gw2" not in san.tgtadm("--op", "show", "--mode",
                                   "target").stdout
    # a bad URL is refused with a reason, nothing is created
    bad = gw.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1",
                    "--lun", "3", "--bstype", "iscsi", "-b",
                    "iscsi://%s/no-lun-here" % SAN_ADDR, check=False)
    assert bad.returncode != 0
    gw.stop()


def test_link_down_retry_no_error_and_data_lands(env):
    """~10 s link outage under a stream of writes and reads with
    rerror/werror = retry: every command succeeds, every write is on the
    SAN's file, the commands issued during the outage wait about as long as
    the outage lasts."""
    net, san, gw, image = env
    san.start(image)
    gw.start({"rerror": "retry", "werror": "retry", "retry_interval": 200})
    # two connections: holdfastd puts them on different reactors (round
    # robin), so one of them reaches the remote session through the
    # other reactor (reactor_call both ways)
    c = gw.client()
    c2 = gw.client("hangclient2")
    st = Stream(c)
    st2 = Stream(c2, base=SAN_SIZE // BS // 2)
    st.run_for(1.0, st2)
    t_down = now_ms()
    net.link(False)
    st.run_for(10.0, st2)
    net.link(True)
    t_up = now_ms()
    st.run_for(1.5, st2)
    check_all_good_and_landed(st2, image)
    c2.close()
    w, r = check_all_good_and_landed(st, image)
    outage = t_up - t_down
    # the first command issued in the outage waited for all of it
    first = min((res for res, _, _, t in w if t >= t_down),
                key=lambda res: res["start"])
    assert outage - 1500 <= first["ms"] <= outage + 6000, (outage, first)
    # and nothing completed while the link was down (held, not answered)
    for res, _, _, t in w:
        if t_down + 2500 < t < t_up - 500:
            assert res["end"] >= t_up - 200, res
    # the commands after the outage are quick again
    last = max((res for res, _, _, _ in w), key=lambda res: res["start"])
    assert last["ms"] < 2000, last
    c.close()
    text = gw.show()
    assert "connected since" in text and "reconnects 0" not in text, text
    assert "Hang state: ok" in text, text
    gw.stop()


def test_san_killed_and_restarted(env):
    """kill -9 of the SAN process and a restart 5 s later: the same as a
    link outage (no error, data lands)."""
    net, san, gw, image = env
    san.start(image)
    gw.start({"rerror": "retry", "werror": "retry", "retry_interval": 200})
    c = gw.client()
    st = Stream(c)
    st.run_for(1.0)
    t_kill = now_ms()
    san.kill9()
    st.run_for(5.0)
    san.start(image)
    t_back = now_ms()
    st.run_for(1.5)
    w, _ = check_all_good_and_landed(st, image)
    held = [res["ms"] for res, _, _, t in w if t_kill + 200 < t < t_kill + 1000]
    assert held and min(held) >= (t_back - t_kill) - 2000, held
    c.close()
    assert "reconnects 1" in gw.show() or "reconnects 2" in gw.show()
    gw.stop()


def test_outage_longer_than_retry_timeout(env):
    """retry_timeout = 3 s, outage ~9 s: the held commands fail at about the
    timeout with LOGICAL UNIT COMMUNICATION FAILURE, later ones at once,
    and the LUN works again after the link returns."""
    net, san, gw, image = env
    san.start(image)
    gw.start({"rerror": "retry", "werror": "retry", "retry_interval": 200,
              "retry_timeout": 3000})
    c = gw.client()
    assert_good(c.do("write 0 8 0x11"))
    net.link(False)
    t_down = now_ms()
    first = c.do("write 8 8 0x22", timeout=30)
    # unanswered for remote_timeout (1.5 s), then held for retry_timeout
    assert first["status"] == "CHECK_CONDITION", first
    assert (first["sense_key"], first["asc"]) == (HARDWARE_ERROR,
                                                  ASC_LU_COMM_FAILURE), first
    assert 1500 + 3000 - 700 <= first["ms"] <= 1500 + 3000 + 3000, first
    # failed state: errors at once now
    again = c.do("write 16 8 0x33", timeout=10)
    assert again["status"] == "CHECK_CONDITION", again
    assert again["ms"] < 1000, again
    remaining = 9000 - (now_ms() - t_down)
    if remaining > 0:
        time.sleep(remaining / 1000.0)
    net.link(True)
    t_up = now_ms()
    ok = None
    while now_ms() - t_up < S(15) * 1000:
        r = c.do("write 24 8 0x44", timeout=10)
        if r["status"] == "GOOD":
            ok = now_ms()
            break
        time.sleep(0.2)
    assert ok is not None, "no recovery within 15 s of the link returning"
    assert ok - t_up < 6000
    assert_good(c.do("write 8 8 0x22"))
    c.close()
    assert read_san(image, 24, 8) == b"\x44" * 4096
    assert read_san(image, 8, 8) == b"\x22" * 4096
    gw.stop()


def test_report_mode_errors_at_once(env):
    """rerror/werror = report (the control): the same outage gives errors,
    the first after remote_timeout, the next ones at once."""
    net, san, gw, image = env
    san.start(image)
    gw.start({"rerror": "report", "werror": "report"})
    c = gw.client()
    assert_good(c.do("write 0 8 0x11"))
    net.link(False)
    first = c.do("write 8 8 0x22", timeout=20)
    assert first["status"] == "CHECK_CONDITION", first
    assert (first["sense_key"], first["asc"]) == (HARDWARE_ERROR,
                                                  ASC_LU_COMM_FAILURE), first
    assert first["ms"] < 1500 + 1500, first
    for lba in (16, 24):
        r = c.do("write %d 8 0x33" % lba, timeout=10)
        assert r["status"] == "CHECK_CONDITION", r
        assert r["ms"] < 500, r
    r = c.do("read 0 8", timeout=10)
    assert r["status"] == "CHECK_CONDITION" and r["ms"] < 500, r
    net.link(True)
    assert wait_for(lambda: c.do("write 32 8 0x55")["status"] == "GOOD",
                    S(10), interval=0.3)
    c.close()
    assert read_san(image, 32, 8) == b"\x55" * 4096
    gw.stop()


def test_different_lun_behind_url_is_refused(env, tmp_path):
    """After a SAN restart another LUN (another serial number, another
    file) answers at the same URL: holdfast refuses it (errors, nothing
    written to it, show says wrong-lun) instead of switching silently, and
    recovers when the original LUN is back."""
    net, san, gw, image = env
    other = tmp_path / "other.img"
    with open(other, "wb") as f:
        f.truncate(SAN_SIZE)
    san.start(image)
    gw.start({"rerror": "retry", "werror": "retry", "retry_interval": 200,
              "retry_timeout": 20000})
    c = gw.client()
    assert_good(c.do("write 0 8 0x11"))
    san.kill9()
    san.start(other, params="scsi_sn=OTHERLUN01,scsi_id=OTHERLUN01")
    r = c.do("write 8 8 0x22", timeout=30)
    assert r["status"] == "CHECK_CONDITION", r
    assert (r["sense_key"], r["asc"]) == (HARDWARE_ERROR,
                                          ASC_INTERNAL_FAILURE), r
    assert r["ms"] < 10000, r
    assert read_san(other, 0, 64) == bytes(64 * BS), "wrote to the other LUN"
    assert "wrong-lun" in gw.show()
    assert "different LUN" in gw.log()
    # the original comes back: the gateway goes on with it
    san.kill9()
    san.start(image)
    assert wait_for(lambda: c.do("write 16 8 0x33", timeout=10)["status"]
                    == "GOOD", S(15), interval=0.3)
    c.close()
    assert read_san(image, 16, 8) == b"\x33" * 4096
    assert read_san(other, 0, 64) == bytes(64 * BS)
    assert "connected since" in gw.show()
    gw.stop()


def test_chap_digest_and_portal_list(env, tmp_path):
    """Mutual CHAP and CRC32C header digests against a SAN set up for
    both, reached through the second portal of the list (the URL's own
    refuses connections); a wrong secret either way refuses the
    configuration with a reason instead of serving a LUN.  (tgtd 1.0.85
    still accepts HeaderDigest=None when set to CRC32C, so only the
    positive digest case is checked.)"""
    net, san, gw, image = env
    user, secret = "gwuser", "gw-secret-0123"
    san_user, san_secret = "sanuser", "san-secret-4567"
    san.start(image, setup=[
        ("--op", "new", "--mode", "account", "--user", user,
         "--password", secret),
        ("--op", "bind", "--mode", "account", "--tid", "1", "--user", user),
        ("--op", "new", "--mode", "account", "--user", san_user,
         "--password", san_secret),
        ("--op", "bind", "--mode", "account", "--tid", "1", "--user",
         san_user, "--outgoing"),
        ("--op", "update", "--mode", "target", "--tid", "1", "--name",
         "HeaderDigest", "--value", "CRC32C"),
    ])

    def lun(u=user, s=secret, mu=san_user, ms=san_secret, digest="crc32c"):
        return {"path": "iscsi://%s%%%s@%s:3999/%s/1" % (u, s, SAN_ADDR,
                                                         SAN_IQN),
                "portals": ["%s:%d" % (SAN_ADDR, SAN_PORT)],
                "mutual_user": mu, "mutual_password": ms,
                "header_digest": digest,
                "initiator_name": "iqn.2026-11.org.example:gateway-a"}

    for what, bad in (("wrong secret", lun(s="wrong-secret-99")),
                      ("wrong SAN secret", lun(ms="wrong-secret-99"))):
        g = Gateway(net, tmp_path / ("bad%d" % next(_seq)))
        g.tmp.mkdir()
        log = g.start(bad, expect_fail=True)
        assert log is not None, "%s: served anyway\n%s" % (what, g.log())
        assert "cannot reach" in log, (what, log)
    gw.start(lun())
    c = gw.client()
    assert_good(c.do("write 0 8 0x5c"))
    c.close()
    assert read_san(image, 0, 8) == b"\x5c" * 4096
    text = gw.show()
    assert "via %s:%d: connected" % (SAN_ADDR, SAN_PORT) in text, text
    # the secret never shows
    assert secret not in text and san_secret not in gw.log()
    assert secret not in gw.log()
    gw.stop()


def test_slow_remote_is_not_an_error(env):
    """A SAN that stalls for less than remote_timeout (tgtd stopped with
    SIGSTOP for 2 s, remote_timeout 4 s) is slow, not lost: in report mode,
    where any backend error would reach the client, every command succeeds
    late and the session is never dropped."""
    net, san, gw, image = env
    san.start(image)
    gw.start({"rerror": "report", "werror": "report",
              "remote_timeout": 4000})
    c = gw.client()
    st = Stream(c)
    st.run_for(0.5)
    t_stop = now_ms()
    os.kill(san.proc.pid, signal.SIGSTOP)
    try:
        st.run_for(2.0)
    finally:
        os.kill(san.proc.pid, signal.SIGCONT)
    t_cont = now_ms()
    st.run_for(0.5)
    # report mode: nothing is held, yet a read still sees the write
    # issued before it: the gateway does not send a read that overlaps a
    # write in flight (tgtd would run the two in either order)
    w, _ = check_all_good_and_landed(st, image)
    stalled = [res["ms"] for res, _, _, t in w if t_stop < t < t_stop + 500]
    # the commands issued at the start of the stall waited for it
    assert stalled and max(stalled) >= (t_cont - t_stop) - 700, stalled
    c.close()
    assert "connection lost" not in gw.log(), gw.log()
    assert "reconnects 0" in gw.show()
    gw.stop()


def test_san_down_at_start(env):
    """holdfastd starts while the SAN is off the network: without `size`
    the configuration is refused with a hint; with it the LUN is served
    at that size, its commands are held (retry) until the SAN answers,
    then complete, and the SAN's LUN becomes the LUN's identity.  A SAN
    LUN of another size is refused, not used."""
    net, san, gw, image = env
    san.start(image)
    net.link(False)
    g0 = Gateway(net, gw.tmp / "nosize")
    g0.tmp.mkdir()
    log = g0.start({}, expect_fail=True)
    assert log is not None and "set size" in log, log
    t0 = now_ms()
    gw.start({"size": SAN_SIZE, "rerror": "retry", "werror": "retry",
              "retry_interval": 200})
    assert now_ms() - t0 < S(10) * 1000
    assert "not-yet-connected" in gw.show(), gw.show()
    c = gw.client()
    r = c.do("readcap")
    assert_good(r)
    w = c.issue("write 40 8 0x3c")
    rd = c.issue("read 40 8 expect 0x3c")
    time.sleep(3)
    assert not c.done(w) and not c.done(rd), "answered while the SAN is off"
    net.link(True)
    t_up = now_ms()
    rw = c.get(w, 20)
    rr = c.get(rd, 20)
    assert_good(rw)
    assert_good(rr)
    assert rr.get("match") is True, rr
    assert rw["end"] - t_up < 5000, (rw, t_up)
    assert read_san(image, 40, 8) == b"\x3c" * 4096
    assert "recorded as this LUN's identity" in gw.log(), gw.log()
    assert "connected since" in gw.show()
    c.close()
    gw.stop()

    # a SAN LUN that is not the configured size is refused when it answers
    net.link(False)
    g2 = Gateway(net, gw.tmp / "wrongsize")
    g2.tmp.mkdir()
    g2.start({"size": SAN_SIZE * 2, "rerror": "report", "werror": "report"})
    net.link(True)
    c = g2.client()
    bad = None
    for _ in range(40):
        r = c.do("write 0 8 0x44", timeout=10)
        if (r.get("sense_key"), r.get("asc")) == (HARDWARE_ERROR,
                                                   ASC_INTERNAL_FAILURE):
            bad = r
            break
        time.sleep(0.25)
    assert bad is not None, r
    assert "not the configured size" in g2.log(), g2.log()
    assert "wrong-lun" in g2.show()
    assert read_san(image, 0, 8) == bytes(8 * BS)
    c.close()
    g2.stop()


def test_thin_and_lba_status_from_san(env, tmp_path):
    """The gateway LUN is thin exactly when the SAN's LUN is (READ
    CAPACITY 16 LBPME, VPD B2), whatever thin_provisioning says, and GET
    LBA STATUS is the SAN's answer, passed through."""
    net, san, gw, image = env
    # data at blocks 8192..10239 (1 MiB at 4 MiB), holes elsewhere
    with open(image, "r+b") as f:
        f.seek(4 << 20)
        f.write(b"\x5a" * (1 << 20))
    san.start(image, params="thin_provisioning=1")
    gw.start({"thin_provisioning": False})
    direct_url = "iscsi://%s:%d/%s/1" % (SAN_ADDR, SAN_PORT, SAN_IQN)
    r = scsicdb(net, GW_URL, RC16, 32)
    assert r["status"] == 0 and r["bytes"][14] & 0xc0 == 0xc0, r
    r = scsicdb(net, GW_URL, VPD_B2, 255)
    assert r["status"] == 0 and r["bytes"][5] & 0x80, r     # LBPU
    for lba in (0, 8192, 9000, 10240):
        mine = gls_descs(scsicdb(net, GW_URL, gls_cdb(lba), 1024))
        sans = gls_descs(scsicdb(net, direct_url, gls_cdb(lba), 1024))
        assert mine and mine[0] == sans[0], (lba, mine, sans)
    assert gls_descs(scsicdb(net, GW_URL, gls_cdb(8192), 1024))[0] == \
        (8192, 2048, 0)
    # UNMAP through the gateway deallocates at the SAN: GET LBA STATUS
    # through the gateway shows it
    c = gw.client()
    assert_good(c.do("unmap 8192 1024"))
    c.close()
    d = gls_descs(scsicdb(net, GW_URL, gls_cdb(8192), 1024))
    assert d[0] == (8192, 1024, 1), d
    assert read_san(image, 8192, 8) == bytes(8 * BS)
    gw.stop()

    # the same SAN LUN fully provisioned: the gateway LUN is too, even
    # with thin_provisioning = true; no UNMAP, everything mapped
    san.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
               "--lun", "1", "--params", "thin_provisioning=0")
    g2 = Gateway(net, tmp_path / "full")
    g2.tmp.mkdir()
    g2.start({"thin_provisioning": True})
    r = scsicdb(net, GW_URL, RC16, 32)
    assert r["status"] == 0 and r["bytes"][14] & 0xc0 == 0, r
    r = scsicdb(net, GW_URL, "42" + "00" * 6 + "0018" + "00", 0)
    assert r["status"] == 2 and r["key"] == 5 and r["asc"] == 0x20, r
    d = gls_descs(scsicdb(net, GW_URL, gls_cdb(0), 1024))
    assert d == [(0, SAN_SIZE // BS, 0)], d
    g2.stop()


def gls_queries(gw):
    """GET LBA STATUS questions the gateway sent its SAN (show)."""
    m = re.search(r"lba status queries (\d+)", gw.show())
    assert m, gw.show()
    return int(m.group(1))


def test_lba_status_many_extents_one_question(env):
    """A SAN LUN with many alternating mapped / deallocated extents: one
    GET LBA STATUS through the gateway is one question to the SAN (not
    one per extent), and the answer is the SAN's own, descriptor for
    descriptor, as far as the initiator's allocation length allows,
    from any starting LBA."""
    net, san, gw, image = env
    chunk = 64 * 1024                   # 128 blocks, file-system aligned
    nruns = 150                         # 150 mapped + 150 holes
    with open(image, "r+b") as f:
        for i in range(nruns):
            f.seek(2 * i * chunk)
            f.write(bytes([pattern(i)]) * chunk)
    san.start(image, params="thin_provisioning=1")
    gw.start()
    direct = "iscsi://%s:%d/%s/1" % (SAN_ADDR, SAN_PORT, SAN_IQN)
    cb = chunk // BS
    # what the file looks like: runs of cb blocks, mapped first, then a
    # hole from the last run to the end
    want = []
    for i in range(nruns):
        want.append((2 * i * cb, cb, 0))
        want.append(((2 * i + 1) * cb, cb, 1))
    want[-1] = (want[-1][0], SAN_SIZE // BS - want[-1][0], 1)
    for lba, alloc in ((0, 8 + 16 * 255), (0, 8 + 16 * 5), (cb + 7, 4096),
                       (100 * cb, 1024), (2 * nruns * cb - 1, 4096),
                       (SAN_SIZE // BS - 1, 4096)):
        before = gls_queries(gw)
        # two commands on a fresh session: the first one takes the
        # session's power-on unit attention, the second is answered
        mine = scsicdb(net, GW_URL, gls_cdb(lba, alloc), alloc, count=2)
        asked = gls_queries(gw) - before
        sans = scsicdb(net, direct, gls_cdb(lba, alloc), alloc, count=2)
        assert mine["status"] == 0 and sans["status"] == 0, (mine, sans)
        d = gls_descs(mine)
        assert d == gls_descs(sans), (lba, alloc, d, gls_descs(sans))
        assert len(d) == min((alloc - 8) // 16,
                             len([w for w in want if w[0] + w[1] > lba])), \
            (lba, alloc, d)
        # the answer is the file's layout from lba on
        first = [w for w in want if w[0] <= lba < w[0] + w[1]][0]
        assert d[0] == (lba, first[0] + first[1] - lba, first[2]), d
        assert d[1:] == [w for w in want if w[0] > lba][:len(d) - 1], d
        # one question to the SAN for all of it
        assert 1 <= asked <= 2, (lba, alloc, asked, len(d))
    gw.stop()


def test_read_waits_for_overlapping_write_in_flight(env):
    """A read sent right behind a write to the same blocks sees the
    write's data, with nothing held (report mode).  The 64 KiB write
    reaches holdfast whole (unsolicited data) before the read, so a local
    disk behind holdfast would run them in that order; at the SAN the
    write must wait for an R2T for most of its data (tgtd takes 8 KiB
    with the command) while the read would run at once and return the
    old blocks.  The gateway keeps the read until the write is done."""
    net, san, gw, image = env
    san.start(image)
    gw.start({"rerror": "report", "werror": "report"})
    c = gw.client()
    pairs = []
    for i in range(24):
        lba = i * 256
        p = pattern(i + 7)
        w = c.issue("write %d 128 0x%02x" % (lba, p))
        r = c.issue("read %d 8 expect 0x%02x" % (lba + 120, p))
        pairs.append((w, r, lba, p))
    for w, r, lba, p in pairs:
        assert_good(c.get(w, 30))
        res = c.get(r, 30)
        assert_good(res)
        assert res.get("match") is True, (lba, res)
        assert read_san(image, lba, 128) == bytes([p]) * 128 * BS
    c.close()
    gw.stop()


def unreachable_san_url():
    """An iscsi:// URL pattern (%d: the LUN) on a loopback port nobody
    listens on: a gateway LUN with `size` set starts while its SAN does
    not answer."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                   # nothing listens there now
    return "iscsi://127.0.0.1:%d/%s/%%d" % (port, SAN_IQN)


def test_top_level_gateway_keys_are_every_gateway_lun_default(holdfast):
    """initiator_name (and the SAN timeouts) may stand at the top of
    targets.conf as the default of every gateway LUN; a LUN's own key
    wins.  No SAN needed: with `size` set a gateway LUN starts while its
    SAN does not answer (here a loopback port nobody listens on)."""
    url = unreachable_san_url()
    d = holdfast(luns=[{"lun": 1, "backend": "iscsi", "path": url % 1,
                        "size": SAN_SIZE},
                       {"lun": 2, "backend": "iscsi", "path": url % 2,
                        "size": SAN_SIZE,
                        "initiator_name": "iqn.2026-12.org.example:own"}],
                 initiator_name="iqn.2026-12.org.example:gw-global",
                 remote_timeout=20000)
    d.require_holdfast()
    text = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "system",
                    "--name", "dump", "--value", "config").stdout
    opts = [line.strip() for line in text.splitlines()
            if line.strip().startswith("bsopts")]
    assert opts == [
        'bsopts = "initiator_name=iqn.2026-12.org.example:gw-global;'
        'remote_timeout=20000";',
        'bsopts = "initiator_name=iqn.2026-12.org.example:own;'
        'remote_timeout=20000";'], text


def test_top_level_digest_keys_and_bsopts(holdfast):
    """header_digest and data_digest at the top of targets.conf are every
    gateway LUN's default (the dump carries them in the LUN's bsopts,
    tgtadm's spelling); a LUN's own key wins; a LUN with data_digest
    shows data_digest=crc32c-not-logged-in while its SAN does not answer,
    in show and as JSON backend_state fields; a bad value is refused."""
    url = unreachable_san_url()
    d = holdfast(luns=[{"lun": 1, "backend": "iscsi", "path": url % 1,
                        "size": SAN_SIZE},
                       {"lun": 2, "backend": "iscsi", "path": url % 2,
                        "size": SAN_SIZE, "data_digest": "none"}],
                 header_digest="crc32c", data_digest="crc32c")
    d.require_holdfast()
    text = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "system",
                    "--name", "dump", "--value", "config").stdout
    opts = [line.strip() for line in text.splitlines()
            if line.strip().startswith("bsopts")]
    assert len(opts) == 2, text
    assert "header_digest=crc32c" in opts[0] and \
        "data_digest=crc32c" in opts[0], opts
    assert "header_digest=crc32c" in opts[1] and \
        "data_digest=none" in opts[1], opts
    shown = show_text(d)
    assert shown.count("data_digest=crc32c-not-logged-in digest_errors=0") \
        == 1, shown
    adm = build_dir() / "holdfastadm"
    out = subprocess.run([str(adm), "-C", str(d.ctl_port), "--json", "-o",
                          "show", "-m", "target"], env=d.env, timeout=30,
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    st = json.loads(out)["targets"][0]["luns"][1]["backend_state"]
    assert st["data_digest"] == "crc32c-not-logged-in", st
    assert st["digest_errors"] == "0", st
    bad = holdfast(luns=[{"lun": 1, "backend": "iscsi", "path": url % 1,
                          "size": SAN_SIZE}], data_digest="md5", wait=False)
    assert bad.wait(15) != 0, bad.log_text()
    bad.ok_exit = {1}
    assert "data_digest: none or crc32c" in bad.log_text(), bad.log_text()


# --------------------------------------------------------------------------
# holdfast as the SAN.  tgtd cannot be made to answer BUSY, TASK SET FULL,
# UNIT ATTENTION or a chosen sense; a second holdfastd can: its LUN's fault
# filter (backends/fault.c) fails commands with an errno (EBUSY -> BUSY,
# ENOMEM -> TASK SET FULL, EROFS -> DATA PROTECT) or with a sense given as
# it is (sense=KEY/ASC/ASCQ), and with rerror/werror = report (the
# default) the SAN answers them at once.  Both daemons run on loopback;
# no network namespace is needed (no link is cut here).

UNIT_ATTENTION, ILLEGAL_REQUEST, MEDIUM_ERROR, DATA_PROTECT = 6, 5, 3, 7


def hf_pair(holdfast, gw_lun=None, san_lun=None, args=()):
    """A holdfastd SAN with a thin file LUN and a holdfastd gateway whose
    LUN 1 is the SAN's LUN 1."""
    sl = {"lun": 1, "backend": "file", "path": "san.img", "size": "32M",
          "block_size": 512, "thin_provisioning": True}
    sl.update(san_lun or {})
    san = holdfast(luns=[sl], iqn=SAN_IQN)
    san.require_holdfast("holdfast is the SAN here")
    gl = {"lun": 1, "backend": "iscsi", "path": san.url(1)}
    gl.update(FAST)
    gl.update(gw_lun or {})
    gw = holdfast(luns=[gl], iqn=GW_IQN, args=args)
    return san, gw


def san_fault(san, spec):
    san.tgtadm("--lld", "iscsi", "--op", "update", "--mode", "logicalunit",
               "--tid", "1", "--lun", "1", "--params", "fault=" + spec)


def show_text(d):
    return d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "target").stdout


def san_injected(san):
    """Commands the SAN's fault filter failed under its current spec."""
    m = re.search(r"fault=\S+ injected=(\d+)", show_text(san))
    assert m, show_text(san)
    return int(m.group(1))


@pytest.mark.parametrize("spec,op", [
    ("ebusy:ops=w:count=5", "write"),                   # BUSY
    ("enomem:ops=w:count=5", "write"),                  # TASK SET FULL
    ("eio:sense=6/29/00:ops=w:count=5", "write"),       # UA: reset
    ("eio:sense=6/2a/09:ops=r:count=5", "read"),        # UA: capacity
    ("ebusy:ops=r:count=3", "read"),
], ids=["busy-write", "tsf-write", "ua-write", "ua-read", "busy-read"])
def test_busy_task_set_full_and_unit_attention_retried_in_gateway(
        holdfast, spec, op):
    """A SAN that answers BUSY, TASK SET FULL or UNIT ATTENTION for a
    while: the gateway retries inside the backend, the client sees GOOD
    and the data lands.  The gateway LUN reports errors (report mode), so
    nothing above the backend would hide a failure: without the backend's
    retry the client gets the SAN's BUSY / TASK SET FULL / CHECK
    CONDITION."""
    san, gw = hf_pair(holdfast)
    c = HangClient(gw.url(1))
    image = san.path("san.img")
    lba, p = 1024, 0x5c
    if op == "read":
        assert_good(c.do("write %d 8 0x%02x" % (lba, p)))
    san_fault(san, spec)
    if op == "write":
        r = c.do("write %d 8 0x%02x" % (lba, p))
    else:
        r = c.do("read %d 8 expect 0x%02x" % (lba, p))
    assert_good(r)
    if op == "read":
        assert r.get("match") is True, r
    # the SAN really answered that many times (each one retried)
    n = int(re.search(r"count=(\d+)", spec).group(1))
    assert san_injected(san) == n, show_text(san)
    san_fault(san, "off")
    assert read_san(image, lba, 8) == bytes([p]) * 8 * BS
    assert_good(c.do("read %d 8 expect 0x%02x" % (lba, p)))
    c.close()
    assert "Hang state: ok" in show_text(gw)


@pytest.mark.parametrize("spec,cmd,key,asc,ascq,info", [
    ("eio:sense=5/24/00:ops=w:lba=100-100", "write 96 8 0x11",
     ILLEGAL_REQUEST, 0x24, 0x00, 100),
    ("eio:sense=3/11/00:ops=r:lba=205-300", "read 200 16",
     MEDIUM_ERROR, 0x11, 0x00, 205),
    ("erofs:sense=7/27/02:ops=w", "write 300 8 0x22",
     DATA_PROTECT, 0x27, 0x02, 300),
    # the SAN's own EROFS -> DATA PROTECT / WRITE PROTECTED
    ("erofs:ops=w", "write 400 8 0x33", DATA_PROTECT, 0x27, 0x00, None),
], ids=["illegal-request", "medium-error-lba", "data-protect-sense",
        "data-protect-errno"])
def test_remote_sense_reported_as_is_at_once(holdfast, spec, cmd, key, asc,
                                             ascq, info):
    """ILLEGAL REQUEST, MEDIUM ERROR with the failing LBA, and DATA
    PROTECT from the SAN reach the client as the SAN said them (key,
    ASC/ASCQ, INFORMATION: the MEDIUM ERROR's block is the SAN's, not the
    command's first), at once: not retried by the gateway (the SAN saw
    the command once) and not held by its hang engine, although the
    gateway LUN is in retry mode with no retry_timeout."""
    san, gw = hf_pair(holdfast, gw_lun={"rerror": "retry",
                                        "werror": "retry",
                                        "retry_interval": 200})
    c = HangClient(gw.url(1))
    san_fault(san, spec)
    r = c.do(cmd)
    assert r["status"] == "CHECK_CONDITION", r
    assert (r["sense_key"], r["asc"], r["ascq"]) == (key, asc, ascq), r
    if info is not None:
        assert r.get("info") == info, r
    # at once: not held (retry_interval 200 ms, no retry_timeout) and
    # not retried inside the backend (which waits a tick, 100 ms, each)
    assert r["ms"] < 1000, r
    assert san_injected(san) == 1, show_text(san)
    san_fault(san, "off")
    assert "Hang state: ok" in show_text(gw)
    c.close()


def local_cdb(url, hexcdb, alloc, count=2):
    """One raw CDB over loopback (count times on one new session: the
    first takes the power-on unit attention); the last answer."""
    cp = subprocess.run([str(build_dir() / "tools" / "scsicdb"), "-n",
                         str(count), url, hexcdb, "-r", str(alloc)],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, timeout=S(30))
    assert cp.returncode == 0, cp.stdout
    r = json.loads(cp.stdout.strip().splitlines()[-1])
    r["bytes"] = bytes.fromhex(r["data"])
    return r


def test_lba_status_remote_sense_reported_as_is(holdfast):
    """A GET LBA STATUS the SAN fails with sense that is not transient
    reaches the client with the SAN's key and ASC/ASCQ, not the sense the
    gateway would make of the errno (MEDIUM ERROR / UNRECOVERED READ
    ERROR 11/00 for EIO).  MEDIUM FORMAT CORRUPTED (3/31/00) tells the
    two apart; the SAN's own answer is the control."""
    san, gw = hf_pair(holdfast)
    san_fault(san, "eio:sense=3/31/00:ops=status")
    r = local_cdb(san.url(1), gls_cdb(8, 1024), 1024)
    assert (r["status"], r["key"], r["asc"], r["ascq"]) == \
        (2, MEDIUM_ERROR, 0x31, 0x00), r
    r = local_cdb(gw.url(1), gls_cdb(8, 1024), 1024)
    assert (r["status"], r["key"], r["asc"], r["ascq"]) == \
        (2, MEDIUM_ERROR, 0x31, 0x00), r
    assert "status" in show_text(san)
    san_fault(san, "off")
    r = local_cdb(gw.url(1), gls_cdb(8, 1024), 1024)
    assert r["status"] == 0, r
    assert "Hang state: ok" in show_text(gw)


def test_lba_status_and_io_on_another_reactor(holdfast, tmp_path):
    """The gateway's session to the SAN lives on one reactor (the first
    that sent it I/O); commands from connections on the other reactor
    hop there and back (reactor_call).  With two reactors (-t 2,
    connections dealt round robin) plain I/O and GET LBA STATUS from
    both reactors, at the same time, are answered right: the data lands
    and reads back, and every GET LBA STATUS answer is the SAN's own.
    Part of make tsan (a data race in the hop fails it there)."""
    chunk = 64 * 1024
    with open(tmp_path / "san.img", "wb") as f:
        f.truncate(32 << 20)
        for i in range(40):
            f.seek(2 * i * chunk)
            f.write(bytes([pattern(i)]) * chunk)
    san, gw = hf_pair(holdfast, args=("-t", "2"))
    # connection 1 sends the first I/O: its reactor owns the session
    c1 = HangClient(gw.url(1), name="owner")
    assert_good(c1.do("read 0 8 expect 0x%02x" % pattern(0)))
    # connection 2 is on the other reactor
    c2 = HangClient(gw.url(1), name="other")
    cb = chunk // BS
    # connection 2 rewrites mapped runs 20..39 (the mapping stays what
    # it was, so GET LBA STATUS answers do not depend on timing) while
    # connection 1 reads runs 0..19
    labels = []
    for k in range(32):
        i = 20 + k % 20
        lba = 2 * i * cb + (k // 20) * 64
        labels.append((c2.issue("write %d 64 0x%02x" % (lba, 0xa0 + k)),
                       c1.issue("read %d 8 expect 0x%02x" % (
                           2 * (k % 20) * cb, pattern(k % 20))), lba, k))
    # GET LBA STATUS from two more connections (one on each reactor)
    # while that runs, and the SAN's own answer
    for lba, alloc in ((0, 4096), (cb + 3, 1024)):
        sans = gls_descs(local_cdb(san.url(1), gls_cdb(lba, alloc), alloc))
        assert len(sans) > 10, sans
        for _ in range(2):
            mine = local_cdb(gw.url(1), gls_cdb(lba, alloc), alloc)
            assert mine["status"] == 0, mine
            assert gls_descs(mine) == sans, (lba, gls_descs(mine), sans)
    for w, r, lba, k in labels:
        assert_good(c2.get(w, S(30)))
        res = c1.get(r, S(30))
        assert_good(res)
        assert res.get("match") is True, res
    for w, r, lba, k in labels:
        res = c2.do("read %d 64 expect 0x%02x" % (lba, 0xa0 + k))
        assert res.get("match") is True, res
        assert read_san(san.path("san.img"), lba, 64) == \
            bytes([0xa0 + k]) * 64 * BS
    # a write into a hole, from the other reactor, shows at the SAN as
    # mapped, through the gateway
    base = 100 * cb
    assert_good(c2.do("write %d 16 0x77" % base))
    d = gls_descs(local_cdb(gw.url(1), gls_cdb(base, 1024), 1024))
    assert d[0] == (base, 16, 0), d
    c1.close()
    c2.close()


# Two gateway nodes in front of one SAN LUN, the ownership a SCSI-3
# persistent reservation on it (alua_lock = "scsi-pr", README "Two nodes
# in front of shared storage"): tgtd is the SAN and keeps the
# reservation, so whatever either node believes, the SAN decides whose
# commands reach the medium.

NOT_READY, UNIT_ATTENTION = 2, 6
ASC_STANDBY, ASC_TRANSITIONING = 0x04, 0x04
SAN2_ADDR, GW2_ADDR = "192.0.3.2", "192.0.3.1"
READ_RESERVATION = "5e01" + "00" * 5 + "0400" + "00"


def pr_lun(group, peer, state, url=REMOTE_URL, **extra):
    d = {"lun": 1, "backend": "iscsi", "path": url, "alua_group": group,
         "alua_peer_group": peer, "alua_state": state,
         "alua_lock": "scsi-pr",
         "initiator_name": "iqn.2026-11.org.example:gw-node%d" % group}
    d.update(FAST)
    d.update(extra)
    return d


def pr_update(gw, params, check=True):
    return gw.tgtadm("--op", "update", "--mode", "logicalunit", "--tid",
                     "1", "--lun", "1", "--params", params, check=check)


def san_holder(net):
    """The SAN's READ RESERVATION, asked by a third initiator: the
    holder's key, or None."""
    r = scsicdb(net, REMOTE_URL, READ_RESERVATION, alloc=1024)
    b = r["bytes"]
    if len(b) < 8 or int.from_bytes(b[4:8], "big") == 0:
        return None
    return int.from_bytes(b[8:16], "big")


def clean(c):
    """Take the unit attentions a state change raised."""
    assert c.do("clearua lun=1")["status"] == "GOOD"


def assert_not_ready(res):
    assert res["status"] == "CHECK_CONDITION", res
    assert res["sense_key"] == NOT_READY and res["asc"] == 0x04, res


@pytest.fixture
def pr_env(env, tmp_path):
    """The SAN, node A (group 1, active) and node B (group 2, standby)."""
    net, san, gw, image = env
    san.start(image)
    a = Gateway(net, tmp_path, name="node-a", port=3261)
    b = Gateway(net, tmp_path, name="node-b", port=3262)
    return net, san, a, b, image


def test_scsi_pr_handover_refusal_and_forced_takeover(pr_env):
    """Handover both ways, a second active node refused by the SAN's
    reservation, and force=1 preempting the other node's key."""
    net, san, a, b, image = pr_env
    a.start(lun=pr_lun(1, 2, "active"))
    assert wait_for(lambda: "active/optimized (ownership lock (persistent "
                    "reservation) of the store taken" in a.log(), S(10)), \
        a.log()
    b.start(lun=pr_lun(2, 1, "standby"))
    key_a = san_holder(net)
    assert key_a is not None and key_a & 0xffff == 1, hex(key_a or 0)
    assert "SCSI-3 persistent reservation of the store, key 0x%x" % key_a \
        in a.show()

    ca, cb = a.client("client-a"), b.client("client-b")
    assert_good(ca.do("write 0 8 0x11"))
    assert read_san(image, 0, 8) == b"\x11" * 8 * BS
    assert_not_ready(cb.do("write 8 8 0x99"))

    # a second active node: the SAN's reservation says no
    r = pr_update(b, "alua_state=active", check=False)
    assert r.returncode != 0
    # (the stock tgtadm prints only its own words; the reason is logged)
    assert "holds the store's persistent reservation" in b.log(), b.log()
    assert san_holder(net) == key_a
    assert "group 2 standby" in b.show()
    assert_good(ca.do("write 16 8 0x12"))

    # handover: A releases, B reserves
    pr_update(a, "alua_state=standby")
    assert san_holder(net) is None
    pr_update(b, "alua_state=active")
    key_b = san_holder(net)
    assert key_b is not None and key_b & 0xffff == 2 and key_b != key_a
    clean(cb)
    assert_good(cb.do("write 8 8 0x21"))
    assert read_san(image, 8, 8) == b"\x21" * 8 * BS
    clean(ca)
    assert_not_ready(ca.do("write 24 8 0x98"))
    assert read_san(image, 24, 8) == bytes(8 * BS)
    # and back
    pr_update(b, "alua_state=standby")
    pr_update(a, "alua_state=active")
    assert san_holder(net) == key_a
    clean(ca)
    assert_good(ca.do("read 8 8 expect 0x21"))
    assert_good(ca.do("write 32 8 0x13"))

    # forced takeover while A is alive: B preempts A's key
    pr_update(b, "alua_state=active,force=1")
    assert san_holder(net) == key_b
    assert "preempted" in b.log()
    clean(cb)
    assert_good(cb.do("read 32 8 expect 0x13"))
    assert_good(cb.do("write 40 8 0x22"))
    # A learns it from the SAN (its watchdog's READ RESERVATION, or its
    # own I/O refused) and goes standby without anyone telling it
    assert wait_for(lambda: "group 1 standby" in a.show(), S(10)), a.show()
    assert "now standby" in a.log()
    for c in (ca, cb):
        c.close()
    a.stop()
    b.stop()


def test_scsi_pr_fenced_node_writes_refused_by_san(pr_env):
    """The old node does not know yet that it was preempted (its path to
    the SAN is cut while B takes over) and sends a write: the SAN answers
    RESERVATION CONFLICT, the write does not land, and the old node goes
    standby at once and says why - it is not held as a retryable error."""
    net, san, a, b, image = pr_env
    # A reaches the SAN over a second link of its own, which the test
    # cuts; B keeps the first
    dev_g, dev_s = net.gw_dev + "x", net.san_dev + "x"
    sh("ip", "link", "add", dev_g, "netns", net.gw, "type", "veth", "peer",
       "name", dev_s, "netns", net.san)
    for ns, dev, addr in ((net.gw, dev_g, GW2_ADDR), (net.san, dev_s,
                                                       SAN2_ADDR)):
        sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
    san.tgtadm("--op", "new", "--mode", "portal", "--param",
               "portal=%s:%d" % (SAN2_ADDR, SAN_PORT))
    url_a = "iscsi://%s:%d/%s/1" % (SAN2_ADDR, SAN_PORT, SAN_IQN)
    # a long remote_timeout: A keeps its session through the cut, so the
    # write it sent reaches the SAN on that same session afterwards
    a.start(lun=pr_lun(1, 2, "active", url=url_a, remote_timeout=30000,
                       werror="retry", rerror="retry"))
    b.start(lun=pr_lun(2, 1, "standby"))
    ca = a.client("client-a")
    assert_good(ca.do("write 0 8 0x31"))
    assert read_san(image, 0, 8) == b"\x31" * 8 * BS

    sh("ip", "-n", net.san, "link", "set", dev_s, "down")
    try:
        w = ca.issue("write 64 8 0x66")         # stuck on the cut link
        time.sleep(0.5)
        pr_update(b, "alua_state=active,force=1")
        key_b = san_holder(net)
        assert key_b is not None and key_b & 0xffff == 2
    finally:
        sh("ip", "-n", net.san, "link", "set", dev_s, "up")
    res = ca.get(w, timeout=60)
    # refused, answered as a path that is going away (the initiator
    # retries it on the other node), never held
    assert_not_ready(res)
    assert res["ms"] < S(40) * 1000, res
    assert wait_for(lambda: "group 1 standby" in a.show(), S(10)), a.show()
    # the SAN refused it: nothing landed, and A saw the conflict
    assert read_san(image, 64, 8) == bytes(8 * BS)
    assert "EBADE" in a.show() or "RESERVATION CONFLICT" in a.log(), \
        a.show() + a.log()
    assert "now standby" in a.log()
    assert ": hung: " not in a.log(), a.log()
    # B serves, A's data before the cut is there
    cb = b.client("client-b")
    assert_good(cb.do("read 0 8 expect 0x31"))
    assert_good(cb.do("write 64 8 0x77"))
    assert read_san(image, 64, 8) == b"\x77" * 8 * BS
    ca.close()
    cb.close()
    a.stop()
    b.stop()


# --------------------------------------------------------------------------
# CRC32C data digests (data_digest = "crc32c", backends/iscsi_dd.c): libiscsi
# offers DataDigest=None only, so the gateway relays its connection through
# a loopback relay of its own that negotiates CRC32C with the SAN and adds /
# checks the digests.  A python relay between the gateway and the SAN (a
# holdfastd, which supports data digests) watches the login, checks the
# digests on the wire, and can flip one bit in the data of one Data-In PDU.

import socket
import struct
import threading

from helpers import qemu_io
from rawiscsi import crc32c


class WireRelay:
    """gateway <-> this <-> SAN, on loopback.  Records the login text both
    ways and frames the PDUs after login (hd: header digests, dd: data
    digests, as the test configured the gateway); with dd it checks every
    data digest it sees.  arm() makes it flip one bit in the data segment
    of the next Data-In PDU of 4 KiB or more.  answer_none rewrites the
    SAN's DataDigest answer to None (a SAN that refuses data digests)."""

    def __init__(self, san_port, hd, dd, answer_none=False, redirect=None):
        self.san_port, self.hd, self.dd = san_port, hd, dd
        self.answer_none = answer_none
        self.redirect = redirect        # "ADDR:PORT,TPGT": redirect logins
        self.lsn = socket.socket()
        self.lsn.bind(("127.0.0.1", 0))
        self.lsn.listen(8)
        self.port = self.lsn.getsockname()[1]
        self.to_san_text, self.from_san_text = [], []
        self.armed = threading.Event()
        self.flipped = 0
        self.digests_checked = {"to_san": 0, "from_san": 0}
        self.bad_digests = 0
        self.socks = []
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stop = True
        for s in self.socks + [self.lsn]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.lsn.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.san_port))
            except OSError:
                c.close()
                continue
            self.socks += [c, s]
            st = {"ffp": False}
            threading.Thread(target=self._pump, args=(c, s, False, st),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, True, st),
                             daemon=True).start()

    @staticmethod
    def _exact(sock, n):
        b = b""
        while len(b) < n:
            x = sock.recv(n - len(b))
            if not x:
                raise OSError("closed")
            b += x
        return b

    def _pump(self, src, dst, from_san, st):
        try:
            while True:
                bhs = self._exact(src, 48)
                ffp = st["ffp"]
                ahs = bhs[4] * 4
                dsl = int.from_bytes(bhs[5:8], "big")
                dlen = dsl + (-dsl % 4)
                hdr = bhs + self._exact(src, ahs + (4 if ffp and self.hd
                                                    else 0))
                data = self._exact(src, dlen)
                dig = self._exact(src, 4) if ffp and self.dd and dsl else b""
                op = bhs[0] & 0x3F
                if dig:
                    ok = struct.pack("<I", crc32c(data)) == dig
                    self.bad_digests += not ok
                    k = "from_san" if from_san else "to_san"
                    self.digests_checked[k] += 1
                if not ffp and op in (0x03, 0x23):
                    text = data[:dsl].decode(errors="replace")
                    (self.from_san_text if from_san
                     else self.to_san_text).append(text)
                    if from_san and self.answer_none and \
                            "DataDigest=CRC32C" in text:
                        t = data[:dsl].replace(b"DataDigest=CRC32C",
                                               b"DataDigest=None")
                        bhs = bhs[:5] + len(t).to_bytes(3, "big") + bhs[8:]
                        hdr = bhs + hdr[48:]
                        data = t + b"\0" * (-len(t) % 4)
                    if from_san and self.redirect:
                        # Login Response, status 0101 (target moved
                        # temporarily) with the new address
                        t = b"TargetAddress=" + self.redirect.encode() + b"\0"
                        bhs = (bhs[:1] + b"\0" + bhs[2:5] +
                               len(t).to_bytes(3, "big") + bhs[8:36] +
                               b"\x01\x01" + bhs[38:])
                        hdr = bhs + hdr[48:]
                        data = t + b"\0" * (-len(t) % 4)
                    if from_san and bhs[36] == 0 and bhs[1] & 0x80 and \
                            bhs[1] & 3 == 3:
                        st["ffp"] = True
                if ffp and from_san and op == 0x25 and dsl >= 4096 and \
                        self.armed.is_set():
                    self.armed.clear()
                    data = bytearray(data)
                    data[dsl // 2] ^= 0x10
                    data = bytes(data)
                    self.flipped += 1
                dst.sendall(hdr + data + dig)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def backend_state(d, lun=1):
    """(data_digest, digest_errors) of the gateway LUN, from show, and
    checked against holdfastadm's JSON (backend_state fields)."""
    m = re.search(r"data_digest=(\S+) digest_errors=(\d+)", show_text(d))
    if not m:
        return (None, None)
    adm = build_dir() / "holdfastadm"
    out = subprocess.run([str(adm), "-C", str(d.ctl_port), "--json", "-o",
                          "show", "-m", "target"], env=d.env, timeout=30,
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    st = json.loads(out)["targets"][0]["luns"][lun]["backend_state"]
    assert st.get("data_digest") and "digest_errors" in st, st
    return (st["data_digest"], int(st["digest_errors"]))


@pytest.fixture
def dd_relay():
    relays = []

    def make(*a, **kw):
        r = WireRelay(*a, **kw)
        relays.append(r)
        return r
    yield make
    for r in relays:
        r.close()


def dd_pair(holdfast, relay_factory, hd, dd, **kw):
    """A holdfastd SAN, a WireRelay in front of it, and a gateway whose
    LUN 1 is the SAN's LUN 1 through the relay."""
    san = holdfast(luns=[{"lun": 1, "backend": "file", "path": "san.img",
                          "size": "32M", "block_size": 512}], iqn=SAN_IQN)
    san.require_holdfast("holdfast is the SAN here")
    relay = relay_factory(san.port, hd=hd, dd=dd, **kw)
    gl = {"lun": 1, "backend": "iscsi",
          "path": "iscsi://127.0.0.1:%d/%s/1" % (relay.port, SAN_IQN),
          "header_digest": "crc32c" if hd else "none",
          "data_digest": "crc32c" if dd else "none",
          "rerror": "retry", "werror": "retry", "retry_interval": 200}
    gl.update(FAST)
    return san, relay, holdfast(luns=[gl], iqn=GW_IQN)


@pytest.mark.parametrize("hd", [True, False], ids=["hd-crc32c", "hd-none"])
def test_data_digest_negotiated_and_data_lands(holdfast, dd_relay, hd):
    """data_digest = crc32c: the login the SAN sees offers
    DataDigest=CRC32C and the SAN answers CRC32C (libiscsi alone offers
    None: without the relay this fails); every data segment on the wire
    after login carries a correct CRC32C both ways (the SAN, a holdfastd,
    would drop the connection on a wrong one); qemu-io's writes land byte
    for byte on the SAN's file and read back through the gateway."""
    san, relay, gw = dd_pair(holdfast, dd_relay, hd=hd, dd=True)
    url = gw.url(1)
    qemu_io(url, "write -P 0x5a 0 1M", "write -P 0xa5 3M 256k",
            "read -P 0x5a 0 1M", "read -P 0xa5 3M 256k")
    data = san.path("san.img").read_bytes()
    assert data[:1 << 20] == b"\x5a" * (1 << 20)
    assert data[3 << 20:(3 << 20) + (256 << 10)] == b"\xa5" * (256 << 10)
    sent = "".join(relay.to_san_text)
    answered = "".join(relay.from_san_text)
    assert "DataDigest=CRC32C" in sent and "DataDigest=None" not in sent, \
        relay.to_san_text
    assert "DataDigest=CRC32C" in answered, relay.from_san_text
    assert ("HeaderDigest=CRC32C" in answered) == hd, relay.from_san_text
    assert relay.digests_checked["to_san"] >= 4, relay.digests_checked
    assert relay.digests_checked["from_san"] >= 4, relay.digests_checked
    assert relay.bad_digests == 0
    assert backend_state(gw) == ("crc32c", 0), show_text(gw)


@pytest.mark.parametrize("dd", [True, False], ids=["crc32c", "none-control"])
def test_data_digest_error_reconnects_and_read_is_right(holdfast, dd_relay,
                                                         dd):
    """One bit flipped in the data of one Data-In PDU between the SAN and
    the gateway.  With data_digest = crc32c the gateway's relay sees the
    digest mismatch, counts it, drops the connection; the gateway
    reconnects and the hang engine (retry) resends the READ: the client
    gets GOOD and the right data, digest_errors is 1.  The control, with
    data_digest = none: the same flip reaches the client as wrong data."""
    san, relay, gw = dd_pair(holdfast, dd_relay, hd=False, dd=dd)
    c = HangClient(gw.url(1))
    lba, p = 2048, 0x3c
    assert_good(c.do("write %d 64 0x%02x" % (lba, p)))
    assert read_san(san.path("san.img"), lba, 64) == bytes([p]) * 64 * BS
    relay.armed.set()
    r = c.do("read %d 64 expect 0x%02x" % (lba, p))
    assert relay.flipped == 1
    assert_good(r)
    if not dd:
        assert r.get("match") is False, r       # the control
        c.close()
        return
    assert r.get("match") is True, r
    state, errors = backend_state(gw)
    assert errors == 1, show_text(gw)
    assert "data digest error" in gw.log_text(), gw.log_text()[-3000:]
    wait_for(lambda: backend_state(gw)[0] == "crc32c", S(10))
    assert "reconnects 1" in show_text(gw), show_text(gw)
    assert_good(c.do("read %d 64 expect 0x%02x" % (lba, p)))
    c.close()


@pytest.mark.parametrize("how", ["answers-none", "redirects"])
def test_san_refusing_data_digest_is_a_clear_error(holdfast, dd_relay, how):
    """A SAN that answers DataDigest=None to CRC32C: crc32c is required,
    so the gateway does not log in: the LUN (started with its size) says
    why on show and in the log, and keeps trying.  A SAN that redirects
    the login (libiscsi would follow TargetAddress around the relay) is
    refused the same way, naming the address."""
    san = holdfast(luns=[{"lun": 1, "backend": "file", "path": "san.img",
                          "size": "32M"}], iqn=SAN_IQN)
    san.require_holdfast("holdfast is the SAN here")
    relay = dd_relay(san.port, hd=False, dd=True,
                     answer_none=how == "answers-none",
                     redirect="192.0.2.77:3260,1" if how == "redirects"
                     else None)
    gl = {"lun": 1, "backend": "iscsi", "size": SAN_SIZE,
          "path": "iscsi://127.0.0.1:%d/%s/1" % (relay.port, SAN_IQN),
          "data_digest": "crc32c"}
    gl.update(FAST)
    gw = holdfast(luns=[gl], iqn=GW_IQN)
    if how == "redirects":
        why = "the SAN redirects the login to 192.0.2.77:3260,1: the " \
            "data digest relay does not follow redirects"
    else:
        why = "the SAN answered DataDigest=None to DataDigest=CRC32C " \
            "(data_digest = crc32c requires it)"
    wait_for(lambda: why in show_text(gw), S(15))
    text = show_text(gw)
    assert "crc32c-not-logged-in" in text, text
    assert why in text, text
    assert why in gw.log_text()


def test_data_digest_with_tgtd_refused_then_negotiated_and_outage(env,
                                                                   tmp_path):
    """tgtd as the SAN (in its namespace, over the veth pair).  Out of
    the box it answers DataDigest=None: a gateway LUN with data_digest =
    crc32c is refused with that reason (crc32c is required).  With the
    target's DataDigest set to CRC32C,None the gateway logs in through the
    relay, via the second portal of its list (the URL's own port refuses
    connections), writes land on the SAN's file, a 4 s link outage under
    a stream of writes and reads with retry gives no error and every write
    lands, and show says data_digest=crc32c with no digest errors."""
    net, san, gw, image = env
    san.start(image)
    lun = {"path": "iscsi://%s:3999/%s/1" % (SAN_ADDR, SAN_IQN),
           "portals": ["%s:%d" % (SAN_ADDR, SAN_PORT)],
           "data_digest": "crc32c", "header_digest": "crc32c",
           "rerror": "retry", "werror": "retry", "retry_interval": 200}
    g = Gateway(net, tmp_path / "refused")
    g.tmp.mkdir()
    log = g.start(lun, expect_fail=True)
    assert log is not None, "served anyway\n" + g.log()
    assert "the SAN answered DataDigest=None to DataDigest=CRC32C " \
        "(data_digest = crc32c requires it)" in log, log
    san.tgtadm("--op", "update", "--mode", "target", "--tid", "1",
               "--name", "DataDigest", "--value", "CRC32C,None")
    san.tgtadm("--op", "update", "--mode", "target", "--tid", "1",
               "--name", "HeaderDigest", "--value", "CRC32C,None")
    gw.start(lun)
    text = gw.show()
    assert "via %s:%d: connected" % (SAN_ADDR, SAN_PORT) in text, text
    assert "data_digest=crc32c digest_errors=0" in text, text
    c = gw.client()
    st = Stream(c)
    st.run_for(1.0)
    net.link(False)
    st.run_for(4.0)
    net.link(True)
    st.run_for(1.5)
    check_all_good_and_landed(st, image)
    c.close()
    text = gw.show()
    assert "data_digest=crc32c digest_errors=0" in text, text
    assert "reconnects 0" not in text, text
    gw.stop()
