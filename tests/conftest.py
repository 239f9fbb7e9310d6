"""pytest fixtures for holdfast integration tests.

The `holdfast` fixture is a factory: each call writes a targets.conf into
the test's tmp_path, starts `$HOLDFAST_BUILD/holdfastd -f -c CFG -C CTL`
on a free loopback port with its own management socket
(TGT_IPC_SOCKET=<tmp>/tgtd.sock), waits until the portal accepts and
returns a Daemon.  At teardown every daemon is stopped by PID (SIGTERM,
then SIGKILL) and the test fails if a daemon exited non-zero, had to be
killed, or printed a sanitizer report.  The daemon's log is attached to
the report of a failed test.

HOLDFAST_TEST_TGTD=1 runs the same tests against the stock tgtd (configured
through tgtadm from the same description), to check the initiator side of
the tests against a known target.  Tests that check holdfast-only
behaviour call `d.require_holdfast()`.
"""

import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import (IQN, TGTADM, TGTD, USE_TGTD, build_dir, cfg_text,
                     free_tcp_port, port_accepts, run, tscale, wait_for)

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "ERROR: ThreadSanitizer",
                   "WARNING: ThreadSanitizer")

DEFAULT_LUNS = [
    {"lun": 1, "backend": "file", "path": "disk1.img", "size": "64M",
     "block_size": 512},
    {"lun": 2, "backend": "null", "size": "1G"},
]


def parse_size(s):
    if isinstance(s, int):
        return s
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    s = s.strip()
    if s[-1].lower() in mult:
        return int(s[:-1]) * mult[s[-1].lower()]
    return int(s)


def free_control_port(base):
    """A control port whose socket file <base>.<port> does not exist.
    The stock tgtadm and tgtd refuse -C above 32767 ("out of range")."""
    for _ in range(1000):
        p = random.randint(1000, 32767)
        if not Path("%s.%d" % (base, p)).exists():
            return p
    raise RuntimeError("no free control port")


