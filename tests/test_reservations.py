"""Reservations: persistent reservations (SPC-4 5.13, PERSISTENT RESERVE
IN / OUT) and SPC-2 RESERVE / RELEASE.

libiscsi's iscsi-test-cu families for them run against a file LUN reached
as two I_T nexuses (two initiator names), with zero failures and no
"not implemented" skips.  What the suite does not cover is checked with a
raw initiator (tests/rawiscsi.py, fixed ISIDs, so an I_T nexus has the
same identity after a reconnect): APTPL state across a daemon restart and
its state file, READ FULL STATUS TransportIDs, REGISTER AND MOVE, unit
attentions of preempted registrants.
"""

import struct

import pytest

from helpers import run
from rawiscsi import RawSession
from test_conformance_cu import run_family

INIT1 = "iqn.2026-11.org.example:i1"
INIT2 = "iqn.2026-11.org.example:i2"

FAMILIES = [
    "SCSI.PrinReadKeys",
    "SCSI.PrinServiceactionRange",
    "SCSI.PrinReportCapabilities",
    "SCSI.ProutRegister",
    "SCSI.ProutReserve",
    "SCSI.ProutClear",
    "SCSI.ProutPreempt",
    "SCSI.Reserve6",
]

NOT_IMPLEMENTED = ("not implemented", "Not Supported")


def file_lun(holdfast, size="64M"):
    return holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                           "size": size, "block_size": 512}])


def test_families_exist():
    listed = set(run(["iscsi-test-cu", "--list"], timeout=30).stdout.split())
    missing = [f for f in FAMILIES if f not in listed]
    assert not missing, "iscsi-test-cu does not know %s" % missing


@pytest.mark.parametrize("family", FAMILIES)
def test_conformance_reservations(holdfast, family):
    d = file_lun(holdfast)
    url = d.url(1)
    cp, out = run_family(family, url, url, initiators=(INIT1, INIT2))
    skipped = [l for l in out.splitlines() if "[SKIPPED]" in l and
               any(s in l for s in NOT_IMPLEMENTED)]
    if not d.is_tgtd:
        assert not skipped, "\n".join(skipped)


# ---- a raw initiator ----

PRIN, PROUT = 0x5E, 0x5F
READ_KEYS, READ_RESERVATION, REPORT_CAPS, READ_FULL_STATUS = 0, 1, 2, 3
REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_ABORT = 0, 1, 2, 3, 4, 5
REGISTER_IGNORE, REGISTER_MOVE = 6, 7
WE, EA = 1, 3
GOOD, CHECK_CONDITION, RESERVATION_CONFLICT = 0x00, 0x02, 0x18

ISID1 = b"\x80\x12\x34\x56\x78\x9a"
ISID2 = b"\x80\x00\x00\x00\x00\x02"


