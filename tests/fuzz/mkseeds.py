#!/usr/bin/python3
"""mkseeds.py - write the seed corpora of tests/fuzz/corpus/NAME/.

The seeds are small valid inputs that get each harness past its first
checks (a login that succeeds, a CDB the dispatcher knows, a targets.conf
that loads, a tgtadm request that dispatches); libFuzzer mutates from
there.  Run it again after changing it; the files are committed.

    /usr/bin/python3 tests/fuzz/mkseeds.py
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from rawiscsi import digest_bytes, pad4  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IQN = b"iqn.2026-12.org.example:fuzz"
IQN_CHAP = b"iqn.2026-12.org.example:chap"
INI = b"iqn.2026-12.org.example:initiator"


def write(name, seed, data):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, seed), "wb") as f:
        f.write(data)


# ---- iSCSI PDU streams (fuzz_conn) ----
class Stream:
    def __init__(self, hd=False, dd=False):
        self.out = b""
        self.cmd_sn = 1
        self.itt = 0
        self.hd = hd
        self.dd = dd

    def pdu(self, bhs, data=b"", digests=True):
        bhs = bytearray(bhs)
        bhs[5:8] = struct.pack(">I", len(data))[1:]
        out = bytes(bhs)
        if self.hd and digests:
            out += digest_bytes(bhs)
        if data:
            out += pad4(data)
            if self.dd and digests:
                out += digest_bytes(pad4(data))
        self.out += out

    def next_itt(self):
        self.itt += 1
        return self.itt

    def login(self, keys, csg=1, nsg=3, transit=True, isid=b"\x80\0\0\0\0\1"):
        data = b"".join(k + b"=" + v + b"\0" for k, v in keys)
        bhs = bytearray(48)
        bhs[0] = 0x40 | 0x03
        bhs[1] = (0x80 if transit else 0) | (csg << 2) | nsg
        bhs[8:14] = isid
        bhs[16:20] = struct.pack(">I", self.itt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        self.pdu(bhs, data, digests=False)

    def scsi(self, lun, cdb, read_len=0, data=b"", write_len=None,
             immediate=False, attr=1):
        itt = self.next_itt()
        bhs = bytearray(48)
        bhs[0] = 0x01 | (0x40 if immediate else 0)
        flags = 0x80 | attr
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
        bhs[32:32 + len(cdb)] = cdb
        if not immediate:
            self.cmd_sn += 1
        self.pdu(bhs, data)
        return itt

    def data_out(self, itt, ttt, offset, data, final=True, lun=1, sn=0):
        bhs = bytearray(48)
        bhs[0] = 0x05
        bhs[1] = 0x80 if final else 0
        bhs[9] = lun
        bhs[16:20] = struct.pack(">I", itt)
        bhs[20:24] = struct.pack(">I", ttt)
        bhs[36:40] = struct.pack(">I", sn)
        bhs[40:44] = struct.pack(">I", offset)
        self.pdu(bhs, data)

    def simple(self, op, flags=0x80, immediate=True, data=b"", ttt=0xFFFFFFFF,
               ref=0xFFFFFFFF, lun=0):
        bhs = bytearray(48)
        bhs[0] = op | (0x40 if immediate else 0)
        bhs[1] = flags
        bhs[9] = lun
        bhs[16:20] = struct.pack(">I", self.next_itt())
        bhs[20:24] = struct.pack(">I", ref if op == 0x02 else ttt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        if not immediate:
            self.cmd_sn += 1
        self.pdu(bhs, data)


def normal_keys(target=IQN, extra=()):
    keys = [(b"InitiatorName", INI), (b"SessionType", b"Normal"),
            (b"TargetName", target), (b"HeaderDigest", b"None"),
            (b"DataDigest", b"None"), (b"MaxRecvDataSegmentLength", b"8192"),
            (b"ImmediateData", b"Yes"), (b"InitialR2T", b"No"),
            (b"MaxBurstLength", b"262144"), (b"FirstBurstLength", b"65536")]
    return keys + list(extra)


def read10(lba, n):
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0)


def write10(lba, n):
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, n, 0)


def conn_seeds():
    split = b"\x12\x34"
    s = Stream()
    s.login(normal_keys())
    s.scsi(1, b"\x12\0\0\0\x24\0", read_len=36)               # INQUIRY
    s.scsi(0, b"\xa0\0\0\0\0\0\0\0\x01\0\0\0", read_len=256)  # REPORT LUNS
    s.scsi(1, b"\0" * 6)                                       # TUR
    s.scsi(1, read10(0, 8), read_len=4096)
    s.scsi(1, write10(0, 8), data=b"\xab" * 4096)              # immediate
    itt = s.scsi(1, write10(8, 32), data=b"\xcd" * 1024,
                 write_len=16384)                              # + unsolicited
    s.data_out(itt, 0xFFFFFFFF, 1024, b"\xcd" * 7168)
    s.simple(0x00, data=b"ping")                               # NOP-Out
    s.simple(0x02, flags=0x80 | 1, ref=itt, lun=1)             # ABORT TASK
    s.simple(0x02, flags=0x80 | 5, lun=1)                      # LUN RESET
    s.simple(0x04, immediate=False, data=b"SendTargets=All\0")
    s.simple(0x06, flags=0x80)                                 # logout
    write("conn", "normal", split + s.out)

    s = Stream()
    s.login(normal_keys(extra=[(b"InitialR2T", b"Yes")])[:6] +
            [(b"InitialR2T", b"Yes"), (b"ImmediateData", b"No")])
    itt = s.scsi(1, write10(0, 16), write_len=8192)
    s.data_out(itt, 0x10, 0, b"\x11" * 8192)                   # R2T's TTT
    s.scsi(2, b"\x25" + b"\0" * 9, read_len=8)                 # READ CAP 10
    write("conn", "r2t", b"\x00\x07" + s.out)

    s = Stream()
    s.login([(b"InitiatorName", INI), (b"SessionType", b"Discovery")])
    s.simple(0x04, immediate=False, data=b"SendTargets=All\0")
    s.simple(0x06)
    write("conn", "discovery", b"\xff\xff" + s.out)

    s = Stream()
    s.login([(b"InitiatorName", INI), (b"SessionType", b"Normal"),
             (b"TargetName", IQN_CHAP), (b"AuthMethod", b"CHAP,None")],
            csg=0, nsg=1, transit=False)
    s.login([(b"CHAP_A", b"7,6,5")], csg=0, nsg=1, transit=False)
    s.login([(b"CHAP_N", b"fuzzuser"), (b"CHAP_R", b"0x" + b"00" * 32),
             (b"CHAP_I", b"1"), (b"CHAP_C", b"0x" + b"01" * 16)],
            csg=0, nsg=1, transit=True)
    write("conn", "chap", b"\x01\x00" + s.out)

    s = Stream()
    s.login(normal_keys()[:3] + [(b"HeaderDigest", b"CRC32C"),
                                 (b"DataDigest", b"CRC32C")])
    s.hd = s.dd = True
    s.scsi(1, b"\x12\0\0\0\x24\0", read_len=36)
    s.scsi(1, write10(0, 1), data=b"\x5a" * 512)
    write("conn", "digests", b"\x40\x01" + s.out)


# ---- CDBs (fuzz_cdb) ----
def cdb_seed(name, cdb, data=b"", flags=0, exp=0x0200, lenidx=None):
    if lenidx is None:
        lenidx = {6: 0, 10: 1, 12: 2, 16: 2}.get(len(cdb), 3)
    write("cdb", name, bytes([flags, lenidx]) + cdb.ljust(32, b"\0") +
          struct.pack(">H", exp) + data)


def cdb_seeds():
    cdb_seed("tur", b"\0" * 6)
    cdb_seed("inquiry", b"\x12\0\0\0\xff\0")
    for page in (0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2):
        cdb_seed("vpd%02x" % page, bytes([0x12, 1, page, 0, 0xff, 0]))
    cdb_seed("readcap10", b"\x25" + b"\0" * 9)
    cdb_seed("readcap16", b"\x9e\x10" + b"\0" * 8 + b"\0\0\0\x20\0\0")
    cdb_seed("modesense6", b"\x1a\0\x3f\0\xff\0")
    cdb_seed("modesense10", b"\x5a\0\x3f\0\0\0\0\x01\0\0")
    cdb_seed("read10", read10(0, 4))
    cdb_seed("read16", b"\x88" + b"\0" * 9 + b"\0\0\0\x04\0\0")
    cdb_seed("write10", write10(0, 1), b"\x77" * 512)
    cdb_seed("verify10", b"\x2f\x02" + b"\0" * 5 + b"\0\x01\0", b"\0" * 512)
    cdb_seed("sync", b"\x35" + b"\0" * 9)
    cdb_seed("ws16unmap", b"\x93\x08" + b"\0" * 8 + b"\0\0\0\x10\0\0",
             b"\0" * 512)
    cdb_seed("ws10", b"\x41\0" + b"\0" * 5 + b"\0\x08\0", b"\x33" * 512)
    unmap = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", 0, 8)
    cdb_seed("unmap", b"\x42" + b"\0" * 6 + struct.pack(">H", len(unmap)) +
             b"\0", unmap)
    cdb_seed("caw", b"\x89" + b"\0" * 12 + b"\x01\0\0", b"\0" * 1024)
    cdb_seed("getlbastatus", b"\x9e\x12" + b"\0" * 8 + b"\0\0\0\x20\0\0")
    cdb_seed("reportluns", b"\xa0" + b"\0" * 5 + b"\0\0\x01\0\0\0")
    cdb_seed("reqsense", b"\x03\0\0\0\xfc\0")
    cdb_seed("startstop", b"\x1b\0\0\0\x01\0")
    cdb_seed("prevent", b"\x1e\0\0\0\x01\0")
    cdb_seed("rsoc", b"\xa3\x0c\0\0\0\0\0\0\x10\0\0\0")
    cdb_seed("rtpg", b"\xa3\x0a\0\0\0\0\0\0\x10\0\0\0")
    for sa in (0, 1, 2, 3):
        cdb_seed("prin%d" % sa, bytes([0x5e, sa]) + b"\0" * 5 +
                 b"\x10\0\0")
    def prout(sa, scope_type, key, sakey, flags=0, extra=b""):
        data = struct.pack(">QQ4xB1x2x", key, sakey, flags) + extra
        return bytes([0x5f, sa, scope_type]) + b"\0\0" + \
            struct.pack(">I", len(data)) + b"\0", data
    for name, (cdb, data) in {
            "prout-register": prout(0, 0, 0, 0x1111),
            "prout-reserve": prout(1, 0x01, 0x1111, 0),
            "prout-preempt": prout(4, 0x05, 0x2222, 0x1111),
            "prout-aptpl": prout(0, 0, 0, 0x3333, flags=0x01),
            "prout-spec-ip": prout(0, 0, 0, 0x4444, flags=0x08,
                                   extra=struct.pack(">I", 28) +
                                   b"\x05\0\0\x18iqn.2026-12.x:y\0" +
                                   b"\0" * 9),
            "prout-move": (bytes([0x5f, 7, 0x01]) + b"\0\0" +
                           struct.pack(">I", 52) + b"\0",
                           struct.pack(">QQ4x", 0x1111, 0x2222) +
                           b"\0\0\0\x01" + struct.pack(">I", 24) +
                           b"\x05\0\0\x14iqn.2026-12.x:y\0\0\0\0\0"),
    }.items():
        cdb_seed(name, cdb, data)
    # EXTENDED COPY (LID1): two identification descriptors (NAA of the
    # fixture's LUN is not known here: the fuzzer finds it via VPD 0x83)
    # and one block-to-block segment descriptor.
    ident = b"\xe4\0\0\0" + b"\x01\x03\0\x10" + b"\x60" + b"\0" * 15 + \
        b"\0" * 8
    seg = b"\x02\0\x00\x18" + b"\0\0\0\x01" + b"\0\0" + b"\0\x08" + \
        struct.pack(">QQ", 0, 16)
    xhdr = b"\x00\x00\0\0" + struct.pack(">H", len(ident) * 2) + b"\0\0" + \
        struct.pack(">I", len(seg)) + b"\0\0\0\0"
    xdata = xhdr + ident + ident + seg
    cdb_seed("xcopy", b"\x83\0" + b"\0" * 8 + struct.pack(">I", len(xdata)) +
             b"\0\0", xdata)
    cdb_seed("rcr", b"\x84\x03" + b"\0" * 8 + b"\0\0\x10\0\0\0")
    ms = b"\0\0\0\0" + b"\x08\x12" + b"\x04" + b"\0" * 17
    cdb_seed("modeselect6", b"\x15\x10\0\0" + bytes([len(ms)]) + b"\0", ms)
    cdb_seed("writeatomic", b"\x9c" + b"\0" * 12 + b"\x01\0\0", b"\0" * 512)


def chap_seeds():
    write("chap", "md5", b"5\0" + b"0x" + b"ab" * 16 + b"\0secret-1234\0" +
          b"\x01" * 16)
    write("chap", "list", b"8,7,6,5\0" + b"0b" + b"AAECAwQFBgc=" +
          b"\0another-secret\0" + b"\x02" * 32)
    write("chap", "bad", b"1,2,x\0" + b"0xZZ\0\0")


def params_seeds():
    keys = normal_keys() + [(b"MaxConnections", b"1"),
                            (b"ErrorRecoveryLevel", b"0"),
                            (b"DefaultTime2Wait", b"2"),
                            (b"DefaultTime2Retain", b"20"),
                            (b"MaxOutstandingR2T", b"1"),
                            (b"DataPDUInOrder", b"Yes"),
                            (b"DataSequenceInOrder", b"Yes"),
                            (b"OFMarker", b"No"), (b"IFMarkInt", b"2048"),
                            (b"TMaxBurstLength", b"65536"),
                            (b"X-com.example.Foo", b"1")]
    write("params", "login", b"\x01" + b"".join(k + b"=" + v + b"\0"
                                                for k, v in keys))
    write("params", "discovery", b"\x03HeaderDigest=CRC32C,None\0"
          b"MaxBurstLength=8192\0SendTargets=All\0")


def config_seeds():
    with open(os.path.join(HERE, "..", "..", "targets.conf"), "rb") as f:
        write("config", "bundled", f.read())
    write("config", "full", b"""
