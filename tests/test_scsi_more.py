"""GET LBA STATUS, ORWRITE(16), READ DEFECT DATA(10/12) and WRITE
ATOMIC(16): libiscsi's iscsi-test-cu families for them against a fully
provisioned and a thin file LUN (two I_T nexuses), zero failures and no
"not implemented" skips; plus what the suite does not look at: the
mapped/deallocated extents GET LBA STATUS reports after a write and an
UNMAP on a thin LUN, and everything mapped on a fully provisioned one.
"""

import ctypes

import pytest

from helpers import IscsiSession, libiscsi, run
from test_conformance_cu import run_family

INIT1 = "iqn.2026-11.org.example:i1"
INIT2 = "iqn.2026-11.org.example:i2"

FAMILIES = [
    "SCSI.GetLBAStatus",
    "SCSI.OrWrite",
    "SCSI.ReadDefectData10",
    "SCSI.ReadDefectData12",
    "SCSI.WriteAtomic16",
]

NOT_IMPLEMENTED = ("not implemented", "Not Supported")

MAPPED, DEALLOCATED = 0, 1


def file_lun(holdfast, thin, size="64M"):
    return holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                           "size": size, "block_size": 512,
                           "thin_provisioning": thin}])


def test_families_exist():
    listed = set(run(["iscsi-test-cu", "--list"], timeout=30).stdout.split())
    missing = [f for f in FAMILIES if f not in listed]
    assert not missing, "iscsi-test-cu does not know %s" % missing


@pytest.mark.parametrize("thin", [False, True], ids=["file", "file-thin"])
@pytest.mark.parametrize("family", FAMILIES)
def test_conformance_more(holdfast, family, thin):
    d = file_lun(holdfast, thin)
    d.require_holdfast("tgtd lacks several of these commands")
    url = d.url(1)
    cp, out = run_family(family, url, url, initiators=(INIT1, INIT2))
    skipped = [l for l in out.splitlines() if "[SKIPPED]" in l and
               any(s in l for s in NOT_IMPLEMENTED)]
    assert not skipped, "\n".join(skipped)


# ---- GET LBA STATUS extents through libiscsi ----

def get_lba_status(s, lba, alloc=1024):
    """[(lba, nblocks, provisioning status)] or raises."""
    lib = libiscsi()
    fn = lib.iscsi_get_lba_status_sync
    fn.restype = lib.iscsi_readcapacity16_sync.restype
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64,
                   ctypes.c_uint32]
    r = s._done(fn(s.ctx, s.lun, lba, alloc))
    assert r.ok, "GET LBA STATUS at %d: %r %s" % (lba, r, s.error())
    n = int.from_bytes(r.data[0:4], "big") + 4
    assert n == len(r.data) and (n - 8) % 16 == 0, r.data.hex()
    return [(int.from_bytes(r.data[o:o + 8], "big"),
             int.from_bytes(r.data[o + 8:o + 12], "big"),
             r.data[o + 12] & 0xf) for o in range(8, n, 16)]


def unmap(s, lba, nblocks):
    lib = libiscsi()

    class UnmapList(ctypes.Structure):
        _fields_ = [("lba", ctypes.c_uint64), ("num", ctypes.c_uint32)]

    fn = lib.iscsi_unmap_sync
    fn.restype = lib.iscsi_readcapacity16_sync.restype
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                   ctypes.c_int, ctypes.POINTER(UnmapList), ctypes.c_int]
    lst = UnmapList(lba, nblocks)
    r = s._done(fn(s.ctx, s.lun, 0, 0, ctypes.byref(lst), 1))
    assert r.ok, "UNMAP: %r %s" % (r, s.error())


def test_get_lba_status_thin(holdfast):
    d = file_lun(holdfast, thin=True)
    d.require_holdfast()
    with IscsiSession(d.portal, d.iqn, 1) as s:
        nblocks, bs = s.read_capacity16()
        # a fresh sparse file: one deallocated extent to the end
        assert get_lba_status(s, 0) == [(0, nblocks, DEALLOCATED)]
        # 16 KiB of data at LBA 64 (file system blocks are 4 KiB)
        assert s.write10(64, b"\xa5" * (32 * bs)).ok
        assert get_lba_status(s, 0) == [
            (0, 64, DEALLOCATED), (64, 32, MAPPED),
            (96, nblocks - 96, DEALLOCATED)]
        # the first descriptor starts at the LBA asked for
        assert get_lba_status(s, 70)[0] == (70, 26, MAPPED)
        # UNMAP of the middle 4 KiB punches a hole there
        unmap(s, 72, 8)
        assert get_lba_status(s, 64) == [
            (64, 8, MAPPED), (72, 8, DEALLOCATED), (80, 16, MAPPED),
            (96, nblocks - 96, DEALLOCATED)]
        # and it reads back as zeroes (LBPRZ)
        r = s.read10(72, 8)
        assert r.ok and r.data == bytes(8 * bs)
        # only as many descriptors as the allocation length holds
        assert get_lba_status(s, 64, alloc=8 + 2 * 16) == [
            (64, 8, MAPPED), (72, 8, DEALLOCATED)]


def test_get_lba_status_fully_provisioned(holdfast):
    d = file_lun(holdfast, thin=False)
    d.require_holdfast()
    with IscsiSession(d.portal, d.iqn, 1) as s:
        nblocks, _ = s.read_capacity16()
        # the backing file is sparse, but the LUN is not thin
        assert get_lba_status(s, 0) == [(0, nblocks, MAPPED)]
        assert get_lba_status(s, nblocks - 1) == [(nblocks - 1, 1, MAPPED)]
