"""Portals added and removed at run time with the stock tgtadm
(`--op new|delete --mode portal --param portal=ADDR:PORT`)."""

import socket

import pytest

import rawiscsi as r
from helpers import IQN, free_tcp_port, port_accepts, run, wait_for


def ls(port):
    return run(["iscsi-ls", "-s", "iscsi://127.0.0.1:%d/" % port],
               timeout=30, check=False)


def test_portal_add_show_discover_delete(holdfast):
    d = holdfast()
    d.require_holdfast()
    port2 = free_tcp_port()
    assert not port_accepts(port2)
    d.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "portal",
             "--param", "portal=127.0.0.1:%d" % port2)
    assert wait_for(lambda: port_accepts(port2), 5)
    show = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "portal").stdout
    assert "Portal: 127.0.0.1:%d,1" % d.port in show
    assert "Portal: 127.0.0.1:%d,1" % port2 in show
    out = ls(port2)
    assert out.returncode == 0 and IQN in out.stdout, out
    # SendTargets through the new portal names the address it was reached at
    assert "127.0.0.1:%d" % port2 in out.stdout
    # the dump (and so a save) carries the live portal list
    dump = d.tgtadm("--op", "show", "--mode", "system", "--name", "dump",
                    "--value", "config").stdout
    assert '"127.0.0.1:%d"' % port2 in dump

    # a session through the portal survives the portal's removal
    s = r.RawSession("127.0.0.1", port2)
    s.login(IQN)
    d.tgtadm("--lld", "iscsi", "--op", "delete", "--mode", "portal",
             "--param", "portal=127.0.0.1:%d" % port2)
    assert wait_for(lambda: not port_accepts(port2), 5)
    s.nop_out(data=b"alive")
    assert s.recv().data == b"alive"
    s.close()
    show = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "portal").stdout
    assert str(port2) not in show
    assert ls(d.port).returncode == 0


def test_portal_errors(holdfast):
    d = holdfast()
    d.require_holdfast()
    # the portal the daemon already listens on
    out = d.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "portal",
                   "--param", "portal=127.0.0.1:%d" % d.port, check=False)
    assert out.returncode == 22 and "invalid request" in out.stderr, out
    out = d.tgtadm("--lld", "iscsi", "--op", "delete", "--mode", "portal",
                   "--param", "portal=127.0.0.1:1", check=False)
    assert out.returncode == 22, out
    out = d.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "portal",
                   "--param", "portal=not-an-address", check=False)
    assert out.returncode == 22, out
    # nothing changed
    show = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "portal").stdout
    assert show.count("Portal:") == 1


def test_portal_with_advertised_address(holdfast):
    d = holdfast()
    d.require_holdfast()
    port2 = free_tcp_port()
    d.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "portal",
             "--param", "portal=127.0.0.1:%d=192.0.2.10:3260" % port2)
    assert wait_for(lambda: port_accepts(port2), 5)
    # a raw discovery session: nothing ever connects to the advertised
    # (documentation-range) address, only the answer is checked
    s = r.RawSession("127.0.0.1", port2)
    s.login(None, session_type="Discovery")
    answer = s.text([("SendTargets", "All")])
    assert ("TargetName", IQN) in answer
    assert ("TargetAddress", "192.0.2.10:3260,1") in answer
    s.close()
    s = r.RawSession("127.0.0.1", d.port)
    s.login(None, session_type="Discovery")
    assert ("TargetAddress", "127.0.0.1:%d,1" % d.port) in \
        s.text([("SendTargets", "All")])
    s.close()


def test_bsoflags_sync_opens_o_sync(holdfast, tmp_path):
    """tgtadm --bsoflags direct:sync opens the store O_DIRECT|O_SYNC, and
    show spells the flags as tgtd does."""
    import os
    d = holdfast()
    d.require_holdfast()
    img = tmp_path / "s.img"
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    d.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit",
             "--tid", "1", "--lun", "5", "-b", str(img), "--bsoflags",
             "direct:sync")
    show = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "target").stdout
    block = show[show.index("LUN: 5"):]
    assert "Backing store flags: sync:direct" in block
    # the open file of the daemon has O_SYNC (and O_DIRECT) set
    fds = os.listdir("/proc/%d/fd" % d.proc.pid)
    flags = None
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (d.proc.pid, fd)) == str(img):
                with open("/proc/%d/fdinfo/%s" % (d.proc.pid, fd)) as f:
                    for line in f:
                        if line.startswith("flags:"):
                            flags = int(line.split()[1], 8)
        except OSError:
            continue
    assert flags is not None
    assert flags & os.O_SYNC == os.O_SYNC and flags & os.O_DIRECT