portals = [ "127.0.0.1:3260", "[::1]:3260=[::1]:3261" ];
limits = { max_sessions = 8; max_sessions_per_target = 4;
           max_connections = 16; max_connections_per_portal = 0;
           cmdsn_depth = 32; max_data_buffer = "64M";
           max_data_buffer_per_connection = 1048576;
           login_timeout = 5; idle_timeout = 0; };
accounts = ( { user = "alice"; password = "alice-secret-1"; },
             { user = "tgt"; password = "target-secret-1"; } );
discovery = { incoming_users = [ "alice" ]; outgoing_user = "tgt"; };
targets = (
  { name = "iqn.2026-12.org.example:a"; tid = 3;
    initiators = [ "10.0.0.0/8", "::1", "iqn.1994-05.com.redhat:x" ];
    incoming_users = [ "alice" ]; outgoing_user = "tgt";
    nop_interval = 5; nop_count = 3;
    params = { MaxRecvDataSegmentLength = 262144; ImmediateData = "Yes";
               HeaderDigest = "CRC32C"; };
    luns = (
      { lun = 1; backend = "null"; size = "10M"; block_size = 4096;
        rerror = "retry"; werror = "retry"; retry_interval = 100;
        retry_timeout = 5000; retry_errors = [ "EIO", "ENOSPC" ];
        vendor_id = "V"; product_id = "P"; product_rev = "1";
        scsi_id = "id"; scsi_sn = "sn"; sense_format = "descriptor";
        thin_provisioning = true; write_cache = false; online = true;
        removable = true; readonly = false; },
      { lun = 2; backend = "fault"; fault = "eio,ops=w"; size = "1M"; }
    );
  }
);
""")


def iscsi_conf_seeds():
    seeds = {
        "plain": (b"iscsi://192.0.2.1/iqn.2026-12.org.example:san/1", b"",
                  b"gw-host_1"),
        "chap": (b"iscsi://gw%s3cret@[2001:db8::1]:3261/"
                 b"iqn.2026-12.org.example:san/0",
                 b"mutual_user=san;mutual_password=m-secret-12;"
                 b"header_digest=crc32c;data_digest=none", b""),
        "opts": (b"iscsi://san.example:3260/iqn.2026-12.org.example:san/7",
                 b"initiator_name=iqn.2026-12.org.example:gw;"
                 b"portals=192.0.2.2:3260|[::1] 192.0.2.3;"
                 b"remote_timeout=15000;connect_timeout=5000;"
                 b"reconnect_max=2000", b"HOST"),
    }
    for name, (url, opts, host) in seeds.items():
        write("iscsi_conf", name, url + b"\0" + opts + b"\0" + host)


def iscsi_dd_seeds():
    """fuzz_iscsi_dd: direction byte + PDU records; a login to full
    feature phase, then PDUs with header and data digests."""
    def pdu(op, flags, text=b"", ahs=0, hd=False, dd=False, status=0):
        bhs = bytearray(48)
        bhs[0], bhs[1], bhs[4] = op, flags, ahs
        bhs[5:8] = len(text).to_bytes(3, "big")
        bhs[36] = status
        out = bytes(bhs) + b"\0" * (ahs * 4) + (b"\0" * 4 if hd else b"")
        out += pad4(text)
        if dd and text:
            out += digest_bytes(pad4(text))
        return out
    req = (b"InitiatorName=" + INI + b"\0HeaderDigest=CRC32C,None\0"
           b"DataDigest=None\0MaxRecvDataSegmentLength=262144\0")
    rsp = b"HeaderDigest=CRC32C\0DataDigest=CRC32C\0"
    login = b"\0" + pdu(0x43, 0x87, req) + b"\1" + pdu(0x23, 0x87, rsp)
    ffp = (b"\0" + pdu(0x01, 0x80, b"x" * 1001, ahs=1, hd=True) +
           b"\1" + pdu(0x25, 0x80, b"y" * 512, hd=True, dd=True) +
           b"\0" + pdu(0x00, 0x80, hd=True))
    write("iscsi_dd", "login-ffp", login + ffp)
    write("iscsi_dd", "refused", b"\0" + pdu(0x43, 0x87, req) + b"\1" +
          pdu(0x23, 0x87, b"DataDigest=None\0"))
    write("iscsi_dd", "redirect", b"\1" + pdu(0x23, 0x00,
          b"TargetAddress=192.0.2.9:3260,1\0", status=1))


def be_scsi_seeds():
    """fuzz_be_scsi: a SAN's sense data and GET LBA STATUS answers."""
    fixed = bytes([0xf0, 0, 3, 0, 0, 0x12, 0x34, 10, 0, 0, 0, 0, 0x11, 0,
                   0, 0xc0, 0, 2])
    desc = (bytes([0x72, 7, 0x27, 7, 0, 0, 0, 20]) +
            bytes([0, 10, 0x80, 0]) + struct.pack(">Q", 5) +
            bytes([2, 6, 0, 0, 0x80, 0x12, 0x34, 0]))
    write("be_scsi", "sense-fixed", b"\0" + fixed)
    write("be_scsi", "sense-desc", b"\0" + desc)
    runs = [(100, 28, 0), (128, 128, 1), (256, 64, 2), (320, 80, 1)]
    gls = struct.pack(">I4x", 4 + 16 * len(runs)) + b"".join(
        struct.pack(">QIB3x", lba, n, st) for lba, n, st in runs)
    write("be_scsi", "gls-4", b"\1\0" + struct.pack(">II", 100, 300) +
          b"\x08" + gls)
    write("be_scsi", "gls-4k", b"\1\3" + struct.pack(">II", 100, 1000) +
          b"\xff" + gls)


