"""holdfastadm (target/adm/holdfastadm.c), the JSON shows, the one-LUN
show, save to targets.conf, and session/target deletes that ask the
initiator to log out.

holdfastadm speaks the same protocol as the stock tgtadm: these tests run
the same requests through both and compare what they print, then check
holdfast's additions (--json, --dump, --save, --hang, show logicalunit).
"""

import json
import os
import re
import stat
import subprocess
import threading
import time

import pytest

import rawiscsi as r
from helpers import (INITIATOR_IQN, IscsiSession, build_dir, qemu_io, run,
                     tscale, wait_for)

MiB = 1 << 20
IQN2 = "iqn.2026-11.org.example:adm2"


def adm_path():
    return build_dir() / "holdfastadm"


def adm(d, *args, check=True):
    """Run holdfastadm against d's control port."""
    if not adm_path().exists():
        pytest.fail("%s not built (make build/holdfastadm)" % adm_path())
    # the socket appears just after the portal the fixture waits for
    sock = "%s.%d" % (d.sock_base, d.ctl_port)
    wait_for(lambda: os.path.exists(sock), 5 * tscale())
    argv = [str(adm_path()), "-C", str(d.ctl_port)] + [str(a) for a in args]
    return run(argv, check=check, env=d.env, timeout=30)


def tgtadm(d, *args, check=True):
    return d.tgtadm("--lld", "iscsi", *args, check=check)


def both(d, *args):
    """The same request through tgtadm and holdfastadm: (tgtadm, adm)."""
    return tgtadm(d, *args, check=False), adm(d, "--lld", "iscsi", *args,
                                               check=False)


def same_result(d, *args):
    t, a = both(d, *args)
    assert t.returncode == a.returncode, (t, a)
    assert t.stdout == a.stdout
    assert t.stderr.replace("tgtadm:", "holdfastadm:") == a.stderr, (t, a)
    return a


@pytest.fixture
def d(holdfast):
    d = holdfast()
    d.require_holdfast("holdfastadm talks to holdfastd")
    return d


def test_same_output_and_errors_as_tgtadm(d, tmp_path):
    img = tmp_path / "adm.img"
    with open(img, "wb") as f:
        f.truncate(32 * MiB)
    # build with holdfastadm's short flags, as one would with tgtadm
    adm(d, "-o", "new", "-m", "target", "-t", 2, "-T", IQN2)
    adm(d, "-o", "new", "-m", "logicalunit", "-t", 2, "-l", 1, "-b", img,
        "-f", "direct", "-Y", "disk")
    adm(d, "-o", "bind", "-m", "target", "-t", 2, "-I", "127.0.0.1", "-Q",
        INITIATOR_IQN)
    adm(d, "-o", "update", "-m", "logicalunit", "-t", 2, "-l", 1, "-P",
        "vendor_id=ADMCO,product_id=ADMDISK")
    adm(d, "-o", "update", "-m", "target", "-t", 2, "-n", "MaxBurstLength",
        "-v", 524288)
    adm(d, "-o", "new", "-m", "account", "-u", "carol", "-p",
        "carol-secret-1")
    adm(d, "-o", "bind", "-m", "account", "-t", 2, "-u", "carol")
    qemu_io("iscsi://carol%%carol-secret-1@%s/%s/1" % (d.portal, IQN2),
            "write -P 0x3c 0 1M", "read -P 0x3c 0 1M")

    # every show prints exactly what tgtadm prints
    for args in (("--op", "show", "--mode", "target"),
                 ("--op", "show", "--mode", "target", "--tid", 2),
                 ("--op", "show", "--mode", "system"),
                 ("--op", "show", "--mode", "portal"),
                 ("--op", "show", "--mode", "account"),
                 ("--op", "show", "--mode", "system", "--name", "dump",
                  "--value", "config")):
        t, a = both(d, *args)
        assert t.returncode == a.returncode == 0, (t, a)
        if "dump" in args:      # carries a timestamp
            strip = lambda s: [x for x in s.splitlines()
                               if not x.startswith("#")]
            assert strip(t.stdout) == strip(a.stdout)
        else:
            assert t.stdout == a.stdout, args
    assert "ADMCO" in adm(d, "-o", "show", "-m", "target").stdout
    assert "MaxBurstLength=524288" in adm(d, "-o", "show", "-m", "target",
                                          "-t", 2).stdout

    # error numbers map to tgtadm's texts and exit code
    same_result(d, "--op", "new", "--mode", "target", "--tid", 2, "-T",
                "iqn.2026-11.org.example:x")                   # 9
    same_result(d, "--op", "delete", "--mode", "target", "--tid", 9)  # 4
    same_result(d, "--op", "delete", "--mode", "logicalunit", "--tid", 2,
                "--lun", 7)                                     # 5
    same_result(d, "--op", "new", "--mode", "logicalunit", "--tid", 2,
                "--lun", 1, "-b", img)                          # 10
    same_result(d, "--op", "bind", "--mode", "target", "--tid", 2, "-I",
                "127.0.0.1")                                    # 12
    same_result(d, "--op", "unbind", "--mode", "target", "--tid", 2, "-I",
                "10.9.9.9")                                     # 13
    same_result(d, "--op", "new", "--mode", "account", "--user", "carol",
                "--password", "x")                              # 14
    same_result(d, "--op", "delete", "--mode", "account", "--user", "eve")
    same_result(d, "--op", "update", "--mode", "logicalunit", "--tid", 2,
                "--lun", 1, "--params", "no_such_key=1")        # 17
    cp = adm(d, "--lld", "fcoe", "--op", "show", "--mode", "target",
             check=False)
    assert cp.returncode == 22 and "can't find the driver" in cp.stderr
    cp = adm(d, "--op", "show", check=False)
    assert cp.returncode != 0 and "specify the mode" in cp.stderr

    # no daemon: a clear message, not a hang
    env = dict(d.env, TGT_IPC_SOCKET=str(tmp_path / "nothing"))
    cp = run([str(adm_path()), "-C", "5", "--op", "show", "--mode",
              "target"], env=env, check=False)
    assert cp.returncode != 0 and "cannot connect" in cp.stderr, cp


