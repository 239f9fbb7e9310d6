"""COMPARE AND WRITE is atomic against every other write to its blocks
(SBC-3 5.2): a plain WRITE that arrives while a COMPARE AND WRITE is
between its read and its write waits for it."""

import struct
import time

import rawiscsi as r
from helpers import IQN

BS = 512


def caw16(lba, blocks):
    return struct.pack(">BBQ3xBBB", 0x89, 0, lba, blocks, 0, 0)


def test_plain_write_waits_for_compare_and_write(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "16M"}])
    old, caw_new, plain = b"\x01" * BS, b"\x02" * BS, b"\x03" * BS
    s = r.RawSession("127.0.0.1", d.port)
    s.login(IQN)
    for _ in range(3):                              # clear the unit attention
        if s.wait_status(s.scsi(1, bytes(6)))[0] == 0:
            break
    assert s.wait_status(s.scsi(1, r.write10(100, 1), data=old))[0] == 0
    # every read now takes 0.8 s: the COMPARE AND WRITE sits between its
    # read and its write long enough for a plain write to arrive
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "1", "--params", "fault=latency=800:ops=r")
    t0 = time.time()
    caw = s.scsi(1, caw16(100, 1), data=old + caw_new)
    time.sleep(0.2)
    wr = s.scsi(1, r.write10(100, 1), data=plain)
    done = {}
    while len(done) < 2:
        p = s.recv(timeout=10)
        if p.opcode == r.OP_SCSI_RSP:
            done[p.u32(16)] = (p.bhs[3], time.time() - t0)
    caw_status, caw_t = done[caw]
    wr_status, wr_t = done[wr]
    # the compare saw the old data: the plain write did not slip in
    assert caw_status == 0, "COMPARE AND WRITE miscompared: not atomic"
    assert wr_status == 0
    assert wr_t >= caw_t - 0.05, (wr_t, caw_t)      # it waited
    assert caw_t >= 0.7                             # the read was slow
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "1", "--params", "fault=off")
    with open(d.path("disk1.img"), "rb") as f:
        f.seek(100 * BS)
        assert f.read(BS) == plain                  # the later write wins
    s.close()


def test_writes_to_other_luns_do_not_wait(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "a.img",
                        "size": "16M"},
                       {"lun": 2, "backend": "file", "path": "b.img",
                        "size": "16M"}])
    s = r.RawSession("127.0.0.1", d.port)
    s.login(IQN)
    for lun in (1, 2):
        for _ in range(3):
            if s.wait_status(s.scsi(lun, bytes(6)))[0] == 0:
                break
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "1", "--params", "fault=latency=800:ops=r")
    t0 = time.time()
    caw = s.scsi(1, caw16(0, 1), data=bytes(BS) * 2)
    time.sleep(0.1)
    wr = s.scsi(2, r.write10(0, 1), data=b"\x07" * BS)
    got = {}
    while len(got) < 2:
        p = s.recv(timeout=10)
        if p.opcode == r.OP_SCSI_RSP:
            got[p.u32(16)] = time.time() - t0
    assert got[wr] < 0.6 and got[caw] >= 0.7, got
    s.close()
