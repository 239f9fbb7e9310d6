"""The stock tgtadm against holdfastd and against a real tgtd, side by
side: every mode/op answers with the same error number (so tgtadm prints
the same message) and the statistics and driver views have tgtd's
layout."""

import os
import re
import signal
import subprocess
import time

import pytest

from helpers import TGTADM, TGTD, free_tcp_port, port_accepts, run, wait_for

IQN = "iqn.2026-11.org.example:compat"

# requests run in order on both daemons; the target has one file LUN and
# one qemu-io session logged in
REQUESTS = [
    "--op stat --mode target --tid 1",
    "--op stat --mode target --tid 9",
    "--op stat --mode system",
    "--op show --mode session --tid 1",
    "--op show --mode conn --tid 1 --sid 1",
    "--op stat --mode session --tid 1 --sid 1",
    "--op stat --mode session --tid 1 --sid 9",
    "--op stat --mode conn --tid 1 --sid 1 --cid 0",
    "--op show --mode lld",
    "--op start --mode lld",
    "--op stop --mode lld",
    "--op stat --mode lld",
    "--op start --mode target --tid 1",
    "--op stop --mode target --tid 1",
    "--op show --mode account",
    "--op new --mode account --user u1 --password p1",
    "--op new --mode account --user u1 --password p1",
    "--op bind --mode account --tid 1 --user u1 --outgoing",
    "--op new --mode account --user u2 --password p2",
    "--op bind --mode account --tid 1 --user u2 --outgoing",
    "--op bind --mode account --tid 1 --user nobody",
    "--op delete --mode account --user nobody",
    "--op bind --mode target --tid 9 -I ALL",
    "--op unbind --mode target --tid 1 -I 10.9.9.9",
    "--op new --mode target --tid 1 -T iqn.2026-11.org.example:dup",
    "--op new --mode logicalunit --tid 1 --lun 1 -b LUNFILE",
    "--op delete --mode logicalunit --tid 1 --lun 7",
    "--op update --mode target --tid 1 --name bogus --value 1",
    "--op delete --mode conn --tid 1 --sid 5 --cid 0",
    "--op show --mode target --tid 5",
    "--op delete --mode target --tid 9",
    "--op delete --mode system",
]


class Tgt:
    def __init__(self, tmp, name, argv_fn):
        self.dir = tmp / name
        self.dir.mkdir()
        self.env = dict(os.environ, TGT_IPC_SOCKET=str(self.dir / "sock"))
        self.port = free_tcp_port()
        self.ctl = 20000 + (self.port % 10000)
        self.proc = subprocess.Popen(
            argv_fn(self), env=self.env, stdin=subprocess.DEVNULL,
            stdout=open(self.dir / "log", "w"), stderr=subprocess.STDOUT)
        assert wait_for(lambda: port_accepts(self.port), 15)
        assert wait_for(lambda: os.path.exists(
            "%s.%d" % (self.env["TGT_IPC_SOCKET"], self.ctl)), 5)

    def adm(self, args, check=False):
        return run([TGTADM, "-C", str(self.ctl), "--lld", "iscsi"] +
                   args.split(), env=self.env, check=check, timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def pair(tmp_path):
    lun = tmp_path / "lun.img"
    with open(lun, "wb") as f:
        f.truncate(64 << 20)
    conf = tmp_path / "hf.conf"
    made = []

    def hf_argv(t):
        conf.write_text('portals = [ "127.0.0.1:%d" ];\n' % t.port)
        return [os.path.join(os.environ.get("HOLDFAST_BUILD", "build"),
                             "holdfastd"), "-f", "-c", str(conf), "-C",
                str(t.ctl)]

    def tgtd_argv(t):
        return [TGTD, "-f", "-C", str(t.ctl), "--iscsi",
                "portal=127.0.0.1:%d" % t.port]

    try:
        for name, fn in (("tgtd", tgtd_argv), ("holdfastd", hf_argv)):
            t = Tgt(tmp_path, name, fn)
            made.append(t)
            t.adm("--op new --mode target --tid 1 -T %s" % IQN, check=True)
            t.adm("--op new --mode logicalunit --tid 1 --lun 1 -b %s" % lun,
                  check=True)
            t.adm("--op bind --mode target --tid 1 -I ALL", check=True)
        yield made, str(lun)
    finally:
        for t in made:
            t.stop()


def test_same_answers_as_tgtd(pair):
    (tgtd, hf), lun = pair
    sessions = []
    for t in (tgtd, hf):
        # one logged-in session with some I/O for the stat views
        sessions.append(subprocess.Popen(
            ["qemu-io", "-f", "raw", "-c", "write 0 64k", "-c", "read 0 4k",
             "-c", "sleep 8000", "iscsi://127.0.0.1:%d/%s/1" % (t.port, IQN)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    try:
        for t in (tgtd, hf):
            assert wait_for(lambda: "I_T nexus: 1" in
                            t.adm("--op show --mode target").stdout, 10)
        time.sleep(0.5)
        diffs = []
        for req in REQUESTS:
            req = req.replace("LUNFILE", lun)
            a, b = tgtd.adm(req), hf.adm(req)
            if (a.returncode, a.stderr.strip()) != (b.returncode,
                                                    b.stderr.strip()):
                diffs.append("%s:\n  tgtd: %d %s\n  holdfastd: %d %s" % (
                    req, a.returncode, a.stderr.strip(), b.returncode,
                    b.stderr.strip()))
                continue
            if "stat" in req.split() or req.startswith("--op show --mode conn"):
                # same lines and columns; counter values differ by design
                la = [re.sub(r" *\d+", " N", x) for x in a.stdout.splitlines()]
                lb = [re.sub(r" *\d+", " N", x) for x in b.stdout.splitlines()]
                if sorted(la) != sorted(lb):
                    diffs.append("%s layout:\n--tgtd--\n%s--holdfastd--\n%s"
                                 % (req, a.stdout, b.stdout))
        assert not diffs, "\n".join(diffs)
    finally:
        for p in sessions:
            p.kill()
            p.wait()
