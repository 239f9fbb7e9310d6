"""iSCSI layer behaviour that initiator libraries hide: CRC32C digests,
session reinstatement, the Async logout request on shutdown, Reject,
login timeout, target NOP-In pings (RFC 7143)."""

import signal
import socket
import struct
import time

import pytest

import rawiscsi as r
from helpers import IQN, qemu_io, run

TUR = bytes(6)


def session(d, **kw):
    s = r.RawSession("127.0.0.1", d.port, **kw)
    return s


def clear_ua(s, lun=1):
    # the first command of a new nexus gets POWER ON OR RESET (29/00)
    for _ in range(3):
        st, _, _ = s.wait_status(s.scsi(lun, TUR))
        if st == 0:
            return
    raise AssertionError("unit attention did not clear")


def test_header_and_data_digests_roundtrip(holdfast):
    d = holdfast()
    s = session(d)
    keys = s.login(IQN, {"HeaderDigest": "CRC32C,None",
                         "DataDigest": "CRC32C,None"})
    assert keys["HeaderDigest"] == "CRC32C"
    assert keys["DataDigest"] == "CRC32C"
    clear_ua(s)
    payload = bytes(range(256)) * 16          # 4 KiB, checked end to end
    st, _, _ = s.wait_status(s.scsi(1, r.write10(64, 8), data=payload))
    assert st == 0
    st, data, _ = s.wait_status(s.scsi(1, r.read10(64, 8), read_len=4096))
    assert st == 0 and data == payload
    with open(d.path("disk1.img"), "rb") as f:
        f.seek(64 * 512)
        assert f.read(4096) == payload
    s.logout()
    assert s.recv().opcode == r.OP_LOGOUT_RSP
    s.close()


