"""Two holdfast nodes in front of one shared file, a guest with the kernel
initiator and dm-multipath (README "Two nodes in front of shared storage").

Node A (target port group 1) and node B (group 2) serve the same file with
the same target name, each on its own portal; the guest logs in to both
(10.0.2.100:3260 is A, 10.0.2.101:3260 is B), multipathd builds one map
with README's multipath.conf stanza (ALUA hardware handler and
prioritizer, no_path_retry queue), and ext4 on the map runs the verifying
write loop (write + fsync, O_DIRECT read-back of the previous file).  The
host hands the LUN over three times (A -> B -> A -> B, with holdfastadm
`alua_state=standby` then `alua_state=active`), kills the active node with
SIGKILL, and takes over on the other with `alua_state=active,force=1`.

Passes when the loop never saw an I/O error above the map, ext4 stayed
read-write, every file verifies after a remount, e2fsck in the guest and
on the host is clean, and the image holds every file with the guest's
checksums.
"""

import json
import signal
import time

import pytest

from helpers import build_dir, cfg_text, run

import guest as G
from test_guest import (IMAGE, check_image, guest_image,  # noqa: F401
                        limit, make_image)

pytestmark = pytest.mark.slow

HANDOVER_GAP_S = 5      # loop time between two handovers
AFTER_KILL_S = 10       # loop time after the forced takeover
LOOP_S = 4 * HANDOVER_GAP_S + AFTER_KILL_S


def node(holdfast, image, group, peer, state, advertise):
    lun = {"lun": 1, "backend": "file", "path": str(image),
           "size": str(128 << 20), "block_size": 512,
           "alua_group": group, "alua_peer_group": peer,
           "alua_state": state}
    settings = holdfast.settings(luns=[lun])
    text = cfg_text({"portals": ["127.0.0.1:@PORT@=%s" % advertise],
                     **settings})
    return holdfast(conf_text=text)


def update(d, params, check=True):
    return d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                    "logicalunit", "--tid", "1", "--lun", "1", "--params",
                    params, check=check)


def writes(d):
    """WRITE commands LUN 1 of node d has completed."""
    argv = [str(build_dir() / "holdfastadm"), "-C", str(d.ctl_port),
            "--json", "-o", "show", "-m", "target"]
    t = json.loads(run(argv, env=d.env, timeout=30).stdout)["targets"][0]
    return [x for x in t["luns"] if x["lun"] == 1][0]["io"]["writes"]


def hand_over(src, dst):
    """src standby, dst active.  The guest's multipath may send SET TARGET
    PORT GROUPS in between (it sees src standby and activates a path
    group itself): then dst is active already, or src took the store
    back and the handover is repeated."""
    for _ in range(5):
        update(src, "alua_state=standby")
        if update(dst, "alua_state=active", check=False).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError("handover did not complete:\n%s\n%s" %
                         (src.log_text()[-3000:], dst.log_text()[-3000:]))


def test_multipath_handovers_and_kill9_takeover(holdfast, tmp_path):
    image = make_image(tmp_path / IMAGE)
    a = node(holdfast, image, 1, 2, "active", G.GUEST_PORTAL)
    a.require_holdfast()
    b = node(holdfast, image, 2, 1, "standby", G.GUEST_PORTAL2)
    a.ok_exit = b.ok_exit = {0, -9}
    g = G.Guest(tmp_path / "guest", "mpath", "mpath", a.portal, a.iqn, 1,
                {"test": "loop", "dur": LOOP_S}, limit(180), portal2=b.portal)
    nodes = [a, b]
    with g:
        g.start()
        m, _ = g.wait_line(r"LOOP-START", limit(120))
        assert m, g.report("the write loop never started")
        active = 0
        time.sleep(HANDOVER_GAP_S)
        for _ in range(3):
            new = nodes[1 - active]
            before = writes(new)
            hand_over(nodes[active], new)
            active = 1 - active
            time.sleep(HANDOVER_GAP_S)
            # the guest's multipath moved its writes to the new node
            assert writes(new) > before, g.report(
                "no write reached the node that took over")
        dead = nodes[active]
        dead.proc.send_signal(signal.SIGKILL)
        dead.proc.wait()
        update(nodes[1 - active], "alua_state=active,force=1")
        g.finish()
    log = g.log()
    assert "LOOP-END" in log
    n = check_image(g, image, tmp_path)
    # the survivor served the guest after the takeover
    assert writes(nodes[1 - active]) > 0
    assert "active/optimized" in nodes[1 - active].log_text()
    print("mpath: %d files verified, guest wall %.1fs" % (n, g.wall))
