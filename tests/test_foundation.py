"""Foundation integration tests: a real holdfastd, real initiators.

Each test starts its own daemon through the `holdfast` fixture (see
conftest.py) and talks to it with libiscsi's tools, QEMU's iscsi driver
(qemu-io, qemu-img) or libiscsi through ctypes.
"""

import os
import random
import re
import signal
import subprocess
import time

import pytest

from helpers import (ASCQ_LBA_OUT_OF_RANGE, IQN, SCSI_STATUS_CHECK_CONDITION,
                     SENSE_ILLEGAL_REQUEST, USE_TGTD, IscsiSession,
                     build_dir, free_tcp_port, port_accepts, qemu_io, run,
                     tscale)

MiB = 1 << 20
IQN2 = "iqn.2026-11.org.example:t2"


def login_reply_keys(url, env_base):
    """The key=value pairs of the target's final login response, as
    libiscsi logs them at debug level 6."""
    env = dict(env_base)
    env["LIBISCSI_DEBUG"] = "6"
    cp = run(["iscsi-inq", url], env=env, timeout=30)
    keys = {}
    for m in re.finditer(r"TargetLoginReply: (\w+)=(\S+)", cp.stderr):
        keys[m.group(1)] = m.group(2)
    return keys


# --------------------------------------------------------------------------
# discovery and identification

def test_discovery_lists_targets_and_luns(holdfast):
    d = holdfast(targets=[
        {"name": IQN, "initiators": ["ALL"], "luns": [
            {"lun": 1, "backend": "file", "path": "disk1.img",
             "size": "64M", "block_size": 512},
            {"lun": 2, "backend": "null", "size": "1G"}]},
        {"name": IQN2, "initiators": ["ALL"], "luns": [
            {"lun": 3, "backend": "null", "size": "16M"}]},
    ])
    out = run(["iscsi-ls", "-s", "iscsi://%s/" % d.portal]).stdout
    # one "Target:IQN Portal:ADDR:PORT,TPGT" line per target and portal,
    # followed by that target's LUNs
    blocks = {}
    for b in re.split(r"^(?=Target:)", out, flags=re.M):
        m = re.match(r"Target:(\S+) Portal:127\.0\.0\.1:%d,\d+$" % d.port,
                     b, re.M)
        if m:
            blocks[m.group(1)] = b
    assert sorted(blocks) == sorted([IQN, IQN2]), out
    t1, t2 = blocks[IQN], blocks[IQN2]
    assert re.search(r"Lun:1\s+Type:DIRECT_ACCESS", t1), out
    assert re.search(r"Lun:2\s+Type:DIRECT_ACCESS", t1), out
    assert "Lun:3" not in t1, out
    assert re.search(r"Lun:3\s+Type:DIRECT_ACCESS", t2), out


def test_discovery_without_size(holdfast):
    d = holdfast()
    out = run(["iscsi-ls", "iscsi://%s/" % d.portal]).stdout
    assert re.search(r"^Target:%s Portal:127\.0\.0\.1:%d," %
                     (re.escape(IQN), d.port), out, re.M), out


def test_standard_inquiry(holdfast):
    d = holdfast()
    out = run(["iscsi-inq", d.url(1)]).stdout
    assert "Peripheral Qualifier:CONNECTED" in out, out
    assert "Peripheral Device Type:DIRECT_ACCESS" in out, out
    assert "Removable:0" in out, out
    # command queuing is what lets initiators keep several commands in
    # flight (SPC-4 6.6.2 CMDQUE)
    assert "CmdQue:1" in out, out
    d.require_holdfast("vendor string")
    assert re.search(r"^Vendor:HOLDFAST\s*$", out, re.M), out
    assert re.search(r"^Product:\S", out, re.M), out


def _vpd(d, lun, page):
    return run(["iscsi-inq", "-e", "1", "-c", str(page), d.url(lun)]).stdout


