"""Safe defaults (issue 15): the bundled targets.conf that `make run`
serves listens on loopback only and shows hang-on-error with a finite
retry_timeout; holdfastd warns when a target that admits ALL initiators
without CHAP listens on an address other hosts can reach."""

import re
import socket

import pytest

from helpers import REPO, USE_TGTD, port_accepts, wait_for

WARNING = "admits ALL initiators without CHAP"

pytestmark = pytest.mark.skipif(USE_TGTD, reason="holdfastd configuration")


def bundled_text(port, tmp_path):
    """The bundled targets.conf on port `port`, its LUN under tmp_path."""
    text = (REPO / "targets.conf").read_text()
    text = text.replace(':3260"', ':%s"' % port)
    return text.replace('path = "var/disk1.img"',
                        'path = "%s"' % (tmp_path / "disk1.img"))


def test_bundled_conf_listens_on_loopback_and_retries(holdfast, tmp_path):
    text = (REPO / "targets.conf").read_text()
    portals = re.search(r"^portals\s*=\s*\[(.*)\];", text, re.M).group(1)
    assert re.findall(r'"([^"]*)"', portals) == ["127.0.0.1:3260",
                                                 "[::1]:3260"]
    assert re.search(r'^\s*rerror = "retry";', text, re.M)
    assert re.search(r'^\s*werror = "retry";', text, re.M)
    timeout = int(re.search(r"^\s*retry_timeout = (\d+);", text,
                            re.M).group(1))
    assert 0 < timeout <= 600000, "retry_timeout must be finite"

    d = holdfast(conf_text=bundled_text("@PORT@", tmp_path))
    assert port_accepts(d.port, "127.0.0.1")
    with socket.create_connection(("::1", d.port), timeout=5):
        pass
    out = d.tgtadm("--op", "show", "--mode", "target").stdout
    assert "retry" in out, out
    assert WARNING not in d.log_text()


OPEN = """
portals = [ "%s" ];
accounts = ( { user = "alice"; password = "alice-secret-1"; } );
targets = (
  { name = "iqn.2026-12.org.example:open"; initiators = [ "ALL" ];
    luns = ( { lun = 1; backend = "null"; size = "1M"; } ); },
  { name = "iqn.2026-12.org.example:chap"; initiators = [ "ALL" ];
    incoming_users = [ "alice" ];
    luns = ( { lun = 1; backend = "null"; size = "1M"; } ); },
  { name = "iqn.2026-12.org.example:acl"; initiators = [ "127.0.0.1" ];
    luns = ( { lun = 1; backend = "null"; size = "1M"; } ); }
);
"""


@pytest.mark.parametrize("portal,warned", [
    ("0.0.0.0:@PORT@", True),
    ("[::]:@PORT@", True),
    ("127.0.0.1:@PORT@", False),
    ("[::1]:@PORT@", False),
])
def test_warning_for_open_target_on_network(holdfast, portal, warned):
    d = holdfast(conf_text=OPEN % portal, wait=False)
    host = "::1" if portal.startswith("[") else "127.0.0.1"
    assert wait_for(lambda: port_accepts(d.port, host), 15)
    assert wait_for(lambda: "ready" in d.log_text(), 15)
    lines = [x for x in d.log_text().splitlines() if WARNING in x]
    if not warned:
        assert lines == []
        return
    # only the target open to everyone, once, naming the portal
    assert len(lines) == 1, lines
    assert "iqn.2026-12.org.example:open" in lines[0]
    assert "warning" in lines[0]
