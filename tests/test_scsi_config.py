"""The SCSI layer as an initiator sees it, driven by LUN settings from
targets.conf: identity strings and the derived serial / NAA, write cache
(MODE SENSE caching page), sense format (control page D_SENSE and the
sense data itself), read-only LUNs, thin provisioning, REPORT LUNS and the
power-on unit attention of a new I_T nexus.

Raw CDBs go through build/tools/scsicdb (one libiscsi session per call,
so every call is a new I_T nexus; -n repeats the command on it)."""

import json

import pytest

from helpers import build_dir, run

GOOD, CHECK_CONDITION = 0, 2
FIXED, DESCRIPTOR = 0x70, 0x72
ILLEGAL_REQUEST, UNIT_ATTENTION, DATA_PROTECT = 5, 6, 7


def cdb(d, lun, hexcdb, alloc=0, data=None, count=2):
    """Send hexcdb to lun `count` times on one new session (the first
    command of a new nexus sees the power-on unit attention) and return
    the last answer as a dict; data (bytes) is the Data-Out."""
    tool = build_dir() / "tools" / "scsicdb"
    if not tool.exists():
        pytest.fail("%s not built (make)" % tool)
    cmd = [str(tool), "-n", str(count), d.url(lun), hexcdb]
    if alloc:
        cmd += ["-r", str(alloc)]
    if data is not None:
        cmd += ["-w", data.hex()]
    out = run(cmd).stdout.strip().splitlines()[-1]
    r = json.loads(out)
    r["bytes"] = bytes.fromhex(r["data"])
    return r


def field_pointer(r):
    """(C/D, byte) of the sense-key-specific field pointer in the raw
    sense data of a CHECK CONDITION (libiscsi hands it over after a 2-byte
    length), in either format; None if absent."""
    sense = r["bytes"][2:]
    if sense[0] & 0x7f == FIXED:
        sks = sense[15:18]
    else:
        off, sks = 8, None
        while off + 2 <= len(sense):
            if sense[off] == 0x02:               # sense key specific
                sks = sense[off + 4:off + 7]
            off += 2 + sense[off + 1]
    if not sks or not sks[0] & 0x80:
        return None
    return bool(sks[0] & 0x40), int.from_bytes(sks[1:3], "big")


def inquiry(d, lun, page=None):
    if page is None:
        return cdb(d, lun, "12000000ff00", alloc=255)["bytes"]
    return cdb(d, lun, "1201%02x00ff00" % page, alloc=255)["bytes"]


def designators(vpd83):
    """{(association, type): designator bytes} of a VPD 0x83 page."""
    out, off = {}, 4
    while off + 4 <= len(vpd83):
        n = vpd83[off + 3]
        out[((vpd83[off + 1] >> 4) & 3, vpd83[off + 1] & 0xf)] = \
            vpd83[off + 4:off + 4 + n]
        off += 4 + n
    return out


def mode_page(ms6, page):
    """The mode page `page` in a MODE SENSE(6) answer."""
    off = 4 + ms6[3]
    while off + 2 <= len(ms6):
        if ms6[off] & 0x3f == page:
            return ms6[off:off + 2 + ms6[off + 1]]
        off += 2 + ms6[off + 1]
    return None


def lun_cfg(n, **kw):
    c = {"lun": n, "backend": "file", "path": "disk%d.img" % n,
         "size": "16M"}
    c.update(kw)
    return c


