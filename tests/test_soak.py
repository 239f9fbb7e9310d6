"""Soak (issue 15 "Soak", issue 16 "memory stays flat"): `make soak`,
not part of `make test`.

For SOAK_SECONDS (default 600) at once:
  - 4 writers, each on its own region of LUN 1 (a file on a fusefail
    mount with hang-on-error), writing random blocks of 4-64 KiB and
    reading them back; a model of every block is kept and the whole LUN
    is compared with it at the end (every byte verified);
  - a reader of LUN 2 (null) at queue depth 1;
  - backend outages every 20 s: LUN 1's writes and reads fail with EIO
    for 1-2 s (held by hang-on-error, then released);
  - management churn: LUN 3 added and removed, show and stat, a fault
    spec set and cleared on LUN 2;
  - session churn: logins and logouts, discovery, and sessions dropped
    with a command in flight;
  - LUN resets from one writer now and then.
holdfastd's VmRSS and open fds are sampled every 2 s.  After a warm-up
(the first quarter, at least 20 s) RSS must not grow by more than
SOAK_RSS_SLACK_KB (default 16384) over the largest warm-up sample, and
the fd count at the end must be within 8 of the warm-up's; no command
may fail and nothing may be stuck (each has a 60 s bound).  The samples
are printed (run with -s) for the README."""

import os
import random
import socket
import struct
import threading
import time

import pytest

from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import IQN, tscale
from rawiscsi import Closed, RawSession, read10

pytestmark = pytest.mark.soak

BS = 512
LUN1_MB = 64
WRITERS = 4


def soak_seconds():
    return int(os.environ.get("SOAK_SECONDS", "600"))


def write10(lba, blocks):
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


class Session:
    """A raw session that answers R2Ts and collects statuses."""

    def __init__(self, d, isid):
        self.s = RawSession("127.0.0.1", d.port, timeout=60,
                            initiator="iqn.2026-12.org.example:soak",
                            isid=b"\x80\x00\x00\x00\x01" + bytes([isid]))
        self.s.login(IQN)

    def cmd(self, lun, cdb, read_len=0, data=b""):
        s = self.s
        imm = data[:65536]
        itt = s.scsi(lun, cdb, read_len=read_len, data=imm,
                     write_len=len(data) if data else None)
        got = b""
        while True:
            p = s.recv(timeout=60 * tscale())
            if p.opcode == 0x31 and p.u32(16) == itt:      # R2T
                s.data_out(p, data, lun=lun)
                continue
            if p.u32(16) != itt:
                continue
            if p.opcode == 0x25:
                got += p.data
                if p.flags & 0x01:
                    return p.bhs[3], got
                continue
            if p.opcode == 0x21:
                return p.bhs[3], got

    def good(self, lun, cdb, read_len=0, data=b""):
        for _ in range(3):      # unit attentions (power on, reset)
            st, got = self.cmd(lun, cdb, read_len, data)
            if st == 0:
                return got
        raise AssertionError("status %#x for %r" % (st, cdb[:1]))

    def close(self):
        self.s.close()


def proc_sample(pid):
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds


