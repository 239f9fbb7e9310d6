"""Boot a QEMU guest against an iSCSI target and collect its verdict.

A guest is the host's Debian kernel plus the initramfs from initramfs.py,
run under TCG (KVM does not work on these machines) with one vCPU, under a
hard `timeout -k 5 N`.  /init (init.sh) runs the scenario named by the
hf_* parameters on the kernel command line and prints `RESULT: PASS NAME`
or `RESULT: FAIL NAME reason` on the serial console, which QEMU writes to
a log file that this module reads while the guest runs (so a test can wait
for a line such as LOOP-START and then break the backing store).

The disk reaches the guest in one of two ways:
  - qemu:   QEMU's own iSCSI initiator (libiscsi, `-drive driver=iscsi`)
            behind a virtio-blk device, the guest sees /dev/vda;
  - kernel: the guest's kernel initiator (open-iscsi) over QEMU's user-mode
            network with `restrict=on` (the guest reaches nothing but the
            forward): guest port 10.0.2.100:3260 is forwarded, one socat per
            TCP connection, to the target's portal on 127.0.0.1.

Also a command for trying scenarios by hand:
    python3 tests/guest/guest.py --disk qemu --portal 127.0.0.1:3260 \\
        --iqn IQN [--test dataset|loop] [--param KEY=VALUE ...]
"""

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import initramfs  # noqa: E402

QEMU = "qemu-system-x86_64"
QEMU_INITIATOR_IQN = "iqn.2026-11.org.example:qemu-guest"
GUEST_PORTAL = "10.0.2.100:3260"
GUEST_PORTAL2 = "10.0.2.101:3260"     # the second node (disk mpath)
GUEST_MEM_MB = 256

RESULT_RE = re.compile(r"RESULT: (PASS|FAIL) (\S+) ?(.*)")
SUM_RE = re.compile(r"^SUM ([0-9a-f]{64}) (\S+)\s*$", re.M)


class GuestError(AssertionError):
    """A guest run that failed; str() includes the serial log."""


def _cmdline(params):
    # no_timer_check: under TCG on a loaded host the kernel's check of
    # the 8254 timer interrupt can time out and panic the boot ("IO-APIC
    # + timer doesn't work"); a VM's timer is not broken, skip the check
    parts = ["console=ttyS0", "panic=-1", "loglevel=4", "no_timer_check"]
    for k, v in params.items():
        v = str(v)
        if not v or re.search(r"\s", v):
            raise ValueError("kernel parameter %s=%r must be one word" %
                             (k, v))
        parts.append("hf_%s=%s" % (k, v))
    return " ".join(parts)


