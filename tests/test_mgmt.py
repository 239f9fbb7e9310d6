"""The management socket (target/mgmt/mgmt.c) driven by the stock tgtadm.

holdfastd speaks tgtd's management protocol, so the unmodified Debian
`tgtadm` configures it: these tests create targets and LUNs that qemu-io
then reads and writes, check the show text line by line against the shape
a real tgtd prints, bind and unbind ACLs, refuse bad --params without
changing anything, and check that a bad targets.conf is refused with its
FILE:LINE message.  Error texts come from tgtadm itself (it maps the
daemon's error numbers), so matching them checks the numbers.
"""

import os
import re
import socket
import stat
import struct
import subprocess

import pytest

from helpers import (INITIATOR_IQN, IscsiSession, TGTADM, USE_TGTD,
                     build_dir, free_tcp_port, qemu_io, run, tscale,
                     wait_for)

MiB = 1 << 20
IQN2 = "iqn.2026-11.org.example:mgmt2"


def tgtadm(d, *args, check=True):
    return d.tgtadm("--lld", "iscsi", *args, check=check)


def show(d):
    return tgtadm(d, "--op", "show", "--mode", "target").stdout


def target_block(text, tid):
    """The show text of target tid (up to the next target)."""
    m = re.search(r"^Target %d: .*?(?=^Target \d+: |\Z)" % tid, text,
                  re.S | re.M)
    assert m, text
    return m.group(0)


def lun_block(text, lun):
    m = re.search(r"^        LUN: %d\n(.*?)(?=^        LUN: |^    Account)"
                  % lun, text, re.S | re.M)
    assert m, text
    return m.group(0)


def fails_with(cp, message):
    assert cp.returncode != 0, cp.stdout
    assert message in cp.stderr, cp.stderr


def raw_request(sock, mode, op, payload=b"", tid=-1, lun=None, length=None,
                lld=b"iscsi", force=0):
    """Send one request the way tgtadm lays it out (tgtadm-wire.md) and
    return every byte of the reply."""
    hdr = struct.pack("<II64sIiQQIIIIII", mode, op, lld,
                      length or 120 + len(payload), tid, 0,
                      0xffffffffffffffff if lun is None else lun, 0, 0, 0,
                      0, 0, force)
    assert len(hdr) == 120
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect(sock)
        c.sendall(hdr + payload)
        data = b""
        while True:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                chunk = b""     # closed with our payload unread
            if not chunk:
                return data
            data += chunk


# --------------------------------------------------------------------------
# tgtadm builds targets and LUNs that initiators use