class Daemon:
    """One running holdfastd (or tgtd with HOLDFAST_TEST_TGTD=1)."""

    def __init__(self, request, tmp, conf_settings=None, conf_text=None,
                 args=(), env=None, name="holdfastd", nr_portals=1):
        self.request = request
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.is_tgtd = USE_TGTD
        self.name = "tgtd" if self.is_tgtd else name
        self.conf_settings = conf_settings
        self.conf_text = conf_text
        self.args = list(args)
        self.sock_base = str(self.tmp / "tgtd.sock")
        self.env = dict(os.environ)
        self.env["TGT_IPC_SOCKET"] = self.sock_base
        if env:
            self.env.update(env)
        self.conf_path = self.tmp / "targets.conf"
        self.log_path = self.tmp / ("%s.log" % self.name)
        self.proc = None
        self.port = None
        self.ports = []         # every portal's port; port is ports[0]
        self.nr_portals = nr_portals
        self.ctl_port = None
        self.returncode = None
        # exit codes the finalizer accepts; a test that kills the daemon on
        # purpose sets this (e.g. {0, -9})
        self.ok_exit = {0}
        self.killed_by_teardown = False

    # -- addresses
    @property
    def portal(self):
        return "127.0.0.1:%d" % self.port

    def url(self, lun=1, iqn=None):
        return "iscsi://%s/%s/%d" % (self.portal, iqn or self.iqn, lun)

    @property
    def iqn(self):
        if self.conf_settings and self.conf_settings.get("targets"):
            return self.conf_settings["targets"][0]["name"]
        return IQN

    def path(self, name):
        return self.tmp / name

    def require_holdfast(self, why="checks holdfast-specific behaviour"):
        if self.is_tgtd:
            pytest.skip("tgtd baseline run: " + why)

    # -- lifecycle
    def _write_conf(self):
        if self.conf_settings is not None:
            s = dict(self.conf_settings)
            s["portals"] = ["127.0.0.1:%d" % p for p in self.ports]
            # portals first so the file reads naturally
            s = {"portals": s.pop("portals"), **s}
            text = cfg_text(s)
        else:
            text = self.conf_text.replace("@PORT@", str(self.port))
        self.conf_path.write_text(text)

    def start(self, wait=True):
        binary = build_dir() / "holdfastd"
        if not self.is_tgtd and not binary.exists():
            pytest.fail("%s not built (run make, or set HOLDFAST_BUILD)" %
                        binary)
        for attempt in range(4):
            self.ports = []
            while len(self.ports) < self.nr_portals:
                p = free_tcp_port()
                if p not in self.ports:
                    self.ports.append(p)
            self.port = self.ports[0]
            self.ctl_port = free_control_port(self.sock_base)
            if self.is_tgtd:
                argv = [TGTD, "-f", "-C", str(self.ctl_port), "--iscsi",
                        "portal=127.0.0.1:%d" % self.port]
            else:
                self._write_conf()
                argv = [str(binary), "-f", "-c", str(self.conf_path),
                        "-C", str(self.ctl_port)] + self.args
            self.argv = argv
            if getattr(self, "log", None):
                self.log.close()
            self.log = open(self.log_path, "ab")
            self.log.write(("### %s\n" % " ".join(argv)).encode())
            self.log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=self.log,
                                         stderr=subprocess.STDOUT,
                                         env=self.env, cwd=str(self.tmp))
            self.returncode = None
            if not wait:
                return self
            ok = wait_for(lambda: self.proc.poll() is not None or
                          port_accepts(self.port), 15 * tscale())
            if ok and self.proc.poll() is None and self.is_tgtd:
                for p in self.ports[1:]:
                    self.tgtadm("--lld", "iscsi", "--op", "new", "--mode",
                                "portal", "--param",
                                "portal=127.0.0.1:%d" % p)
            if ok:
                ok = all(wait_for(lambda: self.proc.poll() is not None or
                                  port_accepts(p), 5 * tscale())
                         for p in self.ports[1:])
            if self.proc.poll() is None and ok:
                if self.is_tgtd:
                    self._tgtd_configure()
                return self
            if self.proc.poll() is None:
                self._kill()
                pytest.fail("%s did not accept on port %d within %.0fs\n%s"
                            % (self.name, self.port, 15 * tscale(),
                               self.log_text()))
            self.returncode = self.proc.returncode
            text = self.log_text()
            if "in use" in text or "EADDRINUSE" in text:
                continue        # lost a port race with someone; retry
            pytest.fail("%s exited with %d during startup\n%s" %
                        (self.name, self.returncode, text))
        pytest.fail("%s: no usable port after retries\n%s" %
                    (self.name, self.log_text()))

    def restart(self, timeout=15):
        """Stop with SIGTERM (which must give exit 0) and start again with
        the same configuration and files, on fresh ports."""
        if self.is_tgtd:        # tgtd ignores SIGTERM
            self.stop(signal.SIGKILL)
            return self.start()
        rc = self.stop(timeout=timeout)
        if rc != 0 or self.killed_by_teardown:
            pytest.fail("%s exited with %s on SIGTERM before a restart\n%s"
                        % (self.name, rc, self.log_text()))
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout=15):
        """Wait for exit; returns the exit code or None on timeout."""
        try:
            self.returncode = self.proc.wait(timeout * tscale())
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stop by PID: sig, then SIGKILL after timeout.  Returns the exit
        code (negative = killed by that signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if self.wait(timeout) is None:
                self.killed_by_teardown = True
                self._kill()
        self.returncode = self.proc.returncode
        self.log.close()
        return self.returncode

    def _kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def log_text(self):
        try:
            self.log.flush()
        except (ValueError, AttributeError):
            pass
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def sanitizer_report(self):
        text = self.log_text()
        for m in SANITIZER_MARKS:
            i = text.find(m)
            if i >= 0:
                return text[max(0, i - 200):i + 4000]
        return None

    # -- management
    def tgtadm(self, *args, check=True, timeout=30):
        """Run the stock tgtadm against this daemon's control port."""
        sock = "%s.%d" % (self.sock_base, self.ctl_port)
        wait_for(lambda: os.path.exists(sock), 5 * tscale())
        argv = [TGTADM, "-C", str(self.ctl_port)] + [str(a) for a in args]
        return run(argv, timeout=timeout, check=check, env=self.env)

    def _tgtd_configure(self):
        """Build the same targets and LUNs in tgtd through tgtadm."""
        s = self.conf_settings or {}
        for tid, t in enumerate(s.get("targets", []), 1):
            self.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "target",
                        "--tid", tid, "-T", t["name"])
            for k, v in (t.get("params") or {}).items():
                self.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                            "target", "--tid", tid, "--name", k, "--value",
                            v)
            for lu in t.get("luns", []):
                extra = []
                if lu.get("backend") == "null":
                    extra = ["--bstype", "null"]
                    path = "null%d" % lu["lun"]
                else:
                    path = str(self.tmp / lu["path"])
                    if not os.path.exists(path):
                        with open(path, "wb") as f:
                            f.truncate(parse_size(lu.get("size", "64M")))
                bs = lu.get("block_size")
                if bs and bs != 512:
                    extra += ["--blocksize", bs]
                self.tgtadm("--lld", "iscsi", "--op", "new", "--mode",
                            "logicalunit", "--tid", tid, "--lun", lu["lun"],
                            "-b", path, *extra)
            for ini in t.get("initiators", ["ALL"]):
                self.tgtadm("--lld", "iscsi", "--op", "bind", "--mode",
                            "target", "--tid", tid, "-I", ini)