def mgmt_req(mode, op, payload=b"", tid=-1, lun=None, sid=0, cid=0,
             ac_dir=0, force=0, lld=b"iscsi"):
    payload = payload + b"\0" if payload else b""
    h = struct.pack("<II64sIiQQIIIIII", mode, op, lld, 120 + len(payload),
                    tid, sid, 0xFFFFFFFFFFFFFFFF if lun is None else lun,
                    cid, 0, 0, ac_dir, 0, force)
    assert len(h) == 120
    return h + payload


def mgmt_seeds():
    reqs = {
        "show-targets": mgmt_req(1, 2),
        "show-target1": mgmt_req(1, 2, tid=1),
        "show-json": mgmt_req(1, 2, b"format=json"),
        "show-system": mgmt_req(0, 2),
        "dump-config": mgmt_req(0, 2, b"dump=config"),
        "new-target": mgmt_req(1, 0, b"targetname=iqn.2026-12.x:new", tid=9),
        "bind-all": mgmt_req(1, 3, b"initiator-address=ALL", tid=9),
        "unbind": mgmt_req(1, 4, b"initiator-address=ALL", tid=9),
        "update-target": mgmt_req(1, 5, b"targetOps MaxBurstLength=8192",
                                  tid=1),
        "new-lun-null": mgmt_req(2, 0, b"bstype=null,size=1M", tid=1, lun=5),
        "update-lun": mgmt_req(2, 5, b"targetOps rerror=retry,werror=retry,"
                               b"retry_timeout=1000", tid=1, lun=1),
        "hang-verb": mgmt_req(2, 5, b"hang=pause", tid=1, lun=1),
        "update-lun-filters": mgmt_req(2, 5, b"targetOps filters=passthrough,"
                                       b"fault,passthrough", tid=1, lun=1),
        "show-lun": mgmt_req(2, 2, b"format=json", tid=1, lun=1),
        "delete-lun": mgmt_req(2, 1, tid=1, lun=5),
        "new-account": mgmt_req(7, 0, b"user=bob,password=bob-secret-12"),
        "bind-account": mgmt_req(7, 3, b"user=bob", tid=1),
        "show-accounts": mgmt_req(7, 2),
        "show-portals": mgmt_req(3, 2),
        "job-mirror": mgmt_req(9, 0, b"type=mirror,target=/nonexistent/m.img,"
                               b"copy_mode=auto,switch_after=10,"
                               b"max_inflight=16777216,rate_limit=0",
                               tid=1, lun=1),
        "job-mirror-mode": mgmt_req(9, 5, b"id=1,copy_mode=write-blocking"),
        "show-sessions": mgmt_req(5, 2, tid=1),
        "stat": mgmt_req(0, 6),
        "lld-show": mgmt_req(4, 2),
        "delete-target": mgmt_req(1, 1, tid=9, force=1),
        # --mode bitmap (8) and --mode job (9); a job new only has its
        # parameters parsed (fuzz_mgmt.c)
        "bitmap-new": mgmt_req(8, 0, b"name=b0,granularity=65536", tid=1,
                               lun=1),
        "job-new-retry": mgmt_req(9, 0, b"type=backup,target=/nonexistent/x,"
                                  b"format=qcow2,sync=full,bitmap=b0,"
                                  b"bitmap_mode=always,on_target_error=retry,"
                                  b"retry_interval=100,retry_timeout=5000",
                                  tid=1, lun=1),
        "job-new-snapshot": mgmt_req(9, 0, b"type=snapshot,export_lun=7,"
                                     b"scratch=/nonexistent/s,bitmap=b0,"
                                     b"bitmap_mode=never", tid=1, lun=1),
    }
    for name, data in reqs.items():
        write("mgmt", name, data)


