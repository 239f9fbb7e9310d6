"""A throw-away single-node Ceph cluster for tests and benchmarks.

One ceph-mon and one ceph-osd (bluestore on a sparse file, SSD profile so
a kill -9 replays little WAL), no mgr (RBD I/O does not need one), cephx,
bound to 127.0.0.1 on free ports, in a directory of the caller's.  The
daemons run in the foreground (`-f`) as children of this process, so stop()
signals exactly those PIDs and reaps them with waitpid; nothing is looked
up by name.

    python3 tests/ceph.py up DIR      # prints CEPH_CONF=..., stays up
    python3 tests/ceph.py down DIR    # stops the PIDs recorded in DIR

Only Debian's ceph-mon, ceph-osd and ceph-common are needed (Makefile
DEB_TEST).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

POOL = "rbd"


def _free_port_pair():
    """Two consecutive free loopback ports (mon msgr2 and v1)."""
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p >= 65000:
            continue
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", p + 1))
        except OSError:
            continue
        finally:
            t.close()
        return p
    raise RuntimeError("no free port pair")


def _free_port_range(n=40):
    """A start port with n free ports after it (OSD messenger range)."""
    for _ in range(200):
        base = 20000 + (int.from_bytes(os.urandom(2), "little") % 30000)
        ok = True
        for p in range(base, base + n):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return base, base + n - 1
    raise RuntimeError("no free port range")


class Cluster:
    def __init__(self, dirpath, osd_size="3G"):
        self.dir = Path(dirpath).resolve()
        self.conf = self.dir / "ceph.conf"
        self.keyring = self.dir / "keyring"
        self.osd_size = osd_size
        self.procs = {}          # name -> Popen
        self.timings = {}
        self.repairs = []        # what serving_or_repair() found and did
        self._rados = None       # the probe's client (python3-rados)
        self._probe_names = None
        self._io = None
        self._held = []
        self._rados_osd = None
        self._graveyard = []
        self._old_up_from = 0     # osd.0's up_from before osd_restart

    # ---- helpers ----
    def env(self):
        e = dict(os.environ)
        e["CEPH_CONF"] = str(self.conf)
        return e

    def run(self, *args, timeout=60, check=True, input=None):
        r = subprocess.run(list(args), capture_output=True, timeout=timeout,
                           env=self.env(), input=input)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (
                " ".join(map(str, args)), r.returncode,
                (r.stderr or b"").decode(errors="replace")[-2000:]))
        return r.stdout.decode(errors="replace")

    def ceph(self, *args, timeout=60, check=True):
        return self.run("ceph", "--connect-timeout", "20", *args,
                        timeout=timeout, check=check)

    def rbd(self, *args, timeout=120, check=True):
        return self.run("rbd", *args, timeout=timeout, check=check)

    def _start(self, name, *cmd):
        log = open(self.dir / "log" / (name + ".out"), "ab")
        p = subprocess.Popen(list(cmd) + ["-f"], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, env=self.env(),
                             start_new_session=True)
        log.close()
        self.procs[name] = p
        (self.dir / "pids" / (name + ".pid")).write_text("%d\n" % p.pid)
        return p

    @property
    def osd_pid(self):
        return self.procs["osd.0"].pid

    # ---- bring-up ----
    def start(self):
        t0 = time.monotonic()
        if self.dir.exists() and any(self.dir.iterdir()):
            raise RuntimeError("%s is not empty" % self.dir)
        for d in ("run", "log", "pids", "crash", "mon.a", "osd.0"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        mon_port = _free_port_pair()
        pmin, pmax = _free_port_range()
        self.mon_addr = "[v2:127.0.0.1:%d,v1:127.0.0.1:%d]" % (mon_port,
                                                              mon_port + 1)
        d = self.dir
        size = _bytes(self.osd_size)
        self.conf.write_text(CONF_TEMPLATE.format(
            fsid=uuid.uuid4(), mon=self.mon_addr, pmin=pmin, pmax=pmax,
            dir=d, size=size))
        kr = str(self.keyring)
        self.run("ceph-authtool", kr, "--create-keyring", "--gen-key",
                 "-n", "mon.", "--cap", "mon", "allow *")
        self.run("ceph-authtool", kr, "--gen-key", "-n", "client.admin",
                 "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                 "--cap", "mgr", "allow *")
        self.run("ceph-authtool", kr, "--gen-key", "-n", "osd.0",
                 "--cap", "mon", "allow profile osd", "--cap", "osd",
                 "allow *")
        fsid = self.conf.read_text().split("fsid = ")[1].split()[0]
        self.run("monmaptool", "--create", "--clobber", "--fsid", fsid,
                 "--addv", "a", self.mon_addr, "--enable-all-features",
                 "--set-min-mon-release", "pacific", str(d / "monmap"))
        self.run("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a",
                 "--monmap", str(d / "monmap"), "--keyring", kr)
        self._start("mon.a", "ceph-mon", "-c", str(self.conf), "-i", "a")
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid, "0").strip()
        if osd_id != "0":
            raise RuntimeError("osd new returned %r" % osd_id)
        self.run("ceph-osd", "-c", str(self.conf), "-i", "0", "--mkfs",
                 "--osd-uuid", osd_uuid, timeout=120)
        self.timings["mkfs"] = time.monotonic() - t0
        self._start("osd.0", "ceph-osd", "-c", str(self.conf), "-i", "0")
        self.wait_osd_up(60)
        self.ceph("osd", "pool", "create", POOL, "8", "8", "replicated")
        self.rbd("pool", "init", POOL)
        self.timings["start"] = time.monotonic() - t0
        return self

    def _osd0(self):
        r = self.ceph("osd", "dump", "-f", "json", check=False, timeout=30)
        try:
            o = json.loads(r)["osds"]
            return o[0] if o else None
        except (ValueError, KeyError):
            return None

    def wait_osd_up(self, timeout):
        """Until osd.0 is up and in -- as the process started last: a
        killed OSD is never marked down here (no peer reports it), so the
        map says "up" at the dead one's address until the new one boots
        (up_from then moves past the epoch osd_restart saw)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.procs["osd.0"].poll() is not None:
                raise RuntimeError("ceph-osd exited: %s" % self.tail("osd.0"))
            o = self._osd0()
            if o and o.get("up") == 1 and o.get("in") == 1 and \
                    o.get("up_from", 0) > self._old_up_from:
                return
            time.sleep(0.2)
        raise RuntimeError("osd.0 not up after %ds: %s" % (timeout,
                                                           self.tail("osd.0")))

    def tail(self, name, n=30):
        p = self.dir / "log" / (name + ".log")
        if not p.exists():
            p = self.dir / "log" / (name + ".out")
        try:
            return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # ---- faults ----
    def osd_stop(self):
        os.kill(self.osd_pid, signal.SIGSTOP)

    def osd_cont(self):
        os.kill(self.osd_pid, signal.SIGCONT)

    def osd_kill(self):
        p = self.procs["osd.0"]
        p.send_signal(signal.SIGKILL)
        p.wait(30)

    def osd_restart(self, wait=True):
        o = self._osd0()
        self._old_up_from = o.get("up_from", 0) if o else 0
        self._start("osd.0", "ceph-osd", "-c", str(self.conf), "-i", "0")
        if wait:
            self.wait_osd_up(90)

    # ---- images ----
    def create_image(self, name, size="256M", features=None):
        args = ["create", "--size", size, "%s/%s" % (POOL, name)]
        if features:
            args += ["--image-feature", features]
        self.rbd(*args)

    def export(self, name):
        out = self.dir / ("export-%s.raw" % name)
        if out.exists():
            out.unlink()
        self.rbd("export", "--no-progress", "%s/%s" % (POOL, name), str(out))
        data = out.read_bytes()
        out.unlink()
        return data

    def blocklist(self):
        return self.ceph("osd", "blocklist", "ls", check=False)

    def diagnose(self):
        """The OSD's view for a failure report: ops in flight (their
        flag_point says what they wait for, e.g. "waiting for readable"),
        blocked and recent ops, each PG's state, the OSD map and the
        blocklist.  Needs a running (not stopped) OSD."""
        asok = self.dir / "run" / "osd.0.asok"
        out = []
        for cmd in ("dump_ops_in_flight", "dump_blocked_ops",
                    "dump_historic_ops", "status"):
            try:
                r = subprocess.run(["ceph", "--admin-daemon", str(asok), cmd],
                                   capture_output=True, text=True,
                                   timeout=30)
                out.append("== %s\n%s%s" % (cmd, r.stdout[-12000:],
                                            r.stderr[-2000:]))
            except subprocess.TimeoutExpired:
                out.append("== %s: no answer in 30 s" % cmd)
        for i in range(8):
            q = self.ceph("pg", "%d.%x" % (1, i), "query", check=False,
                          timeout=20)
            m = re.search(r'"state": "([^"]*)"', q)
            out.append("== pg 1.%x %s" % (i, m.group(1) if m else q[:300]))
        for args in (("osd", "dump"), ("osd", "blocklist", "ls"), ("-s",)):
            out.append("== ceph %s\n%s" % (" ".join(args),
                                          self.ceph(*args, check=False)))
        return "\n".join(out)

    def laggy_pgs(self):
        """The placement groups the OSD holds "laggy" (read lease run out
        and, after SIGSTOP/SIGCONT, sometimes never renewed: a Ceph 16
        bug, README "Serving Ceph RBD images"); [] when none or when the
        OSD does not answer."""
        out = []
        for i in range(8):
            q = self.ceph("pg", "%d.%x" % (1, i), "query", check=False,
                          timeout=20)
            m = re.search(r'"state": "([^"]*)"', q)
            if m and "laggy" in m.group(1):
                out.append("1.%x %s" % (i, m.group(1)))
        return out

    # ---- is the cluster serving? ----
    def _client(self):
        # A client kept across an OSD restart never learns the new OSD's
        # address (one OSD, killed: the monitor never marks it down, and
        # the client asks for no new map), so each OSD process gets its
        # own client; the old one's unfinished completions stay referenced.
        osd = self.procs.get("osd.0")
        if self._rados is not None and self._rados_osd is not osd:
            self._graveyard.append((self._rados, self._io, self._held))
            t0 = time.monotonic()
            self._rados.shutdown()
            self.timings["probe_client_shutdown"] = time.monotonic() - t0
            self._rados = self._io = None
            self._held = []
        if self._rados is None:
            self._rados_osd = osd
            import rados
            r = rados.Rados(conffile=str(self.conf), rados_id="admin",
                            conf={"rados_osd_op_timeout": "10",
                                  "rados_mon_op_timeout": "10"})
            r.connect(timeout=20)
            self._rados = r
        return self._rados

    def _pg_names(self):
        """One object name per placement group of POOL (found once with
        `osd map`), so a probe touches every placement group."""
        if self._probe_names is None:
            r = self._client()
            names = {}
            for i in range(400):
                n = "holdfast-probe-%d" % i
                ret, out, _ = r.mon_command(json.dumps({
                    "prefix": "osd map", "pool": POOL, "object": n,
                    "format": "json"}), b"")
                if ret == 0:
                    names.setdefault(json.loads(out)["pgid"], n)
                if len(names) == 8:           # osd pool default pg num
                    break
            self._probe_names = names
        return self._probe_names

    def stuck_pgs(self, timeout=15):
        """Write one small object into every placement group at once;
        the placement groups whose write did not complete within timeout
        (or failed).  [] when the cluster serves."""
        self._client()
        if self._io is None:
            self._io = self._rados.open_ioctx(POOL)
        # an unfinished completion stays referenced (and the ioctx open)
        # until librados has called it back
        self._held = [c for c in self._held if not c.is_complete()]
        pending = {pg: self._io.aio_write_full(n, b"probe")
                   for pg, n in self._pg_names().items()}
        self._held += pending.values()
        end = time.monotonic() + timeout
        while time.monotonic() < end and \
                not all(c.is_complete() for c in pending.values()):
            time.sleep(0.01)
        return sorted(pg for pg, c in pending.items()
                      if not c.is_complete() or c.get_return_value() < 0)

    def serving_or_repair(self, after):
        """After a test: if some placement group does not take a write
        within 15 s, do what an operator does -- note what the OSD shows
        (laggy placement groups, the flag points of its ops in flight),
        restart the OSD (kill -9, start) and check again -- so one wedge of
        Ceph's does not take every later test down with it (CI on Dec 7:
        from one test on, every rbd create timed out after 120 s).  The
        finding is kept in self.repairs for the session's summary.
        Raises when the restarted OSD does not serve either."""
        p = self.procs.get("osd.0")
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)       # a test may have left it
        if p is not None and p.poll() is None:
            stuck = self.stuck_pgs()
            if not stuck:
                return None
            what = "placement groups %s took no write in 15 s" % \
                ",".join(stuck)
            try:
                laggy = self.laggy_pgs()
            except Exception as e:                  # noqa: BLE001
                laggy = ["(pg query failed: %s)" % e]
            what += "; laggy: %s" % (", ".join(laggy) or "none")
            what += "; ops in flight wait at: %s" % self._flag_points()
            bl = [ln.split()[0] for ln in self.blocklist().splitlines()
                  if ln.strip() and not ln.startswith("listed")]
            what += "; blocklist: %d entries%s" % (len(bl), "".join(
                ", whole IP %s" % a for a in bl if a.endswith(":0/0")))
            self.osd_kill()
        else:
            last = [ln for ln in self.tail("osd.0", 400).splitlines()
                    if re.search(r"ceph_assert|Caught signal|abort|"
                                 r"terminate|suicide", ln)] or \
                self.tail("osd.0", 1).splitlines()
            what = "ceph-osd had exited (%s): %s" % (
                p.returncode if p else "never started",
                last[-1][:300] if last else "(no log)")
        t0 = time.monotonic()
        self.osd_restart()
        # a restarted OSD takes its first writes after about 15 s here
        # (peering); each probe op gives up after 10 s (rados_osd_op_timeout)
        left = self.stuck_pgs()
        while left and time.monotonic() - t0 < 120:
            left = self.stuck_pgs()
        what += "; OSD restarted, serving again after %.1f s" % (
            time.monotonic() - t0) if not left else \
            "; OSD restarted and placement groups %s still took no write" % \
            ",".join(left)
        self.repairs.append("after %s: %s" % (after, what))
        if left:
            raise RuntimeError(self.repairs[-1])
        return what

    def _flag_points(self):
        """A count of the OSD's ops in flight by what they wait for."""
        asok = self.dir / "run" / "osd.0.asok"
        try:
            r = subprocess.run(["ceph", "--admin-daemon", str(asok),
                                "dump_ops_in_flight"], capture_output=True,
                               text=True, timeout=15)
            ops = json.loads(r.stdout).get("ops", [])
        except (subprocess.TimeoutExpired, ValueError):
            return "(no answer)"
        seen = {}
        for op in ops:
            fp = op.get("type_data", {}).get("flag_point", "?")
            seen[fp] = seen.get(fp, 0) + 1
        return ", ".join("%d %s" % (v, k) for k, v in seen.items()) or \
            "nothing"

    # ---- teardown ----
    def stop(self):
        """Stop exactly the daemons started here, OSD first; reap them."""
        t0 = time.monotonic()
        if self._rados is not None:
            try:
                if self._io is not None:
                    self._io.close()
                self._rados.shutdown()
            except Exception:                       # noqa: BLE001
                pass
            self._rados = self._io = None
            self._held = []
        for name in ("osd.0", "mon.a"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            try:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
            (self.dir / "pids" / (name + ".pid")).unlink(missing_ok=True)
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self.procs.clear()
        self.timings["stop"] = time.monotonic() - t0


def _bytes(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


CONF_TEMPLATE = """[global]
fsid = {fsid}
mon host = {mon}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind port min = {pmin}
ms bind port max = {pmax}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {dir}/keyring
run dir = {dir}/run
crash dir = {dir}/crash
pid file = {dir}/run/$name.pid
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
log to stderr = false
err to stderr = true
mon data = {dir}/$name
osd data = {dir}/$name
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.1
osd objectstore = bluestore
osd memory target = 939524096
osd op num shards = 2
osd op num threads per shard = 1
# A placement group's read lease (ratio x osd heartbeat grace = 80 s here,
# 16 s by default) outlasts the tests' OSD freezes (SIGSTOP for 15 s and
# more): on SIGCONT no PG finds its lease run out, so none latches "laggy"
# -- which Ceph 16 sometimes never clears, parking every op on the PG in
# "waiting for readable" until the OSD restarts (README "Serving Ceph RBD
# images").  One OSD: no peer waits on the lease.
osd pool default read lease ratio = 4.0
bluestore block create = true
bluestore block size = {size}
bluestore fsck on mkfs = false
bluestore fsck on mount = false
bluestore cache autotune = false
bluestore cache size = 134217728
bluestore debug enforce settings = ssd
bluestore rocksdb options annex = write_buffer_size=16777216,max_total_wal_size=134217728

[client]
admin socket =
log file = {dir}/log/$name.$pid.log
rbd cache = false
"""


def main(argv):
    if len(argv) != 3 or argv[1] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    d = Path(argv[2])
    if argv[1] == "up":
        c = Cluster(d)
        try:
            c.start()
        except Exception:
            c.stop()
            raise
        print("CEPH_CONF=%s" % c.conf)
        sys.stdout.flush()
        # Stay the daemons' parent until told to stop, so they are reaped.
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        (d / "pids" / "keeper.pid").write_text("%d\n" % os.getpid())
        while not stop:
            time.sleep(0.2)
        c.stop()
        return 0
    pidf = d / "pids" / "keeper.pid"
    if pidf.exists():
        pid = int(pidf.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