def test_vpd_pages(holdfast):
    d = holdfast()
    supported = _vpd(d, 1, 0x00)
    # SBC-3 6.6: 0x00, 0x80, 0x83 and Block Limits are what initiators ask
    for page in ("0x00", "0x80", "0x83", "0xb0"):
        assert re.search(r"^Page:%s " % page, supported, re.M), supported

    sn1 = re.search(r"Unit Serial Number:\[(.*)\]", _vpd(d, 1, 0x80))
    sn2 = re.search(r"Unit Serial Number:\[(.*)\]", _vpd(d, 2, 0x80))
    assert sn1 and sn1.group(1).strip(), "LUN 1 has no serial number"
    assert sn2 and sn2.group(1).strip(), "LUN 2 has no serial number"
    assert sn1.group(1) != sn2.group(1), "two LUNs share a serial number"

    id1 = _vpd(d, 1, 0x83)
    id2 = _vpd(d, 2, 0x83)
    assert "Page Code:(0x83) DEVICE_IDENTIFICATION" in id1, id1
    assert "DEVICE DESIGNATOR #0" in id1, id1
    # at least one logical-unit designator, and it must differ per LUN so
    # multipath software does not merge the two devices
    lu1 = re.findall(r"Association:\(0\) LOGICAL_UNIT\n"
                     r"Designator Type:\((\d+)\).*\nDesignator:\[(.*)\]",
                     id1)
    lu2 = re.findall(r"Association:\(0\) LOGICAL_UNIT\n"
                     r"Designator Type:\((\d+)\).*\nDesignator:\[(.*)\]",
                     id2)
    assert lu1 and lu2, (id1, id2)
    assert lu1 != lu2, "LUN 1 and LUN 2 report the same designators"

    bl = _vpd(d, 1, 0xb0)
    assert "maximum transfer length:" in bl, bl
    assert "optimal transfer length granularity:" in bl, bl


