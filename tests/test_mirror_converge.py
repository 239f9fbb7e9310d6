"""Live storage migration converges under a writer that never stops
(issue 11): QEMU's drive-mirror problem and holdfast's answer.

The writer is the seed's `dd bs=1k` loop: `qemu-img bench` rewriting 1 KiB
every 64 KiB across the LUN, one request at a time, as fast as it can,
wrapping around at the end, for as long as the test lets it.  Every write
dirties a whole chunk, so it dirties far more bytes per second than the
destination takes: the destination is a file on a FUSE mount throttled to
DST_RATE (fusefail's write_rate=).

  - copy_mode=auto: background until switch_after seconds pass without
    reaching ready, then write-blocking; the dirty set can then only
    shrink, so the job is ready within switch_after + the time to copy the
    LUN at the destination's rate, and `action=complete` pivots while the
    writer goes on.  Afterwards the destination holds the LUN's original
    data with the writer's pattern at every 64 KiB step, byte for byte,
    and the source file is no longer open.
  - copy_mode=background (the control): the same writer keeps the job
    from ever reaching ready in that time; cancel leaves the LUN on the
    source.
"""

import os
import signal
import subprocess
import time

import pytest

from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import tscale, wait_for
from mirrorjob import job, job_action, job_new, mode_in_force, open_fds

MiB = 1 << 20
SIZE = 16 * MiB
STEP = 64 * 1024
WBYTES = 1024
PATTERN = 0xA7
DST_RATE = 4 * MiB
SWITCH_AFTER_S = 3
# Copy I/O in flight.  With the default (16 MiB, four seconds of this
# destination) the writer's own writes to the source slow ~10x while the
# copy runs (seen: 484 -> 55 writes/s), which hides the problem the test
# is about; 1 MiB keeps the writer at full speed.
MAX_INFLIGHT = 1 * MiB


class Writer:
    """qemu-img bench: 1 KiB writes at queue depth 1 every 64 KiB,
    wrapping at the end of the LUN, until stop()."""

    def __init__(self, url, log_path):
        self.log = open(str(log_path), "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            ["qemu-img", "bench", "-f", "raw", "-w", "-c", "1000000000",
             "-d", "1", "-s", str(WBYTES), "-S", str(STEP),
             "--pattern=%d" % PATTERN, url],
            stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return time.monotonic() - self.t0


@pytest.fixture
def setup(fusefs, holdfast, tmp_path):
    """16 MiB of random data on LUN 1 (a plain file); the destination
    directory is the FUSE mount, throttled to DST_RATE."""
    if not subprocess.run(["which", "qemu-img"],
                          stdout=subprocess.DEVNULL).returncode == 0:
        pytest.skip("qemu-img missing")
    src = tmp_path / "src.img"
    data = os.urandom(SIZE)
    src.write_bytes(data)
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": str(src),
                        "size": str(SIZE), "block_size": 512}])
    d.require_holdfast("mirror jobs are holdfast's")
    fusefs.set("write_rate=%d" % DST_RATE)
    writers = []
    yield d, src, data, fusefs, writers
    for w in writers:
        w.stop()


def expected_image(original):
    img = bytearray(original)
    for off in range(0, SIZE, STEP):
        img[off:off + WBYTES] = bytes([PATTERN]) * WBYTES
    return bytes(img)


def writer_started(w, src):
    """The writer has made one full pass: the last step of the source
    (an O_DIRECT LUN, so the file is current) holds the pattern."""
    def last_step_written():
        with open(str(src), "rb") as f:
            f.seek(SIZE - STEP)
            return f.read(WBYTES) == bytes([PATTERN]) * WBYTES
    assert wait_for(lambda: last_step_written() or not w.alive(),
                    20 * tscale()), "the writer made no full pass"
    assert w.alive(), open(w.log.name).read()