def test_identity_defaults_stable(holdfast):
    d = holdfast(luns=[lun_cfg(1), lun_cfg(2)])
    d.require_holdfast("checks holdfast's SCSI layer")
    std = inquiry(d, 1)
    assert std[0] == 0x00                      # connected, direct access
    assert std[8:16] == b"HOLDFAST"
    assert std[16:32] == b"VIRTUAL-DISK    "
    assert std[32:36] == b"0001"
    sn1 = inquiry(d, 1, 0x80)[4:]
    sn2 = inquiry(d, 2, 0x80)[4:]
    assert len(sn1) == 16 and sn1 != sn2
    ids = designators(inquiry(d, 1, 0x83))
    naa = ids[(0, 3)]
    assert len(naa) == 8 and naa[0] >> 4 == 3
    assert ids[(0, 1)].startswith(b"HOLDFAST")
    assert ids[(1, 4)] == b"\x00\x00\x00\x01"     # relative target port
    assert (1, 5) in ids                          # target port group
    assert ids[(1, 8)].rstrip(b"\0") == (d.iqn + ",t,0x0001").encode()
    assert ids[(2, 8)].rstrip(b"\0") == d.iqn.encode()
    # Same target name and LUN after a restart: same serial and NAA.
    d.restart()
    assert inquiry(d, 1, 0x80)[4:] == sn1
    assert designators(inquiry(d, 1, 0x83))[(0, 3)] == naa


def test_identity_configured(holdfast):
    d = holdfast(luns=[lun_cfg(1, vendor_id="ACME", product_id="BIGDISK",
                               product_rev="2.1", scsi_sn="SN-0042",
                               scsi_id="acme-disk-7")])
    d.require_holdfast("checks holdfast's SCSI layer")
    std = inquiry(d, 1)
    assert std[8:16] == b"ACME    "
    assert std[16:32] == b"BIGDISK         "
    assert std[32:36] == b"2.1 "
    assert inquiry(d, 1, 0x80)[4:] == b"SN-0042"
    ids = designators(inquiry(d, 1, 0x83))
    assert ids[(0, 1)] == b"ACME    acme-disk-7"


def test_vpd_pages_and_absent_luns(holdfast):
    d = holdfast(luns=[lun_cfg(1), lun_cfg(3, thin_provisioning=True)])
    d.require_holdfast("checks holdfast's SCSI layer")
    assert inquiry(d, 1, 0x00)[4:] == bytes([0, 0x80, 0x83, 0xb0, 0xb1,
                                             0xb2])
    b0 = inquiry(d, 1, 0xb0)
    assert b0[3] == 0x3c and int.from_bytes(b0[8:12], "big") > 0
    b1 = inquiry(d, 1, 0xb1)
    assert int.from_bytes(b1[4:6], "big") == 1     # non-rotating
    # REPORT LUNS: LUN 0 (the controller) and the configured ones.
    r = cdb(d, 1, "a0000000000000001000" + "0000", alloc=4096)
    assert r["status"] == GOOD
    n = int.from_bytes(r["bytes"][0:4], "big") // 8
    luns = [r["bytes"][8 + 8 * i + 1] for i in range(n)]
    assert luns == [0, 1, 3]
    # LUN 0 answers as a storage array controller; LUN 9 does not exist.
    assert inquiry(d, 0)[0] == 0x0c
    assert inquiry(d, 9)[0] == 0x7f
    r = cdb(d, 9, "000000000000")
    assert (r["status"], r["key"], r["asc"]) == \
        (CHECK_CONDITION, ILLEGAL_REQUEST, 0x25)


def test_unit_attention_then_ready(holdfast):
    d = holdfast(luns=[lun_cfg(1)])
    d.require_holdfast("checks holdfast's SCSI layer")
    r = cdb(d, 1, "000000000000", count=1)
    assert (r["status"], r["key"], r["asc"], r["ascq"]) == \
        (CHECK_CONDITION, UNIT_ATTENTION, 0x29, 0x00)
    assert cdb(d, 1, "000000000000", count=2)["status"] == GOOD
    # INQUIRY is never blocked by it.
    assert cdb(d, 1, "12000000ff00", alloc=255, count=1)["status"] == GOOD