def test_json_shows(d):
    adm(d, "-o", "bind", "-m", "target", "-t", 1, "-Q", "iqn.2026-11.org.example:json")
    adm(d, "-o", "new", "-m", "account", "-u", "dave", "-p", "dave-secret-1")
    adm(d, "-o", "bind", "-m", "account", "-t", 1, "-u", "dave", "-O")
    with IscsiSession(d.portal, d.iqn, 1) as s:
        s.write10(0, b"\x11" * 4096)
        doc = json.loads(adm(d, "--json", "-o", "show", "-m",
                             "target").stdout)
    t = doc["targets"][0]
    assert t["tid"] == 1 and t["name"] == d.iqn and t["state"] == "ready"
    assert t["sessions"][0]["initiator"] == INITIATOR_IQN
    assert t["sessions"][0]["connections"][0]["address"] == "127.0.0.1"
    assert [x["lun"] for x in t["luns"]] == [0, 1, 2]
    lun1 = t["luns"][1]
    assert lun1["size_bytes"] == 64 * MiB and lun1["block_size"] == 512
    assert lun1["io"]["writes"] >= 1 and lun1["io"]["write_bytes"] >= 4096
    assert lun1["hang"]["state"] == "ok" and lun1["hang"]["held"] == 0
    assert lun1["backing_store_type"] == "file"
    assert t["luns"][2]["backing_store_path"] is None
    assert t["accounts"] == [{"user": "dave", "outgoing": True}]
    assert t["acls"] == ["ALL", "iqn.2026-11.org.example:json"]
    # the text show for the stock tgtadm is unchanged by all this
    assert not tgtadm(d, "--op", "show", "--mode",
                      "target").stdout.startswith("{")

    for args, key in ((("-m", "system"), "llds"), (("-m", "portal"),
                                                    "portals"),
                      (("-m", "account"), "accounts"),
                      (("-m", "target", "-t", 1), "params"),
                      (("-m", "logicalunit", "-t", 1, "-l", 2), "lun"),
                      (("-m", "logicalunit", "-t", 1, "-l", 0), "lun")):
        doc = json.loads(adm(d, "--json", "-o", "show", *args).stdout)
        assert key in doc, (args, doc)
    assert json.loads(adm(d, "--json", "-o", "show", "-m",
                          "portal").stdout)["portals"][0]["port"] == d.port
    doc = json.loads(adm(d, "--json", "--dump").stdout)
    assert "targets = (" in doc["config"]
    assert "dave-secret-1" not in doc["config"]
    cp = adm(d, "--json", "-o", "show", "-m", "logicalunit", "-t", 1, "-l",
             9, check=False)
    assert cp.returncode == 22 and "can't find the logical unit" in cp.stderr


