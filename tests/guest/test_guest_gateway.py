"""A QEMU guest on a gateway LUN rides out an IP-SAN outage (issue 13).

The SAN is tgtd in a network namespace of its own, holdfastd serves its LUN
as a gateway LUN (backend "iscsi") in a second namespace, and QEMU's iSCSI
initiator runs in that second namespace too (tests/test_gateway.py builds
the namespaces and daemons).  The guest makes ext4 on the disk and runs its
write+fsync / read-back loop; during the loop the SAN's network link goes
down for OUTAGE_S seconds.  With rerror/werror = retry the guest sees no
I/O error, its loop stalls and resumes, ext4 stays writable, and the SAN's
backing file passes e2fsck and holds every file with the guest's checksums.
"""

import re
import time

import pytest

import guest as G
from test_gateway import GW_IQN, env  # noqa: F401  (fixture)
from test_guest import (ERROR_LINE, LUN_SIZE, check_image,  # noqa: F401
                        guest_image, limit)

pytestmark = pytest.mark.slow

OUTAGE_DELAY_S = 3
OUTAGE_S = 15
LOOP_AFTER_S = 8


class NsGuest(G.Guest):
    """A guest whose QEMU runs in the gateway's network namespace."""

    def __init__(self, prefix, *args, **kw):
        self.prefix = list(prefix)
        super().__init__(*args, **kw)

    def argv(self):
        return self.prefix + super().argv()


def test_qemu_guest_on_gateway_rides_out_san_outage(env, tmp_path):
    net, san, gw, image = env
    with open(image, "wb") as f:
        f.truncate(LUN_SIZE)
    san.start(image)
    gw.start({"rerror": "retry", "werror": "retry", "retry_interval": 1000,
              "remote_timeout": 3000})
    g = NsGuest(net.in_gw(), tmp_path / "guest", "gateway_hang", "qemu",
                "127.0.0.1:3260", GW_IQN, 1,
                {"test": "loop", "expect": "clean",
                 "minstall": OUTAGE_S // 2,
                 "dur": OUTAGE_DELAY_S + OUTAGE_S + LOOP_AFTER_S},
                limit(180))
    with g:
        g.start()
        m, _ = g.wait_line(r"LOOP-START", limit(90))
        assert m, g.report("the write loop never started")
        time.sleep(OUTAGE_DELAY_S)
        net.link(False)
        t_down = time.monotonic()
        rx = re.compile(ERROR_LINE)
        while time.monotonic() < t_down + OUTAGE_S and g.running():
            assert not rx.search(g.log(), m.end()), g.report(
                "an I/O error reached the guest during the outage")
            time.sleep(0.1)
        net.link(True)
        g.finish()
    err = g.qemu_stderr()
    assert "NOP" not in err and "econnect" not in err, g.report(
        "QEMU's iSCSI session to holdfast dropped during the SAN outage")
    assert "connection lost" in gw.log(), "the outage never reached holdfast"
    check_image(g, image, tmp_path)
    print("gateway_hang: guest wall %.1fs" % g.wall)
    gw.stop()