class Guest:
    """One QEMU run.  Create, start(), optionally wait_line() while it runs,
    then finish() for the parsed result."""

    def __init__(self, workdir, name, disk, portal, iqn, lun=1,
                 params=None, time_limit=120, extra_args=(), portal2=None,
                 ctl=False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.disk = disk
        self.portal = portal            # host side "127.0.0.1:PORT"
        self.portal2 = portal2          # the second node's (disk mpath)
        self.iqn = iqn
        self.lun = lun
        self.time_limit = time_limit
        # the guest's own watchdog fires before the hard limit, so a stuck
        # scenario still reports what it was blocked on
        self.params = {"name": name, "lun": lun, "iqn": iqn,
                       "watchdog": max(int(time_limit) - 20, 20)}
        self.params.update(params or {})
        self.extra_args = list(extra_args)
        # ctl: a second serial port (the guest's ttyS1) on a unix socket,
        # for tell(); the write loop ends when the host says "stop"
        self.ctl_path = self.workdir / ("%s.ctl" % name) if ctl else None
        if ctl:
            if len(str(self.ctl_path)) > 100 or "," in str(self.ctl_path):
                raise ValueError("control socket path %s" % self.ctl_path)
            self.params["ctl"] = "ttyS1"
        self.log_path = self.workdir / ("%s.serial.log" % name)
        self.socat_log = self.workdir / ("%s.socat.log" % name)
        self.proc = None
        self.t_start = None
        self.wall = None

    def argv(self):
        kernel, image, _ = initramfs.build()
        params = dict(self.params)
        argv = ["timeout", "-k", "5", str(int(self.time_limit)), QEMU,
                "-nodefaults", "-no-user-config", "-machine", "q35",
                "-accel", "tcg", "-cpu", "max", "-smp", "1",
                "-m", str(GUEST_MEM_MB), "-kernel", kernel,
                "-initrd", str(image), "-display", "none",
                "-monitor", "none", "-serial", "file:%s" % self.log_path,
                "-no-reboot"]
        if self.disk == "qemu":
            params["disk"] = "virtio"
            host, port = self.portal.rsplit(":", 1)
            argv += ["-iscsi", "initiator-name=%s" % QEMU_INITIATOR_IQN,
                     "-drive", "driver=iscsi,transport=tcp,portal=%s:%s,"
                     "target=%s,lun=%d,if=none,id=d0" %
                     (host, port, self.iqn, self.lun),
                     "-device", "virtio-blk-pci,drive=d0"]
        elif self.disk == "kernel":
            params["disk"] = "iscsi"
            params.setdefault("portal", GUEST_PORTAL)
            gaddr, gport = GUEST_PORTAL.split(":")
            for bad in (",", " "):
                if bad in str(self.socat_log):
                    raise ValueError("socat log path %s must not contain "
                                     "%r" % (self.socat_log, bad))
            fwd = "tcp:%s:%s-cmd:socat -lf %s - TCP:%s" % (
                gaddr, gport, self.socat_log, self.portal)
            argv += ["-netdev", "user,id=n0,restrict=on,guestfwd=%s" % fwd,
                     "-device", "virtio-net-pci,netdev=n0,romfile="]
        elif self.disk == "mpath":
            # two holdfast nodes: 10.0.2.100:3260 -> portal, 10.0.2.101:3260
            # -> portal2, one socat per connection each
            params["disk"] = "mpath"
            params.setdefault("portal", GUEST_PORTAL)
            params.setdefault("portal2", GUEST_PORTAL2)
            fwds = []
            for gp, hp, lg in ((GUEST_PORTAL, self.portal, self.socat_log),
                               (GUEST_PORTAL2, self.portal2,
                                self.workdir / ("%s.socat2.log" %
                                                self.name))):
                gaddr, gport = gp.split(":")
                if "," in str(lg) or " " in str(lg):
                    raise ValueError("socat log path %s" % lg)
                fwds.append("guestfwd=tcp:%s:%s-cmd:socat -lf %s - TCP:%s"
                            % (gaddr, gport, lg, hp))
            argv += ["-netdev", "user,id=n0,restrict=on," + ",".join(fwds),
                     "-device", "virtio-net-pci,netdev=n0,romfile="]
        else:
            raise ValueError("disk must be qemu, kernel or mpath")
        if self.ctl_path is not None:
            argv += ["-chardev", "socket,id=hfctl,path=%s,server=on,"
                     "wait=off" % self.ctl_path, "-serial", "chardev:hfctl"]
        argv += ["-append", _cmdline(params)] + self.extra_args
        return argv

    def start(self):
        argv = self.argv()
        self.log_path.write_bytes(b"")
        with open(self.workdir / ("%s.cmd" % self.name), "w") as f:
            f.write(" ".join(shlex.quote(a) for a in argv) + "\n")
        self._stderr_file = open(self.workdir / ("%s.qemu.err" % self.name),
                                "wb")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr_file,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def tell(self, text):
        """Write a line to the guest's ttyS1 (Guest(..., ctl=True))."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.ctl_path))
            s.sendall(text.encode() + b"\n")
            # QEMU reads what is queued before it sees the close
            time.sleep(0.5)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_line(self, pattern, timeout):
        """Wait until a serial line matches pattern; returns (match, host
        monotonic time it was first seen) or (None, None) if the guest
        ended or timeout passed."""
        rx = re.compile(pattern, re.M)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m, time.monotonic()
            if not self.running() or time.monotonic() >= end:
                m = rx.search(self.log())
                return (m, time.monotonic()) if m else (None, None)
            time.sleep(0.05)

    def wait(self):
        """Wait for QEMU to exit (the time limit bounds this)."""
        try:
            self.proc.wait(self.time_limit + 15)
        except subprocess.TimeoutExpired:
            self.kill()
        self.wall = time.monotonic() - self.t_start
        self._stderr_file.close()
        return self.proc.returncode

    def kill(self):
        """Stop QEMU (and the timeout wrapper) by process group."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def qemu_stderr(self):
        """What QEMU printed (its iSCSI driver reports failed commands,
        NOP timeouts and reconnects here)."""
        try:
            return (self.workdir / ("%s.qemu.err" % self.name)).read_text(
                errors="replace")
        except OSError:
            return ""

    def report(self, why):
        """Text for a failed assertion: why, then the whole serial log."""
        parts = ["guest %s: %s" % (self.name, why),
                 "qemu exit %s, wall %.1fs, limit %ds" % (
                     self.proc.returncode if self.proc else None,
                     self.wall or -1, self.time_limit)]
        err = self.workdir / ("%s.qemu.err" % self.name)
        if err.exists() and err.stat().st_size:
            parts.append("---- qemu stderr ----\n" +
                         err.read_text(errors="replace")[-3000:])
        if self.socat_log.exists() and self.socat_log.stat().st_size:
            parts.append("---- socat log ----\n" +
                         self.socat_log.read_text(errors="replace")[-3000:])
        parts.append("---- serial log (%s) ----\n%s" % (self.log_path,
                                                        self.log()))
        return "\n".join(parts)

    def finish(self, expect_pass=True):
        """Wait for the guest and return its RESULT match; raises
        GuestError with the serial log unless the guest printed
        RESULT: PASS for this scenario (or any RESULT if not
        expect_pass)."""
        self.wait()
        results = [m for m in RESULT_RE.finditer(self.log())
                   if m.group(2) == self.name]
        if not results:
            limit = " (hit the %ds time limit)" % self.time_limit \
                if self.proc.returncode in (124, 137, -9) else ""
            raise GuestError(self.report("no RESULT line%s" % limit))
        r = results[0]          # the first verdict counts (watchdog)
        if expect_pass and r.group(1) != "PASS":
            raise GuestError(self.report("FAIL: %s" % r.group(3)))
        return r

    def sums(self):
        """{guest path: sha256} from the SUM lines."""
        return {p: h for h, p in SUM_RE.findall(self.log())}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        if self.proc is not None and self.wall is None:
            self.wall = time.monotonic() - self.t_start
            self._stderr_file.close()


def main():
    ap = argparse.ArgumentParser(description="run one guest scenario")
    ap.add_argument("--disk", choices=("qemu", "kernel"), default="qemu")
    ap.add_argument("--portal", required=True, help="host ADDR:PORT")
    ap.add_argument("--iqn", required=True)
    ap.add_argument("--lun", type=int, default=1)
    ap.add_argument("--test", default="dataset")
    ap.add_argument("--name", default="manual")
    ap.add_argument("--dir", default="build/guest/manual")
    ap.add_argument("--limit", type=int, default=180)
    ap.add_argument("--param", action="append", default=[],
                    help="extra hf_KEY=VALUE for init.sh")
    a = ap.parse_args()
    params = {"test": a.test}
    for kv in a.param:
        k, v = kv.split("=", 1)
        params[k] = v
    g = Guest(a.dir, a.name, a.disk, a.portal, a.iqn, a.lun, params,
              a.limit)
    with g:
        g.start()
        try:
            r = g.finish()
        except GuestError as e:
            print(e)
            return 1
    print(g.log())
    print("%s %s in %.1fs" % (r.group(1), a.name, g.wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
