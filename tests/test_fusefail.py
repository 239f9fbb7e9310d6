"""fusefail on its own: the failing FUSE mount the hang tests rely on.

Proves that O_DIRECT I/O on the mount reaches fusefail's handlers, that the
control file switches real kernel errors (EIO, ENOSPC, ...) on and off, that
a failed write leaves the backing file untouched, and that the counters tell
whether a request reached the backing store.
"""

import errno
import mmap
import os
import time

import pytest

from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import run, tscale

BS = 4096


def aligned(byte, n=BS):
    """A page-aligned buffer (O_DIRECT needs aligned memory)."""
    m = mmap.mmap(-1, n)
    m.write(bytes([byte]) * n)
    return m


def open_direct(path, create=True):
    flags = os.O_RDWR | os.O_DIRECT | (os.O_CREAT if create else 0)
    return os.open(str(path), flags, 0o644)


def pread_direct(fd, off, n=BS):
    m = mmap.mmap(-1, n)
    got = os.preadv(fd, [m], off)
    return got, m[:got]


def test_direct_io_passes_through(fusefs):
    p = fusefs.path("disk.img")
    fd = open_direct(p)
    try:
        os.ftruncate(fd, 1 << 20)
        assert os.pwrite(fd, aligned(0xab), 0) == BS
        assert os.pwrite(fd, aligned(0xcd), BS) == BS
        got, data = pread_direct(fd, 0, 2 * BS)
        assert got == 2 * BS
        assert data == b"\xab" * BS + b"\xcd" * BS
        os.fsync(fd)
    finally:
        os.close(fd)
    # the data is in the source directory, not only in some cache
    assert fusefs.read_backing("disk.img", 0, 2 * BS) == \
        b"\xab" * BS + b"\xcd" * BS
    st = fusefs.stats()
    assert st["writes"] >= 2 and st["reads"] >= 1 and st["flushes"] >= 1, st
    assert st["failed_writes"] == 0 and st["failed_reads"] == 0, st


def test_dd_oflag_direct(fusefs):
    p = fusefs.path("dd.img")
    run(["dd", "if=/dev/zero", "of=%s" % p, "bs=64k", "count=16",
         "oflag=direct", "status=none"])
    assert os.path.getsize(str(fusefs.backing("dd.img"))) == 16 * 65536
    before = fusefs.stats()["writes"]
    run(["dd", "if=%s" % p, "of=/dev/null", "bs=64k", "iflag=direct",
         "status=none"])
    fusefs.set("write=EIO")
    cp = run(["dd", "if=/dev/zero", "of=%s" % p, "bs=64k", "count=1",
              "oflag=direct", "conv=notrunc", "status=none"], check=False)
    assert cp.returncode != 0
    assert "Input/output error" in cp.stderr, cp.stderr
    assert fusefs.stats()["writes"] > before


@pytest.mark.parametrize("name,code", [("EIO", errno.EIO),
                                       ("ENOSPC", errno.ENOSPC),
                                       ("EDQUOT", errno.EDQUOT)])
def test_write_error_then_ok(fusefs, name, code):
    p = fusefs.path("disk.img")
    fd = open_direct(p)
    try:
        os.ftruncate(fd, 1 << 20)
        assert os.pwrite(fd, aligned(0x11), 0) == BS
        fusefs.set("write=%s" % name)
        with pytest.raises(OSError) as ei:
            os.pwrite(fd, aligned(0x22), 0)
        assert ei.value.errno == code
        # reads still work while only writes fail
        got, data = pread_direct(fd, 0)
        assert data == b"\x11" * BS
        assert fusefs.stats()["failed_writes"] == 1
        # the failed write did not land
        assert fusefs.read_backing("disk.img", 0, BS) == b"\x11" * BS
        fusefs.ok()
        assert os.pwrite(fd, aligned(0x33), 0) == BS
        assert fusefs.read_backing("disk.img", 0, BS) == b"\x33" * BS
        assert fusefs.stats()["failed_writes"] == 1
    finally:
        os.close(fd)


def test_read_and_flush_errors(fusefs):
    p = fusefs.path("disk.img")
    fd = open_direct(p)
    try:
        os.ftruncate(fd, 1 << 20)
        os.pwrite(fd, aligned(0x44), 0)
        fusefs.set("read=EIO")
        with pytest.raises(OSError) as ei:
            pread_direct(fd, 0)
        assert ei.value.errno == errno.EIO
        os.pwrite(fd, aligned(0x55), BS)      # writes unaffected
        fusefs.set("flush=EIO")
        with pytest.raises(OSError) as ei:
            os.fsync(fd)
        assert ei.value.errno == errno.EIO
        with pytest.raises(OSError) as ei:
            os.fdatasync(fd)
        assert ei.value.errno == errno.EIO
        fusefs.set("all=ENOSPC")
        for op in (lambda: pread_direct(fd, 0),
                   lambda: os.pwrite(fd, aligned(0x66), 0),
                   lambda: os.fsync(fd)):
            with pytest.raises(OSError) as ei:
                op()
            assert ei.value.errno == errno.ENOSPC
        fusefs.ok()
        assert pread_direct(fd, 0, 2 * BS)[1] == \
            b"\x44" * BS + b"\x55" * BS
        os.fsync(fd)
        st = fusefs.stats()
        assert st["failed_reads"] == 2, st
        assert st["failed_writes"] == 1, st
        assert st["failed_flushes"] == 3, st
    finally:
        os.close(fd)


