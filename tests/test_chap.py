"""CHAP and ACLs end to end (RFC 7143 12.1.3, RFC 1994).

One-way and mutual CHAP through libiscsi (iscsi-inq, iscsi-ls with
`iscsi://user%secret@...?target_user=...&target_password=...`) and QEMU
(`--image-opts ...,user=...,password-secret=...`), wrong secrets refused,
a reflected challenge refused (through a raw initiator that can send one),
discovery CHAP, and ACLs by initiator address and name.
"""

import hashlib
import os
import re
import struct

import pytest

import rawiscsi as r
from helpers import IQN, build_dir, qemu_io, run

IQN2 = "iqn.2026-11.org.example:chap2"
IN_USER, IN_SECRET = "alice", "alice-secret-1"
OUT_USER, OUT_SECRET = "target-out", "target-secret-9"

# Login status (RFC 7143 11.13.5): class 2 initiator error, detail 1
# authentication failure, 2 authorization failure.
STATUS_AUTH_FAILURE = 0x0201
STATUS_AUTHZ_FAILURE = 0x0202

# CHAP_A values (RFC 7143 12.1.3; RFC 1994 and the IANA PPP registry)
CHAP_MD5, CHAP_SHA1, CHAP_SHA256, CHAP_SHA3_256 = 5, 6, 7, 8
CHAP_HASH = {CHAP_MD5: hashlib.md5, CHAP_SHA1: hashlib.sha1,
             CHAP_SHA256: hashlib.sha256, CHAP_SHA3_256: hashlib.sha3_256}


def chap_conf(mutual=False, discovery=False):
    accounts = [{"user": IN_USER, "password": IN_SECRET}]
    t = {"name": IQN, "initiators": ["ALL"], "incoming_users": [IN_USER],
         "luns": [{"lun": 1, "backend": "file", "path": "disk1.img",
                   "size": "16M"}]}
    if mutual:
        accounts.append({"user": OUT_USER, "password": OUT_SECRET})
        t["outgoing_user"] = OUT_USER
    top = {"targets": [t], "accounts": accounts}
    if discovery:
        top["discovery"] = {"incoming_users": [IN_USER]}
    return top


def url(d, user=None, secret=None, lun=1, iqn=IQN, args=""):
    cred = "%s%%%s@" % (user, secret) if user else ""
    return "iscsi://%s%s/%s/%d%s" % (cred, d.portal, iqn, lun, args)


def inq(u, initiator=None):
    argv = ["iscsi-inq"] + (["-i", initiator] if initiator else []) + [u]
    return run(argv, check=False, timeout=30)


# --------------------------------------------------------------------------
# libiscsi

def test_one_way_chap_libiscsi(holdfast):
    d = holdfast(**chap_conf())
    d.require_holdfast("holdfast's targets.conf accounts")
    assert inq(url(d)).returncode != 0, "no CHAP: refused"
    assert inq(url(d, IN_USER, "wrong-secret-1")).returncode != 0
    assert inq(url(d, "mallory", IN_SECRET)).returncode != 0
    cp = inq(url(d, IN_USER, IN_SECRET))
    assert cp.returncode == 0 and "DIRECT_ACCESS" in cp.stdout, cp
    log = d.log_text()
    assert "CHAP user alice authenticated" in log
    assert IN_SECRET not in log and "wrong-secret-1" not in log
    assert IN_SECRET not in d.tgtadm("--lld", "iscsi", "--op", "show",
                                     "--mode", "target").stdout


def test_mutual_chap_libiscsi(holdfast):
    d = holdfast(**chap_conf(mutual=True))
    d.require_holdfast("holdfast's targets.conf accounts")
    good = "?target_user=%s&target_password=%s" % (OUT_USER, OUT_SECRET)
    cp = inq(url(d, IN_USER, IN_SECRET, args=good))
    assert cp.returncode == 0 and "DIRECT_ACCESS" in cp.stdout, cp
    # the target proves itself with its own secret: a wrong expectation
    # on the initiator side fails the login
    bad = "?target_user=%s&target_password=%s" % (OUT_USER, "not-the-one")
    assert inq(url(d, IN_USER, IN_SECRET, args=bad)).returncode != 0
    assert inq(url(d, IN_USER, "wrong-secret-1", args=good)).returncode != 0
    assert OUT_SECRET not in d.log_text()