def test_tgtadm_creates_target_and_lun(holdfast, tmp_path):
    d = holdfast(targets=[])
    img = tmp_path / "made.img"
    with open(img, "wb") as f:
        f.truncate(64 * MiB)
    tgtadm(d, "--op", "new", "--mode", "target", "--tid", 1, "-T", IQN2)
    tgtadm(d, "--op", "new", "--mode", "logicalunit", "--tid", 1, "--lun",
           1, "-b", img, "--bsoflags", "direct")
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-I", "ALL")
    url = "iscsi://%s/%s/1" % (d.portal, IQN2)
    qemu_io(url, "write -P 0x5a 1M 1M", "read -P 0x5a 1M 1M")
    # the data went to the file tgtadm named
    with open(img, "rb") as f:
        f.seek(1 * MiB)
        assert f.read(MiB) == b"\x5a" * MiB

    # a null LUN and a 4096-byte-block LUN through --bstype / --blocksize
    tgtadm(d, "--op", "new", "--mode", "logicalunit", "--tid", 1, "--lun",
           2, "-b", "none", "--bstype", "null")
    img4k = tmp_path / "4k.img"
    with open(img4k, "wb") as f:
        f.truncate(16 * MiB)
    tgtadm(d, "--op", "new", "--mode", "logicalunit", "--tid", 1, "--lun",
           3, "-b", img4k, "--blocksize", 4096)
    with IscsiSession(d.portal, IQN2, 3) as s:
        assert s.read_capacity16() == (16 * MiB // 4096, 4096)
    text = show(d)
    assert "Backing store type: null" in lun_block(text, 2)
    # 16 MiB is 16.8 million bytes: tgtd rounds to the nearest MB
    assert "Size: 17 MB, Block size: 4096" in lun_block(text, 3)

    # errors tgtadm knows by number
    fails_with(tgtadm(d, "--op", "new", "--mode", "target", "--tid", 1, "-T",
                      "iqn.2026-11.org.example:other", check=False),
               "this target already exists")
    fails_with(tgtadm(d, "--op", "new", "--mode", "target", "--tid", 2, "-T",
                      IQN2, check=False), "this target already exists")
    fails_with(tgtadm(d, "--op", "new", "--mode", "logicalunit", "--tid", 1,
                      "--lun", 1, "-b", img, check=False),
               "this logical unit number already exists")
    fails_with(tgtadm(d, "--op", "new", "--mode", "logicalunit", "--tid", 1,
                      "--lun", 4, "-b", tmp_path / "missing.img",
                      check=False), "invalid request")
    fails_with(tgtadm(d, "--op", "new", "--mode", "logicalunit", "--tid", 7,
                      "--lun", 1, "-b", img, check=False),
               "can't find the target")
    if not d.is_tgtd:
        # tgtd takes these; holdfast checks them
        fails_with(tgtadm(d, "--op", "new", "--mode", "logicalunit", "--tid",
                          1, "--lun", 4, "-b", img, "--blocksize", 1000,
                          check=False), "invalid request")
        fails_with(tgtadm(d, "--op", "new", "--mode", "target", "--tid", 2,
                          "-T", "iqn.bad name", check=False),
                   "invalid request")


# --------------------------------------------------------------------------
# show

# The lines a real tgtd 1.0.85 prints for a target with a session, a file
# LUN and ACLs (captured with tgtadm --op show), as patterns; holdfast adds
# its own per-LUN lines after "Backing store flags:".
TGTD_SHAPE = [
    r"Target 1: %(iqn)s",
    r"    System information:",
    r"        Driver: iscsi",
    r"        State: ready",
    r"    I_T nexus information:",
    r"        I_T nexus: \d+",
    r"            Initiator: %(ini)s alias: none",
    r"            Connection: \d+",
    r"                IP Address: 127\.0\.0\.1",
    r"    LUN information:",
    r"        LUN: 0",
    r"            Type: controller",
    r"            SCSI ID: .+",
    r"            SCSI SN: .+",
    r"            Size: 0 MB, Block size: 1",
    r"            Online: Yes",
    r"            Removable media: No",
    r"            Prevent removal: No",
    r"            Readonly: No",
    r"            SWP: No",
    r"            Thin-provisioning: No",
    r"            Backing store type: null",
    r"            Backing store path: None",
    r"            Backing store flags: ",
    r"        LUN: 1",
    r"            Type: disk",
    r"            SCSI ID: .+",
    r"            SCSI SN: .+",
    r"            Size: 67 MB, Block size: 512",
    r"            Online: Yes",
    r"            Removable media: No",
    r"            Prevent removal: No",
    r"            Readonly: No",
    r"            SWP: No",
    r"            Thin-provisioning: No",
    r"            Backing store type: file",
    r"            Backing store path: %(path)s",
    r"            Backing store flags: direct",
    "HOLDFAST",
    r"    Account information:",
    r"    ACL information:",
    r"        ALL",
    r"        10\.0\.0\.0/8",
    r"        iqn\.1994-05\.com\.example:host",
]


def test_show_text_shaped_like_tgtd(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "64M"}])
    d.require_holdfast("holdfast's own show lines")
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-I",
           "10.0.0.0/8")
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-Q",
           "iqn.1994-05.com.example:host")
    with IscsiSession(d.portal, d.iqn, 1):
        cp = tgtadm(d, "--op", "show", "--mode", "target")
    assert cp.stdout.endswith("\n"), repr(cp.stdout[-20:])
    lines = cp.stdout.splitlines()
    vals = {"iqn": re.escape(d.iqn), "ini": re.escape(INITIATOR_IQN),
            "path": re.escape(str(d.path("disk1.img")))}
    i = 0
    for pat in TGTD_SHAPE:
        if pat == "HOLDFAST":
            # holdfast's lines: indented under the LUN, up to the account
            # section
            extra = []
            while i < len(lines) and lines[i].startswith(" " * 12):
                extra.append(lines[i].strip())
                i += 1
            assert any(x.startswith("Hang policy: rerror=report, "
                                    "werror=report") for x in extra), extra
            assert any(x.startswith("Hang state: ok") for x in extra), extra
            assert any(x.startswith("Backend: ") for x in extra), extra
            continue
        assert i < len(lines), "show ended before %r:\n%s" % (pat, cp.stdout)
        assert re.fullmatch(pat % vals, lines[i]), \
            "line %d: %r does not match %r\n%s" % (i, lines[i], pat % vals,
                                                   cp.stdout)
        i += 1
    assert i == len(lines), "extra lines:\n%s" % "\n".join(lines[i:])

    # --tid N prints the target's parameters, like tgtd
    out = tgtadm(d, "--op", "show", "--mode", "target", "--tid", 1).stdout
    assert out.splitlines()[:2] == ["nop_interval=0", "nop_count=0"], out
    fails_with(tgtadm(d, "--op", "show", "--mode", "target", "--tid", 9,
                      check=False), "can't find the target")


