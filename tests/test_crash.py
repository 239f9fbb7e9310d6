"""Crash consistency (issue 15): kill -9 of holdfastd never loses a write
it acknowledged as durable, and never leaves its own persistent state
(the APTPL file, a saved targets.conf) torn.

A write is acknowledged as durable by GOOD status of a WRITE with FUA, or
by GOOD status of a SYNCHRONIZE CACHE after it (build/tools/ackwriter logs
both).  After the kill, every acknowledged block must hold that write or a
later one to the same block, whole.

What kill -9 proves and what it does not: the daemon's process dies, the
kernel's page cache survives.  A daemon that acknowledged before its
write reached the kernel (or the FUSE layer under a hung LUN) fails these
tests; a daemon that never fsyncs a buffered LUN does not.  The power-loss
model (a layer that drops unflushed writes) is tests/test_powerloss.py.
"""

import os
import random
import re
import signal
import struct
import subprocess
import threading
import time

import pytest

from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import (build_dir, free_tcp_port, port_accepts, run, tscale,
                     wait_for)

BS = 512
REGION = 2048           # blocks the writer overwrites at random
RECORD = struct.Struct("<8sQQQ")


class AckWriter:
    """build/tools/ackwriter in the background, its lines collected."""

    def __init__(self, url, mode, batch=8):
        binary = build_dir() / "tools" / "ackwriter"
        if not binary.exists():
            pytest.fail("%s not built (run make)" % binary)
        self.proc = subprocess.Popen(
            [str(binary), "-m", mode, "-B", str(batch), "-r", str(REGION),
             "-b", str(BS), url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.acked = {}         # lba -> last acknowledged seq
        self.nacks = 0
        self.max_sent = 0
        self.lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            w = line.split()
            with self.lock:
                self.lines.append(line.rstrip())
                if w[:1] == ["ack"]:
                    self.acked[int(w[2])] = int(w[1])
                    self.nacks += 1
                elif w[:1] == ["sent"]:
                    self.max_sent = int(w[1])

    def acks(self):
        with self.lock:
            return self.nacks

    def finish(self):
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)
        return self.acked, self.max_sent


def check_blocks(path, acked, max_sent):
    """Every acknowledged block holds its write or a later one, whole."""
    bad = []
    with open(str(path), "rb") as f:
        for lba, seq in sorted(acked.items()):
            f.seek(lba * BS)
            blk = f.read(BS)
            recs = {RECORD.unpack_from(blk, o) for o in range(0, BS, 32)}
            if len(recs) != 1:
                bad.append("lba %d torn: %d different records" %
                           (lba, len(recs)))
                continue
            magic, got, got_lba, inv = recs.pop()
            if magic != b"HFACKREC" or inv != got ^ 0xFFFFFFFFFFFFFFFF or \
                    got_lba != lba:
                bad.append("lba %d: not a write of this block (%r)" %
                           (lba, blk[:32]))
            elif got < seq:
                bad.append("lba %d: holds write %d, write %d was "
                           "acknowledged" % (lba, got, seq))
            elif got > max_sent:
                bad.append("lba %d: write %d was never sent" % (lba, got))
    assert not bad, "%d of %d acknowledged blocks wrong:\n%s" % (
        len(bad), len(acked), "\n".join(bad[:20]))


def kill9(d):
    d.ok_exit = {0, -9}
    os.kill(d.proc.pid, signal.SIGKILL)
    assert d.wait(15) == -9


def crash_round(d, backing, mode, kill_after):
    w = AckWriter(d.url(1), mode)
    assert wait_for(lambda: w.acks() >= kill_after or
                    w.proc.poll() is not None, 60 * tscale()), \
        "writer too slow: %d acks" % w.acks()
    assert w.proc.poll() is None, "writer ended early:\n%s" % \
        "\n".join(w.lines[-10:])
    kill9(d)
    acked, max_sent = w.finish()
    assert acked, "nothing acknowledged"
    check_blocks(backing, acked, max_sent)
    return len(acked)


@pytest.mark.parametrize("lun_mode", ["direct", "sync"])
@pytest.mark.parametrize("mode", ["fua", "sync"])
def test_kill9_keeps_acknowledged_writes(holdfast, tmp_path, lun_mode,
                                         mode):
    """Three kills at random points of a write stream, restarting on the
    same backing file each time; every acknowledged write survives."""
    lun = {"lun": 1, "backend": "file", "path": "disk1.img", "size": "4M",
           "block_size": BS}
    if lun_mode == "direct":
        lun["direct"] = True
    else:
        lun.update(direct=False, sync=True)
    d = holdfast(luns=[lun])
    d.require_holdfast("kill -9 of holdfastd")
    rnd = random.Random(0x15)
    for _ in range(3):
        crash_round(d, d.path("disk1.img"), mode, rnd.randint(50, 400))
        d.start()                       # same file, fresh ports
    # the restarted daemon serves the blocks the file holds
    w = AckWriter(d.url(1), mode)
    assert wait_for(lambda: w.acks() >= 8, 30 * tscale())
    w.proc.terminate()
    w.finish()


def test_kill9_while_hung_lun_recovers(fusefs, holdfast):  # noqa: F811
    """The LUN sits on a FUSE layer whose writes fail: the stream is held
    (hang-on-error), then the layer heals and the held and queued writes
    are resubmitted; holdfastd is killed at random points of that
    recovery.  Writes acknowledged before, during or after the hang are
    all on disk."""
    lun = {"lun": 1, "backend": "file", "path": str(fusefs.path("disk1.img")),
           "size": "4M", "block_size": BS, "rerror": "retry",
           "werror": "retry", "retry_interval": 100, "retry_timeout": 0}
    d = holdfast(luns=[lun])
    d.require_holdfast("hang-on-error is holdfast's own")
    rnd = random.Random(0x1515)
    for mode in ("fua", "sync", "fua"):
        w = AckWriter(d.url(1), mode, batch=4)
        assert wait_for(lambda: w.acks() >= 100, 60 * tscale())
        fusefs.set("match=disk1.img write=EIO")
        before = w.acks()
        time.sleep(0.5)
        held = w.acks()
        # held: at most what was already in flight is acknowledged
        assert held - before <= 8, "writes acknowledged while failing"
        fusefs.ok()
        time.sleep(rnd.uniform(0.0, 0.3))   # the retry interval is 100 ms
        kill9(d)
        acked, max_sent = w.finish()
        check_blocks(fusefs.backing("disk1.img"), acked, max_sent)
        d.start()


# --------------------------------------------------------------------------
# holdfast's own persistent state


PR_LINE = re.compile(r"^reg (0x[0-9a-f]{16}) ")


def parse_pr_file(path):
    """The keys registered in an APTPL file, or raise on a torn file."""
    lines = path.read_text().splitlines()
    assert lines and lines[0] == "holdfast-pr 1", "bad magic: %r" % lines
    assert len(lines) >= 2 and re.match(r"^generation \d+$", lines[1]), \
        lines
    keys = []
    for ln in lines[2:]:
        if ln.startswith("reservation "):
            continue
        m = PR_LINE.match(ln)
        assert m, "unparsable line %r" % ln
        keys.append(int(m.group(1), 16))
    return keys


def test_kill9_never_tears_the_aptpl_file(holdfast, tmp_path):
    """REGISTER AND IGNORE EXISTING KEY with APTPL, key 1, 2, 3, ... one
    at a time; kill -9 at random points.  The file always holds exactly
    one registration: the last acknowledged key or the one in flight."""
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "1M", "block_size": BS}])
    d.require_holdfast("holdfast's APTPL file")
    pr = d.path("disk1.img.pr")
    rnd = random.Random(0xa9)
    key = 0
    for _ in range(8):
        script = "clearua; wait; " + "; ".join(
            "k%d: prout register-aptpl %d; wait" % (k, k)
            for k in range(key + 1, key + 3001))
        # one I_T nexus in every round (same name and ISID): its one
        # registration is replaced, never added to
        c = subprocess.Popen([str(build_dir() / "tools" / "hangclient"),
                              "-I", "0x1234", d.url(1), script], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        time.sleep(rnd.uniform(0.1, 0.6))
        kill9(d)
        out = c.communicate(timeout=30)[0]
        acked = [int(k) for k in re.findall(
            r'"id":\s*"k(\d+)"[^}]*"status":\s*"GOOD"', out)]
        assert acked, "no registration acknowledged:\n%s" % out[-2000:]
        last = max(acked)
        keys = parse_pr_file(pr)
        assert len(keys) == 1 and last <= keys[0] <= last + 1, \
            "APTPL file holds %s, last acknowledged key %d" % (keys, last)
        log = d.log_text()
        assert "not a reservation state file" not in log, log[-3000:]
        if key:
            # the run just killed read the file the previous one left
            assert "restored 1 registration(s)" in log.split("###")[-1], \
                log[-3000:]
        key = keys[0]
        d.start()


def test_kill9_never_tears_a_saved_config(holdfast, tmp_path):
    """New CHAP accounts one at a time, each followed by a save of the
    running configuration to targets.conf (holdfastadm --save); kill -9 at
    random points.  The
    file always loads, with the accounts of the last acknowledged save or
    the one in flight."""
    d = holdfast(luns=[{"lun": 1, "backend": "null", "size": "1M"}])
    d.require_holdfast("holdfast's config save")
    rnd = random.Random(0x5a7e)
    n = 0
    for _ in range(4):
        done = []
        stop = threading.Event()

        def saver():
            i = n
            while not stop.is_set():
                i += 1
                r1 = d.tgtadm("--lld", "iscsi", "--op", "new", "--mode",
                              "account", "--user", "user%d" % i,
                              "--password", "secret-%08d" % i, check=False)
                # holdfastadm, not tgtadm: the stock tgtadm exits 0 when
                # the daemon closes the socket without a reply ("tgtd
                # closed the socket"), which a kill mid-save does
                r2 = run([str(build_dir() / "holdfastadm"), "-C",
                          str(d.ctl_port), "--save"], check=False,
                         env=d.env, timeout=30)
                if r1.returncode or r2.returncode:
                    return
                done.append(i)
        t = threading.Thread(target=saver)
        t.start()
        time.sleep(rnd.uniform(0.3, 1.5))
        kill9(d)
        stop.set()
        t.join(60)
        assert done, "no save acknowledged"
        text = d.conf_path.read_text()
        users = [int(u) for u in re.findall(r'user = "user(\d+)"', text)]
        assert users == list(range(1, len(users) + 1)), users
        assert done[-1] <= len(users) <= done[-1] + 1, \
            "saved file has %d accounts, last acknowledged save %d" % (
                len(users), done[-1])
        n = len(users)
        # the file loads: holdfastd serves it (on a fresh port)
        port = free_tcp_port()
        cfg = d.tmp / "reload.conf"
        cfg.write_text(re.sub(r'"127\.0\.0\.1:\d+"', '"127.0.0.1:%d"' % port,
                              text))
        p = subprocess.Popen([str(build_dir() / "holdfastd"), "-f", "-c",
                              str(cfg), "-C", str(d.ctl_port + 1)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=d.env)
        try:
            assert wait_for(lambda: p.poll() is not None or
                            port_accepts(port), 15 * tscale()), \
                "saved config not served"
            assert p.poll() is None, p.communicate()[0]
        finally:
            p.terminate()
            p.wait(15)
        # start the original daemon again on the saved file's content
        d.conf_text = re.sub(r'"127\.0\.0\.1:\d+"', '"127.0.0.1:@PORT@"',
                             text)
        d.conf_settings = None
        d.start()