@pytest.mark.parametrize("lun,size,bs", [
    ({"lun": 1, "backend": "file", "path": "disk1.img", "size": "64M",
      "block_size": 512}, 64 * MiB, 512),
    ({"lun": 1, "backend": "file", "path": "disk4k.img", "size": "32M",
      "block_size": 4096}, 32 * MiB, 4096),
    ({"lun": 1, "backend": "null", "size": "1G", "block_size": 512},
     1 << 30, 512),
], ids=["file-512", "file-4096", "null-1G"])
def test_read_capacity16(holdfast, lun, size, bs):
    d = holdfast(luns=[lun])
    if d.is_tgtd and lun["backend"] == "null":
        pytest.skip("tgtd's null store has a fixed size")
    out = run(["iscsi-readcapacity16", d.url(1)]).stdout
    assert "RETURNED LOGICAL BLOCK ADDRESS:%d\n" % (size // bs - 1) in out, \
        out
    assert "LOGICAL BLOCK LENGTH IN BYTES:%d\n" % bs in out, out
    assert "Total size:%d\n" % size in out, out
    with IscsiSession(d.portal, d.iqn, 1) as s:
        assert s.read_capacity16() == (size // bs, bs)


# --------------------------------------------------------------------------
# data path

# (offset, length): 512 B .. 8 MiB at offsets that are multiples of 512 but
# not of 4096, lengths around MaxRecvDataSegmentLength (8 KiB),
# FirstBurstLength (64 KiB) and MaxBurstLength (256 KiB) and well beyond
# them; laid out without overlap so every region can be checked in the
# backing file; plus the first and the last MiB of the 64 MiB LUN.
ROUNDTRIP_SIZES = [512, 1024, 1536, 4096, 8192, 8704, 65024, 65536, 66048,
                   131072, 262144, 262656, 524288 + 512, 1 * MiB,
                   3 * MiB + 1536, 8 * MiB]


def _layout(sizes, start=1 * MiB, salt=1):
    out, cur = [], start
    for i, n in enumerate(sizes):
        cur = (cur + 4095) // 4096 * 4096 + 512 * (1 + (i * 3 + salt) % 7)
        out.append((cur, n))
        cur += n
    return out


ROUNDTRIPS = [(0, 512)] + _layout(ROUNDTRIP_SIZES) + [(63 * MiB, 1 * MiB)]


def _check_regions(img, regions):
    """The backing file holds each region's pattern at its offset, so the
    target wrote where it was told (not only something that reads back)."""
    with open(img, "rb") as f:
        for off, length, pat in regions:
            f.seek(off)
            data = f.read(length)
            assert len(data) == length, "backing file too short"
            if data != bytes([pat]) * length:
                bad = next(i for i, b in enumerate(data) if b != pat)
                raise AssertionError(
                    "backing file at %d (+%d of write %d/%d) holds %#x, "
                    "expected %#x" % (off + bad, bad, off, length,
                                      data[bad], pat))


def _roundtrip(d, cases, lun=1, img="disk1.img"):
    cmds_w, cmds_r, regions = [], [], []
    # give neighbouring regions different patterns so an overrun shows
    for i, (off, length) in enumerate(cases):
        pat = 0x11 + (i * 0x1d) % 0xe0
        cmds_w.append("write -P %#x %d %d" % (pat, off, length))
        cmds_r.append("read -P %#x %d %d" % (pat, off, length))
        regions.append((off, length, pat))
    # sort so later writes don't overlap earlier ones in the check
    qemu_io(d.url(lun), *cmds_w)
    qemu_io(d.url(lun), *cmds_r)
    _check_regions(d.path(img), _last_writer(regions))


def _last_writer(regions):
    """Drop the bytes of regions overwritten by a later region."""
    out = []
    for i, (off, length, pat) in enumerate(regions):
        later = regions[i + 1:]
        if all(o >= off + length or o + n <= off for o, n, _ in later):
            out.append((off, length, pat))
    return out


def test_roundtrip_cases_do_not_overlap():
    # the table above is meant to be checked in full against the file
    assert len(_last_writer([(o, n, 0) for o, n in ROUNDTRIPS])) == \
        len(ROUNDTRIPS)


@pytest.mark.parametrize("immediate", ["Yes", "No"])
@pytest.mark.parametrize("initial_r2t", ["Yes", "No"])
def test_qemu_io_roundtrip(holdfast, immediate, initial_r2t):
    params = {"FirstBurstLength": 65536, "MaxBurstLength": 262144,
              "ImmediateData": immediate, "InitialR2T": initial_r2t,
              "MaxRecvDataSegmentLength": 8192}
    d = holdfast(params=params)
    _roundtrip(d, ROUNDTRIPS)
    keys = login_reply_keys(d.url(1), d.env)
    # libiscsi offers ImmediateData=Yes and InitialR2T=No; the result is
    # the AND resp. OR of both sides (RFC 7143 13.10, 13.11), so it must be
    # what the target declared -- otherwise the transfers above did not
    # exercise the mode this case is about
    assert keys.get("ImmediateData") == immediate, keys
    assert keys.get("InitialR2T") == initial_r2t, keys
    assert keys.get("MaxBurstLength") == "262144", keys
    assert keys.get("FirstBurstLength") == "65536", keys
    if "MaxRecvDataSegmentLength" in keys:
        assert keys["MaxRecvDataSegmentLength"] == "8192", keys


@pytest.mark.parametrize("immediate", [True, False], ids=["imm", "noimm"])
@pytest.mark.parametrize("initial_r2t", [True, False], ids=["r2t", "nor2t"])
def test_initiator_offers_data_modes(holdfast, immediate, initial_r2t):
    """The same four data-out modes chosen by the initiator (libiscsi
    offers ImmediateData=No / InitialR2T=Yes), with writes around and
    beyond FirstBurstLength and MaxBurstLength, checked in the file."""
    d = holdfast(params={"FirstBurstLength": 65536,
                         "MaxBurstLength": 262144,
                         "MaxRecvDataSegmentLength": 8192})
    sizes = [512, 8192, 8192 + 512, 65536, 65536 + 512, 262144,
             262144 + 512, 1 * MiB + 1536]
    regions = []
    with IscsiSession(d.portal, d.iqn, 1, immediate_data=immediate,
                      initial_r2t=initial_r2t) as s:
        for i, (off, n) in enumerate(_layout(sizes, salt=2)):
            data = bytes([(i * 37 + j) & 0xff for j in range(251)]) * \
                (n // 251 + 1)
            data = data[:n]
            r = s.write10(off // 512, data)
            assert r.ok, "WRITE(10) of %d bytes at %d: %r %s" % (
                n, off, r, s.error())
            regions.append((off, data))
        for off, data in regions:
            r = s.read10(off // 512, len(data) // 512)
            assert r.ok and r.data == data, "READ(10) of %d bytes at %d " \
                "differs" % (len(data), off)
    with open(d.path("disk1.img"), "rb") as f:
        for off, data in regions:
            f.seek(off)
            assert f.read(len(data)) == data, "backing file differs at " \
                "%d (+%d)" % (off, len(data))


@pytest.mark.parametrize("mrdsl", [512, 4096])
def test_qemu_io_small_segments(holdfast, mrdsl):
    # a small MaxRecvDataSegmentLength makes the initiator split immediate
    # and solicited data into many Data-Out PDUs, and a small
    # FirstBurstLength / MaxBurstLength many R2Ts
    params = {"MaxRecvDataSegmentLength": mrdsl, "FirstBurstLength": 4096,
              "MaxBurstLength": 16384, "ImmediateData": "Yes",
              "InitialR2T": "No"}
    d = holdfast(params=params)
    keys = login_reply_keys(d.url(1), d.env)
    if "MaxRecvDataSegmentLength" in keys:
        assert keys["MaxRecvDataSegmentLength"] == str(mrdsl), keys
    _roundtrip(d, _layout([512, 4096, 8704, 65536 + 1024, 262144 + 512,
                           1 * MiB, 2 * MiB + 512], salt=4))


def test_qemu_img_convert_in_and_out(holdfast, tmp_path):
    d = holdfast()
    rnd = random.Random()
    seed = rnd.randrange(1 << 30)
    rnd.seed(seed)
    size = rnd.randint(16 * 2048, 64 * 2048) * 512   # 16..64 MiB, 512-aligned
    src = tmp_path / "src.img"
    with open(src, "wb") as f:
        f.write(os.urandom(size))
    run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src),
         d.url(1)], timeout=300)
    out = tmp_path / "out.img"
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", d.url(1),
         str(out)], timeout=300)
    want = src.read_bytes()
    got = out.read_bytes()
    assert len(got) == 64 * MiB, "LUN image is %d bytes" % len(got)
    assert got[:size] == want, "copy-out differs from the source " \
        "(size %d, seed %d)" % (size, seed)
    assert got[size:] == bytes(64 * MiB - size), "bytes past the copy " \
        "are not zero"
    backing = d.path("disk1.img").read_bytes()
    assert backing[:size] == want, "backing file differs from the source"
    assert len(backing) == 64 * MiB


