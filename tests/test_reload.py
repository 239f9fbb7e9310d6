"""SIGHUP reload of targets.conf (target/config/config_reload.c).

holdfastd re-reads its file and applies the difference to what runs:
targets, LUNs, ACLs, accounts and run-time LUN settings, while sessions
on what did not change keep working (a qemu-img bench runs through every
reload here).  A file that does not load, or whose new parts cannot be
created, changes nothing and the log says why.
"""

import copy
import re
import signal
import subprocess
import time

import pytest

from helpers import (IQN, build_dir, qemu_io, run, tscale, wait_for)

IQN2 = "iqn.2026-11.org.example:reload2"
IQN3 = "iqn.2026-11.org.example:reload3"


def show(d):
    return d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "target").stdout


def targets(d):
    return re.findall(r"^Target (\d+): (\S+)$", show(d), re.M)


def reload(d, settings, expect="done"):
    """Write settings as the daemon's targets.conf, SIGHUP, and wait for
    the log line that ends the reload."""
    n = d.log_text().count("SIGHUP: reloading")
    marks = d.log_text().count("reload of ") + \
        d.log_text().count("reload refused")
    d.conf_settings = settings
    d._write_conf()
    d.send_signal(signal.SIGHUP)
    assert wait_for(lambda: d.log_text().count("reload of ") +
                    d.log_text().count("reload refused") > marks,
                    10 * tscale()), d.log_text()
    assert d.log_text().count("SIGHUP: reloading") == n + 1
    last = d.log_text().rsplit("SIGHUP: reloading", 1)[1]
    if expect == "done":
        assert "reload of " in last, last
    else:
        assert "reload refused, nothing changed" in last, last
    return last


def base_settings(tmp):
    return {
        "accounts": [{"user": "alice", "password": "alice-secret-1"}],
        "targets": [
            {"name": IQN, "tid": 1, "initiators": ["ALL"],
             "luns": [{"lun": 1, "backend": "file", "path": "disk1.img",
                       "size": "64M"}]},
            {"name": IQN3, "tid": 3, "initiators": ["ALL"],
             "luns": [{"lun": 1, "backend": "null", "size": "16M"}]},
        ]}


