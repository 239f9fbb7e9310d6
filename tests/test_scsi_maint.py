"""REPORT TARGET PORT GROUPS (one implicit ALUA group) and REPORT
SUPPORTED TASK MANAGEMENT FUNCTIONS, with the INQUIRY and VPD 83h fields
an initiator's ALUA handler reads together with them (SPC-4 6.35, 6.36)."""

import struct

from test_scsi_config import cdb

GOOD = 0


def designators(vpd83):
    out, off = [], 4
    while off + 4 <= len(vpd83):
        n = vpd83[off + 3]
        out.append((vpd83[off + 1] & 0x3f, vpd83[off + 4:off + 4 + n]))
        off += 4 + n
    return out


def test_inquiry_announces_implicit_alua(holdfast):
    d = holdfast()
    r = cdb(d, 1, "120000006000", alloc=96)
    assert r["status"] == GOOD
    assert (r["bytes"][5] >> 4) & 3 == 1          # TPGS = implicit


def test_report_target_port_groups_matches_vpd83(holdfast):
    d = holdfast()
    vpd = cdb(d, 1, "120183010000", alloc=256)["bytes"]
    tpg = [v for t, v in designators(vpd) if t == 0x15]   # port, type 5
    rel = [v for t, v in designators(vpd) if t == 0x14]   # port, type 4
    assert len(tpg) == 1 and len(rel) == 1
    group = struct.unpack(">H", tpg[0][2:4])[0]
    port = struct.unpack(">H", rel[0][2:4])[0]
    for fmt, hdr in ((0x0a, 4), (0x2a, 8)):
        r = cdb(d, 1, "a3%02x00000000000000ff0000" % fmt, alloc=255)
        assert r["status"] == GOOD
        b = r["bytes"]
        assert struct.unpack(">I", b[:4])[0] == len(b) - 4
        if hdr == 8:
            assert b[4] == 0x10                        # extended header
        desc = b[hdr:]
        assert desc[0] & 0x0f == 0                     # active/optimized
        assert desc[0] & 0x80                          # preferred
        assert desc[1] & 0x01                          # AO supported
        assert struct.unpack(">H", desc[2:4])[0] == group
        assert desc[7] == 1                            # one target port
        assert struct.unpack(">H", desc[10:12])[0] == port
    # an unknown data format is refused
    r = cdb(d, 1, "a34a00000000000000ff0000", alloc=255)
    assert r["status"] == 2 and r["key"] == 5


def test_report_supported_tmfs(holdfast):
    d = holdfast()
    r = cdb(d, 1, "a30d00000000000000ff0000", alloc=255)
    assert r["status"] == GOOD and len(r["bytes"]) == 4
    # ABORT TASK, ABORT TASK SET, CLEAR ACA, CLEAR TASK SET, LU RESET,
    # TARGET RESET: what the iSCSI layer answers FUNCTION COMPLETE for
    assert r["bytes"][0] == 0xfa
    r = cdb(d, 1, "a30d80000000000000ff0000", alloc=255)
    assert len(r["bytes"]) == 16 and r["bytes"][3] == 0x0c


def test_both_listed_in_supported_opcodes(holdfast):
    d = holdfast()
    # REPORT SUPPORTED OPERATION CODES, one command, with service action
    for sa in (0x0a, 0x0d):
        r = cdb(d, 1, "a30c02a3%04x0000ffff0000" % sa, alloc=255)
        assert r["status"] == GOOD and r["bytes"][1] & 0x07 == 3, sa


def test_tas_commands_cleared_by_another_nexus_end_task_aborted(holdfast):
    """The control page says TAS=1, and it is true: a write of session A
    held by a hung LUN that session B's LUN RESET clears is answered
    TASK ABORTED (SAM-5 5.6), not left without a status."""
    import time
    import rawiscsi as r
    from helpers import IQN

    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "d.img",
                        "size": "16M", "rerror": "retry", "werror": "retry",
                        "retry_interval": 200}])
    r6 = cdb(d, 1, "1a000a00ff00", alloc=255)       # MODE SENSE(6) page 0Ah
    page = r6["bytes"][4 + r6["bytes"][3]:]
    assert page[0] & 0x3f == 0x0a and page[5] & 0x40   # TAS
    a = r.RawSession("127.0.0.1", d.port, isid=b"\x80\x00\x00\x00\x00\x0a")
    b = r.RawSession("127.0.0.1", d.port, isid=b"\x80\x00\x00\x00\x00\x0b")
    for s in (a, b):
        s.login(IQN)
        for _ in range(3):
            if s.wait_status(s.scsi(1, bytes(6)))[0] == 0:
                break
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "1", "--params", "fault=eio:ops=w")
    held = a.scsi(1, bytes.fromhex("2a00000000100000010" + "0"),
                  data=b"\x55" * 512)
    time.sleep(0.5)                                  # held by the hang
    t = b.tmf(5, lun=1)                              # LUN RESET
    p = b.recv(timeout=10)
    assert p.opcode == r.OP_TMF_RSP and p.u32(16) == t and p.bhs[2] == 0
    p = a.recv(timeout=10)
    assert p.opcode == r.OP_SCSI_RSP and p.u32(16) == held
    assert p.bhs[3] == 0x40                          # TASK ABORTED
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "1", "--params", "fault=off")
    with open(d.path("d.img"), "rb") as f:
        f.seek(0x10 * 512)
        assert f.read(512) != b"\x55" * 512          # never written
    a.close()
    b.close()
