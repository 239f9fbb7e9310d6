"""Shared helpers for the holdfast pytest suite.

Everything here is initiator-side: running the libiscsi / QEMU tools with
timeouts, writing libconfig text, and a tiny ctypes binding of libiscsi for
checks the command-line tools cannot make (sense data of a failed command,
a session that stays logged in while the test does something else).
"""

import ctypes
import os
import random
import re
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IQN = "iqn.2026-11.org.example:t1"
INITIATOR_IQN = "iqn.2026-11.org.example:pytest"
TGTADM = "/usr/sbin/tgtadm"
TGTD = "/usr/sbin/tgtd"
# HOLDFAST_TEST_TGTD=1: run the suite against the stock tgtd instead, to
# check the initiator side of the tests against a known-good target
USE_TGTD = os.environ.get("HOLDFAST_TEST_TGTD") == "1"


def build_dir():
    """The build tree under test: $HOLDFAST_BUILD, default <repo>/build."""
    b = Path(os.environ.get("HOLDFAST_BUILD", "build"))
    return b if b.is_absolute() else REPO / b


def sanitized():
    """True when the daemon under test carries ASan/UBSan (slower)."""
    return "san" in build_dir().name or bool(os.environ.get("ASAN_OPTIONS"))


def tscale():
    """Multiplier for every timeout: sanitizer builds run several times
    slower, and HOLDFAST_TIMEOUT_SCALE lets a slow machine stretch them."""
    s = float(os.environ.get("HOLDFAST_TIMEOUT_SCALE", "1"))
    return s * (3 if sanitized() else 1)


# --------------------------------------------------------------------------
# processes

def run(cmd, timeout=60, check=True, env=None, input=None, cwd=None):
    """Run cmd (a list) with a hard timeout so a hang fails the test instead
    of blocking the suite.  Returns the CompletedProcess (text mode).  With
    check, a non-zero exit raises AssertionError showing the output."""
    timeout = timeout * tscale()
    try:
        cp = subprocess.run(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            errors="replace", timeout=timeout, env=env,
                            input=input, cwd=cwd,
                            stdin=None if input is not None
                            else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            "command timed out after %.0fs: %s\nstdout:\n%s\nstderr:\n%s" %
            (timeout, " ".join(map(str, cmd)), _txt(e.stdout), _txt(e.stderr)))
    if check and cp.returncode != 0:
        raise AssertionError(
            "command failed (exit %d): %s\nstdout:\n%s\nstderr:\n%s" %
            (cp.returncode, " ".join(map(str, cmd)), cp.stdout[-4000:],
             cp.stderr[-4000:]))
    return cp


def _txt(b):
    if b is None:
        return ""
    if isinstance(b, bytes):
        return b.decode(errors="replace")[-4000:]
    return b[-4000:]


def qemu_io(url, *cmds, timeout=90, check=True, env=None):
    """Run qemu-io with the given -c commands on an iscsi:// URL.  qemu-io
    exits 0 even after some failed commands in older versions, so its output
    is also scanned for failure messages."""
    argv = ["qemu-io", "-f", "raw"]
    for c in cmds:
        argv += ["-c", c]
    argv.append(url)
    cp = run(argv, timeout=timeout, check=False, env=env)
    bad = re.search(r"(failed|error|Error|Pattern verification)",
                    cp.stdout + cp.stderr)
    if check and (cp.returncode != 0 or bad):
        raise AssertionError(
            "qemu-io failed (exit %d): %s\nstdout:\n%s\nstderr:\n%s" %
            (cp.returncode, " ".join(argv), cp.stdout[-4000:],
             cp.stderr[-4000:]))
    return cp


def free_tcp_port(host="127.0.0.1"):
    """A TCP port on host that nobody listens on right now.  Taken from
    20000..32767, below Linux's ephemeral range, so the initiators' own
    outgoing connections cannot grab it between the probe and the bind."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free TCP port")


def port_accepts(port, host="127.0.0.1", timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(pred, timeout, interval=0.05):
    """Poll pred() until true or timeout seconds pass; returns the last
    value."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------
# libconfig text