@pytest.mark.parametrize("wc", [True, False])
def test_write_cache_in_caching_page(holdfast, wc):
    d = holdfast(luns=[lun_cfg(1, write_cache=wc)])
    d.require_holdfast("checks holdfast's SCSI layer")
    ms = cdb(d, 1, "1a0008 00ff00".replace(" ", ""), alloc=255)["bytes"]
    page = mode_page(ms, 0x08)
    assert page is not None and bool(page[2] & 0x04) == wc
    assert ms[2] & 0x10                           # DPOFUA


@pytest.mark.parametrize("fmt", ["fixed", "descriptor"])
def test_sense_format(holdfast, fmt):
    d = holdfast(luns=[lun_cfg(1, sense_format=fmt)])
    d.require_holdfast("checks holdfast's SCSI layer")
    ms = cdb(d, 1, "1a000a00ff00", alloc=255)["bytes"]
    assert bool(mode_page(ms, 0x0a)[2] & 0x04) == (fmt == "descriptor")
    # READ(16) far beyond the end: LBA OUT OF RANGE in that format.
    r = cdb(d, 1, "88000000000100000000" + "000000010000")
    assert (r["status"], r["key"], r["asc"]) == \
        (CHECK_CONDITION, ILLEGAL_REQUEST, 0x21)
    assert r["sense_type"] == (DESCRIPTOR if fmt == "descriptor" else FIXED)
    # An invalid field points at the CDB byte (SPC-4 sense-key specific).
    r = cdb(d, 1, "28e0000000000000010000")     # RDPROTECT set
    assert (r["key"], r["asc"]) == (ILLEGAL_REQUEST, 0x24)
    assert field_pointer(r) == (True, 1)


def test_readonly_lun(holdfast, tmp_path):
    (tmp_path / "ro.img").write_bytes(b"\0" * (1 << 20))
    d = holdfast(luns=[lun_cfg(1, path=str(tmp_path / "ro.img"),
                               readonly=True, size="1M")])
    d.require_holdfast("checks holdfast's SCSI layer")
    ms = cdb(d, 1, "1a003f00ff00", alloc=255)["bytes"]
    assert ms[2] & 0x80                           # WP
    r = cdb(d, 1, "2a000000000000000100", data=b"x" * 512)
    assert (r["status"], r["key"], r["asc"]) == \
        (CHECK_CONDITION, DATA_PROTECT, 0x27)
    assert cdb(d, 1, "28000000000000000100", alloc=512)["status"] == GOOD


def test_thin_provisioning(holdfast):
    d = holdfast(luns=[lun_cfg(1), lun_cfg(2, thin_provisioning=True)])
    d.require_holdfast("checks holdfast's SCSI layer")
    rc = cdb(d, 2, "9e10000000000000000000000020" + "0000", alloc=32)
    assert rc["bytes"][14] & 0xc0 == 0xc0          # LBPME, LBPRZ
    rc = cdb(d, 1, "9e10000000000000000000000020" + "0000", alloc=32)
    assert rc["bytes"][14] & 0x80 == 0
    b2 = inquiry(d, 2, 0xb2)
    assert b2[5] & 0xe0 == 0xe0 and b2[6] & 7 == 2
    # Write a block, UNMAP it, read zeroes back.
    w = cdb(d, 2, "2a000000000800000100", data=b"\xab" * 512)
    assert w["status"] == GOOD
    assert cdb(d, 2, "28000000000800000100", alloc=512)["bytes"] == \
        b"\xab" * 512
    plist = (bytes([0, 22, 0, 16]) + bytes(4) +
             (8).to_bytes(8, "big") + (1).to_bytes(4, "big") + bytes(4))
    u = cdb(d, 2, "42000000000000001800", data=plist)
    assert u["status"] == GOOD, u
    assert cdb(d, 2, "28000000000800000100", alloc=512)["bytes"] == \
        bytes(512)
    # Not offered on the fully provisioned LUN.
    u = cdb(d, 1, "42000000000000001800", data=plist)
    assert (u["key"], u["asc"]) == (ILLEGAL_REQUEST, 0x20)