def test_show_empty_and_system(holdfast):
    d = holdfast(targets=[])
    assert show(d) == ""
    out = tgtadm(d, "--op", "show", "--mode", "portal").stdout
    assert out == "Portal: 127.0.0.1:%d,1\n" % d.port, out
    out = tgtadm(d, "--op", "show", "--mode", "system").stdout
    assert "debug: off" in out
    tgtadm(d, "--op", "update", "--mode", "system", "--name", "debug",
           "--value", "on")
    assert "debug: on" in tgtadm(d, "--op", "show", "--mode",
                                 "system").stdout
    tgtadm(d, "--op", "update", "--mode", "system", "--name", "debug",
           "--value", "off")
    fails_with(tgtadm(d, "--op", "update", "--mode", "system", "--name",
                      "debug", "--value", "loud", check=False),
               "invalid request")


# --------------------------------------------------------------------------
# delete

def test_delete_target_and_lun(holdfast):
    d = holdfast()
    with IscsiSession(d.portal, d.iqn, 1) as s:
        fails_with(tgtadm(d, "--op", "delete", "--mode", "target", "--tid",
                          1, check=False), "this target is still active")
        assert s.test_unit_ready().ok
    # the session went away with its logout: a plain delete now works
    # once the iSCSI layer has counted it out
    assert wait_for(lambda: tgtadm(d, "--op", "delete", "--mode",
                                   "logicalunit", "--tid", 1, "--lun", 2,
                                   check=False).returncode == 0,
                    5 * tscale())
    assert "LUN: 2" not in show(d)
    fails_with(tgtadm(d, "--op", "delete", "--mode", "logicalunit", "--tid",
                      1, "--lun", 2, check=False),
               "can't find the logical unit")
    assert wait_for(lambda: tgtadm(d, "--op", "delete", "--mode", "target",
                                   "--tid", 1, check=False).returncode == 0,
                    5 * tscale())
    assert show(d) == ""
    fails_with(tgtadm(d, "--op", "delete", "--mode", "target", "--tid", 1,
                      check=False), "can't find the target")


def test_force_delete_drops_sessions(holdfast):
    d = holdfast()
    s = IscsiSession(d.portal, d.iqn, 1)
    try:
        tgtadm(d, "--op", "delete", "--mode", "target", "--tid", 1,
               "--force")
        assert show(d) == ""
        # the session is gone: the next command fails instead of hanging
        r = s.test_unit_ready()
        assert not r.ok
    finally:
        s.close(logout=False)


def test_system_delete_exits(holdfast):
    d = holdfast()
    fails_with(tgtadm(d, "--op", "delete", "--mode", "system",
                      check=False), "invalid request")
    assert d.alive()
    tgtadm(d, "--op", "delete", "--mode", "target", "--tid", 1)
    tgtadm(d, "--op", "delete", "--mode", "system")
    assert d.wait(15) == 0


# --------------------------------------------------------------------------
# ACLs

def can_login(d, initiator=INITIATOR_IQN):
    try:
        IscsiSession(d.portal, d.iqn, 1, initiator=initiator,
                     timeout=10).close()
        return True
    except AssertionError:
        return False