def test_discovery_chap(holdfast):
    d = holdfast(**chap_conf(discovery=True))
    d.require_holdfast("holdfast's targets.conf accounts")
    cp = run(["iscsi-ls", "iscsi://%s" % d.portal], check=False)
    assert cp.returncode != 0, cp
    cp = run(["iscsi-ls", "iscsi://%s%%%s@%s" % (IN_USER, "nope-secret",
                                                 d.portal)], check=False)
    assert cp.returncode != 0, cp
    cp = run(["iscsi-ls", "iscsi://%s%%%s@%s" % (IN_USER, IN_SECRET,
                                                 d.portal)], check=False)
    assert cp.returncode == 0 and IQN in cp.stdout, cp

    # discovery accounts through tgtadm (tid -1): unbinding opens it
    d.tgtadm("--lld", "iscsi", "--mode", "account", "--op", "unbind",
             "--user", IN_USER)
    cp = run(["iscsi-ls", "iscsi://%s" % d.portal], check=False)
    assert cp.returncode == 0 and IQN in cp.stdout, cp


# --------------------------------------------------------------------------
# QEMU

def qemu_opts(d, user, secret):
    return ["--object", "secret,id=chapsec,data=%s" % secret,
            "--image-opts",
            "driver=iscsi,transport=tcp,portal=%s,target=%s,lun=1,"
            "user=%s,password-secret=chapsec" % (d.portal, IQN, user)]


def qemu_io_opts(d, user, secret, *cmds):
    argv = ["qemu-io"] + qemu_opts(d, user, secret)
    for c in cmds:
        argv += ["-c", c]
    return run(argv, check=False, timeout=60)


def test_chap_qemu(holdfast):
    d = holdfast(**chap_conf())
    d.require_holdfast("holdfast's targets.conf accounts")
    cp = qemu_io_opts(d, IN_USER, IN_SECRET, "write -P 0x6d 0 64k",
                      "read -P 0x6d 0 64k")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0 and "failed" not in out.lower(), cp
    assert "read 65536/65536 bytes" in out, out
    cp = qemu_io_opts(d, IN_USER, "wrong-secret-1", "read 0 4k")
    assert cp.returncode != 0, cp
    assert "read 4096/4096" not in cp.stdout
    # and through the URL form qemu also takes
    qemu_io("iscsi://%s%%%s@%s/%s/1" % (IN_USER, IN_SECRET, d.portal, IQN),
            "read -P 0x6d 0 64k")


# --------------------------------------------------------------------------
# raw CHAP: the reflection attack and the algorithms

class ChapSession(r.RawSession):
    """RawSession with a multi-step security stage (RFC 7143 6.3)."""

    def login_pdu(self, keys, csg, nsg, transit):
        data = b"".join(("%s=%s" % kv).encode() + b"\0"
                        for kv in keys.items())
        bhs = bytearray(48)
        bhs[0] = 0x40 | r.OP_LOGIN
        bhs[1] = (0x80 if transit else 0) | (csg << 2) | nsg
        bhs[8:14] = self.isid
        bhs[14:16] = struct.pack(">H", self.tsih)
        bhs[16:20] = struct.pack(">I", self.itt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs, data, hd=False, dd=False)
        rsp = self.recv()
        assert rsp.opcode == r.OP_LOGIN_RSP, rsp.opcode
        self.tsih = rsp.u16(14)
        return rsp.u16(36), rsp.text(), rsp

    def chap_start(self, target, algorithms):
        """Security stage up to the target's challenge: (id, challenge,
        algorithm)."""
        st, t, _ = self.login_pdu({"InitiatorName": self.initiator,
                                   "SessionType": "Normal",
                                   "TargetName": target,
                                   "AuthMethod": "CHAP,None"}, 0, 1, True)
        assert st == 0 and t.get("AuthMethod") == "CHAP", (st, t)
        st, t, _ = self.login_pdu(
            {"CHAP_A": ",".join(str(a) for a in algorithms)}, 0, 1, False)
        assert st == 0, st
        return int(t["CHAP_I"]), bytes.fromhex(t["CHAP_C"][2:]), \
            int(t["CHAP_A"])


def chap_response(alg, ident, secret, challenge):
    h = CHAP_HASH[alg]()
    h.update(bytes([ident]) + secret.encode() + challenge)
    return "0x" + h.hexdigest()


@pytest.mark.parametrize("alg", [CHAP_MD5, CHAP_SHA1, CHAP_SHA256,
                                 CHAP_SHA3_256])
def test_raw_chap_algorithms(holdfast, alg):
    d = holdfast(**chap_conf(mutual=True))
    d.require_holdfast("holdfast's CHAP algorithms")
    s = ChapSession("127.0.0.1", d.port)
    try:
        ident, chal, got = s.chap_start(IQN, [alg])
        assert got == alg
        my_id, my_chal = 77, os.urandom(len(chal))
        st, t, _ = s.login_pdu({
            "CHAP_N": IN_USER,
            "CHAP_R": chap_response(alg, ident, IN_SECRET, chal),
            "CHAP_I": str(my_id), "CHAP_C": "0x" + my_chal.hex()}, 0, 1,
            True)
        assert st == 0, hex(st)
        # mutual: the target answered our challenge with its secret
        assert t["CHAP_N"] == OUT_USER
        assert t["CHAP_R"].lower() == chap_response(alg, my_id, OUT_SECRET,
                                                    my_chal)
    finally:
        s.close()


