"""A minimal raw iSCSI initiator for protocol tests (RFC 7143).

It speaks just enough to log in (no authentication), send SCSI commands
with immediate data, NOP-Out, Logout, and to read whatever the target
sends, with optional CRC32C header and data digests.  Tests use it where
libiscsi hides the protocol: digests, reinstatement, Async Messages,
Reject, target NOP-In pings.
"""

import socket
import struct
import time

OP_NOP_OUT, OP_SCSI_CMD, OP_TMF, OP_LOGIN, OP_TEXT, OP_DATA_OUT, \
    OP_LOGOUT = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_NOP_IN, OP_SCSI_RSP, OP_TMF_RSP, OP_LOGIN_RSP, OP_TEXT_RSP, \
    OP_DATA_IN, OP_LOGOUT_RSP, OP_R2T, OP_ASYNC, OP_REJECT = \
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3f

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def digest_bytes(data):
    return struct.pack("<I", crc32c(data))


def pad4(b):
    return b + b"\0" * ((4 - len(b) % 4) % 4)


class Pdu:
    def __init__(self, bhs, data=b""):
        self.bhs = bytearray(bhs)
        self.data = data

    @property
    def opcode(self):
        return self.bhs[0] & 0x3F

    @property
    def flags(self):
        return self.bhs[1]

    def u32(self, off):
        return struct.unpack(">I", self.bhs[off:off + 4])[0]

    def u16(self, off):
        return struct.unpack(">H", self.bhs[off:off + 2])[0]

    def text(self):
        return dict(kv.split("=", 1) for kv in
                    self.data.decode().split("\0") if "=" in kv)


class Closed(Exception):
    pass