class Nexus:
    def __init__(self, d, name, isid):
        self.s = RawSession("127.0.0.1", d.port, initiator=name, isid=isid)
        self.s.login(d.iqn)
        self.name, self.isid = name, isid
        # eat POWER ON / RESET unit attentions
        for _ in range(4):
            if self.cmd(bytes(6))[0] == GOOD:
                break

    def cmd(self, cdb, read_len=0, data=b""):
        itt = self.s.scsi(1, cdb.ljust(16, b"\0"), read_len=read_len,
                          data=data)
        status, din, pdu = self.s.wait_status(itt)
        sense = b""
        if status == CHECK_CONDITION and len(pdu.data) >= 2:
            n = struct.unpack(">H", pdu.data[:2])[0]
            sense = pdu.data[2:2 + n]
        return status, din, sense

    def prin(self, sa, alloc=8192):
        cdb = bytes([PRIN, sa, 0, 0, 0, 0, 0]) + struct.pack(">H", alloc) \
            + b"\0"
        status, data, sense = self.cmd(cdb, read_len=alloc)
        assert status == GOOD, (status, sense.hex())
        return data

    def prout(self, sa, key=0, sakey=0, ptype=0, aptpl=False, param=None):
        if param is None:
            param = struct.pack(">QQ4xB3x", key, sakey,
                                0x01 if aptpl else 0)
        cdb = bytes([PROUT, sa, ptype, 0, 0]) + \
            struct.pack(">I", len(param)) + b"\0"
        return self.cmd(cdb, data=param)

    def keys(self):
        d = self.prin(READ_KEYS)
        gen, n = struct.unpack(">II", d[:8])
        return gen, [struct.unpack(">Q", d[8 + i:16 + i])[0]
                     for i in range(0, n, 8)]

    def reservation(self):
        d = self.prin(READ_RESERVATION)
        if struct.unpack(">I", d[4:8])[0] == 0:
            return None
        return struct.unpack(">Q", d[8:16])[0], d[21] & 0x0F

    def write(self, lba=0):
        cdb = bytes([0x2A, 0]) + struct.pack(">I", lba) + b"\0\0\x01\0"
        return self.cmd(cdb, data=b"\x5a" * 512)[0]

    def read(self, lba=0):
        cdb = bytes([0x28, 0]) + struct.pack(">I", lba) + b"\0\0\x01\0"
        return self.cmd(cdb, read_len=512)[0]

    def close(self):
        self.s.close()

    def transport_id(self):
        return ("%s,i,0x%s" % (self.name, self.isid.hex())).encode()


def assert_good(r):
    assert r[0] == GOOD, "status 0x%02x sense %s" % (r[0], r[2].hex())


def test_aptpl_survives_restart(holdfast):
    """APTPL (SPC-4 5.13.5): registrations and the reservation come back
    after a restart from the state file next to the backing file; the file
    goes when APTPL is turned off."""
    d = file_lun(holdfast)
    d.require_holdfast()
    state = d.path("disk1.img.pr")
    a, b = Nexus(d, INIT1, ISID1), Nexus(d, INIT2, ISID2)
    caps = a.prin(REPORT_CAPS)
    assert caps[2] & 0x01, "PTPL_C not set: %s" % caps.hex()
    assert_good(a.prout(REGISTER, sakey=0xA1, aptpl=True))
    assert_good(b.prout(REGISTER_IGNORE, sakey=0xB1, aptpl=True))
    assert_good(a.prout(RESERVE, key=0xA1, ptype=WE))
    assert b.write() == RESERVATION_CONFLICT
    gen, keys = a.keys()
    assert sorted(keys) == [0xA1, 0xB1]
    text = state.read_text()
    assert text.startswith("holdfast-pr 1\n"), text
    assert "reservation 1 0" in text and INIT1 in text, text
    a.close()
    b.close()

    d.restart()
    a, b = Nexus(d, INIT1, ISID1), Nexus(d, INIT2, ISID2)
    assert a.keys() == (gen, keys)
    assert a.reservation() == (0xA1, WE)
    assert a.prin(REPORT_CAPS)[3] & 0x01, "PTPL_A not set after restart"
    # the same I_T nexus identity is still the holder
    assert a.write() == GOOD
    assert b.write() == RESERVATION_CONFLICT
    assert b.read() == GOOD                  # write exclusive: reads pass
    # READ FULL STATUS: both registrations with iSCSI TransportIDs
    full = a.prin(READ_FULL_STATUS)
    assert a.transport_id() in full and b.transport_id() in full
    # APTPL off (the last REGISTER decides): the file goes, and after a
    # restart nothing is left
    assert_good(a.prout(REGISTER, key=0xA1, sakey=0xA2, aptpl=False))
    assert not state.exists()
    a.close()
    b.close()
    d.restart()
    a = Nexus(d, INIT1, ISID1)
    assert a.keys()[1] == []
    assert a.reservation() is None
    assert a.write() == GOOD
    a.close()