def test_strongest_algorithm_first(holdfast):
    d = holdfast(**chap_conf())
    d.require_holdfast()
    s = ChapSession("127.0.0.1", d.port)
    try:
        _, _, got = s.chap_start(IQN, [CHAP_MD5, CHAP_SHA256, CHAP_SHA1])
        assert got == CHAP_SHA256
    finally:
        s.close()


def test_reflected_challenge_refused(holdfast):
    d = holdfast(**chap_conf(mutual=True))
    d.require_holdfast("holdfast's CHAP")
    s = ChapSession("127.0.0.1", d.port)
    try:
        ident, chal, alg = s.chap_start(IQN, [CHAP_MD5])
        # send the target's own challenge back: if it answered, an
        # attacker could replay that answer on another connection
        st, t, _ = s.login_pdu({
            "CHAP_N": IN_USER,
            "CHAP_R": chap_response(alg, ident, IN_SECRET, chal),
            "CHAP_I": str(ident), "CHAP_C": "0x" + chal.hex()}, 0, 1, True)
        assert st == STATUS_AUTH_FAILURE, hex(st)
        assert "CHAP_R" not in t
    finally:
        s.close()


def test_wrong_response_refused_raw(holdfast):
    d = holdfast(**chap_conf())
    d.require_holdfast("holdfast's CHAP")
    s = ChapSession("127.0.0.1", d.port)
    try:
        ident, chal, alg = s.chap_start(IQN, [CHAP_MD5])
        st, _, _ = s.login_pdu({
            "CHAP_N": IN_USER,
            "CHAP_R": chap_response(alg, ident, "guess-secret", chal)},
            0, 1, True)
        assert st == STATUS_AUTH_FAILURE, hex(st)
    finally:
        s.close()


def test_same_secret_both_directions_refused(holdfast, tmp_path):
    conf = chap_conf(mutual=True)
    conf["accounts"][1]["password"] = IN_SECRET
    d = holdfast(**chap_conf())
    d.require_holdfast()
    from helpers import cfg_text
    bad = tmp_path / "same.conf"
    conf["portals"] = ["127.0.0.1:1"]
    bad.write_text(cfg_text(conf))
    cp = run([str(build_dir() / "holdfastd"), "-f", "-c", str(bad), "-C",
              "4245"], env=d.env, check=False, timeout=20)
    assert cp.returncode != 0
    assert "both directions" in cp.stderr, cp.stderr


# --------------------------------------------------------------------------
# ACLs

def test_acl_by_address_and_name(holdfast):
    d = holdfast(initiators=["10.9.0.0/16"])
    d.require_holdfast("holdfast's refusal log line")
    u = url(d)
    assert inq(u).returncode != 0, "address not allowed"
    assert re.search(r"\(127\.0\.0\.1, [^)]*\): login refused \(0x0202\): .*ACL",
                     d.log_text()), d.log_text()

    def acl(op, *args):
        d.tgtadm("--lld", "iscsi", "--op", op, "--mode", "target", "--tid",
                 1, *args)

    acl("bind", "-I", "127.0.0.0/8")
    assert inq(u).returncode == 0
    acl("unbind", "-I", "127.0.0.0/8")
    acl("bind", "-I", "127.0.0.1")
    assert inq(u).returncode == 0
    acl("unbind", "-I", "127.0.0.1")
    assert inq(u).returncode != 0

    # by name: only the named initiator gets in (rules OR-ed)
    acl("bind", "-Q", "iqn.2026-11.org.example:allowed")
    assert inq(u, "iqn.2026-11.org.example:allowed").returncode == 0
    assert inq(u, "iqn.2026-11.org.example:other").returncode != 0
    # -I and -Q together in one request, both applied
    acl("bind", "-I", "127.0.0.1", "-Q", "iqn.2026-11.org.example:second")
    assert inq(u, "iqn.2026-11.org.example:other").returncode == 0
    acl("unbind", "-I", "127.0.0.1")
    assert inq(u, "iqn.2026-11.org.example:second").returncode == 0
    assert inq(u, "iqn.2026-11.org.example:other").returncode != 0

    # refused logins answer "authorization failure" (0x0202)
    s = r.RawSession("127.0.0.1", d.port,
                     initiator="iqn.2026-11.org.example:other")
    try:
        with pytest.raises(r.Closed, match="0x0202"):
            s.login(IQN)
    finally:
        s.close()
    assert "iqn.2026-11.org.example:other" in d.log_text()