def test_show_lun_and_hang_verbs(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "fault", "path": "f.img",
                        "size": "16M", "werror": "retry",
                        "retry_interval": 200}])
    d.require_holdfast()
    text = adm(d, "-o", "show", "-m", "logicalunit", "-t", 1, "-l",
               1).stdout
    lines = text.splitlines()
    assert lines[0] == "Target 1: %s" % d.iqn
    assert lines[1] == "        LUN: 1"
    # tgtd's standard lines first, then holdfast's
    assert lines.index("            Type: disk") == 2
    assert any(x.startswith("            Backing store flags:")
               for x in lines[:16])
    assert "            Hang state: ok" in lines

    # hold writes: fault on writes, then a write from another session
    tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid", 1, "--lun",
           1, "--params", "fault=eio,ops=w")
    res = {}

    def writer():
        res["cp"] = qemu_io(d.url(1), "write -P 0x7e 0 4k", check=False,
                            timeout=120)
    th = threading.Thread(target=writer)
    th.start()
    hung = lambda: json.loads(adm(d, "--json", "-o", "show", "-m", "lu",
                                  "-t", 1, "-l", 1).stdout)["hang"]
    assert wait_for(lambda: hung()["state"] == "hung", 20 * tscale())
    h = hung()
    assert h["held"] >= 1 and h["episodes"] == 1 and h["paused"] is False
    assert "EIO" in h["last_error"]
    adm(d, "--hang", "pause", "-t", 1, "-l", 1)
    assert hung()["paused"] is True
    assert "Hang probing: paused" in adm(d, "-o", "show", "-m", "lu", "-t",
                                         1, "-l", 1).stdout
    adm(d, "--hang", "resume", "-t", 1, "-l", 1)
    assert hung()["paused"] is False
    # the store recovers; the stock tgtadm's hang=retry probes at once
    tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid", 1, "--lun",
           1, "--params", "fault=off")
    tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid", 1, "--lun",
           1, "--params", "hang=retry")
    th.join(60 * tscale())
    assert res["cp"].returncode == 0, res["cp"]
    assert hung()["state"] == "ok" and hung()["recoveries"] == 1
    cp = adm(d, "--hang", "bogus", "-t", 1, "-l", 1, check=False)
    assert cp.returncode == 22 and "invalid request" in cp.stderr
    cp = adm(d, "--hang", "retry", check=False)
    assert cp.returncode != 0 and "--tid and --lun" in cp.stderr


def static_show(d):
    """The show text without the I/O counters (a new daemon starts at 0)."""
    return "".join(x for x in tgtadm(d, "--op", "show", "--mode",
                                     "target").stdout.splitlines(True)
                   if not x.startswith("            I/O:"))


def test_save_and_restart_same_configuration(holdfast, tmp_path):
    d = holdfast(accounts=[{"user": "alice", "password": "alice-secret-1"}],
                 discovery={"incoming_users": ["alice"]})
    d.require_holdfast("holdfast's targets.conf")
    img = tmp_path / "live.img"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    # live changes through the stock tgtadm
    tgtadm(d, "--op", "new", "--mode", "target", "--tid", 3, "-T", IQN2)
    tgtadm(d, "--op", "new", "--mode", "logicalunit", "--tid", 3, "--lun",
           1, "-b", img)
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 3, "-I",
           "127.0.0.0/8")
    tgtadm(d, "--op", "update", "--mode", "logicalunit", "--tid", 3, "--lun",
           1, "--params", "vendor_id=SAVED,readonly=0,retry_timeout=5000")
    tgtadm(d, "--mode", "account", "--op", "new", "--user", "bob",
           "--password", "bob-secret-123")
    tgtadm(d, "--mode", "account", "--op", "new", "--user", "tgt-out",
           "--password", "out-secret-456")
    tgtadm(d, "--mode", "account", "--op", "bind", "--tid", 3, "--user",
           "bob")
    tgtadm(d, "--mode", "account", "--op", "bind", "--tid", 3, "--user",
           "tgt-out", "--outgoing")
    tgtadm(d, "--op", "unbind", "--mode", "target", "--tid", 1, "-I", "ALL")
    tgtadm(d, "--op", "bind", "--mode", "target", "--tid", 1, "-Q",
           INITIATOR_IQN)
    qemu_io("iscsi://bob%%bob-secret-123@%s/%s/1" % (d.portal, IQN2),
            "write -P 0x42 2M 1M")

    before = static_show(d)
    old_mode = stat.S_IMODE(os.stat(d.conf_path).st_mode)
    tgtadm(d, "--op", "update", "--mode", "system", "--name", "save",
           "--value", 1)
    saved = d.conf_path.read_text()
    assert 'password = "bob-secret-123"' in saved
    assert stat.S_IMODE(os.stat(d.conf_path).st_mode) == 0o600, old_mode
    assert not [p for p in os.listdir(d.tmp) if ".save" in p], "temp left"
    assert "saved to %s" % d.conf_path in d.log_text()
    # holdfastadm --save and --params save=1 do the same
    adm(d, "--save")
    adm(d, "-o", "update", "-m", "system", "-P", "save=1")
    cp = adm(d, "-o", "update", "-m", "system", "-P", "save=2", check=False)
    assert cp.returncode == 22

    # a fresh daemon on the saved file (its own port) shows the same
    text = re.sub(r'portals = \[.*\];', 'portals = [ "127.0.0.1:@PORT@" ];',
                  d.conf_path.read_text())
    d.stop()
    d2 = holdfast(conf_text=text)
    after = static_show(d2)
    assert after == before
    qemu_io("iscsi://bob%%bob-secret-123@%s/%s/1" % (d2.portal, IQN2),
            "read -P 0x42 2M 1M")
    cp = run(["iscsi-inq", "iscsi://bob%%wrong-secret-9@%s/%s/1" %
              (d2.portal, IQN2)], check=False)
    assert cp.returncode != 0
    # discovery CHAP survived the save too
    cp = run(["iscsi-ls", "iscsi://%s" % d2.portal], check=False)
    assert cp.returncode != 0
    cp = run(["iscsi-ls", "iscsi://alice%%alice-secret-1@%s" % d2.portal],
             check=False)
    assert cp.returncode == 0 and IQN2 in cp.stdout, cp


