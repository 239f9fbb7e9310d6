"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: the copy manager that
VMware's clone offload ("full copy") uses.

libiscsi's conformance families for both commands must pass with no
failure and no "not implemented" skip; then real copies are checked in
the backing files: between two LUNs of one target, between two targets,
and across a write outage on the destination held by hang-on-error
(werror = retry), which must complete with the right data.

The EXTENDED COPY parameter lists are built here from the wire layout
(SPC-4 6.4): a 16-byte header, identification CSCD descriptors (E4h)
carrying the NAA designator the LUN reports in VPD page 83h, and
block-to-block segment descriptors (02h).
"""

import ctypes
import struct
import time

import pytest

from helpers import IQN, libiscsi, run, tscale
from test_conformance_cu import run_family

BS = 512
SENSE_COPY_ABORTED = 0x0A
SENSE_ILLEGAL_REQUEST = 0x05

# --------------------------------------------------------------------------
# libiscsi's conformance families


@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("family", ["SCSI.ExtendedCopy",
                                    "SCSI.ReceiveCopyResults"])
def test_conformance_family(holdfast, family, block_size):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "64M", "block_size": block_size}])
    d.require_holdfast("tgtd has no EXTENDED COPY")
    cp, out = run_family(family, d.url(1))
    # the suite counts "not implemented" as a pass: make sure it ran
    skips = [ln for ln in out.splitlines() if "COPY" in ln.upper() and (
        "not implemented" in ln or "does not support" in ln)]
    assert not skips, "\n".join(skips)


# --------------------------------------------------------------------------
# a small libiscsi client with EXTENDED COPY / RECEIVE COPY RESULTS


class _IscsiData(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t),
                ("data", ctypes.POINTER(ctypes.c_ubyte))]


def _lib():
    lib = libiscsi()
    if not getattr(lib, "_xcopy_bound", False):
        from helpers import _ScsiTask
        T = ctypes.POINTER(_ScsiTask)
        P = ctypes.c_void_p
        lib.iscsi_extended_copy_sync.restype = T
        lib.iscsi_extended_copy_sync.argtypes = [
            P, ctypes.c_int, ctypes.POINTER(_IscsiData)]
        lib.iscsi_receive_copy_results_sync.restype = T
        lib.iscsi_receive_copy_results_sync.argtypes = [
            P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.iscsi_inquiry_sync.restype = T
        lib.iscsi_inquiry_sync.argtypes = [P, ctypes.c_int, ctypes.c_int,
                                           ctypes.c_int, ctypes.c_int]
        lib._xcopy_bound = True
    return lib


class Client:
    """A libiscsi session to one LUN (helpers.IscsiSession plus the copy
    commands)."""

    def __init__(self, d, lun, iqn=None, timeout=60):
        from helpers import IscsiSession
        self.s = IscsiSession(d.portal, iqn or d.iqn, lun, timeout=timeout)
        self.lib = _lib()
        self.lun = lun

    def close(self):
        self.s.close()

    def naa(self):
        """The LU NAA designator of VPD page 83h: (code set, type byte,
        designator bytes)."""
        r = self.s._done(self.lib.iscsi_inquiry_sync(
            self.s.ctx, self.lun, 1, 0x83, 255))
        assert r.ok, r
        p, off = r.data, 4
        while off + 4 <= len(p):
            code, piv, n = p[off] & 0x0F, p[off + 1], p[off + 3]
            if (piv >> 4) & 3 == 0 and piv & 0x0F == 3:
                return code, piv, p[off + 4:off + 4 + n]
            off += 4 + n
        raise AssertionError("no NAA designator in %r" % p)

    def xcopy(self, plist):
        buf = (ctypes.c_ubyte * max(1, len(plist))).from_buffer_copy(
            plist or b"\0")
        data = _IscsiData(len(plist), buf)
        return self.s._done(self.lib.iscsi_extended_copy_sync(
            self.s.ctx, self.lun, ctypes.byref(data)))

    def rcr(self, sa, list_id, alloc=1024):
        return self.s._done(self.lib.iscsi_receive_copy_results_sync(
            self.s.ctx, self.lun, sa, list_id, alloc))

    def write(self, lba, data):
        r = self.s.write10(lba, data, BS)
        assert r.ok, r

    def read(self, lba, blocks):
        r = self.s.read16(lba, blocks, BS)
        assert r.ok, r
        return r.data


def cscd(naa, block_size=BS):
    """Identification CSCD descriptor (E4h), LU ID TYPE 00b, block
    device."""
    code, piv, desig = naa
    d = bytearray(32)
    d[0] = 0xE4
    d[1] = 0x00                         # LUN, NUL 0, peripheral type 0
    d[4] = code
    d[5] = piv
    d[7] = len(desig)
    d[8:8 + len(desig)] = desig
    d[29:32] = block_size.to_bytes(3, "big")
    return bytes(d)


def segment(src, dst, blocks, src_lba, dst_lba):
    """Block device to block device segment descriptor (02h)."""
    return struct.pack(">BBHHHHHQQ", 0x02, 0, 0x18, src, dst, 0, blocks,
                       src_lba, dst_lba)


def plist(cscds, segs, list_id=0, usage=3):
    """Parameter list: usage 0 = hold results for RECEIVE COPY RESULTS,
    3 = no list identifier."""
    c, s = b"".join(cscds), b"".join(segs)
    hdr = struct.pack(">BBHIII", list_id, usage << 3, len(c), 0, len(s),
                      0)
    return hdr + c + s


def pattern(nblocks, seed):
    return b"".join(struct.pack(">II", seed, i) * (BS // 8)
                    for i in range(nblocks))


def backing(d, name, lba, blocks):
    with open(d.path(name), "rb") as f:
        f.seek(lba * BS)
        return f.read(blocks * BS)


def naa_of(target, lun):
    """The NAA designator holdfast reports for a LUN without scsi_id:
    locally assigned (3h) with 60 bits of FNV-1a over the target name and
    the LUN number."""
    h = 0xCBF29CE484222325
    for byte in target.encode() + lun.to_bytes(8, "little"):
        h = ((h ^ byte) * 0x100000001B3) & (2 ** 64 - 1)
    return ((3 << 60) | (h & ((1 << 60) - 1))).to_bytes(8, "big")


def file_lun(n, size="16M", **extra):
    lu = {"lun": n, "backend": "file", "path": "disk%d.img" % n,
          "size": size}
    lu.update(extra)
    return lu


# more than one chunk (1 MiB) per segment, and a partial last chunk
BIG = 5000


# --------------------------------------------------------------------------
# real copies


def test_copy_between_luns_of_one_target(holdfast):
    d = holdfast(luns=[file_lun(1), file_lun(2)])
    d.require_holdfast()
    c1, c2 = Client(d, 1), Client(d, 2)
    try:
        data = pattern(BIG, 0x1111)
        for i in range(0, BIG, 1000):
            c1.write(100 + i, data[i * BS:(i + 1000) * BS])
        tail = pattern(7, 0x2222)
        c1.write(9000, tail)
        # sent to the source LUN; two segments, one across chunks
        pl = plist([cscd(c1.naa()), cscd(c2.naa())],
                   [segment(0, 1, BIG, 100, 2000),
                    segment(0, 1, 7, 9000, 50)])
        r = c1.xcopy(pl)
        assert r.ok, r
        assert backing(d, "disk2.img", 2000, BIG) == data
        assert backing(d, "disk2.img", 50, 7) == tail
        # and the initiator sees it through the destination LUN
        assert c2.read(2000, 16) == data[:16 * BS]
        # nothing around the destination range was touched
        assert backing(d, "disk2.img", 2000 + BIG, 8) == b"\0" * 8 * BS
        assert backing(d, "disk2.img", 1992, 8) == b"\0" * 8 * BS
        # a copy within one LUN (overlap-free), sent to the other LUN
        r = c2.xcopy(plist([cscd(c1.naa())],
                           [segment(0, 0, 7, 9000, 20000)]))
        assert r.ok, r
        assert backing(d, "disk1.img", 20000, 7) == tail
    finally:
        c1.close()
        c2.close()


def test_copy_between_targets(holdfast):
    a, b = IQN + "-a", IQN + "-b"
    d = holdfast(targets=[
        {"name": a, "initiators": ["ALL"], "luns": [file_lun(1)]},
        {"name": b, "initiators": ["ALL"],
         "luns": [file_lun(3, block_size=BS)]}])
    d.require_holdfast()
    ca, cb = Client(d, 1, iqn=a), Client(d, 3, iqn=b)
    try:
        data = pattern(1200, 0x3333)
        cb.write(0, data[:600 * BS])
        cb.write(600, data[600 * BS:])
        # sent to target A's LUN: copy from target B's LUN into it
        r = ca.xcopy(plist([cscd(cb.naa()), cscd(ca.naa())],
                           [segment(0, 1, 1200, 0, 4096)]))
        assert r.ok, r
        assert backing(d, "disk1.img", 4096, 1200) == data
    finally:
        ca.close()
        cb.close()


def test_copy_to_acl_protected_target_is_unreachable(holdfast):
    """A LUN of a target whose ACL does not admit this initiator is not a
    copy target: the copy manager is no way around access control."""
    a, b = IQN + "-a", IQN + "-b"
    d = holdfast(targets=[
        {"name": a, "initiators": ["ALL"], "luns": [file_lun(1)]},
        {"name": b, "initiators": ["iqn.2026-11.org.example:someone-else"],
         "luns": [file_lun(3)]}])
    d.require_holdfast()
    ca = Client(d, 1, iqn=a)
    try:
        # the designator B's LUN reports (derived from target name and
        # LUN number); A's own derivation is checked on the way
        assert ca.naa()[2] == naa_of(a, 1)
        other = (1, 0x03, naa_of(b, 3))
        r = ca.xcopy(plist([cscd(other), cscd(ca.naa())],
                           [segment(0, 1, 8, 0, 0)]))
        assert r.status == 2 and r.key == SENSE_COPY_ABORTED, r
        assert r.ascq == 0x0D02, r
    finally:
        ca.close()


def test_copy_status_and_failed_segment_details(holdfast):
    d = holdfast(luns=[file_lun(1), file_lun(2)])
    d.require_holdfast()
    c1, c2 = Client(d, 1), Client(d, 2)
    try:
        data = pattern(3000, 0x4444)
        for i in range(0, 3000, 1000):
            c1.write(i, data[i * BS:(i + 1000) * BS])
        cs = [cscd(c1.naa()), cscd(c2.naa())]
        r = c1.xcopy(plist(cs, [segment(0, 1, 3000, 0, 0),
                                segment(0, 1, 0, 0, 0)],
                           list_id=7, usage=0))
        assert r.ok, r
        r = c1.rcr(0x00, 7)                     # COPY STATUS
        assert r.ok, r
        avail, st, segs, units, count = struct.unpack(">IBHBI", r.data[:12])
        assert (st & 0x7F, segs) == (1, 2), r.data
        assert count << (10 * units) == 3000 * BS, r.data
        # a different list id holds nothing
        r = c1.rcr(0x00, 8)
        assert r.status == 2 and r.key == SENSE_ILLEGAL_REQUEST, r
        # OPERATING PARAMETERS: limits, and the descriptor types offered
        r = c1.rcr(0x03, 0)
        assert r.ok, r
        n = r.data[43]
        assert sorted(r.data[44:44 + n]) == [0x02, 0xE4], r.data

        # a read error on the source: COPY ABORTED, and the results say so
        d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
                 "--lun", "1", "--params", "fault=eio:ops=r:lba=2500-2600")
        r = c2.xcopy(plist(cs, [segment(0, 1, 3000, 0, 10000)],
                           list_id=9, usage=0))
        assert r.status == 2 and r.key == SENSE_COPY_ABORTED, r
        assert r.ascq == 0x1100, r
        r = c2.rcr(0x00, 9)
        assert r.ok, r
        avail, st, segs, units, count = struct.unpack(">IBHBI", r.data[:12])
        assert (st & 0x7F, segs) == (2, 0), r.data
        # the chunks before the bad blocks were copied
        assert 0 < count << (10 * units) < 3000 * BS, r.data
        r = c2.rcr(0x04, 9)                     # FAILED SEGMENT DETAILS
        assert r.ok, r
        slen = struct.unpack(">H", r.data[58:60])[0]
        assert r.data[56] == 2 and slen >= 14, r.data
        assert r.data[60 + 2] & 0x0F == SENSE_COPY_ABORTED, r.data
    finally:
        c1.close()
        c2.close()


def test_copy_across_destination_hang(holdfast):
    """A write outage on the destination with werror = retry: the copy's
    writes are held like any initiator's and the copy completes, with the
    right data, once the store is back."""
    d = holdfast(luns=[file_lun(1),
                       file_lun(2, werror="retry", retry_interval=100,
                                retry_timeout=30000)])
    d.require_holdfast()
    c1, c2 = Client(d, 1), Client(d, 2)
    try:
        data = pattern(BIG, 0x5555)
        for i in range(0, BIG, 1000):
            c1.write(i, data[i * BS:(i + 1000) * BS])
        pl = plist([cscd(c1.naa()), cscd(c2.naa())],
                   [segment(0, 1, BIG, 0, 100)], list_id=3, usage=0)
        d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
                 "--lun", "2", "--params",
                 "fault=eio:ops=w:duration=2000")
        t0 = time.monotonic()
        r = c1.xcopy(pl)
        took = time.monotonic() - t0
        assert r.ok, (r, c1.s.error())
        # it was held through (most of) the outage, not failed
        assert took >= 1.5, took
        assert took < 20 * tscale(), took
        assert backing(d, "disk2.img", 100, BIG) == data
        r = c1.rcr(0x00, 3)
        assert r.ok and r.data[4] & 0x7F == 1, r
        show = d.tgtadm("--op", "show", "--mode", "target").stdout
        assert "injected=0" not in show.split("LUN: 2", 1)[-1][:2000], show
    finally:
        c1.close()
        c2.close()


def test_bad_lists_copy_nothing(holdfast):
    d = holdfast(luns=[file_lun(1), file_lun(2, size="1M")])
    d.require_holdfast()
    c1, c2 = Client(d, 1), Client(d, 2)
    try:
        c1.write(0, pattern(16, 0x6666))
        cs = [cscd(c1.naa()), cscd(c2.naa())]
        # second segment runs off the end of the 1 MiB destination: the
        # whole list is refused before anything moves
        r = c1.xcopy(plist(cs, [segment(0, 1, 16, 0, 0),
                                segment(0, 1, 16, 0, 2040)]))
        assert r.status == 2 and r.key == SENSE_COPY_ABORTED, r
        assert backing(d, "disk2.img", 0, 16) == b"\0" * 16 * BS
        # block length in the CSCD that is not the LUN's
        r = c1.xcopy(plist([cscd(c1.naa()), cscd(c2.naa(), 4096)],
                           [segment(0, 1, 16, 0, 0)]))
        assert r.status == 2 and r.key == SENSE_COPY_ABORTED, r
        assert r.ascq == 0x0D03, r
        # LIST ID USAGE 11b with a list identifier
        r = c1.xcopy(plist(cs, [segment(0, 1, 16, 0, 0)], list_id=5))
        assert r.status == 2 and r.key == SENSE_ILLEGAL_REQUEST, r
        assert r.ascq == 0x2600, r
    finally:
        c1.close()
        c2.close()


def test_readonly_destination(holdfast, tmp_path):
    with open(tmp_path / "disk2.img", "wb") as f:   # read-only: must exist
        f.truncate(16 << 20)
    d = holdfast(luns=[file_lun(1), file_lun(2, readonly=True)])
    d.require_holdfast()
    c1, c2 = Client(d, 1), Client(d, 2)
    try:
        r = c1.xcopy(plist([cscd(c1.naa()), cscd(c2.naa())],
                           [segment(0, 1, 8, 0, 0)]))
        assert r.status == 2 and r.key == SENSE_COPY_ABORTED, r
        assert r.ascq == 0x2700, r
        # the other way round is fine: a read-only LUN can be a source
        r = c2.xcopy(plist([cscd(c2.naa()), cscd(c1.naa())],
                           [segment(0, 1, 8, 0, 0)]))
        assert r.ok, r
    finally:
        c1.close()
        c2.close()


def test_third_party_copy_advertised(holdfast):
    d = holdfast(luns=[file_lun(1)])
    d.require_holdfast()
    c = Client(d, 1)
    try:
        r = c.s._done(c.lib.iscsi_inquiry_sync(c.s.ctx, 1, 0, 0, 96))
        assert r.ok and r.data[5] & 0x08, r       # 3PC
    finally:
        c.close()



def test_abort_copy_held_by_hung_destination(holdfast):
    """ABORT TASK on an EXTENDED COPY whose write is held by a hung
    destination LUN (not the LUN the command went to) is answered while
    the store is still failing: the copy's chunk is dropped in the hang
    engine instead of waiting for the store to come back."""
    import socket
    import rawiscsi as r
    d = holdfast(luns=[file_lun(1),
                       file_lun(2, werror="retry", retry_interval=100,
                                retry_timeout=0)])
    d.require_holdfast()
    c1, c2 = Client(d, 1), Client(d, 2)
    pl = plist([cscd(c1.naa()), cscd(c2.naa())], [segment(0, 1, 64, 0, 0)])
    c1.close()
    c2.close()
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "2", "--params", "fault=eio:ops=w")
    s = r.RawSession("127.0.0.1", d.port)
    try:
        s.login(d.iqn)
        s.wait_status(s.scsi(1, bytes(6)))      # the power-on UA
        cdb = bytes([0x83]) + bytes(9) + struct.pack(">I", len(pl)) + \
            bytes(2)
        itt = s.scsi(1, cdb, data=pl)
        # held, not answered
        try:
            p = s.recv(timeout=0.8)
            raise AssertionError("answered: %s %r" % (p.bhs.hex(), p.data))
        except socket.timeout:
            pass
        # ABORT TASK (RFC 7143 11.5)
        bhs = bytearray(48)
        bhs[0] = 0x40 | r.OP_TMF
        bhs[1] = 0x80 | 0x01
        bhs[9] = 1
        tmf_itt = s.next_itt()
        bhs[16:20] = struct.pack(">I", tmf_itt)
        bhs[20:24] = struct.pack(">I", itt)
        bhs[24:28] = struct.pack(">I", s.cmd_sn)
        bhs[28:32] = struct.pack(">I", s.exp_stat_sn)
        bhs[32:36] = struct.pack(">I", s.cmd_sn - 1)
        t0 = time.monotonic()
        s.send(bhs)
        while True:
            p = s.recv(timeout=5 * tscale())
            if p.opcode == r.OP_TMF_RSP:
                break
        assert p.u32(16) == tmf_itt and p.bhs[2] == 0, p.bhs.hex()
        assert time.monotonic() - t0 < 3 * tscale()
        show = d.tgtadm("--op", "show", "--mode", "target").stdout
        assert "hung" in show, show     # the store is still failing
    finally:
        s.close()
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "2", "--params", "fault=off")
    # and the copy manager still works
    c1, c2 = Client(d, 1), Client(d, 2)
    try:
        c1.write(0, pattern(64, 0x7777))
        rr = c1.xcopy(pl)
        assert rr.ok, rr
        assert backing(d, "disk2.img", 0, 64) == pattern(64, 0x7777)
    finally:
        c1.close()
        c2.close()


def test_qemu_img_copy_offload(holdfast):
    """A real initiator: `qemu-img convert -C` (copy offloading required)
    between two LUNs uses EXTENDED COPY, and the data arrives."""
    d = holdfast(luns=[file_lun(1), file_lun(2)])
    d.require_holdfast()
    from helpers import qemu_io
    qemu_io(d.url(1), "write -P 0x5a 0 3M", "write -P 0xa5 3M 1M")
    run(["qemu-img", "convert", "-C", "-n", "-f", "raw", "-O", "raw",
         d.url(1), d.url(2)], timeout=120)
    assert backing(d, "disk2.img", 0, 6144) == b"\x5a" * 6144 * BS
    assert backing(d, "disk2.img", 6144, 2048) == b"\xa5" * 2048 * BS
    assert backing(d, "disk2.img", 8192, 64) == b"\0" * 64 * BS