def test_bind_unbind(holdfast):
    # no initiators setting at all: nobody may log in
    d = holdfast(targets=[{"name": IQN2, "luns": [
        {"lun": 1, "backend": "null", "size": "16M"}]}])
    d.require_holdfast("tgtd mis-parses -I and -Q in one request")
    assert not can_login(d), "no ACL must mean nobody"
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-I",
           "127.0.0.1")
    assert can_login(d)
    fails_with(tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1,
                      "-I", "127.0.0.1", check=False),
               "this access control rule already exists")
    tgtadm(d, "--op", "unbind", "--mode", "target", "--tid", 1, "-I",
           "127.0.0.1")
    assert not can_login(d)
    fails_with(tgtadm(d, "--op", "unbind", "--mode", "target", "--tid", 1,
                      "-I", "127.0.0.1", check=False),
               "this access control rule does not exist")

    # CIDR
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-I",
           "127.0.0.0/8")
    assert can_login(d)
    tgtadm(d, "--op", "unbind", "--mode", "target", "--tid", 1, "-I",
           "127.0.0.0/8")
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-I",
           "10.0.0.0/8")
    assert not can_login(d)

    # by initiator name; -I and -Q in one request are two rules
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-I",
           "192.0.2.1", "-Q", "iqn.2026-11.org.example:friend")
    acl = show(d).split("ACL information:\n")[1].splitlines()
    assert acl == ["        10.0.0.0/8", "        192.0.2.1",
                   "        iqn.2026-11.org.example:friend"], acl
    assert can_login(d, "iqn.2026-11.org.example:friend")
    assert not can_login(d, "iqn.2026-11.org.example:stranger")
    tgtadm(d, "--op", "unbind", "--mode", "target", "--tid", 1, "-I",
           "192.0.2.1", "-Q", "iqn.2026-11.org.example:friend")
    assert not can_login(d, "iqn.2026-11.org.example:friend")

    # bad rules are refused, ALL admits everyone
    fails_with(tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1,
                      "-I", "10.0.0.300", check=False), "invalid request")
    fails_with(tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 9,
                      "-I", "ALL", check=False), "can't find the target")
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-I", "ALL")
    assert can_login(d, "iqn.2026-11.org.example:stranger")


# --------------------------------------------------------------------------
# logicalunit update: all or nothing

def lun_update(d, params, check=True):
    return tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid", 1,
                  "--lun", 1, "--params", params, check=check)


def test_update_params_all_or_nothing(holdfast):
    d = holdfast()
    d.require_holdfast("holdfast's --params keys")
    before = show(d)
    for bad in ("vendor_id=NEWVEND,block_size=4096",   # fixed at creation
                "vendor_id=NEWVEND,colour=red",         # unknown key
                "vendor_id=NEWVEND,rerror=sometimes",   # bad value
                "vendor_id=NEWVEND,retry_errors=EIO:EROFS",
                "vendor_id=WAYTOOLONGVENDOR",
                "vendor_id=NEWVEND,hang=sideways",
                "fault=bogus,vendor_id=NEWVEND",
                "product_id=X,retry_interval=0"):
        fails_with(lun_update(d, bad, check=False), "invalid request")
        assert show(d) == before, "refused update %r changed:\n%s" % (
            bad, show(d))

    lun_update(d, "vendor_id=ACME,product_id=ROADRUNNER,thin_provisioning=1,"
               "rerror=retry,werror=retry,retry_interval=250,"
               "retry_timeout=4000,retry_errors=EIO:ENOSPC")
    lun = lun_block(show(d), 1)
    assert "Vendor: ACME, Product: ROADRUNNER" in lun, lun
    assert "Thin-provisioning: Yes" in lun, lun
    assert ("Hang policy: rerror=retry, werror=retry, retry_interval=250 ms, "
            "retry_timeout=4000 ms") in lun, lun
    assert "Retry errors: EIO ENOSPC\n" in lun, lun
    # INQUIRY shows the new vendor to initiators
    cp = run(["iscsi-inq", "iscsi://%s/%s/1" % (d.portal, d.iqn)])
    assert "ACME" in cp.stdout, cp.stdout

    # fault= takes the fault layer's own comma-separated spec, and a LUN
    # key after it ends the spec
    lun_update(d, "fault=eio,ops=w,lba=0-7,product_rev=0002")
    lun = lun_block(show(d), 1)
    assert "Revision: 0002" in lun, lun
    assert re.search(r"Backend: fault=errno=EIO", lun), lun
    lun_update(d, "fault=off")

    # the hang verbs reach the hang engine
    lun_update(d, "hang=pause")
    lun_update(d, "hang=resume")

    # LUN 2 is a null LUN: retry needs no O_DIRECT there, and a missing
    # LUN or target is reported as such
    fails_with(tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid",
                      1, "--lun", 9, "--params", "vendor_id=X", check=False),
               "can't find the logical unit")
    fails_with(tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid",
                      5, "--lun", 1, "--params", "vendor_id=X", check=False),
               "can't find the target")