# ---- persistent bitmaps in a store's metadata (fuzz_cbt_meta) ----
def sidecar_one(name, lun_size, gran, dirty_chunks, flags=1):
    """The sidecar encoding of one bitmap (target/cbt/cbt_sidecar.h)."""
    import base64  # noqa: F401
    from rawiscsi import crc32c
    nchunks = (lun_size + gran - 1) // gran
    bits = bytearray((nchunks + 7) // 8)
    for c in dirty_chunks:
        bits[c // 8] |= 1 << (c % 8)
    body = struct.pack(">II", 1, 32) + struct.pack(">Q", lun_size) + \
        struct.pack(">II", 1, 0)
    body += struct.pack(">HHIQ", len(name), flags, gran, nchunks) + name + \
        bytes(bits)
    out = b"HFCBTMAP" + body
    return out + struct.pack(">I", crc32c(out[8:]))


def cbt_meta_seeds():
    import base64
    from rawiscsi import crc32c
    shard = 24576

    def meta(lun_size, bitmaps, gen=3, poisoned=False):
        """bitmaps: (name, gran, chunks); returns (header, shard values)."""
        hdr = b"holdfast-bitmaps 1\ngeneration %d\nsize %d\n" % (
            gen, lun_size)
        if poisoned:
            hdr += b"poisoned\n"
        vals = []
        blobs = []
        for name, gran, chunks in bitmaps:
            blob = sidecar_one(name, lun_size, gran, chunks)
            n = (len(blob) + shard - 1) // shard
            hdr += b"bitmap %s %d %d %d %d %08x\n" % (
                name, gen, gran, n, len(blob), crc32c(blob))
            vals += [base64.b64encode(blob[i * shard:(i + 1) * shard])
                     for i in range(n)]
            blobs.append(blob)
        return hdr, vals, blobs

    def raw(hdr, vals):
        return hdr + b"\0" + b"\0".join(vals)

    hdr, vals, blobs = meta(64 << 20, [(b"daily", 65536, [0, 48, 1023])])
    write("cbt_meta", "one", raw(hdr, vals))
    write("cbt_meta", "one-fixed", hdr + b"\0" + blobs[0])
    hdr, vals, blobs = meta(10 << 20 | 512, [
        (b"daily", 65536, [0, 160]), (b"w.eek-ly_2", 4096, [5, 2560])],
        poisoned=True)
    write("cbt_meta", "two-poisoned", raw(hdr, vals))
    write("cbt_meta", "two-fixed", hdr + b"\0" + b"".join(blobs))
    # two shards: 768 MiB in 4 KiB chunks is 24 KiB of bits
    hdr, vals, blobs = meta(768 << 20, [(b"big", 4096, [0, 99999, 196607])])
    assert len(vals) == 2
    write("cbt_meta", "two-shards", raw(hdr, vals))
    write("cbt_meta", "empty", b"holdfast-bitmaps 1\ngeneration 1\n"
          b"size 0\n")


if __name__ == "__main__":
    conn_seeds()
    cdb_seeds()
    chap_seeds()
    params_seeds()
    iscsi_conf_seeds()
    iscsi_dd_seeds()
    be_scsi_seeds()
    config_seeds()
    mgmt_seeds()
    cbt_meta_seeds()