class HoldfastFactory:
    def __init__(self, request, tmp_path):
        self.request = request
        self.tmp_path = tmp_path
        self.daemons = []

    def settings(self, luns=None, params=None, iqn=IQN, initiators=None,
                 targets=None, **top):
        """The configuration dict the factory would write (portals are
        filled in at start)."""
        if targets is None:
            t = {"name": iqn, "initiators": initiators or ["ALL"]}
            if params:
                t["params"] = dict(params)
            t["luns"] = [dict(x) for x in (luns or DEFAULT_LUNS)]
            targets = [t]
        s = {"targets": targets}
        s.update(top)
        return s

    def __call__(self, luns=None, params=None, iqn=IQN, initiators=None,
                 targets=None, conf_text=None, args=(), env=None, wait=True,
                 nr_portals=1, **top):
        """Start a daemon.  Either describe it (luns, params, targets and
        any further top-level settings as keyword arguments) or give the
        whole file as conf_text with @PORT@ where the portal port goes.
        nr_portals > 1 listens on that many loopback ports (d.ports)."""
        n = len(self.daemons)
        tmp = self.tmp_path if n == 0 else self.tmp_path / ("d%d" % n)
        if conf_text is None:
            settings = self.settings(luns, params, iqn, initiators, targets,
                                     **top)
        else:
            settings = None
        d = Daemon(self.request, tmp, settings, conf_text, args, env,
                   nr_portals=nr_portals)
        self.daemons.append(d)
        return d.start(wait=wait)

    def finish(self):
        problems = []
        for d in self.daemons:
            if d.proc is None:
                continue
            if d.is_tgtd:
                # tgtd ignores SIGTERM; the baseline only checks initiators
                d.stop(signal.SIGKILL)
                continue
            rc = d.stop()
            rep = d.sanitizer_report()
            if rep or d.killed_by_teardown or rc not in d.ok_exit:
                self.request.node.add_report_section(
                    "teardown", "%s log (%s)" % (d.name, d.log_path),
                    d.log_text()[-20000:])
            if rep:
                problems.append("%s printed a sanitizer report:\n%s" %
                                (d.name, rep))
            if d.killed_by_teardown:
                problems.append("%s did not exit within %.0fs of SIGTERM"
                                % (d.name, 15 * tscale()))
            elif rc not in d.ok_exit:
                problems.append("%s exited with %s (expected %s)" %
                                (d.name, rc, sorted(d.ok_exit)))
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def holdfast(request, tmp_path):
    """Factory: holdfast(luns=..., params=...) -> running Daemon."""
    f = HoldfastFactory(request, tmp_path)
    request.node._holdfast_factory = f
    yield f
    f.finish()


@pytest.fixture(scope="session")
def ceph(tmp_path_factory):
    """One single-node Ceph cluster (tests/ceph.py) for the whole session,
    shared by test_rbd.py and tests/guest/test_guest_rbd.py; its daemons
    are stopped by PID at the end even when tests fail."""
    import ceph as cephlab
    d = tmp_path_factory.mktemp("ceph")
    c = cephlab.Cluster(d)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        print("ceph cluster timings: %s" % c.timings)


_ceph_repairs = []


@pytest.fixture(autouse=True)
def _ceph_still_serving(request):
    """After each test that used the cluster (its daemons already
    stopped): every placement group must take a write, or the OSD is
    restarted (tests/ceph.py serving_or_repair) so the rest of the session
    keeps a working cluster.  What was found is printed with the test and
    in the session's summary."""
    yield
    if "ceph" not in request.fixturenames:
        return
    try:
        c = request.getfixturevalue("ceph")
    except Exception:                               # noqa: BLE001
        return                      # the cluster never started: reported
    what = c.serving_or_repair(request.node.nodeid)
    if what:
        _ceph_repairs.append("%s: %s" % (request.node.nodeid, what))
        request.node.add_report_section("teardown", "ceph repair", what)
        print("\nceph repair after %s: %s" % (request.node.nodeid, what))


def pytest_terminal_summary(terminalreporter):
    if _ceph_repairs:
        terminalreporter.section("ceph repairs")
        for line in _ceph_repairs:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach every daemon's log to the report of a failed test."""
    outcome = yield
    rep = outcome.get_result()
    f = getattr(item, "_holdfast_factory", None)
    if f is None or rep.when != "call" or not rep.failed:
        return
    for d in f.daemons:
        rep.sections.append(("%s log (%s)" % (d.name, d.log_path),
                             d.log_text()[-20000:]))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: long-running test (still part of make test)")