def test_retry_refused_on_buffered_lun(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "16M", "direct": False}])
    d.require_holdfast("hang-on-error safety rule")
    before = show(d)
    fails_with(lun_update(d, "werror=retry", check=False), "invalid request")
    assert show(d) == before
    assert "needs" in d.log_text() and "direct" in d.log_text()


# --------------------------------------------------------------------------
# the socket itself

def test_socket_mode_lock_and_limits(holdfast, tmp_path):
    d = holdfast()
    d.require_holdfast("holdfastd's socket")
    sock = "%s.%d" % (d.sock_base, d.ctl_port)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

    # SO_PEERCRED: a client whose gid differs is closed without a reply
    # (root passes the 0600 mode, so only the credential check stops it)
    if os.geteuid() == 0:
        cp = run(["setpriv", "--regid=65534", "--clear-groups", TGTADM,
                  "-C", str(d.ctl_port), "--op", "show", "--mode",
                  "target"], env=d.env, check=False)
        assert cp.returncode != 0 and cp.stdout == "", cp
        assert "refused a peer with another uid/gid" in d.log_text()

    # a second daemon on the same control port fails with a clear message
    cfg = tmp_path / "second.conf"
    cfg.write_text('portals = [ "127.0.0.1:%d" ];\n' % free_tcp_port())
    cp = run([str(build_dir() / "holdfastd"), "-f", "-c", str(cfg), "-C",
              str(d.ctl_port)], env=d.env, check=False, timeout=20)
    assert cp.returncode != 0
    assert "control port %d is in use" % d.ctl_port in cp.stderr + cp.stdout
    assert d.alive()
    assert show(d).startswith("Target 1: ")

    # raw protocol: a show reply is "err, len" and a NUL-terminated body
    # that len counts; an oversized request is closed without a reply
    def request(mode, op, payload=b"", **kw):
        return raw_request(sock, mode, op, payload, **kw)

    rsp = request(1, 2)
    err, length = struct.unpack("<II", rsp[:8])
    assert err == 0 and length == len(rsp) and rsp.endswith(b"\0"), rsp[:40]
    assert rsp[8:].startswith(b"Target 1: ")
    assert request(1, 2, b"x" * 9000) == b""
    assert request(1, 2, length=8193) == b""
    # unknown mode (8 and 9 are bitmap and job now): 22 "operation unsupported"; unknown driver: 3; no
    # --lld at all means iscsi
    assert request(99, 2) == struct.pack("<II", 22, 8)
    assert request(1, 2, lld=b"iser") == struct.pack("<II", 3, 8)
    assert request(1, 2, lld=b"")[:4] == b"\0\0\0\0"
    assert d.alive()


def test_stale_socket_is_replaced(tmp_path):
    if USE_TGTD:
        pytest.skip("holdfastd's socket")
    # a socket file left by a crashed daemon must not stop a new one: the
    # lock file, not the socket, says whether the port is taken
    base = str(tmp_path / "sock")
    env = dict(os.environ, TGT_IPC_SOCKET=base)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(base + ".4242")
    stale.close()
    cfg = tmp_path / "stale.conf"
    cfg.write_text('portals = [ "127.0.0.1:%d" ];\n' % free_tcp_port())
    p = subprocess.Popen([str(build_dir() / "holdfastd"), "-f", "-c",
                          str(cfg), "-C", "4242"], env=env,
                         stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: run([TGTADM, "-C", "4242", "--op", "show",
                                     "--mode", "system"], env=env,
                                    check=False).returncode == 0,
                        10 * tscale())
    finally:
        p.terminate()
        assert p.wait(15 * tscale()) == 0
    # like tgtd, the socket file stays behind (tgtadm's system delete waits
    # for ECONNREFUSED on it) and nobody answers on it
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        c.connect(base + ".4242")
    c.close()