def test_4k_block_lun_roundtrip(holdfast):
    """A 4096-byte-block LUN: qemu learns the block size from READ
    CAPACITY and issues 4K-aligned commands; a block-size mix-up in the
    target shows up as data at the wrong offset in the file."""
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk4k.img",
                        "size": "64M", "block_size": 4096}])
    cases = [(0, 4096), (8192, 8192), (1 * MiB + 4096, 65536 + 4096),
             (3 * MiB + 12288, 262144 + 8192), (8 * MiB + 4096, 4 * MiB),
             (63 * MiB, 1 * MiB)]
    _roundtrip(d, cases, img="disk4k.img")
    with IscsiSession(d.portal, d.iqn, 1) as s:
        assert s.read_capacity16() == (64 * MiB // 4096, 4096)
        r = s.read10(2, 2, block_size=4096)     # LBAs count 4K blocks
        assert r.ok and len(r.data) == 8192, r
        assert r.data == open(d.path("disk4k.img"), "rb").read(16384)[8192:]


def test_data_survives_restart(holdfast):
    """The backing file is reopened, not recreated or truncated, when the
    daemon starts again with the same configuration."""
    d = holdfast()
    qemu_io(d.url(1), "write -P 0x6d 1536 1M", "write -P 0x6e 60M 4M")
    d.restart()
    qemu_io(d.url(1), "read -P 0x6d 1536 1M", "read -P 0x6e 60M 4M",
            "read -P 0 0 1536")
    assert os.path.getsize(d.path("disk1.img")) == 64 * MiB


def test_two_portals(holdfast):
    d = holdfast(nr_portals=2)
    for port in d.ports:
        url = "iscsi://127.0.0.1:%d/%s/1" % (port, d.iqn)
        qemu_io(url, "write -P %#x 0 64k" % (port & 0xff),
                "read -P %#x 0 64k" % (port & 0xff))
        out = run(["iscsi-ls", "iscsi://127.0.0.1:%d/" % port]).stdout
        assert d.iqn in out, out


def test_unknown_target_login_refused(holdfast):
    d = holdfast()
    cp = run(["iscsi-inq", d.url(1, iqn="iqn.2026-11.org.example:nosuch")],
             check=False, timeout=30)
    assert cp.returncode != 0, cp.stdout
    assert "DIRECT_ACCESS" not in cp.stdout
    # the daemon is still serving the real target
    run(["iscsi-inq", d.url(1)])


def test_null_lun_reads_zeroes(holdfast):
    d = holdfast()
    d.require_holdfast("tgtd's null store does not zero read buffers")
    # writes to a null LUN succeed and are discarded
    qemu_io(d.url(2), "write -P 0xab 0 1M", "write -P 0xcd 1073740800 512")
    qemu_io(d.url(2), "read -P 0 0 1M", "read -P 0 1073740800 512",
            "read -P 0 536871424 4194304")
    with IscsiSession(d.portal, d.iqn, 2) as s:
        r = s.read10(0, 16)
        assert r.ok and r.data == bytes(16 * 512), r


def test_out_of_range_is_refused(holdfast):
    d = holdfast()
    nblocks = 64 * MiB // 512
    with IscsiSession(d.portal, d.iqn, 1) as s:
        assert s.read10(nblocks - 1, 1).ok
        # SBC-3 5.11: LBA beyond the end -> ILLEGAL REQUEST, LOGICAL BLOCK
        # ADDRESS OUT OF RANGE; also when only the tail is out of range
        for lba, n in ((nblocks, 1), (nblocks - 1, 2), (nblocks + 1000, 8)):
            r = s.read10(lba, n)
            assert r.status == SCSI_STATUS_CHECK_CONDITION, (lba, n, r)
            assert r.key == SENSE_ILLEGAL_REQUEST, (lba, n, r)
            assert r.ascq == ASCQ_LBA_OUT_OF_RANGE, (lba, n, r)
        r = s.read16(1 << 40, 1)
        assert r.status == SCSI_STATUS_CHECK_CONDITION, r
        assert r.key == SENSE_ILLEGAL_REQUEST, r
        assert r.ascq == ASCQ_LBA_OUT_OF_RANGE, r
        r = s.write10(nblocks - 1, b"\xee" * 1024)
        assert r.status == SCSI_STATUS_CHECK_CONDITION, r
        assert r.key == SENSE_ILLEGAL_REQUEST, r
        # the refused write must not have touched the last block
        assert s.read10(nblocks - 1, 1).data == bytes(512)
        assert s.test_unit_ready().ok, "session unusable after the errors"
    # qemu-io also sees an error, not data
    cp = qemu_io(d.url(1), "read 64M 512", check=False)
    assert cp.returncode != 0 or re.search("error|failed",
                                           cp.stdout + cp.stderr)


@pytest.mark.parametrize("busy_poll", [0, 200])
def test_concurrent_qemu_io(holdfast, busy_poll):
    """Six initiators at once on one session each: four write and verify
    their own regions of the file LUN, two the null LUN (reads zeroes).
    Also with --busy-poll 200: the reactors poll between wake-ups."""
    if busy_poll:
        if USE_TGTD:
            pytest.skip("tgtd baseline run: a holdfastd option")
        d = holdfast(args=["--busy-poll", str(busy_poll)])
    else:
        d = holdfast()
    n = 6
    procs = []
    for i in range(n):
        off = i * 8 * MiB + 512 * (i + 1)
        null_lun = i % 3 == 0
        pat = 0x21 + i
        # tgtd's null store leaves read buffers unfilled: no check there
        rchk = "" if null_lun and d.is_tgtd else "-P %#x " % (
            0 if null_lun else pat)
        argv = ["qemu-io", "-f", "raw",
                "-c", "write -P %#x %d %d" % (pat, off, 3 * MiB + 512),
                "-c", "read %s%d %d" % (rchk, off, 3 * MiB + 512),
                "-c", "write -P %#x %d %d" % (pat, off + 4 * MiB, 65536),
                "-c", "read %s%d %d" % (rchk, off + 4 * MiB, 65536),
                d.url(2 if null_lun else 1)]
        procs.append((argv, subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)))
    failures = []
    for argv, p in procs:
        try:
            out, _ = p.communicate(timeout=120 * tscale())
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            failures.append("timed out: %s\n%s" % (" ".join(argv), out))
            continue
        if p.returncode != 0 or re.search(r"failed|error", out, re.I):
            failures.append("exit %d: %s\n%s" % (p.returncode,
                                                 " ".join(argv), out))
    assert not failures, "\n".join(failures)
    regions = []
    for i in range(n):
        if i % 3 == 0:
            continue
        off = i * 8 * MiB + 512 * (i + 1)
        regions += [(off, 3 * MiB + 512, 0x21 + i),
                    (off + 4 * MiB, 65536, 0x21 + i)]
    _check_regions(d.path("disk1.img"), regions)