def cfg_value(v, indent=""):
    """Render a Python value as libconfig: dict -> group, list of dicts ->
    list ( ), list of scalars -> array [ ], bool, int, str."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        inner = indent + "  "
        body = "".join("%s%s = %s;\n" % (inner, k, cfg_value(x, inner))
                       for k, x in v.items())
        return "{\n%s%s}" % (body, indent)
    if isinstance(v, (list, tuple)):
        if any(isinstance(x, dict) for x in v):
            inner = indent + "  "
            return "(\n%s\n%s)" % (
                ",\n".join(inner + cfg_value(x, inner) for x in v), indent)
        return "[ %s ]" % ", ".join(cfg_value(x, indent) for x in v)
    raise TypeError("cannot render %r as libconfig" % (v,))


def cfg_text(settings):
    """Render a dict of top-level settings as a libconfig file."""
    return "".join("%s = %s;\n" % (k, cfg_value(v)) for k, v in
                   settings.items())


# --------------------------------------------------------------------------
# libiscsi through ctypes

SCSI_STATUS_GOOD = 0
SCSI_STATUS_CHECK_CONDITION = 2
SENSE_ILLEGAL_REQUEST = 0x05
ASCQ_LBA_OUT_OF_RANGE = 0x2100
ISCSI_SESSION_NORMAL = 2
ISCSI_HEADER_DIGEST_NONE = 0


class _ScsiSense(ctypes.Structure):
    _fields_ = [("error_type", ctypes.c_ubyte), ("key", ctypes.c_int),
                ("ascq", ctypes.c_int), ("bits", ctypes.c_ubyte),
                ("bit_pointer", ctypes.c_ubyte),
                ("field_pointer", ctypes.c_uint16)]


class _ScsiData(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int),
                ("data", ctypes.POINTER(ctypes.c_ubyte))]


class _ScsiTask(ctypes.Structure):
    # leading fields of struct scsi_task (iscsi/scsi-lowlevel.h)
    _fields_ = [("status", ctypes.c_int), ("cdb_size", ctypes.c_int),
                ("xfer_dir", ctypes.c_int), ("expxferlen", ctypes.c_int),
                ("cdb", ctypes.c_ubyte * 16),
                ("residual_status", ctypes.c_int),
                ("residual", ctypes.c_size_t), ("sense", _ScsiSense),
                ("datain", _ScsiData)]


_lib = None


def libiscsi():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("libiscsi.so.7", use_errno=True) \
            if _have("libiscsi.so.7") else ctypes.CDLL("libiscsi.so")
        P = ctypes.c_void_p
        T = ctypes.POINTER(_ScsiTask)
        lib.iscsi_create_context.restype = P
        lib.iscsi_create_context.argtypes = [ctypes.c_char_p]
        lib.iscsi_destroy_context.argtypes = [P]
        lib.iscsi_set_targetname.argtypes = [P, ctypes.c_char_p]
        lib.iscsi_set_session_type.argtypes = [P, ctypes.c_int]
        lib.iscsi_set_header_digest.argtypes = [P, ctypes.c_int]
        lib.iscsi_set_noautoreconnect.argtypes = [P, ctypes.c_int]
        lib.iscsi_set_timeout.argtypes = [P, ctypes.c_int]
        lib.iscsi_set_immediate_data.argtypes = [P, ctypes.c_int]
        lib.iscsi_set_initial_r2t.argtypes = [P, ctypes.c_int]
        lib.iscsi_full_connect_sync.argtypes = [P, ctypes.c_char_p,
                                                ctypes.c_int]
        lib.iscsi_logout_sync.argtypes = [P]
        lib.iscsi_disconnect.argtypes = [P]
        lib.iscsi_get_error.restype = ctypes.c_char_p
        lib.iscsi_get_error.argtypes = [P]
        lib.iscsi_read10_sync.restype = T
        lib.iscsi_read10_sync.argtypes = [P, ctypes.c_int, ctypes.c_uint32,
                                          ctypes.c_uint32, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int]
        lib.iscsi_read16_sync.restype = T
        lib.iscsi_read16_sync.argtypes = [P, ctypes.c_int, ctypes.c_uint64,
                                          ctypes.c_uint32, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int]
        lib.iscsi_write10_sync.restype = T
        lib.iscsi_write10_sync.argtypes = [P, ctypes.c_int, ctypes.c_uint32,
                                           ctypes.c_char_p, ctypes.c_uint32,
                                           ctypes.c_int, ctypes.c_int,
                                           ctypes.c_int, ctypes.c_int,
                                           ctypes.c_int, ctypes.c_int]
        lib.iscsi_testunitready_sync.restype = T
        lib.iscsi_testunitready_sync.argtypes = [P, ctypes.c_int]
        lib.iscsi_readcapacity16_sync.restype = T
        lib.iscsi_readcapacity16_sync.argtypes = [P, ctypes.c_int]
        lib.scsi_free_scsi_task.argtypes = [T]
        _lib = lib
    return _lib


def _have(name):
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


class TaskResult:
    """What a finished SCSI command returned (copied out of the task)."""

    def __init__(self, task):
        if not task:
            self.ok = False
            self.status = None
            self.key = self.ascq = None
            self.data = b""
            return
        t = task.contents
        self.status = t.status
        self.key = t.sense.key
        self.ascq = t.sense.ascq
        n = t.datain.size
        self.data = bytes(t.datain.data[:n]) if n > 0 and t.datain.data \
            else b""
        self.ok = self.status == SCSI_STATUS_GOOD

    def __repr__(self):
        return "TaskResult(status=%r key=%r ascq=%#x len=%d)" % (
            self.status, self.key, self.ascq or 0, len(self.data))


class IscsiSession:
    """One libiscsi session to a LUN, held open for as long as the test
    needs it.  Automatic reconnect is off so a drop is visible."""

    def __init__(self, portal, iqn, lun, initiator=INITIATOR_IQN,
                 timeout=30, immediate_data=None, initial_r2t=None):
        """immediate_data / initial_r2t: True or False to make the
        initiator offer ImmediateData / InitialR2T = Yes or No (libiscsi
        offers Yes / No by default)."""
        self.lib = libiscsi()
        self.lun = lun
        self.ctx = self.lib.iscsi_create_context(initiator.encode())
        assert self.ctx, "iscsi_create_context failed"
        self.lib.iscsi_set_targetname(self.ctx, iqn.encode())
        self.lib.iscsi_set_session_type(self.ctx, ISCSI_SESSION_NORMAL)
        self.lib.iscsi_set_header_digest(self.ctx, ISCSI_HEADER_DIGEST_NONE)
        self.lib.iscsi_set_noautoreconnect(self.ctx, 1)
        self.lib.iscsi_set_timeout(self.ctx, int(timeout * tscale()))
        if immediate_data is not None:
            self.lib.iscsi_set_immediate_data(self.ctx, int(immediate_data))
        if initial_r2t is not None:
            self.lib.iscsi_set_initial_r2t(self.ctx, int(initial_r2t))
        if self.lib.iscsi_full_connect_sync(self.ctx, portal.encode(),
                                            lun) != 0:
            err = self.error()
            self.lib.iscsi_destroy_context(self.ctx)
            self.ctx = None
            raise AssertionError("iSCSI login to %s %s lun %d failed: %s" %
                                 (portal, iqn, lun, err))

    def error(self):
        e = self.lib.iscsi_get_error(self.ctx)
        return e.decode(errors="replace") if e else ""

    def _done(self, task):
        r = TaskResult(task)
        if task:
            self.lib.scsi_free_scsi_task(task)
        return r

    def read10(self, lba, nblocks, block_size=512):
        return self._done(self.lib.iscsi_read10_sync(
            self.ctx, self.lun, lba, nblocks * block_size, block_size,
            0, 0, 0, 0, 0))

    def read16(self, lba, nblocks, block_size=512):
        return self._done(self.lib.iscsi_read16_sync(
            self.ctx, self.lun, lba, nblocks * block_size, block_size,
            0, 0, 0, 0, 0))

    def write10(self, lba, data, block_size=512):
        return self._done(self.lib.iscsi_write10_sync(
            self.ctx, self.lun, lba, data, len(data), block_size,
            0, 0, 0, 0, 0))

    def test_unit_ready(self):
        return self._done(self.lib.iscsi_testunitready_sync(self.ctx,
                                                            self.lun))

    def read_capacity16(self):
        """(number of blocks, block size) or raises."""
        r = self._done(self.lib.iscsi_readcapacity16_sync(self.ctx,
                                                          self.lun))
        assert r.ok and len(r.data) >= 12, "READ CAPACITY(16): %r %s" % (
            r, self.error())
        return (int.from_bytes(r.data[0:8], "big") + 1,
                int.from_bytes(r.data[8:12], "big"))

    def close(self, logout=True):
        if self.ctx:
            if logout:
                self.lib.iscsi_logout_sync(self.ctx)
            self.lib.iscsi_destroy_context(self.ctx)
            self.ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