# --------------------------------------------------------------------------
# a bad configuration is refused as a whole

def test_bad_config_refused(tmp_path):
    if USE_TGTD:
        pytest.skip("holdfast's configuration file")
    cfg = tmp_path / "bad.conf"
    cfg.write_text(
        'portals = [ "127.0.0.1:%d" ];\n'
        'targets = (\n'
        '  { name = "iqn.2026-11.org.example:bad";\n'
        '    initiators = [ "ALL" ];\n'
        '    luns = ( { lun = 1; backend = "null";\n'
        '               block_size = 1000; } ); }\n'
        ');\n' % free_tcp_port())
    env = dict(os.environ, TGT_IPC_SOCKET=str(tmp_path / "sock"))
    cp = run([str(build_dir() / "holdfastd"), "-f", "-c", str(cfg), "-C",
              "4243"], env=env, check=False, timeout=20)
    assert cp.returncode != 0
    assert ("%s:6: block_size: must be a power of two from 512 to 65536"
            % cfg) in cp.stderr, cp.stderr
    # nothing was served: the management socket never appeared
    assert not os.path.exists(str(tmp_path / "sock") + ".4243")

    cfg.write_text('targets = ( { name = "iqn.2026-11.org.example:x";\n'
                   '  colour = "red"; } );\n')
    cp = run([str(build_dir() / "holdfastd"), "-f", "-c", str(cfg), "-C",
              "4243"], env=env, check=False, timeout=20)
    assert cp.returncode != 0
    assert "%s:2: colour: unknown key" % cfg in cp.stderr, cp.stderr


# --------------------------------------------------------------------------
# target update

def test_target_update(holdfast):
    d = holdfast()
    d.require_holdfast("holdfast checks the iSCSI key values")

    def tupdate(name, value, check=True):
        return tgtadm(d, "--op", "update", "--mode", "target", "--tid", 1,
                      "--name", name, "--value", value, check=check)

    tupdate("MaxRecvDataSegmentLength", 65536)
    tupdate("nop_interval", 5)
    tupdate("nop_count", 3)
    out = tgtadm(d, "--op", "show", "--mode", "target", "--tid", 1).stdout
    assert out.splitlines() == ["nop_interval=5", "nop_count=3",
                                "MaxRecvDataSegmentLength=65536"], out
    for name, value in (("MaxRecvDataSegmentLength", 12),
                        ("ImmediateData", "maybe"), ("Colour", "red"),
                        ("state", "asleep"), ("nop_interval", "x")):
        fails_with(tupdate(name, value, check=False), "invalid request")
    fails_with(tgtadm(d, "--op", "update", "--mode", "target", "--tid", 4,
                      "--name", "nop_count", "--value", 1, check=False),
               "can't find the target")

    # an offline target refuses new logins and says so in show
    tupdate("state", "offline")
    assert "State: offline" in show(d)
    assert not can_login(d)
    tupdate("state", "ready")
    assert can_login(d)


# --------------------------------------------------------------------------
# CHAP accounts

def inq(d, user=None, password=None, iqn=None):
    cred = "%s%%%s@" % (user, password) if user else ""
    return run(["iscsi-inq", "iscsi://%s%s/%s/1" % (cred, d.portal,
                                                     iqn or d.iqn)],
               check=False, timeout=30)