class RawSession:
    def __init__(self, host, port, initiator="iqn.2026-11.org.example:raw",
                 isid=b"\x80\x12\x34\x56\x78\x9a", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.initiator = initiator
        self.isid = isid
        self.itt = 1
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.hd = self.dd = False
        self.tsih = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- wire ----
    def send(self, bhs, data=b"", hd=None, dd=None):
        hd = self.hd if hd is None else hd
        dd = self.dd if dd is None else dd
        bhs = bytearray(bhs)
        bhs[5:8] = struct.pack(">I", len(data))[1:]
        out = bytes(bhs)
        if hd:
            out += digest_bytes(bhs)
        if data:
            out += pad4(data)
            if dd:
                out += digest_bytes(pad4(data))
        self.sock.sendall(out)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed("connection closed by target")
            buf += chunk
        return buf

    def recv(self, timeout=10):
        self.sock.settimeout(timeout)
        bhs = self._recv_exact(48)
        ahs = self._recv_exact(bhs[4] * 4)
        if self.hd:
            got = self._recv_exact(4)
            assert got == digest_bytes(bhs + ahs), "bad header digest"
        dlen = struct.unpack(">I", b"\0" + bhs[5:8])[0]
        data = b""
        if dlen:
            padded = self._recv_exact(dlen + (4 - dlen % 4) % 4)
            if self.dd:
                got = self._recv_exact(4)
                assert got == digest_bytes(padded), "bad data digest"
            data = padded[:dlen]
        p = Pdu(bhs, data)
        if p.opcode in (OP_SCSI_RSP, OP_NOP_IN, OP_TMF_RSP, OP_LOGIN_RSP,
                        OP_TEXT_RSP, OP_LOGOUT_RSP, OP_ASYNC, OP_REJECT) \
                or (p.opcode == OP_DATA_IN and p.flags & 0x01):
            if not (p.opcode == OP_NOP_IN and p.u32(16) == 0xFFFFFFFF):
                self.exp_stat_sn = (p.u32(24) + 1) & 0xFFFFFFFF
        return p

    def next_itt(self):
        self.itt += 1
        return self.itt

    # ---- login ----
    def login(self, target, keys=None, session_type="Normal"):
        items = {"InitiatorName": self.initiator,
                 "SessionType": session_type,
                 "HeaderDigest": "None", "DataDigest": "None",
                 "MaxRecvDataSegmentLength": "65536",
                 "ImmediateData": "Yes", "InitialR2T": "No",
                 "MaxBurstLength": "262144", "FirstBurstLength": "65536"}
        if target:
            items["TargetName"] = target
        items.update(keys or {})
        data = b"".join(("%s=%s" % kv).encode() + b"\0"
                        for kv in items.items())
        bhs = bytearray(48)
        bhs[0] = 0x40 | OP_LOGIN
        bhs[1] = 0x80 | (1 << 2) | 3        # T, CSG=1, NSG=3
        bhs[8:14] = self.isid
        bhs[16:20] = struct.pack(">I", self.itt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs, data, hd=False, dd=False)
        rsp = self.recv()
        assert rsp.opcode == OP_LOGIN_RSP, rsp.opcode
        status = rsp.u16(36)
        if status:
            raise Closed("login failed: status 0x%04x" % status)
        self.tsih = rsp.u16(14)
        t = rsp.text()
        self.hd = t.get("HeaderDigest") == "CRC32C"
        self.dd = t.get("DataDigest") == "CRC32C"
        self.keys = t
        return t

    # ---- full feature phase ----
    def scsi(self, lun, cdb, read_len=0, data=b"", immediate=False,
             write_len=None):
        """Send a SCSI Command; data goes as immediate data.  write_len
        (EDTL of a write) defaults to len(data); give it to send a write
        whose data is to be solicited by R2T."""
        itt = self.next_itt()
        bhs = bytearray(48)
        bhs[0] = OP_SCSI_CMD | (0x40 if immediate else 0)
        flags = 0x80 | 0x01                  # F, SIMPLE
        if read_len:
            flags |= 0x40
        if write_len is None:
            write_len = len(data)
        if write_len:
            flags |= 0x20
        bhs[1] = flags
        bhs[9] = lun
        bhs[16:20] = struct.pack(">I", itt)
        bhs[20:24] = struct.pack(">I", read_len or write_len)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        bhs[32:32 + len(cdb)] = cdb
        if not immediate:
            self.cmd_sn += 1
        self.send(bhs, data)
        return itt

    def wait_status(self, itt, timeout=10):
        """Collect Data-In and the status for itt: (status, data, pdus)."""
        data = b""
        end = time.time() + timeout
        while True:
            p = self.recv(timeout=max(0.1, end - time.time()))
            if p.opcode == OP_DATA_IN and p.u32(16) == itt:
                data += p.data
                if p.flags & 0x01:
                    return p.bhs[3], data, p
            elif p.opcode == OP_SCSI_RSP and p.u32(16) == itt:
                return p.bhs[3], data, p
            elif p.opcode == OP_R2T:
                raise AssertionError("unexpected R2T")

    def data_out(self, r2t, data, lun=1):
        """Answer an R2T with one Data-Out PDU carrying what it asks for."""
        off = r2t.u32(40)
        length = r2t.u32(44)
        bhs = bytearray(48)
        bhs[0] = OP_DATA_OUT
        bhs[1] = 0x80
        bhs[9] = lun
        bhs[16:20] = r2t.bhs[16:20]
        bhs[20:24] = r2t.bhs[20:24]
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        bhs[36:40] = struct.pack(">I", 0)
        bhs[40:44] = struct.pack(">I", off)
        self.send(bhs, data[off:off + length])

    def nop_out(self, ttt=0xFFFFFFFF, itt=None, data=b""):
        bhs = bytearray(48)
        bhs[0] = 0x40 | OP_NOP_OUT
        bhs[1] = 0x80
        itt = self.next_itt() if itt is None else itt
        bhs[16:20] = struct.pack(">I", itt)
        bhs[20:24] = struct.pack(">I", ttt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs, data)
        return itt

    def text(self, items):
        """Send a Text Request with key=value items; return the answer
        (all continuation PDUs joined) as a list of (key, value)."""
        data = b"".join(("%s=%s" % kv).encode() + b"\0" for kv in items)
        itt = self.next_itt()
        ttt = 0xFFFFFFFF
        out = b""
        while True:
            bhs = bytearray(48)
            bhs[0] = OP_TEXT
            bhs[1] = 0x80
            bhs[16:20] = struct.pack(">I", itt)
            bhs[20:24] = struct.pack(">I", ttt)
            bhs[24:28] = struct.pack(">I", self.cmd_sn)
            bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
            self.cmd_sn += 1
            self.send(bhs, data)
            p = self.recv()
            assert p.opcode == OP_TEXT_RSP, p.opcode
            out += p.data
            if p.flags & 0x80:
                break
            ttt = p.u32(20)
            data = b""
        return [tuple(kv.split("=", 1)) for kv in
                out.decode().split("\0") if "=" in kv]

    def tmf(self, function, lun=0, ref_itt=0xFFFFFFFF):
        """Send a Task Management Function Request (immediate)."""
        itt = self.next_itt()
        bhs = bytearray(48)
        bhs[0] = 0x40 | OP_TMF
        bhs[1] = 0x80 | function
        bhs[9] = lun
        bhs[16:20] = struct.pack(">I", itt)
        bhs[20:24] = struct.pack(">I", ref_itt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs)
        return itt

    def logout(self):
        bhs = bytearray(48)
        bhs[0] = 0x40 | OP_LOGOUT
        bhs[1] = 0x80
        itt = self.next_itt()
        bhs[16:20] = struct.pack(">I", itt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs)
        return itt


def read10(lba, blocks):
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba, blocks):
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)
