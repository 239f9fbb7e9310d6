"""A FUSE mount whose reads, writes and flushes fail on demand.

`fusefs` (a pytest fixture) mounts build/tools/fusefail: a pass-through of
tmp_path/fuse-src at tmp_path/fuse-mnt.  LUN files placed on the mount get
genuine kernel errors on their O_DIRECT I/O when the test says so:

    def test_x(fusefs):
        path = fusefs.path("disk1.img")      # on the mount
        fusefs.set("write=EIO")              # writes now fail with EIO
        fusefs.set("read=EIO write=ENOSPC")
        fusefs.ok()                          # everything passes again
        fusefs.stats()["failed_writes"]      # requests it failed so far
        fusefs.backing("disk1.img")          # the file under the mount

Control syntax (see tests/tools/fusefail.c): ok, read=ERR, write=ERR,
flush=ERR, all=ERR, delay=MS, write_delay=US, write_rate=N[K|M|G],
match=SUBSTRING.  A slow destination that can start failing later:

        fusefs.set("write_rate=4M")          # writes pass at 4 MiB/s
        fusefs.set("write_rate=4M write=EIO")  # ... and now fail with EIO
        fusefs.set("write_delay=2000")       # +2 ms on every write  set() writes the control
file atomically (temporary file + rename) and waits until fusefail can have
seen it.

Teardown unmounts with `fusermount3 -u` (retried while the daemon under test
still holds files open, then lazily), and kills fusefail by PID if it does
not exit.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import build_dir, tscale, wait_for

# fusefail re-reads its control file at most every 2 ms; give it margin
CONTROL_SETTLE_S = 0.02
STATS_NAME = ".fusefail-stats"


def fusefail_binary():
    return build_dir() / "tools" / "fusefail"


class FuseFail:
    def __init__(self, base, args=()):
        """args: extra fusefail options, e.g. ("-v", "-k", "0.5") for the
        volatile write-back cache of the power-loss tests."""
        self.args = [str(a) for a in args]
        base = Path(base)
        self.src = base / "fuse-src"
        self.mnt = base / "fuse-mnt"
        self.ctl = base / "fuse-ctl"
        self.log_path = base / "fusefail.log"
        self.proc = None
        self.log = None

    def start(self):
        binary = fusefail_binary()
        if not binary.exists():
            pytest.fail("%s not built (run make)" % binary)
        if not os.path.exists("/dev/fuse"):
            pytest.skip("no /dev/fuse on this machine")
        self.src.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.ctl.write_text("ok\n")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(binary)] + self.args +
            [str(self.src), str(self.mnt), str(self.ctl)],
            stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)
        ok = wait_for(lambda: self.proc.poll() is not None or
                      os.path.ismount(str(self.mnt)), 10 * tscale())
        if not ok or self.proc.poll() is not None:
            self.stop()
            pytest.fail("fusefail did not mount %s:\n%s" %
                        (self.mnt, self.log_text()))
        return self

    # -- control
    def set(self, spec):
        """Replace the rules, e.g. "write=EIO" or "read=EIO flush=ENOSPC"."""
        tmp = self.ctl.with_name(self.ctl.name + ".tmp")
        tmp.write_text(spec + "\n")
        os.rename(str(tmp), str(self.ctl))
        time.sleep(CONTROL_SETTLE_S)

    def ok(self):
        self.set("ok")

    def stats(self):
        """Counters: reads, writes, flushes, fallocs, failed_reads,
        failed_writes, failed_flushes, failed_fallocs, read_bytes,
        write_bytes."""
        with open(str(self.mnt / STATS_NAME)) as f:
            text = f.read()
        return {k: int(v) for k, v in
                (item.split("=", 1) for item in text.split())}

    # -- files
    def path(self, name):
        """name on the mount (what the daemon under test opens)."""
        return self.mnt / name

    def backing(self, name):
        """name in the source directory (bypasses the failing layer)."""
        return self.src / name

    def read_backing(self, name, offset, length):
        with open(str(self.src / name), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- teardown
    def stop(self):
        if self.proc is None:
            return
        mnt = str(self.mnt)
        self.ctl.write_text("ok\n")
        deadline = time.monotonic() + 5 * tscale()
        while os.path.ismount(mnt) and time.monotonic() < deadline:
            cp = subprocess.run(["fusermount3", "-u", mnt],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
            if cp.returncode == 0:
                break
            time.sleep(0.1)     # busy: the daemon may still hold a file
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(5 * tscale())
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None


@pytest.fixture
def fusefs(request, tmp_path):
    """A running fusefail mount under tmp_path (see the module docstring).
    Request it before `holdfast` so the daemon is stopped first and the
    mount is not busy at teardown."""
    f = FuseFail(tmp_path)
    request.addfinalizer(f.stop)
    f.start()
    yield f
    request.node.add_report_section("teardown", "fusefail log",
                                    f.log_text()[-4000:])