def test_register_and_move(holdfast):
    """REGISTER AND MOVE (SPC-4 5.13.8) hands an exclusive access
    reservation to the I_T nexus named by an iSCSI TransportID."""
    d = file_lun(holdfast)
    d.require_holdfast()
    a, b = Nexus(d, INIT1, ISID1), Nexus(d, INIT2, ISID2)
    assert_good(a.prout(REGISTER, sakey=0xA1))
    assert_good(a.prout(RESERVE, key=0xA1, ptype=EA))
    assert b.read() == RESERVATION_CONFLICT
    tid = b.transport_id() + b"\0"
    tid += b"\0" * (-len(tid) % 4)
    tpid = bytes([0x45, 0]) + struct.pack(">H", len(tid)) + tid
    param = struct.pack(">QQxBHI", 0xA1, 0xB7, 0x02, 1, len(tpid)) + tpid
    assert_good(a.prout(REGISTER_MOVE, ptype=EA, param=param))
    assert b.reservation() == (0xB7, EA)
    assert b.read() == GOOD and b.write() == GOOD
    # UNREG: a's registration went with the move
    assert a.keys()[1] == [0xB7]
    assert a.read() == RESERVATION_CONFLICT
    assert_good(b.prout(CLEAR, key=0xB7))
    a.close()
    b.close()


def test_preempt_unit_attentions(holdfast):
    """PREEMPT: the preempted registrant hears REGISTRATIONS PREEMPTED
    (2A/05); RELEASE of a registrants-only reservation tells the others
    RESERVATIONS RELEASED (2A/04); CLEAR tells them RESERVATIONS
    PREEMPTED (2A/03)."""
    d = file_lun(holdfast)
    d.require_holdfast()
    a, b = Nexus(d, INIT1, ISID1), Nexus(d, INIT2, ISID2)

    def ua(n):
        st, _, sense = n.cmd(bytes(6))
        assert st == CHECK_CONDITION and sense[2] & 0x0F == 6, \
            (st, sense.hex())
        return sense[12], sense[13]

    assert_good(a.prout(REGISTER, sakey=0xA1))
    assert_good(b.prout(REGISTER, sakey=0xB1))
    assert_good(a.prout(RESERVE, key=0xA1, ptype=WE))
    assert_good(b.prout(PREEMPT, key=0xB1, sakey=0xA1, ptype=WE))
    assert ua(a) == (0x2A, 0x05)
    assert b.reservation() == (0xB1, WE)
    assert a.write() == RESERVATION_CONFLICT
    assert_good(a.prout(REGISTER, sakey=0xA2))
    assert_good(b.prout(RELEASE, key=0xB1, ptype=WE))
    assert_good(b.prout(RESERVE, key=0xB1, ptype=5))     # WE-RO
    assert_good(b.prout(RELEASE, key=0xB1, ptype=5))
    assert ua(a) == (0x2A, 0x04)
    assert_good(b.prout(CLEAR, key=0xB1))
    assert ua(a) == (0x2A, 0x03)
    assert a.keys()[1] == []
    a.close()
    b.close()


def test_spc2_reserve_conflicts_with_registrations(holdfast):
    """SPC-3 5.6.3 (CRH = 1): while a key is registered, RESERVE(6) and
    RELEASE(6) conflict; an SPC-2 reservation blocks PERSISTENT RESERVE
    commands of other nexuses."""
    d = file_lun(holdfast)
    d.require_holdfast()
    a, b = Nexus(d, INIT1, ISID1), Nexus(d, INIT2, ISID2)
    assert_good(a.prout(REGISTER, sakey=0xA1))
    assert b.cmd(bytes([0x16, 0, 0, 0, 0, 0]))[0] == RESERVATION_CONFLICT
    assert_good(a.prout(REGISTER, key=0xA1, sakey=0))
    assert_good(b.cmd(bytes([0x16, 0, 0, 0, 0, 0])))
    st, _, _ = a.cmd(bytes([PRIN, 0, 0, 0, 0, 0, 0, 0, 64, 0]), read_len=64)
    assert st == RESERVATION_CONFLICT
    assert a.write() == RESERVATION_CONFLICT
    assert_good(b.cmd(bytes([0x17, 0, 0, 0, 0, 0])))
    assert a.write() == GOOD
    a.close()
    b.close()