def test_fallocate_follows_write(fusefs):
    p = fusefs.path("disk.img")
    fd = open_direct(p)
    try:
        os.ftruncate(fd, 1 << 20)
        os.pwrite(fd, aligned(0x77), 0)
        fusefs.set("write=EIO")
        with pytest.raises(OSError) as ei:
            # punch a hole, as UNMAP does (FALLOC_FL_PUNCH_HOLE |
            # FALLOC_FL_KEEP_SIZE through the libc call)
            os.posix_fallocate(fd, 0, BS)
        assert ei.value.errno == errno.EIO
        fusefs.ok()
        os.posix_fallocate(fd, 0, 2 * BS)
        assert fusefs.stats()["failed_fallocs"] == 1
    finally:
        os.close(fd)


def test_delay_and_match(fusefs):
    a, b = fusefs.path("a.img"), fusefs.path("b.img")
    fa, fb = open_direct(a), open_direct(b)
    try:
        for fd in (fa, fb):
            os.ftruncate(fd, 1 << 20)
        fusefs.set("match=a.img write=EIO delay=300")
        t = time.monotonic()
        assert os.pwrite(fb, aligned(0x01), 0) == BS   # not matched: fast
        assert time.monotonic() - t < 0.25
        t = time.monotonic()
        with pytest.raises(OSError):
            os.pwrite(fa, aligned(0x02), 0)
        took = time.monotonic() - t
        assert 0.28 <= took < 5, took
        fusefs.set("delay=200")
        t = time.monotonic()
        assert os.pwrite(fa, aligned(0x03), 0) == BS
        assert 0.18 <= time.monotonic() - t < 5
    finally:
        os.close(fa)
        os.close(fb)


def test_switch_is_quick(fusefs):
    """The control file is honoured within a few ms of the rename."""
    fd = open_direct(fusefs.path("disk.img"))
    try:
        os.ftruncate(fd, 1 << 20)
        for _ in range(5):
            fusefs.set("write=EIO")
            with pytest.raises(OSError):
                os.pwrite(fd, aligned(0x01), 0)
            fusefs.ok()
            os.pwrite(fd, aligned(0x01), 0)
    finally:
        os.close(fd)


def test_stats_file_hidden_and_readonly(fusefs):
    assert ".fusefail-stats" not in os.listdir(str(fusefs.mnt))
    with pytest.raises(OSError):
        open(str(fusefs.mnt / ".fusefail-stats"), "w")
    st = fusefs.stats()
    assert set(st) >= {"reads", "writes", "flushes", "failed_reads",
                       "failed_writes", "failed_flushes"}


def timed_writes(fd, n, size, threads=1):
    """n O_DIRECT writes of size bytes from `threads` threads; seconds."""
    import threading
    buf = aligned(0x5a, size)
    per = n // threads

    def worker(k):
        for i in range(per):
            assert os.pwrite(fd, buf, (k * per + i) * size) == size

    t = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return time.monotonic() - t


def test_write_rate_limits_bandwidth(fusefs):
    """write_rate=N caps the bytes per second of writes, and concurrent
    writers share the cap rather than multiplying it."""
    fd = open_direct(fusefs.path("slow.img"))
    try:
        os.ftruncate(fd, 16 << 20)
        free = timed_writes(fd, 32, 64 << 10)           # 2 MiB unthrottled
        fusefs.set("write_rate=4M")
        one = timed_writes(fd, 32, 64 << 10)            # 2 MiB at 4 MiB/s
        four = timed_writes(fd, 32, 64 << 10, threads=4)
        # reads are not throttled
        t = time.monotonic()
        got, _ = pread_direct(fd, 0, 1 << 20)
        rd = time.monotonic() - t
    finally:
        os.close(fd)
    assert got == 1 << 20
    assert free < one - 0.2, (free, one)   # the throttle is what costs
    # 2 MiB at 4 MiB/s = 0.5 s
    assert 0.45 <= one < 0.5 + 1.0 * tscale(), one
    assert 0.45 <= four < 0.5 + 1.0 * tscale(), four
    assert rd < 0.3, rd
    assert fusefs.read_backing("slow.img", 0, 64 << 10) == b"\x5a" * (64 << 10)