# --------------------------------------------------------------------------
# configuration errors

BAD_CONFIGS = {
    # name: (file text with @PORT@, the key that must be named, line)
    "unknown-lun-key": ("""portals = [ "127.0.0.1:@PORT@" ];
targets = ( { name = "%s"; initiators = [ "ALL" ];
    luns = ( { lun = 1; backend = "null"; size = "1G";
               colour = "blue"; } ); } );
""" % IQN, "colour", 4),
    "unknown-top-key": ("""portals = [ "127.0.0.1:@PORT@" ];
bogus_setting = 5;
targets = ( { name = "%s"; initiators = [ "ALL" ];
    luns = ( { lun = 1; backend = "null"; size = "1G"; } ); } );
""" % IQN, "bogus_setting", 2),
    "bad-block-size": ("""portals = [ "127.0.0.1:@PORT@" ];
targets = ( { name = "%s"; initiators = [ "ALL" ];
    luns = ( { lun = 1; backend = "null"; size = "1G"; },
             { lun = 2; backend = "null"; size = "1G";
               block_size = 1000; } ); } );
""" % IQN, "block_size", 5),
    "bad-size": ("""portals = [ "127.0.0.1:@PORT@" ];
targets = ( { name = "%s"; initiators = [ "ALL" ];
    luns = ( { lun = 1; backend = "null";
               size = "12Q"; } ); } );
""" % IQN, "size", 4),
    "unknown-backend": ("""portals = [ "127.0.0.1:@PORT@" ];
targets = ( { name = "%s"; initiators = [ "ALL" ];
    luns = ( { lun = 1;
               backend = "floppy"; size = "1G"; } ); } );
""" % IQN, "backend", 4),
    "bad-iscsi-param": ("""portals = [ "127.0.0.1:@PORT@" ];
targets = ( { name = "%s"; initiators = [ "ALL" ];
    params = { ImmediateData = "Yes";
               MaxBurstLength = "lots"; };
    luns = ( { lun = 1; backend = "null"; size = "1G"; } ); } );
""" % IQN, "MaxBurstLength", 4),
    "bad-retry-policy": ("""portals = [ "127.0.0.1:@PORT@" ];
targets = ( { name = "%s"; initiators = [ "ALL" ];
    luns = ( { lun = 1; backend = "null"; size = "1G";
               rerror = "sometimes"; } ); } );
""" % IQN, "rerror", 4),
    "syntax-error": ("""portals = [ "127.0.0.1:@PORT@" ];
targets = ( { name = "%s"; initiators = [ "ALL" ];
    luns = ( { lun = = 1; backend = "null"; size = "1G"; } ); } );
""" % IQN, None, 3),
}