def test_accounts_through_tgtadm(holdfast):
    d = holdfast()

    def acct(*args, check=True):
        return tgtadm(d, "--mode", "account", *args, check=check)

    acct("--op", "new", "--user", "alice", "--password", "alice-secret-1")
    acct("--op", "new", "--user", "bob", "--password", "bob-secret-123")
    fails_with(acct("--op", "new", "--user", "alice", "--password", "x",
                    check=False), "this account already exists")
    out = acct("--op", "show").stdout
    assert out.splitlines()[0] == "Account list:", out
    assert sorted(out.splitlines()[1:]) == ["    alice", "    bob"], out

    assert inq(d).returncode == 0, "no account bound: no CHAP"
    acct("--op", "bind", "--tid", 1, "--user", "alice")
    acct("--op", "bind", "--tid", 1, "--user", "bob", "--outgoing")
    fails_with(acct("--op", "bind", "--tid", 1, "--user", "alice",
                    check=False), "this account already exists")
    fails_with(acct("--op", "bind", "--tid", 1, "--user", "alice",
                    "--outgoing", check=False),
               "this target already has an outgoing account")
    fails_with(acct("--op", "bind", "--tid", 1, "--user", "nobody",
                    check=False), "can't find the account")
    fails_with(acct("--op", "bind", "--tid", 7, "--user", "alice",
                    check=False), "can't find the target")
    info = show(d).split("    Account information:\n")[1].split(
        "    ACL information:")[0]
    assert sorted(info.splitlines()) == ["        alice",
                                         "        bob (outgoing)"], info

    # CHAP is now required for this target
    assert inq(d).returncode != 0
    assert inq(d, "alice", "wrong-secret").returncode != 0
    cp = inq(d, "alice", "alice-secret-1")
    assert cp.returncode == 0 and "DIRECT_ACCESS" in cp.stdout, cp

    acct("--op", "unbind", "--tid", 1, "--user", "bob", "--outgoing")
    fails_with(acct("--op", "unbind", "--tid", 1, "--user", "bob",
                    "--outgoing", check=False), "can't find the account")
    acct("--op", "delete", "--user", "alice")
    fails_with(acct("--op", "delete", "--user", "alice", check=False),
               "can't find the account")
    assert inq(d).returncode == 0, "deleting the account drops its binding"


def test_accounts_in_config(holdfast):
    d = holdfast(targets=[{
        "name": IQN2, "initiators": ["ALL"],
        "incoming_users": ["alice"],
        "luns": [{"lun": 1, "backend": "null", "size": "16M"}]}],
        accounts=[{"user": "alice", "password": "alice-secret-1"},
                  {"user": "bob", "password": "bob-secret-123"}])
    d.require_holdfast("holdfast's targets.conf")
    assert inq(d).returncode != 0
    assert inq(d, "alice", "alice-secret-1").returncode == 0
    assert "        alice" in show(d).split("Account information:")[1]
    # the secret never reaches the log
    assert "alice-secret-1" not in d.log_text()


# --------------------------------------------------------------------------
# dump the running configuration

def dump(d):
    return tgtadm(d, "--op", "show", "--mode", "system", "--name", "dump",
                  "--value", "config").stdout


def test_dump_round_trip(holdfast):
    d = holdfast()
    d.require_holdfast("holdfast's configuration dump")
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-I",
           "10.0.0.0/8")
    tgtadm(d, "--op", "update", "--mode", "target", "--tid", 1, "--name",
           "MaxBurstLength", "--value", 524288)
    tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid", 1, "--lun",
           1, "--params", "vendor_id=ACME,rerror=retry,retry_interval=250,"
           "retry_errors=EIO:ETIMEDOUT,fault=eio:ops=w:lba=100-200")
    tgtadm(d, "--op", "new", "--mode", "target", "--tid", 4, "-T", IQN2)
    tgtadm(d, "--mode", "account", "--op", "new", "--user", "alice",
           "--password", "alice-secret-1")
    tgtadm(d, "--mode", "account", "--op", "bind", "--tid", 4, "--user",
           "alice")
    text = dump(d)
    assert "alice-secret-1" not in text, "a CHAP secret was dumped"
    assert 'password = ""' in text

    # an empty password is refused with a hint; filled in, the dump
    # starts a daemon whose own dump is the same
    text2 = re.sub(r'portals = \[.*\];', 'portals = [ "127.0.0.1:@PORT@" ];',
                   text).replace('password = ""', 'password = "s3cret-123"')
    d2 = holdfast(conf_text=text2)
    strip = lambda t: [x for x in t.splitlines()
                       if not x.startswith(("#", "portals"))]
    assert strip(dump(d2)) == strip(text)
    lun = lun_block(show(d2), 1)
    assert "Vendor: ACME" in lun and "retry_interval=250 ms" in lun, lun
    assert "Retry errors: EIO ETIMEDOUT\n" in lun, lun

    bad = d.path("empty-password.conf")
    bad.write_text(text.replace("127.0.0.1:%d" % d.port,
                                     "127.0.0.1:%d" % free_tcp_port()))
    cp = run([str(build_dir() / "holdfastd"), "-f", "-c", str(bad), "-C",
              "4244"], env=d.env, check=False, timeout=20)
    assert cp.returncode != 0
    assert re.search(r"empty-password\.conf:\d+: password: empty: set the "
                     r"CHAP secret", cp.stderr), cp.stderr