def test_auto_converges_under_endless_writer(setup, tmp_path):
    d, src, original, fusefs, writers = setup
    dst = fusefs.path("dst.img")
    w = Writer(d.url(1), tmp_path / "writer.log")
    writers.append(w)
    writer_started(w, src)
    t0 = time.monotonic()
    jid = job_new(d, "type=mirror,target=%s,copy_mode=auto,switch_after=%d,"
                  "max_inflight=%d" % (dst, SWITCH_AFTER_S, MAX_INFLIGHT))
    copy_s = SIZE / DST_RATE
    deadline = (SWITCH_AFTER_S + copy_s) * 1.5 + 5 * tscale()
    seen = []

    def ready():
        j = job(d, jid)
        seen.append((round(time.monotonic() - t0, 1), j["state"],
                     mode_in_force(j)))
        return j["state"] in ("ready", "failed", "cancelled")

    assert wait_for(ready, deadline, interval=0.25), \
        "not ready %.0fs after start (switch_after %ds + %.0fs copy): %s" % (
            deadline, SWITCH_AFTER_S, copy_s, seen[-8:])
    t_ready = time.monotonic() - t0
    j = job(d, jid)
    assert j["state"] == "ready", j
    assert w.alive(), "the writer stopped: %s" % open(w.log.name).read()
    # the writer kept it busy long enough to force the switch
    assert t_ready >= SWITCH_AFTER_S - 0.5, (t_ready, seen)
    assert mode_in_force(j) == "write-blocking", (j, seen[-8:])
    job_action(d, jid, "complete")
    assert wait_for(lambda: job(d, jid)["state"] in
                    ("completed", "failed"), 30 * tscale()), job(d, jid)
    j = job(d, jid)
    assert j["state"] == "completed", j
    # the pivot did not disturb the writer
    time.sleep(0.5)
    assert w.alive(), open(w.log.name).read()
    elapsed = w.stop()
    fusefs.ok()
    writes = fusefs.stats()["writes"]
    assert open_fds(d, src) == 0, "the source is still open after complete"
    assert open_fds(d, dst) >= 1
    assert elapsed > 1 and writes > 0
    got = open(str(fusefs.backing("dst.img")), "rb").read()
    want = expected_image(original)
    assert len(got) >= SIZE
    bad = [off for off in range(0, SIZE, 4096)
           if got[off:off + 4096] != want[off:off + 4096]]
    assert not bad, "destination differs in %d of %d 4 KiB blocks, first " \
        "at %#x" % (len(bad), SIZE // 4096, bad[0])
    print("auto: ready after %.1fs (switch_after %ds, copy %.1fs), "
          "states %s" % (t_ready, SWITCH_AFTER_S, copy_s, seen[::8]))


def test_background_does_not_converge(setup, tmp_path):
    """The control: the same writer, background only, never gets ready
    in the time auto needs; cancel leaves the LUN on the source."""
    d, src, original, fusefs, writers = setup
    dst = fusefs.path("dst.img")
    w = Writer(d.url(1), tmp_path / "writer.log")
    writers.append(w)
    writer_started(w, src)
    t0 = time.monotonic()
    jid = job_new(d, "type=mirror,target=%s,copy_mode=background,"
                  "max_inflight=%d" % (dst, MAX_INFLIGHT))
    window = (SWITCH_AFTER_S + SIZE / DST_RATE) * 1.5 + 5
    states = []
    while time.monotonic() - t0 < window:
        j = job(d, jid)
        states.append((j["state"], mode_in_force(j), j.get("dirty_bytes")))
        assert j["state"] == "running", (j, states[-5:])
        assert mode_in_force(j) == "background", j
        time.sleep(0.5)
    assert w.alive(), open(w.log.name).read()
    # the dirty set is far from the ~1 s at DST_RATE ready needs
    dirty = [s[2] for s in states[-4:] if s[2] is not None]
    assert dirty and min(dirty) > DST_RATE, states[-5:]
    job_action(d, jid, "cancel")
    assert wait_for(lambda: job(d, jid)["state"] in
                    ("cancelled", "failed"), 30 * tscale()), job(d, jid)
    assert job(d, jid)["state"] == "cancelled"
    w.stop()
    # still served from the source, which has the writer's pattern
    assert open_fds(d, src) >= 1
    got = src.read_bytes()
    assert got[:WBYTES] == bytes([PATTERN]) * WBYTES
    assert got == expected_image(original)


def test_ready_uses_the_real_destination_rate(setup):
    """No writer: an idle 16 MiB LUN copied with the default max_inflight
    (16 MiB, four seconds of this destination).  When the job says ready,
    its measured destination rate must be about the real 4 MiB/s and what
    is left about a second of it."""
    d, src, original, fusefs, writers = setup
    jid = job_new(d, "type=mirror,target=%s,copy_mode=background"
                  % fusefs.path("dst.img"))
    t0 = time.monotonic()
    assert wait_for(lambda: job(d, jid)["state"] != "running",
                    (SIZE / DST_RATE) * 3 + 5 * tscale(), interval=0.1)
    j = job(d, jid)
    t_ready = time.monotonic() - t0
    assert j["state"] == "ready", j
    assert j["rate_bps"] <= 2 * DST_RATE, (t_ready, j)
    assert j["dirty_bytes"] <= 2 * DST_RATE, (t_ready, j)
    # ready no earlier than the copy minus about a second
    assert t_ready >= SIZE / DST_RATE - 1.5, (t_ready, j)
    job_action(d, jid, "cancel")