@pytest.mark.parametrize("value", ["-1", "100001", "5x", ""])
def test_bad_busy_poll_is_refused(value):
    """--busy-poll takes 0..100000 microseconds; anything else is a usage
    error (exit 2) before any configuration is read."""
    if USE_TGTD:
        pytest.skip("tgtd baseline run: a holdfastd option")
    cp = subprocess.run([str(build_dir() / "holdfastd"), "-f", "-c",
                         "/nonexistent/targets.conf", "--busy-poll", value],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, timeout=30)
    assert cp.returncode == 2, cp.stdout
    assert "--busy-poll" in cp.stdout, cp.stdout


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_refused(holdfast, tmp_path, case):
    text, key, line = BAD_CONFIGS[case]
    if USE_TGTD:
        pytest.skip("tgtd baseline run: holdfastd configuration")
    port = free_tcp_port()
    cfg = tmp_path / "targets.conf"
    cfg.write_text(text.replace("@PORT@", str(port)))
    env = dict(os.environ, TGT_IPC_SOCKET=str(tmp_path / "tgtd.sock"))
    ctl = random.randint(1000, 32767)
    p = subprocess.Popen([str(build_dir() / "holdfastd"), "-f", "-c",
                          str(cfg), "-C", str(ctl)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=str(tmp_path))
    # the portal must never accept, not even briefly before validation
    served = False
    end = time.monotonic() + 15 * tscale()
    while p.poll() is None and time.monotonic() < end:
        if port_accepts(port, timeout=0.05):
            served = True
        time.sleep(0.005)
    if p.poll() is None:
        p.kill()
        out = p.communicate()[0]
        pytest.fail("holdfastd kept running with a bad config:\n" + out)
    out = p.communicate()[0]
    assert p.returncode != 0, "exit 0 on a bad config:\n" + out
    assert p.returncode > 0, "died by signal %d:\n%s" % (-p.returncode, out)
    assert not served, "port %d was served with a bad config" % port
    assert not (tmp_path / ("tgtd.sock.%d" % ctl)).exists(), \
        "management socket left behind"
    assert "runtime error:" not in out and "Sanitizer" not in out, out
    # FILE:LINE: key: reason (a syntax error has no key)
    m = re.search(r"^(?:.*?\s)?(\S*targets\.conf):(\d+): (\S+): (\S.*)$"
                  if key else r"^(?:.*?\s)?(\S*targets\.conf):(\d+): (\S.*)$",
                  out, re.M)
    assert m, "no 'FILE:LINE: key: reason' message:\n" + out
    assert os.path.basename(m.group(1)) == "targets.conf", out
    assert int(m.group(2)) == line, "wrong line (want %d):\n%s" % (line,
                                                                  out)
    if key:
        assert m.group(3).rstrip(":").split(".")[-1] == key, \
            "wrong key (want %s):\n%s" % (key, out)


# --------------------------------------------------------------------------
# lifecycle

def test_sigterm_with_session_logged_in(holdfast):
    d = holdfast()
    d.require_holdfast("tgtd ignores SIGTERM")
    s = IscsiSession(d.portal, d.iqn, 1)
    try:
        assert s.test_unit_ready().ok
        assert s.write10(0, b"\x5a" * 4096).ok
        d.send_signal(signal.SIGTERM)
        rc = d.wait(15)
        assert rc is not None, "holdfastd ignored SIGTERM with a session " \
            "logged in"
        assert rc == 0, "holdfastd exited %d on SIGTERM" % rc
        assert not port_accepts(d.port), "port still served after exit"
    finally:
        s.close(logout=False)
    # the acknowledged write reached the backing file
    with open(d.path("disk1.img"), "rb") as f:
        assert f.read(4096) == b"\x5a" * 4096


def test_sigterm_idle(holdfast):
    d = holdfast()
    d.require_holdfast("tgtd ignores SIGTERM")
    qemu_io(d.url(1), "read 0 4096")
    d.send_signal(signal.SIGTERM)
    assert d.wait(15) == 0


def test_backing_file_created_sparse_with_size(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "new.img",
                        "size": "48M", "block_size": 512}])
    st = os.stat(d.path("new.img"))
    assert st.st_size == 48 * MiB
    d.require_holdfast("creating backing files")
    assert st.st_blocks * 512 < 8 * MiB, "backing file was not created sparse"


def test_fixture_tgtadm_reaches_daemon(holdfast):
    """The fixture's tgtadm() talks to this daemon's own control socket
    (TGT_IPC_SOCKET in the test's directory, -C its control port)."""
    d = holdfast()
    out = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                   "target").stdout
    assert re.search(r"^Target 1: %s$" % re.escape(IQN), out, re.M), out
    assert os.path.exists("%s.%d" % (d.sock_base, d.ctl_port))