def test_delete_of_hung_lun(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "16M", "rerror": "retry", "werror": "retry",
                        "retry_interval": 100},
                       {"lun": 2, "backend": "file", "path": "disk2.img",
                        "size": "16M", "rerror": "retry", "werror": "retry",
                        "retry_interval": 100}])
    d.require_holdfast("hang-on-error")
    sock = "%s.%d" % (d.sock_base, d.ctl_port)

    def held_writer(lun):
        tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid", 1,
               "--lun", lun, "--params", "fault=eio:ops=w")
        w = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "write 0 4k",
                              d.url(lun)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        assert wait_for(lambda: "Hang state: hung" in lun_block(show(d), lun),
                        15 * tscale())
        assert w.poll() is None, "the write was not held"
        return w

    writers = []
    try:
        # tgtadm has no --force for LUNs: a LUN holding commands is "still
        # active"; hang=fail reports them, then it can go
        w = held_writer(1)
        writers.append(w)
        fails_with(tgtadm(d, "--op", "delete", "--mode", "logicalunit",
                          "--tid", 1, "--lun", 1, check=False),
                   "this logical unit is still active")
        tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid", 1,
               "--lun", 1, "--params", "hang=fail")
        out, _ = w.communicate(timeout=30 * tscale())
        assert "wrote" not in out, out
        assert wait_for(lambda: tgtadm(d, "--op", "delete", "--mode",
                                       "logicalunit", "--tid", 1, "--lun", 1,
                                       check=False).returncode == 0,
                        10 * tscale())

        # a forced delete (force flag in the request header, as a
        # management client other than tgtadm may send it) fails the held
        # commands itself
        w = held_writer(2)
        writers.append(w)
        assert raw_request(sock, 2, 1, tid=1, lun=2, force=1) == \
            struct.pack("<II", 0, 8)
        assert "LUN: 2" not in show(d)
        out, _ = w.communicate(timeout=30 * tscale())
        assert "wrote" not in out, out
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()


# --------------------------------------------------------------------------
# the stock tgt-admin drives holdfastd through the same protocol

def test_tgt_admin(holdfast, tmp_path):
    d = holdfast(targets=[])
    img = tmp_path / "tgtstyle.img"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    conf = tmp_path / "tgt-style.conf"
    conf.write_text(
        "<target %s>\n"
        "    backing-store %s\n"
        "    initiator-address 127.0.0.1\n"
        "    incominguser alice alice-secret-1\n"
        "    vendor_id ACME\n"
        "    MaxRecvDataSegmentLength 65536\n"
        "</target>\n" % (IQN2, img))
    admin = ["/usr/sbin/tgt-admin", "-C", str(d.ctl_port)]
    run(admin + ["-c", str(conf), "-e"], env=d.env)
    text = show(d)
    assert "Target 1: %s" % IQN2 in text, text
    assert "Backing store path: %s" % img in lun_block(text, 1)
    assert "Vendor: ACME" in lun_block(text, 1) or d.is_tgtd
    assert "        alice\n" in text.split("Account information:")[1]
    assert inq(d, iqn=IQN2).returncode != 0, "CHAP not required"
    cp = inq(d, "alice", "alice-secret-1", iqn=IQN2)
    assert cp.returncode == 0, cp

    dumped = run(admin + ["--dump"], env=d.env).stdout
    assert "<target %s>" % IQN2 in dumped, dumped
    assert "backing-store %s" % img in dumped, dumped
    assert "initiator-address 127.0.0.1" in dumped, dumped

    run(admin + ["--delete", "ALL"], env=d.env)
    assert show(d) == ""