def bench(d, count=80000):
    """A long qemu-img bench of writes on target 1 LUN 1 (another
    session), running while the tests reload."""
    return subprocess.Popen(
        ["qemu-img", "bench", "-f", "raw", "-w", "-c", str(count), "-d",
         "4", "-s", "4096", d.url(1, IQN)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def bench_done(p):
    out, err = p.communicate(timeout=300 * tscale())
    assert p.returncode == 0, (out, err)


def test_reload_adds_and_removes_under_io(holdfast):
    d = holdfast(**base_settings(None))
    d.require_holdfast("SIGHUP reload")
    b = bench(d)
    try:
        time.sleep(0.3)
        assert b.poll() is None, "the bench ended before the reload"
        s = base_settings(None)
        s["accounts"].append({"user": "bob", "password": "bob-secret-123"})
        s["targets"][0]["initiators"] = ["ALL", "10.1.0.0/16"]
        s["targets"][0]["luns"].append({"lun": 2, "backend": "null",
                                        "size": "8M"})
        del s["targets"][1]                     # target 3 goes
        s["targets"].append({                   # target 2 comes, with CHAP
            "name": IQN2, "tid": 2, "initiators": ["ALL"],
            "incoming_users": ["bob"],
            "luns": [{"lun": 1, "backend": "file", "path": "disk2.img",
                      "size": "16M"}]})
        last = reload(d, s)
        assert "2 removed" not in last
        assert targets(d) == [("1", IQN), ("2", IQN2)]
        text = show(d)
        assert "        10.1.0.0/16\n" in text
        assert re.search(r"LUN: 2\n\s+Type: disk", text)
        assert b.poll() is None, "the bench was disturbed"
        # the new target requires CHAP from its first login
        assert run(["iscsi-inq", d.url(1, IQN2)], check=False).returncode
        qemu_io("iscsi://bob%%bob-secret-123@%s/%s/1" % (d.portal, IQN2),
                "write -P 0x21 0 64k", "read -P 0x21 0 64k")

        # and back: the file as it was
        reload(d, base_settings(None))
        assert targets(d) == [("1", IQN), ("3", IQN3)]
        assert "10.1.0.0/16" not in show(d)
        assert "bob" not in d.tgtadm("--lld", "iscsi", "--op", "show",
                                     "--mode", "account").stdout
        assert b.poll() is None, "the bench was disturbed"
    finally:
        if b.poll() is None:
            bench_done(b)
    assert "reload" in d.log_text()


def test_bad_reload_changes_nothing(holdfast, tmp_path):
    d = holdfast(**base_settings(None))
    d.require_holdfast("SIGHUP reload")
    before = show(d)

    # a syntax error: refused with FILE:LINE
    d.conf_path.write_text("targets = ( { name = \"x\"; \n")
    d.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in d.log_text(), 10 * tscale())
    assert re.search(r"reload refused, nothing changed: .*targets\.conf:\d+",
                     d.log_text()), d.log_text()
    assert show(d) == before

    # valid, but a new LUN's store does not open (1000 bytes is no whole
    # number of blocks): the new target made before it is removed again,
    # and the removal of target 3 never ran
    (d.tmp / "odd.img").write_bytes(b"\0" * 1000)
    s = base_settings(None)
    del s["targets"][1]
    s["targets"].append({"name": IQN2, "tid": 2, "initiators": ["ALL"],
                         "luns": [{"lun": 1, "backend": "null",
                                   "size": "8M"}]})
    s["targets"].append({"name": "iqn.2026-11.org.example:broken",
                         "tid": 4, "initiators": ["ALL"],
                         "luns": [{"lun": 1, "backend": "file",
                                   "path": "odd.img"}]})
    last = reload(d, s, expect="refused")
    assert "targets.conf:" in last and "not a multiple" in last, last
    assert show(d) == before
    assert d.alive()


def test_reload_changes_settings_and_keeps_what_is_in_use(holdfast):
    d = holdfast(**base_settings(None))
    d.require_holdfast("SIGHUP reload")
    d.tgtadm("--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid",
             3, "--user", "alice")
    assert run(["iscsi-inq", "iscsi://alice%%alice-secret-1@%s/%s/1" %
                (d.portal, IQN3)], check=False).returncode == 0

    new = base_settings(None)
    new["accounts"][0]["password"] = "alice-secret-2"
    new["targets"][0]["luns"][0].update(vendor_id="RELOADED",
                                        werror="retry", retry_interval=300)
    new["targets"][0]["params"] = {"MaxBurstLength": 131072}
    new["targets"][1]["incoming_users"] = ["alice"]
    new["targets"][1]["initiators"] = ["iqn.2026-11.org.example:named",
                                       "127.0.0.1"]
    # a new store for target 3's LUN 1 (nobody uses it): replaced
    new["targets"][1]["luns"][0]["size"] = "32M"
    reload(d, new)
    text = show(d)
    t3 = text.split("Target 3: ")[1]
    assert "Size: 34 MB, Block size: 512" in t3, t3
    assert sorted(t3.split("ACL information:\n")[1].split()) == \
        ["127.0.0.1", "iqn.2026-11.org.example:named"], t3
    assert "Vendor: RELOADED" in text
    assert "werror=retry, retry_interval=300 ms" in text
    assert "MaxBurstLength=131072" in d.tgtadm(
        "--lld", "iscsi", "--op", "show", "--mode", "target", "--tid",
        1).stdout
    # the secret changed in place: the old one is refused, the new works
    url = "iscsi://alice%%%s@%s/%s/1"
    assert run(["iscsi-inq", url % ("alice-secret-1", d.portal, IQN3)],
               check=False).returncode != 0
    assert run(["iscsi-inq", url % ("alice-secret-2", d.portal, IQN3)],
               check=False).returncode == 0

    # target 3 in use: kept when the file drops it
    b = subprocess.Popen(
        ["qemu-img", "bench", "-f", "raw", "-c", "80000", "-d", "2",
         "iscsi://alice%%alice-secret-2@%s/%s/1" % (d.portal, IQN3)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: "I_T nexus: " in show(d), 10 * tscale())
        gone = copy.deepcopy(new)
        del gone["targets"][1]
        del gone["targets"][0]["params"]
        last = reload(d, gone)
        assert "has sessions: kept" in last, last
        assert ("3", IQN3) in targets(d)
        assert b.poll() is None
        # the override dropped from the file goes back to the default
        assert "MaxBurstLength" not in d.tgtadm(
            "--lld", "iscsi", "--op", "show", "--mode", "target", "--tid",
            1).stdout
    finally:
        if b.poll() is None:
            bench_done(b)
    # unused now: the next reload removes it
    reload(d, gone)
    assert ("3", IQN3) not in targets(d)