def test_data_digest_error_drops_connection(holdfast):
    d = holdfast()
    s = session(d)
    s.login(IQN, {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
    clear_ua(s)
    # a Data segment whose digest is wrong must not be written (7.8)
    bhs = bytearray(48)
    bhs[0] = r.OP_SCSI_CMD
    bhs[1] = 0x80 | 0x20 | 0x01
    bhs[9] = 1
    bhs[16:20] = struct.pack(">I", 77)
    bhs[20:24] = struct.pack(">I", 512)
    bhs[24:28] = struct.pack(">I", s.cmd_sn)
    bhs[32:42] = r.write10(200, 1)
    bhs[5:8] = struct.pack(">I", 512)[1:]
    wire = bytes(bhs) + r.digest_bytes(bhs) + b"\xee" * 512 + b"\0\0\0\0"
    s.sock.sendall(wire)
    got_reject = False
    with pytest.raises((r.Closed, OSError)):
        while True:
            p = s.recv(timeout=10)
            got_reject |= p.opcode == r.OP_REJECT
    assert got_reject
    s.close()
    with open(d.path("disk1.img"), "rb") as f:
        f.seek(200 * 512)
        assert f.read(512) != b"\xee" * 512


def test_target_requires_header_digest(holdfast):
    d = holdfast(params={"HeaderDigest": "CRC32C"})
    s = session(d)
    keys = s.login(IQN, {"HeaderDigest": "None"})
    assert keys["HeaderDigest"] == "Reject"
    s.close()
    # QEMU (libiscsi) with header digests against it works end to end
    opts = ("driver=iscsi,transport=tcp,portal=127.0.0.1:%d,target=%s,"
            "lun=1,header-digest=crc32c" % (d.port, IQN))
    out = run(["qemu-io", "--image-opts", "-c", "write -P 0x5a 0 256k",
               "-c", "read -P 0x5a 0 256k", opts], timeout=60).stdout
    assert "read 262144/262144" in out


def test_session_reinstatement_closes_old_session(holdfast):
    d = holdfast()
    a = session(d)
    a.login(IQN)
    clear_ua(a)
    b = session(d)                      # same initiator name and ISID
    b.login(IQN)
    # 6.3.5: the reinstating login is answered only once the old session
    # is gone, so the old connection answers nothing after it (before the
    # fix its close was posted after the answer, and it went on answering
    # NOP-Outs for a while)
    with pytest.raises((r.Closed, OSError)):
        a.nop_out()
        p = a.recv(timeout=5)
        pytest.fail("old session answered after the reinstating login: "
                    "opcode 0x%02x" % p.opcode)
    clear_ua(b)
    b.logout()
    assert b.recv().opcode == r.OP_LOGOUT_RSP
    a.close()
    b.close()


def test_other_isid_is_a_second_session(holdfast):
    d = holdfast()
    a = session(d)
    a.login(IQN)
    b = session(d, isid=b"\x80\x00\x00\x00\x00\x02")
    b.login(IQN)
    assert a.tsih != b.tsih
    for s in (a, b):
        s.nop_out(data=b"hi")
        p = s.recv()
        assert p.opcode == r.OP_NOP_IN and p.data == b"hi"
        s.close()


def test_async_logout_request_on_shutdown(holdfast):
    d = holdfast()
    s = session(d)
    s.login(IQN)
    clear_ua(s)
    t0 = time.time()
    d.proc.send_signal(signal.SIGTERM)
    p = s.recv(timeout=10)
    assert p.opcode == r.OP_ASYNC
    assert p.bhs[36] == 1            # AsyncEvent: target requests logout
    s.logout()
    assert s.recv(timeout=10).opcode == r.OP_LOGOUT_RSP
    s.close()
    d.proc.wait(timeout=20)
    assert d.proc.returncode == 0
    assert time.time() - t0 < 15


def test_unknown_opcode_is_rejected(holdfast):
    d = holdfast()
    s = session(d)
    s.login(IQN)
    bhs = bytearray(48)
    bhs[0] = 0x1c                    # not an initiator opcode
    bhs[1] = 0x80
    bhs[16:20] = struct.pack(">I", 5)
    s.send(bhs)
    p = s.recv()
    assert p.opcode == r.OP_REJECT
    assert p.bhs[2] == 0x05          # command not supported
    assert p.data[:48] == bytes(bhs)
    s.nop_out(data=b"still here")
    assert s.recv().data == b"still here"
    s.close()


def test_scsi_command_in_discovery_session_is_rejected(holdfast):
    d = holdfast()
    s = session(d)
    s.login(None, session_type="Discovery")
    s.scsi(0, TUR)
    p = s.recv()
    assert p.opcode == r.OP_REJECT
    s.close()


def test_login_timeout_closes_silent_connection(holdfast):
    d = holdfast()
    c = socket.create_connection(("127.0.0.1", d.port), timeout=40)
    t0 = time.time()
    assert c.recv(1) == b""          # closed by the target
    took = time.time() - t0
    assert 10 < took < 35, took
    c.close()


def test_target_nop_in_pings_drop_dead_connection(holdfast):
    cfg_targets = [{"name": IQN, "initiators": ["ALL"], "nop_interval": 1,
                    "nop_count": 2,
                    "luns": [{"lun": 1, "backend": "null", "size": "16M"}]}]
    d = holdfast(targets=cfg_targets)
    live = session(d, isid=b"\x80\x00\x00\x00\x00\x01")
    live.login(IQN)
    dead = session(d, isid=b"\x80\x00\x00\x00\x00\x02")
    dead.login(IQN)
    pings = 0
    end = time.time() + 6
    while time.time() < end:          # the live one answers every ping
        p = live.recv(timeout=5)
        if p.opcode == r.OP_NOP_IN and p.u32(16) == 0xFFFFFFFF:
            pings += 1
            live.nop_out(ttt=p.u32(20), itt=0xFFFFFFFF)
    assert pings >= 3
    # the silent one got pings, never answered, and was dropped
    with pytest.raises((r.Closed, OSError)):
        while True:
            dead.recv(timeout=5)
    live.nop_out(data=b"x")
    while True:
        p = live.recv(timeout=5)
        if p.opcode == r.OP_NOP_IN and p.u32(16) != 0xFFFFFFFF:
            break
    live.close()
    dead.close()


def test_write_to_hung_lun_is_not_solicited_until_recovery(holdfast):
    """DESIGN.md: writes queued behind a hang do not pin buffers before
    their data is needed: no R2T (so no buffer) while the LUN is hung."""
    luns = [{"lun": 1, "backend": "file", "path": "disk1.img",
             "size": "16M", "rerror": "retry", "werror": "retry",
             "retry_interval": 200}]
    d = holdfast(luns=luns)
    s = session(d)
    s.login(IQN, {"ImmediateData": "No", "InitialR2T": "Yes"})
    clear_ua(s)
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "1", "--params", "fault=eio:ops=w")
    first = s.scsi(1, r.write10(0, 1), write_len=512)
    p = s.recv()                                  # R2T for the first write
    assert p.opcode == r.OP_R2T
    s.data_out(p, b"\x11" * 512)                   # it fails: LUN hung
    time.sleep(0.5)
    second = s.scsi(1, r.write10(8, 1), write_len=512)
    with pytest.raises(socket.timeout):           # not solicited
        s.recv(timeout=1.5)
    d.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", "1",
             "--lun", "1", "--params", "fault=off")
    got = {}
    end = time.time() + 10
    while len(got) < 2 and time.time() < end:
        p = s.recv(timeout=10)
        if p.opcode == r.OP_R2T:
            assert p.u32(16) == second
            s.data_out(p, b"\x22" * 512)
        elif p.opcode == r.OP_SCSI_RSP:
            got[p.u32(16)] = p.bhs[3]
    assert got == {first: 0, second: 0}
    with open(d.path("disk1.img"), "rb") as f:
        assert f.read(512) == b"\x11" * 512
        f.seek(8 * 512)
        assert f.read(512) == b"\x22" * 512
    s.close()