def test_write_rate_then_eio(fusefs):
    """A throttled destination that starts failing on demand: the rate
    rule stays while write=EIO is added, failed writes reach nothing,
    and ok clears both."""
    fd = open_direct(fusefs.path("dst.img"))
    try:
        os.ftruncate(fd, 1 << 20)
        fusefs.set("write_rate=1M")
        t = time.monotonic()
        assert os.pwrite(fd, aligned(0x11, 256 << 10), 0) == 256 << 10
        assert time.monotonic() - t >= 0.24            # 256 KiB at 1 MiB/s
        fusefs.set("write_rate=1M write=EIO")
        t = time.monotonic()
        with pytest.raises(OSError) as ei:
            os.pwrite(fd, aligned(0x22, 256 << 10), 0)
        assert ei.value.errno == errno.EIO
        # a failing write does not wait for the link nor use it
        assert time.monotonic() - t < 0.2
        assert fusefs.read_backing("dst.img", 0, 4) == b"\x11" * 4
        assert fusefs.stats()["failed_writes"] >= 1
        fusefs.ok()
        t = time.monotonic()
        assert os.pwrite(fd, aligned(0x33, 256 << 10), 0) == 256 << 10
        assert time.monotonic() - t < 0.2
    finally:
        os.close(fd)
    assert fusefs.read_backing("dst.img", 0, 4) == b"\x33" * 4


def test_write_delay_is_per_write_only(fusefs):
    """write_delay=US adds latency to writes, not to reads or flushes.
    Writes to different files wait in parallel (latency, not bandwidth);
    writes to one file are serialized by the kernel (libfuse 3.14 cannot
    ask for parallel direct writes), so they queue behind each other."""
    import threading
    fd = open_direct(fusefs.path("lat.img"))
    fds = [open_direct(fusefs.path("lat%d.img" % i)) for i in range(8)]
    try:
        os.ftruncate(fd, 1 << 20)
        fusefs.set("write_delay=200000")                # 200 ms
        t = time.monotonic()
        assert os.pwrite(fd, aligned(0x44), 0) == BS
        w = time.monotonic() - t
        t = time.monotonic()
        pread_direct(fd, 0)
        os.fsync(fd)
        rf = time.monotonic() - t
        bufs = [aligned(0x45) for _ in fds]
        ts = [threading.Thread(target=os.pwrite, args=(f, b, 0))
              for f, b in zip(fds, bufs)]
        t = time.monotonic()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        par = time.monotonic() - t
    finally:
        os.close(fd)
        for f in fds:
            os.close(f)
    assert 0.2 <= w < 0.2 + 0.5 * tscale(), w
    assert rf < 0.15, rf                # no delay on reads and flushes
    # eight files at once take about one delay, not eight (1.6 s)
    assert 0.2 <= par < 0.2 + 0.6 * tscale(), par
    assert fusefs.read_backing("lat7.img", 0, 4) == b"\x45" * 4


def test_locks_pass_through_and_fail_on_demand(fusefs):
    """fcntl locks on the mount exclude each other as on a local file
    system (two opens, OFD locks, as holdfastd's ownership lock uses);
    lock=ENOLCK fails taking a lock (NFS after an expired lease) but not
    unlocking, only for paths matching match=, and ok lifts it."""
    import fcntl
    import struct

    F_OFD_GETLK, F_OFD_SETLK = 36, 37

    def ofd(fd, cmd, typ):
        # struct flock: short type, short whence, off_t start, len; int pid
        arg = struct.pack("hhqqi4x", typ, os.SEEK_SET, 0, 0, 0)
        return struct.unpack("hhqqi4x", fcntl.fcntl(fd, cmd, arg))[0]

    path = fusefs.path("x.holdfast-owner")
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    b = os.open(path, os.O_RDWR)
    other = os.open(fusefs.path("y.img"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        ofd(a, F_OFD_SETLK, fcntl.F_WRLCK)
        with pytest.raises(OSError) as e:
            ofd(b, F_OFD_SETLK, fcntl.F_WRLCK)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        assert ofd(b, F_OFD_GETLK, fcntl.F_WRLCK) == fcntl.F_WRLCK
        before = fusefs.stats()
        fusefs.set("lock=ENOLCK match=holdfast-owner")
        time.sleep(0.05)
        with pytest.raises(OSError) as e:
            ofd(a, F_OFD_SETLK, fcntl.F_WRLCK)     # re-assert: refused
        assert e.value.errno == errno.ENOLCK
        ofd(other, F_OFD_SETLK, fcntl.F_WRLCK)     # other paths: fine
        assert fusefs.stats()["failed_locks"] == before["failed_locks"] + 1
        ofd(a, F_OFD_SETLK, fcntl.F_UNLCK)         # unlocking works
        assert ofd(b, F_OFD_GETLK, fcntl.F_WRLCK) == fcntl.F_UNLCK
        fusefs.ok()
        time.sleep(0.05)
        ofd(b, F_OFD_SETLK, fcntl.F_WRLCK)
        os.close(b)                                # closing drops it
        b = None
        ofd(a, F_OFD_SETLK, fcntl.F_WRLCK)
    finally:
        for fd in (a, b, other):
            if fd is not None:
                os.close(fd)
