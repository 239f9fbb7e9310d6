"""Crash consistency (issue 15): kill -9 of holdfastd never loses a write
it acknowledged as durable, and never leaves its own persistent state
(the APTPL file, a saved targets.conf, the persistent bitmap sidecar, a
mirror job's marker) torn, nor temporary files behind but the one fixed
name the next save replaces.

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

import ctypes
import json
import os
import random
import re
import select
import signal
import struct
import subprocess
import threading
import time

import pytest

from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import (IscsiSession, build_dir, free_tcp_port, port_accepts,
                     run, tscale, wait_for)
from rawiscsi import crc32c

BS = 512
REGION = 2048           # blocks the writer overwrites at random
RECORD = struct.Struct("<8sQQQ")


class AckWriter:
    """build/tools/ackwriter in the background, its lines collected."""

    def __init__(self, url, mode, batch=8, region=REGION, bs=BS, seed=None):
        binary = build_dir() / "tools" / "ackwriter"
        if not binary.exists():
            pytest.fail("%s not built (run make)" % binary)
        argv = [str(binary), "-m", mode, "-B", str(batch), "-r", str(region),
                "-b", str(bs)]
        if seed is not None:
            argv += ["-s", str(seed)]
        self.proc = subprocess.Popen(
            argv + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.acked = {}         # lba -> last acknowledged seq
        self.nacks = 0
        self.max_sent = 0
        self.sent_lbas = set()
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
                    self.sent_lbas.add(int(w[2]))

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


class DirWatch:
    """inotify on a directory: count creations, writes, closes and
    renames of the files whose names start with prefix."""
    IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100

    def __init__(self, path, prefix):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        mask = self.IN_MODIFY | self.IN_CLOSE_WRITE | self.IN_MOVED_TO | \
            self.IN_CREATE
        assert self.libc.inotify_add_watch(self.fd, str(path).encode(),
                                           mask) >= 0
        self.prefix = prefix.encode()

    def wait_events(self, count, timeout, only=0):
        """Return once count events (of the kinds in mask only, if set)
        were seen, or at timeout."""
        end = time.monotonic() + timeout
        while count > 0:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            pos = 0
            while pos < len(data):
                _, mask, _, nlen = struct.unpack_from("iIII", data, pos)
                name = data[pos + 16:pos + 16 + nlen].rstrip(b"\0")
                pos += 16 + nlen
                if name.startswith(self.prefix) and (not only or
                                                     mask & only):
                    count -= 1

    def close(self):
        os.close(self.fd)


def leftovers(directory, names):
    """A file is replaced by writing NAME.tmp and renaming it over NAME:
    a kill half-way may leave that one temporary file (the next save
    replaces it), never another."""
    extra = sorted(p.name for p in directory.iterdir() for n in names
                   if p.name.startswith(n) and p.name not in (n, n + ".tmp"))
    assert not extra, "left behind: %s" % extra
    return [n for n in names if (directory / (n + ".tmp")).exists()]


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
        lines = []
        reader = threading.Thread(
            target=lambda: [lines.append(ln) for ln in c.stdout], daemon=True)
        reader.start()
        # the random point is counted from the first acknowledged
        # registration: a loaded machine may take longer than that to log in
        assert wait_for(lambda: c.poll() is not None or any(
            '"GOOD"' in ln and '"k' in ln for ln in lines[:]),
            30 * tscale()), "no registration within 30 s"
        time.sleep(rnd.uniform(0.0, 0.5))
        kill9(d)
        c.wait(30)
        reader.join(30)
        out = "".join(lines)
        acked = [int(k) for k in re.findall(
            r'"id":\s*"k(\d+)"[^}]*"status":\s*"GOOD"', out)]
        assert acked, "no registration acknowledged:\n%s" % out[-2000:]
        leftovers(d.tmp, {"disk1.img.pr"})
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
    for rnd_no in range(6):
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
        assert wait_for(lambda: done or not t.is_alive(), 30 * tscale())
        if rnd_no % 2:
            # right after a write to the temporary file, before its rename
            watch = DirWatch(d.tmp, "targets.conf.")
            watch.wait_events(rnd.randint(1, 3), 10 * tscale())
            watch.close()
        else:
            time.sleep(rnd.uniform(0.0, 1.2))
        kill9(d)
        stop.set()
        t.join(60)
        assert done, "no save acknowledged"
        leftovers(d.tmp, {"targets.conf"})
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


# --------------------------------------------------------------------------
# the bitmap sidecar (format: target/cbt/cbt_sidecar.h)

SC_BS = 4096            # the LUN's block size and every bitmap's chunk
SC_SIZE = 512 << 20     # 131072 chunks: 16 KiB of bits per bitmap
SC_A = 32768            # ackwriter dirties chunks [0, SC_A)
SC_B_LO, SC_B_HI = 65536, 131072    # the model writer's chunks
SC_MAX_EXTRA = 5        # bitmaps besides p0
SC_FLAG_ENABLED, SC_FLAG_INCONSISTENT = 1, 2


def parse_sidecar(path):
    """{name: (enabled, set of dirty chunks)} of a sidecar, in file
    order; an AssertionError for anything a whole file of the current
    format cannot hold (torn, cut, poisoned, flagged inconsistent)."""
    buf = path.read_bytes()
    assert len(buf) >= 36, "sidecar of %d bytes" % len(buf)
    assert buf[:8] == b"HFCBTMAP", "magic %r" % buf[:8]
    ver, hlen, size, n, rsvd = struct.unpack_from(">IIQII", buf, 8)
    assert (ver, hlen, rsvd) == (1, 32, 0), (ver, hlen, rsvd)
    crc, = struct.unpack_from(">I", buf, len(buf) - 4)
    assert crc == crc32c(buf[8:-4]), "checksum mismatch (%d bytes)" % len(buf)
    assert size == SC_SIZE, size
    out = {}
    pos = 32
    for _ in range(n):
        nl, flags, gran, nchunks = struct.unpack_from(">HHIQ", buf, pos)
        pos += 16
        name = buf[pos:pos + nl].decode()
        pos += nl
        assert gran == SC_BS and nchunks == SC_SIZE // SC_BS, (name, gran)
        assert not flags & SC_FLAG_INCONSISTENT, "%s inconsistent" % name
        bits = buf[pos:pos + nchunks // 8]
        pos += nchunks // 8
        chunks = set()
        for i, byte in enumerate(bits):
            while byte:
                low = byte & -byte
                chunks.add(i * 8 + low.bit_length() - 1)
                byte ^= low
        assert name not in out, "duplicate %s" % name
        out[name] = (bool(flags & SC_FLAG_ENABLED), chunks)
    assert pos == len(buf) - 4, "trailing bytes"
    return out


def chunk_extents(chunks):
    out = []
    for c in sorted(chunks):
        if out and out[-1]["offset"] + out[-1]["length"] == c * SC_BS:
            out[-1]["length"] += SC_BS
        else:
            out.append({"offset": c * SC_BS, "length": SC_BS})
    return out


def adm(d, *args, check=True, timeout=30):
    return run([str(build_dir() / "holdfastadm"), "-C", str(d.ctl_port)] +
               [str(a) for a in args], check=check, env=d.env,
               timeout=timeout)


def apply_op(state, op):
    """The bitmaps of the model writer's region after op.  state: {name:
    {"en": bool, "must": chunks that must be dirty, "may": chunks that
    may be}}; a copy is returned."""
    st = {n: {"en": v["en"], "must": set(v["must"]), "may": set(v["may"])}
          for n, v in state.items()}
    kind = op[0]
    if kind == "write":
        for v in st.values():
            if v["en"]:
                v["must"].add(op[1])
    elif kind == "add":
        st[op[1]] = {"en": op[2], "must": set(), "may": set()}
    elif kind == "remove":
        del st[op[1]]
    elif kind == "clear":
        st[op[1]]["must"] = set()
        st[op[1]]["may"] = set()
    elif kind == "enable":
        st[op[1]]["en"] = op[2]
    elif kind == "merge":
        st[op[1]]["must"] |= st[op[2]]["must"]
        st[op[1]]["may"] |= st[op[2]]["may"]
    return st


def check_version(state, disk):
    """None when the sidecar's bitmaps are state's (in the model writer's
    region), else why not."""
    if set(state) != set(disk):
        return "bitmaps %s, expected %s" % (sorted(disk), sorted(state))
    for n, v in state.items():
        en, chunks = disk[n]
        b = {c for c in chunks if SC_B_LO <= c < SC_B_HI}
        if en != v["en"]:
            return "%s enabled=%s, expected %s" % (n, en, v["en"])
        if not v["must"] <= b:
            return "%s misses %d acknowledged chunks (%s...)" % (
                n, len(v["must"] - b), sorted(v["must"] - b)[:5])
        if not b <= v["may"]:
            return "%s has %d chunks never written since its last " \
                "clear (%s...)" % (n, len(b - v["may"]),
                                   sorted(b - v["may"])[:5])
    return None


class ModelWriter(threading.Thread):
    """One thread, one thing at a time: a 4 KiB write to a random chunk
    of [SC_B_LO, SC_B_HI), or a bitmap change through holdfastadm (new
    persistent, delete, clear, enable, disable, merge).  Every step that
    got its answer is applied to the model; the one under way when the
    daemon died is left in self.inflight."""

    def __init__(self, d, state, rnd, serial, killing):
        super().__init__(daemon=True)
        self.d, self.state, self.rnd = d, state, rnd
        self.serial = serial        # next name number (never reused)
        self.killing = killing
        self.inflight = None
        self.error = None
        self.counts = {}

    def step_op(self):
        rnd, st = self.rnd, self.state
        others = [n for n in st if n != "p0"]
        r = rnd.random()
        if r < 0.6 or not others and r < 0.8:
            c = rnd.randrange(SC_B_LO, SC_B_HI)
            return ("write", c)
        if not others or (len(others) < SC_MAX_EXTRA and r < 0.68):
            self.serial += 1
            return ("add", "t%d" % self.serial, rnd.random() < 0.8)
        n = rnd.choice(others)
        if r < 0.74:
            return ("remove", n)
        if r < 0.84:
            return ("clear", n)
        if r < 0.92:
            return ("enable", n, not st[n]["en"])
        return ("merge", n, rnd.choice([x for x in st if x != n]))

    def issue(self, op, sess):
        kind = op[0]
        if kind == "write":
            data = struct.pack("<QQ", op[1], self.serial) * (SC_BS // 16)
            r = sess.write10(op[1], data, SC_BS)
            return r.ok, repr(r)
        base = ["--tid", 1, "--lun", 1, "--name", op[1]]
        if kind == "add":
            args = ["--op", "new", "--mode", "bitmap"] + base + [
                "--params", "granularity=%d,persistent=1,enabled=%d" %
                (SC_BS, op[2])]
        elif kind == "remove":
            args = ["--op", "delete", "--mode", "bitmap"] + base
        else:
            action = {"clear": "action=clear",
                      "enable": "action=%s" % ("enable" if kind == "enable"
                                               and op[-1] else "disable"),
                      "merge": "action=merge,source=%s" % op[-1]}[kind]
            args = ["--op", "update", "--mode", "bitmap"] + base + [
                "--params", action]
        r = adm(self.d, *args, check=False)
        return r.returncode == 0, r.stdout + r.stderr

    def run(self):
        try:
            self.steps()
        except Exception as e:    # reported by the test
            if not self.killing.is_set():
                self.error = "%s: %s" % (type(e).__name__, e)

    def steps(self):
        try:
            sess = IscsiSession(self.d.portal, self.d.iqn, 1)
        except AssertionError as e:
            if not self.killing.is_set():
                self.error = str(e)
            return
        try:
            for _ in range(4):      # the power-on unit attention
                if sess.test_unit_ready().ok:
                    break
            while True:
                op = self.step_op()
                if op[0] == "write":    # may be dirty from now on
                    for v in self.state.values():
                        if v["en"]:
                            v["may"].add(op[1])
                self.inflight = op
                ok, out = self.issue(op, sess)
                if not ok:
                    if not self.killing.is_set():
                        self.error = "%r failed: %s" % (op, out)
                    return
                self.state = apply_op(self.state, op) if op[0] != "write" \
                    else self.state
                if op[0] == "write":
                    for v in self.state.values():
                        if v["en"]:
                            v["must"].add(op[1])
                self.inflight = None
                self.counts[op[0]] = self.counts.get(op[0], 0) + 1
        finally:
            sess.close(logout=False)


def test_kill9_never_tears_the_bitmap_sidecar(holdfast):
    """Persistent bitmaps changing all the time: ackwriter's stream of
    writes to fresh chunks (each makes the flusher rewrite the sidecar
    before the write is acknowledged) and, at once, a model writer that
    writes to another region and adds, removes, clears, enables, disables
    and merges bitmaps, one thing at a time.  kill -9 at random points:
    a random time, or the k-th write, close or rename of the sidecar's
    files.  Each time the sidecar on disk parses whole (magic, lengths,
    CRC32C), holds exactly the bitmaps (names, enabled) of the last
    acknowledged change or the one in flight, every chunk of every
    acknowledged write (p0 records from the start and is never cleared:
    ackwriter's acknowledged chunks are all in it) and no chunk that was
    not written; the restarted daemon serves the same bitmaps bit for bit;
    no temporary file is left but the one fixed name the next save
    replaces.  HOLDFAST_TORN_ROUNDS sets the number of kills."""
    rounds = int(os.environ.get("HOLDFAST_TORN_ROUNDS", "30"))
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "512M", "block_size": SC_BS}])
    d.require_holdfast("holdfast's bitmap sidecar")
    side = d.path("%s.lun1.bitmaps" % d.iqn)
    tmp = side.parent / (side.name + ".tmp")
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "p0", "--params", "granularity=%d,persistent=1" % SC_BS)
    state = {"p0": {"en": True, "must": set(), "may": set()}}
    a_sent, a_acked = set(), set()
    rnd = random.Random(int(os.environ.get("HOLDFAST_TORN_SEED", "0")) or
                        None)
    serial = 0
    stats = {"mid_save": 0, "mgmt_inflight": 0, "write_inflight": 0,
             "acks": 0, "ops": {}}
    t0 = time.monotonic()
    for rnd_no in range(rounds):
        stray = {p.name for p in side.parent.iterdir()
                 if not p.name.startswith("tgtd.sock")}
        killing = threading.Event()
        w = AckWriter(d.url(1), "plain", region=SC_A, bs=SC_BS,
                      seed=rnd.randrange(1, 1 << 62))
        m = ModelWriter(d, state, rnd, serial, killing)
        m.start()
        watch = DirWatch(side.parent, side.name)
        try:
            if rnd_no % 2:
                watch.wait_events(rnd.randint(1, 400), 3 * tscale())
            else:
                time.sleep(rnd.uniform(0.1, 0.8))
        finally:
            watch.close()
        killing.set()
        kill9(d)
        m.join(60)
        assert not m.is_alive(), "model writer stuck"
        w.finish()
        assert m.error is None, m.error
        serial = m.serial
        a_sent |= w.sent_lbas
        a_acked |= set(w.acked)
        stats["acks"] += len(w.acked)
        for k, v in m.counts.items():
            stats["ops"][k] = stats["ops"].get(k, 0) + v
        # nothing new in the directory but the sidecar and its one
        # temporary file
        now = {p.name for p in side.parent.iterdir()
               if not p.name.startswith("tgtd.sock")}
        assert now - stray <= {side.name, tmp.name}, now - stray
        if tmp.exists():
            stats["mid_save"] += 1
        disk = parse_sidecar(side)
        for n, (_, chunks) in disk.items():
            a = {c for c in chunks if c < SC_A}
            assert a <= a_sent, "%s: %d chunks never written" % (
                n, len(a - a_sent))
            assert not [c for c in chunks
                        if SC_A <= c < SC_B_LO or c >= SC_B_HI], n
        assert a_acked <= disk["p0"][1], \
            "p0 misses %d acknowledged chunks" % len(a_acked - disk["p0"][1])
        op = m.inflight
        if op:
            stats["write_inflight" if op[0] == "write"
                  else "mgmt_inflight"] += 1
        why = check_version(m.state, disk)
        if why and op:
            why2 = check_version(apply_op(m.state, op), disk)
            why = why2 and "%s; or after %r: %s" % (why, op, why2)
        assert why is None, "round %d: %s" % (rnd_no, why)
        # the restarted daemon loads it, bit for bit
        d.start()
        shown = json.loads(adm(d, "--op", "show", "--mode", "bitmap",
                               "--tid", 1, "--lun", 1, "--json").stdout)
        assert sorted(b["name"] for b in shown["bitmaps"]) == sorted(disk)
        for n, (en, chunks) in disk.items():
            b = json.loads(adm(d, "--op", "show", "--mode", "bitmap",
                               "--tid", 1, "--lun", 1, "--name", n,
                               "--json").stdout)["bitmaps"][0]
            assert b["enabled"] == en and b["persistent"] and \
                not b["inconsistent"], b
            assert b["extents"] == chunk_extents(chunks), n
        # the model goes on from what is on disk
        state = {n: {"en": en, "must": {c for c in ch if c >= SC_B_LO},
                     "may": {c for c in ch if c >= SC_B_LO}}
                 for n, (en, ch) in disk.items()}
    # a clean stop after a save leaves no temporary file
    adm(d, "--op", "update", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "p0", "--params", "action=enable")
    assert d.stop() == 0
    assert not tmp.exists()
    parse_sidecar(side)
    log = d.log_text()
    assert "cannot write the bitmap sidecar" not in log
    print("sidecar: %d kills in %.1f s, %s" % (rounds, time.monotonic() - t0,
                                               stats))
    assert stats["acks"] > 0 and stats["ops"].get("write", 0) > 0, stats


def test_kill9_never_tears_the_mirror_marker(holdfast):
    """A mirror job's marker (<config dir>/<IQN>.lun1.mirror, holding the
    destination while the job exists): mirror jobs started, cancelled and
    deleted one after the other, kill -9 at random points (a random time
    or right after the k-th creation of a marker file).  The
    marker is absent or holds a destination that was started, whole; the
    restarted daemon reports that destination and removes the marker."""
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "1M", "block_size": BS}])
    d.require_holdfast("holdfast's mirror jobs")
    marker = d.path("%s.lun1.mirror" % d.iqn)
    rnd = random.Random(0x3a7c)
    n = 0
    found = 0
    for rnd_no in range(int(os.environ.get("HOLDFAST_MARKER_ROUNDS", "16"))):
        started = []
        killing = threading.Event()
        errors = []

        def cycler():
            nonlocal n
            while True:
                n += 1
                dst = d.path("m%d.img" % n)
                started.append(dst)
                r = adm(d, "--op", "new", "--mode", "job", "--tid", 1,
                        "--lun", 1, "--params", "type=mirror,target=%s" % dst,
                        check=False)
                if r.returncode == 0:
                    jid = int(r.stdout.split()[1])
                    r = adm(d, "--op", "update", "--mode", "job", "--params",
                            "id=%d,action=cancel" % jid, check=False)
                if r.returncode == 0:
                    r = adm(d, "--op", "delete", "--mode", "job", "--params",
                            "id=%d" % jid, check=False)
                if r.returncode:
                    if not killing.is_set():
                        errors.append(r.stdout + r.stderr)
                    return
        t = threading.Thread(target=cycler, daemon=True)
        watch = DirWatch(d.tmp, marker.name)
        t.start()
        try:
            if rnd_no % 2:
                # right after a marker file is created
                watch.wait_events(rnd.randint(1, 4), 10 * tscale(),
                                  only=DirWatch.IN_CREATE)
            else:
                time.sleep(rnd.uniform(0.05, 0.8))
        finally:
            watch.close()
        killing.set()
        kill9(d)
        t.join(60)
        assert not errors, errors
        leftovers(d.tmp, {marker.name})
        dest = None
        if marker.exists():
            text = marker.read_text()
            assert text in ["%s\n" % p for p in started], \
                "marker holds %r" % text
            dest = text[:-1]
            found += 1
        for p in started:
            if p.exists():
                p.unlink()
        d.start()
        log = d.log_text().split("###")[-1]
        if dest:
            assert "a mirror job to %s had not ended" % dest in log, log
        else:
            assert "a mirror job to" not in log, log
        assert not marker.exists()
    print("mirror marker: %d kills, %d with a marker" % (rnd_no + 1, found))


def test_kill9_never_tears_the_ownership_lock(holdfast, tmp_path):
    """Two nodes share a file store (alua_group).  Each round A holds the
    ownership lock and B takes it by force (alua_state=active,force=1),
    which replaces the lock file A holds; B is killed -9 at random points
    of that (a random time, or right after a lock file is created or
    renamed) and restarted standby.  The lock file is always there and
    holds the LUN's identity, unchanged (the identity is the LUN's NAA in
    VPD page 0x83: a new one is a new LU to the initiators); at the end
    both nodes report the NAA they started with."""
    from test_alua import Sess, inquiry, two_nodes, update, update_show, \
        vpd83
    a, b, shared = two_nodes(holdfast, tmp_path)
    lock = shared.parent / (shared.name + ".holdfast-owner")
    ident = lock.read_text()
    assert re.match(r"holdfast-owner 1\nid [0-9a-f]{16}\n$", ident), ident

    def naa(d):
        s = Sess(d)
        s.settle()
        v = vpd83(inquiry(s, 0x83))[(0, 3)]
        s.close()
        return v

    naa0 = naa(a)
    b.ok_exit = {0, -9}
    rnd = random.Random(0x10c4)
    replaced = 0
    for rnd_no in range(int(os.environ.get("HOLDFAST_LOCK_ROUNDS", "8"))):
        # A owns the store (it lost the lock if B's takeover went through)
        update(a, "alua_state=active")
        assert wait_for(lambda: "(owner)" in update_show(a), 10 * tscale())
        ino = lock.stat().st_ino
        watch = DirWatch(shared.parent, lock.name)
        t = threading.Thread(target=lambda: update(
            b, "alua_state=active,force=1", check=False), daemon=True)
        t.start()
        try:
            if rnd_no % 2:
                watch.wait_events(
                    1, 10 * tscale(),
                    only=rnd.choice([DirWatch.IN_CREATE,
                                     DirWatch.IN_MOVED_TO]))
            else:
                time.sleep(rnd.uniform(0.0, 0.15))
        finally:
            watch.close()
        kill9(b)
        t.join(60)
        assert lock.read_text() == ident, \
            "round %d: lock file holds %r" % (rnd_no, lock.read_text())
        replaced += lock.stat().st_ino != ino
        extra = [p.name for p in shared.parent.iterdir()
                 if p.name.startswith(lock.name) and p.name != lock.name]
        assert set(extra) <= {lock.name + ".g2.tmp"}, extra
        b.start()
        assert "comes up standby" in b.log_text().split("###")[-1] or \
            "ALUA: group 2 standby" in update_show(b)
    update(a, "alua_state=active")
    assert naa(a) == naa0 and naa(b) == naa0
    print("ownership lock: %d kills, %d after the lock file was replaced"
          % (rnd_no + 1, replaced))