def clear_ua(s, lun=1):
    for _ in range(3):
        st, _, _ = s.wait_status(s.scsi(lun, bytes(6)))
        if st == 0:
            return
    raise AssertionError("unit attention did not clear")


def expect_logout_request(s):
    p = s.recv(timeout=10)
    while p.opcode == r.OP_NOP_IN:
        p = s.recv(timeout=10)
    assert p.opcode == r.OP_ASYNC, p.opcode
    assert p.bhs[36] == 1       # AsyncEvent 1: target requests logout
    s.logout()
    try:
        assert s.recv(timeout=10).opcode == r.OP_LOGOUT_RSP
    except r.Closed:
        pass


def test_delete_conn_and_session_ask_logout(d):
    s = r.RawSession("127.0.0.1", d.port)
    s.login(d.iqn)
    clear_ua(s)
    m = re.search(r"I_T nexus: (\d+)\n.*?Connection: (\d+)",
                  tgtadm(d, "--op", "show", "--mode", "target").stdout, re.S)
    sid, cid = m.group(1), m.group(2)
    cp = tgtadm(d, "--op", "delete", "--mode", "conn", "--tid", 1, "--sid",
                sid, "--cid", int(cid) + 5, check=False)
    assert cp.returncode == 22 and "can't find the connection" in cp.stderr
    cp = tgtadm(d, "--op", "delete", "--mode", "session", "--tid", 1,
                "--sid", 999999, check=False)
    assert cp.returncode == 22 and "can't find the session" in cp.stderr
    tgtadm(d, "--op", "delete", "--mode", "conn", "--tid", 1, "--sid", sid,
           "--cid", cid)
    expect_logout_request(s)
    s.close()
    assert wait_for(lambda: "I_T nexus:" not in tgtadm(
        d, "--op", "show", "--mode", "target").stdout, 10 * tscale())

    s = r.RawSession("127.0.0.1", d.port)
    s.login(d.iqn)
    clear_ua(s)
    sid = re.search(r"I_T nexus: (\d+)", tgtadm(
        d, "--op", "show", "--mode", "target").stdout).group(1)
    adm(d, "-o", "delete", "-m", "session", "-t", 1, "-s", sid)
    expect_logout_request(s)
    s.close()


def test_forced_target_delete_asks_logout(d):
    s = r.RawSession("127.0.0.1", d.port)
    s.login(d.iqn)
    clear_ua(s)
    cp = tgtadm(d, "--op", "delete", "--mode", "target", "--tid", 1,
                check=False)
    assert cp.returncode == 22 and "still active" in cp.stderr
    done = {}
    th = threading.Thread(target=lambda: done.update(cp=tgtadm(
        d, "--op", "delete", "--mode", "target", "--tid", 1, "--force")))
    th.start()
    expect_logout_request(s)
    s.close()
    th.join(30)
    assert done["cp"].returncode == 0
    assert tgtadm(d, "--op", "show", "--mode", "target").stdout == ""