def test_soak(fusefs, holdfast):  # noqa: F811
    seconds = soak_seconds()
    slack_kb = int(os.environ.get("SOAK_RSS_SLACK_KB", "16384"))
    luns = [{"lun": 1, "backend": "file",
             "path": str(fusefs.path("disk1.img")),
             "size": "%dM" % LUN1_MB, "block_size": BS,
             "rerror": "retry", "werror": "retry", "retry_interval": 100,
             "retry_timeout": 0},
            {"lun": 2, "backend": "null", "size": "1G"}]
    d = holdfast(luns=luns)
    d.require_holdfast("soak of holdfastd")
    pid = d.proc.pid
    stop = threading.Event()
    errors = []
    counts = {"writes": 0, "reads": 0, "logins": 0, "drops": 0,
              "mgmt": 0, "outages": 0, "resets": 0}
    lock = threading.Lock()
    region = LUN1_MB * 1024 * 1024 // BS // WRITERS
    models = [dict() for _ in range(WRITERS)]

    def bump(k, n=1):
        with lock:
            counts[k] += n

    def guard(fn):
        def run(*a):
            try:
                fn(*a)
            except Exception as e:      # noqa: BLE001
                errors.append("%s: %r" % (fn.__name__, e))
                stop.set()
        return run

    @guard
    def writer(i):
        rnd = random.Random(i)
        s = Session(d, 10 + i)
        base = i * region
        model = models[i]
        while not stop.is_set():
            n = rnd.choice((8, 16, 64, 128))
            lba = base + rnd.randrange(region - n)
            data = bytes([rnd.randrange(256)]) * (n * BS)
            s.good(1, write10(lba, n), data=data)
            for k in range(n):
                model[lba + k] = data[0]
            bump("writes")
            got = s.good(1, read10(lba, n), read_len=n * BS)
            if got != data:
                raise AssertionError("lba %d: read back differs" % lba)
            bump("reads")
            if i == 0 and rnd.random() < 0.01:
                itt = s.s.tmf(5, lun=1)     # LUN RESET
                while True:
                    p = s.s.recv(timeout=60 * tscale())
                    if p.opcode == 0x22 and p.u32(16) == itt:
                        break
                bump("resets")
        s.close()

    @guard
    def reader():
        s = Session(d, 20)
        while not stop.is_set():
            s.good(2, read10(random.randrange(1 << 20), 8), read_len=4096)
            bump("reads")
        s.close()

    @guard
    def outages():
        while not stop.wait(20):
            fusefs.set("match=disk1.img write=EIO read=EIO")
            time.sleep(random.uniform(1, 2))
            fusefs.ok()
            bump("outages")

    @guard
    def mgmt():
        while not stop.wait(1):
            d.tgtadm("--lld", "iscsi", "--op", "new", "--mode",
                     "logicalunit", "--tid", "1", "--lun", "3",
                     "--bstype", "null", "--backing-store", "None")
            d.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target")
            d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                     "logicalunit", "--tid", "1", "--lun", "2",
                     "--params", "fault=latency=1:ops=r")
            d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                     "logicalunit", "--tid", "1", "--lun", "2",
                     "--params", "fault=off")
            d.tgtadm("--lld", "iscsi", "--op", "delete", "--mode",
                     "logicalunit", "--tid", "1", "--lun", "3")
            bump("mgmt")

    @guard
    def churn():
        k = 0
        while not stop.wait(0.2):
            k += 1
            if k % 3 == 0:
                disc = RawSession("127.0.0.1", d.port)
                disc.login(None, session_type="Discovery")
                disc.text([("SendTargets", "All")])
                disc.close()
            s = Session(d, 30 + k % 4)
            bump("logins")
            if k % 2:
                s.good(2, read10(0, 8), read_len=4096)
                itt = s.s.logout()
                while True:
                    p = s.s.recv(timeout=30 * tscale())
                    if p.opcode == 0x26 and p.u32(16) == itt:
                        break
            else:
                # dropped with a command in flight
                s.s.scsi(2, read10(0, 128), read_len=65536)
                bump("drops")
            s.close()

    threads = [threading.Thread(target=writer, args=(i,))
               for i in range(WRITERS)]
    threads += [threading.Thread(target=f) for f in
                (reader, outages, mgmt, churn)]
    for t in threads:
        t.start()
    samples = []
    start = time.monotonic()
    warm = max(20, seconds // 4)
    try:
        while time.monotonic() - start < seconds and not stop.is_set():
            time.sleep(2)
            rss, fds = proc_sample(pid)
            samples.append((time.monotonic() - start, rss, fds))
    finally:
        stop.set()
        fusefs.ok()
        for t in threads:
            t.join(120 * tscale())
    stuck = [t.name for t in threads if t.is_alive()]
    time.sleep(2)
    end_rss, end_fds = proc_sample(pid)     # sessions closed, idle
    # every byte of LUN 1 against the writers' models
    s = Session(d, 40)
    bad = 0
    for i, model in enumerate(models):
        for lba0 in range(i * region, (i + 1) * region, 2048):
            got = s.good(1, read10(lba0, 2048), read_len=2048 * BS)
            for k in range(2048):
                want = model.get(lba0 + k, 0)
                if got[k * BS:(k + 1) * BS] != bytes([want]) * BS:
                    bad += 1
    s.close()
    verify_rss, _ = proc_sample(pid)
    warm_s = [x for x in samples if x[0] <= warm] or samples[:1]
    after = [x for x in samples if x[0] > warm]
    warm_rss = max(x[1] for x in warm_s)
    max_rss = max([x[1] for x in after] + [end_rss])
    warm_fds = warm_s[-1][2]
    print("\nsoak: %d s, counts %s" % (seconds, counts))
    print("soak: RSS KiB first %d, end of warm-up (%d s) max %d, after "
          "max %d, end %d; fds warm-up %d, end %d (idle, sessions closed); "
          "RSS after the final read of all %d MiB in 1 MiB commands %d"
          % (samples[0][1], warm, warm_rss, max_rss, end_rss, warm_fds,
             end_fds, LUN1_MB, verify_rss))
    print("soak: samples (s, RSS KiB, fds): %s" %
          ", ".join("%d/%d/%d" % x for x in samples[::max(1, len(samples)
                                                           // 20)]))
    assert not errors, errors[:5]
    assert not stuck, "threads stuck: %s" % stuck
    assert bad == 0, "%d blocks differ from what was written" % bad
    assert counts["outages"] >= 1 or seconds < 25, counts
    assert max_rss - warm_rss <= slack_kb, \
        "RSS grew %d KiB after warm-up" % (max_rss - warm_rss)
    assert end_fds <= warm_fds + 8, (warm_fds, end_fds)
    assert "error:" not in d.log_text().replace("log_err", ""), \
        [ln for ln in d.log_text().splitlines() if "error:" in ln][:10]
