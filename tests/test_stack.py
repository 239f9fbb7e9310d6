"""The block stack (backends/stack.h) through the real daemon.

A LUN's storage is a chain of nodes: filters (fault, passthrough) above a
store (file, null).  `logicalunit update` inserts and removes filters while
the LUN serves I/O (filter_add=NAME[,filter_pos=top|above:NODE|below:NODE],
filter_remove=NAME); show prints the chain as `Backing store chain:` and
the JSON show as "chain".  The main test swaps filters again and again
while qemu-img writes, then checks every byte of the disk; others remove a
filter with delayed writes in it, and one whose failures the hang engine
is holding.
"""

import json
import re
import signal
import subprocess
import time

import pytest

from helpers import USE_TGTD, build_dir, qemu_io, run, tscale, wait_for

MiB = 1 << 20
DISK = 64 * MiB
BLOCK = 4096

# tgtd has no block stack: nothing here applies to the baseline run.
pytestmark = pytest.mark.skipif(USE_TGTD, reason="holdfast-only feature")


def lun_update(d, params, lun=1, check=True):
    return d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                    "logicalunit", "--tid", "1", "--lun", lun, "--params",
                    params, check=check)


def chain(d, lun=1):
    """The `Backing store chain:` of LUN lun in the show text."""
    out = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                   "target").stdout
    m = re.search(r"LUN: %d\n(.*?)(?=\n\s*LUN: |\nAccount information|\Z)"
                  % lun, out, re.S)
    assert m, out
    c = re.search(r"\n\s*Backing store chain: (.*)", m.group(1))
    assert c, m.group(1)
    return c.group(1)


def json_chain(d, lun=1):
    adm = str(build_dir() / "holdfastadm")
    cp = run([adm, "-C", str(d.ctl_port), "--json", "-o", "show", "-m",
              "logicalunit", "-t", "1", "-l", str(lun)], env=d.env)
    return json.loads(cp.stdout)["chain"]


def writes_fail(d, lun=1, offset=0):
    cp = qemu_io(d.url(lun), "write -P 0x5c %d 64k" % offset, check=False)
    return "failed" in cp.stdout + cp.stderr or cp.returncode != 0


def test_chain_shown_changed_and_refused(holdfast):
    d = holdfast()
    assert chain(d, 1) == "fault -> file"
    assert chain(d, 2) == "fault -> null"
    assert json_chain(d, 1) == ["fault", "file"]
    # the new line comes after tgtd's standard lines, like the hang lines
    out = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                   "target").stdout
    assert out.index("Backing store flags:") < out.index(
        "Backing store chain:")

    lun_update(d, "filter_add=passthrough")
    assert chain(d) == "passthrough -> fault -> file"
    lun_update(d, "filter_add=passthrough,filter_pos=below:fault")
    assert chain(d) == "passthrough -> fault -> passthrough -> file"
    lun_update(d, "filter_add=fault,filter_pos=above:file")
    assert chain(d) == "passthrough -> fault -> passthrough -> fault -> file"
    assert json_chain(d) == ["passthrough", "fault", "passthrough", "fault",
                             "file"]
    assert chain(d, 2) == "fault -> null", "other LUNs keep their chain"

    # refused requests change nothing
    for bad in ("filter_add=file", "filter_add=nosuch",
                "filter_remove=file", "filter_remove=nosuch",
                "filter_add=passthrough,filter_pos=sideways",
                "filter_add=passthrough,filter_pos=above:nosuch",
                "filter_add=passthrough,filter_pos=below:file",
                "filter_pos=top",
                "filter_add=passthrough,filter_add=fault"):
        cp = lun_update(d, bad, check=False)
        assert cp.returncode != 0, bad
        assert chain(d) == ("passthrough -> fault -> passthrough -> fault "
                            "-> file"), bad

    # fault= reaches the topmost fault filter; removing it ends the fault
    qemu_io(d.url(1), "write -P 0x11 0 1M")
    lun_update(d, "fault=eio:ops=w")
    assert writes_fail(d)
    lun_update(d, "filter_remove=fault")
    assert chain(d) == "passthrough -> passthrough -> fault -> file"
    assert not writes_fail(d)
    # remove and add in one request: the removal runs first
    lun_update(d, "filter_remove=passthrough,filter_add=fault,"
               "filter_pos=top")
    assert chain(d) == "fault -> passthrough -> fault -> file"
    lun_update(d, "filter_remove=passthrough")
    lun_update(d, "filter_remove=fault")
    assert chain(d) == "fault -> file"
    qemu_io(d.url(1), "read -P 0x5c 0 64k", "read -P 0x11 64k 960k")
    assert "block stack now fault -> file" in d.log_text()


# (filter_add params, name to remove afterwards): passthrough and fault
# filters with no fault spec, at every position.
SWAPS = [
    ("filter_add=passthrough", "passthrough"),
    ("filter_add=fault,filter_pos=above:file", "fault"),
    ("filter_add=passthrough,filter_pos=below:fault", "passthrough"),
    ("filter_add=fault,filter_pos=top", "fault"),
    ("filter_add=passthrough,filter_pos=above:fault", "passthrough"),
]


def bench(d, pattern, count, depth=8):
    """qemu-img bench writing pattern to LUN 1 sequentially in 4 KiB
    requests, depth in flight, from offset 0 (another session)."""
    return subprocess.Popen(
        ["qemu-img", "bench", "-f", "raw", "-w", "-c", str(count), "-d",
         str(depth), "-s", str(BLOCK), "-t", "none",
         "--pattern=%d" % pattern, d.url(1)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def swap_while(d, p):
    """Insert and remove filters until bench p ends; returns how many
    changes were made."""
    changes = 0
    while p.poll() is None:
        add, name = SWAPS[changes // 2 % len(SWAPS)]
        lun_update(d, add if changes % 2 == 0 else "filter_remove=" + name)
        changes += 1
    out, err = p.communicate(timeout=300 * tscale())
    assert p.returncode == 0, (out, err)
    if changes % 2:
        lun_update(d, "filter_remove=" + SWAPS[(changes - 1) // 2
                                               % len(SWAPS)][1])
    return changes


def regions(data, want):
    """The [start, end) byte ranges of data that are not want."""
    bad, start = [], None
    pat = bytes([want]) * BLOCK
    for off in range(0, len(data), BLOCK):
        ok = data[off:off + BLOCK] == pat
        if not ok and start is None:
            start = off
        elif ok and start is not None:
            bad.append((start, off))
            start = None
    if start is not None:
        bad.append((start, len(data)))
    return bad


def test_swap_filters_while_qemu_img_writes(holdfast):
    d = holdfast()
    path = d.path("disk1.img")
    # qemu-img bench wraps its offset at (size - buffer): one pass of
    # DISK / BLOCK - 1 requests covers every block but the last.
    span = DISK - BLOCK
    per_pass = span // BLOCK

    # pass 1: 0x5a over the whole disk, twice, while the chain changes
    p = bench(d, 0x5a, 2 * per_pass)
    time.sleep(0.2)
    assert p.poll() is None, "the bench ended before the first change"
    n1 = swap_while(d, p)
    # pass 2: 0xa5 over the first half only
    half = span // 2 // BLOCK
    p = bench(d, 0xa5, half)
    n2 = swap_while(d, p)
    print("changes under I/O: %d + %d" % (n1, n2))
    assert n1 + n2 >= 10, "too few changes under I/O: %d + %d" % (n1, n2)
    assert chain(d) == "fault -> file"

    # every byte: through the LUN and in the backing file
    qemu_io(d.url(1), "read -P 0xa5 0 %d" % (half * BLOCK),
            "read -P 0x5a %d %d" % (half * BLOCK, span - half * BLOCK),
            timeout=120)
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) == DISK
    assert regions(data[:half * BLOCK], 0xa5) == []
    assert regions(data[half * BLOCK:span], 0x5a) == []
    assert "closed when it completes" not in d.log_text()


def test_remove_filter_with_delayed_io_in_flight(holdfast):
    """A fault filter that delays writes is removed while delayed writes
    are in it: the removal waits for them (the drain), none is lost."""
    d = holdfast()
    lun_update(d, "filter_add=fault,filter_pos=above:file")
    lun_update(d, "filter_add=passthrough,filter_pos=below:fault")
    # the topmost fault gets the spec: delay every write by 300 ms
    lun_update(d, "fault=latency=300:ops=w")
    p = bench(d, 0x3c, 256, depth=16)
    time.sleep(0.5)
    assert p.poll() is None
    t = time.monotonic()
    lun_update(d, "filter_remove=fault")        # the delaying one
    waited = time.monotonic() - t
    lun_update(d, "filter_remove=passthrough")
    out, err = p.communicate(timeout=120 * tscale())
    assert p.returncode == 0, (out, err)
    assert chain(d) == "fault -> file"
    assert waited < 5, "the drain waited %.1f s" % waited
    qemu_io(d.url(1), "read -P 0x3c 0 %d" % (256 * BLOCK))


def hang_state(d, lun=1):
    out = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                   "target").stdout
    m = re.search(r"LUN: %d\n.*?Hang state: (\w+)" % lun, out, re.S)
    assert m, out
    return m.group(1)


def test_held_writes_finish_through_the_new_chain(holdfast):
    """The hang engine sits above the whole stack: a write held because a
    fault filter fails it is retried, after that filter is removed and
    another inserted, through the new chain, and lands."""
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "16M", "werror": "retry",
                        "retry_interval": 200}])
    lun_update(d, "filter_add=fault")
    assert chain(d) == "fault -> fault -> file"
    lun_update(d, "fault=eio:ops=w")             # the topmost one fails
    p = subprocess.Popen(
        ["qemu-io", "-f", "raw", "-c", "write -P 0x77 0 1M", d.url(1)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10 * tscale()
    while hang_state(d) != "hung":
        assert time.monotonic() < deadline, "the write was not held"
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    lun_update(d, "filter_add=passthrough,filter_pos=below:fault")
    lun_update(d, "filter_remove=fault")         # the failing one goes
    assert chain(d) == "passthrough -> fault -> file"
    out, err = p.communicate(timeout=60 * tscale())
    assert p.returncode == 0 and "failed" not in out + err, (out, err)
    assert hang_state(d) == "ok"
    qemu_io(d.url(1), "read -P 0x77 0 1M")


def dump(d):
    return d.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "system",
                    "--name", "dump", "--value", "config").stdout


def test_filters_saved_and_restored_at_restart(holdfast):
    """A filter added live is recorded in the LUN's `filters` key: the
    dump and a save write it, and a daemon started from the saved file
    builds the same chain (the data is the same too)."""
    d = holdfast()
    qemu_io(d.url(1), "write -P 0x3c 0 1M")
    lun_update(d, "filter_add=passthrough")
    lun_update(d, "filter_add=passthrough,filter_pos=below:fault")
    assert chain(d) == "passthrough -> fault -> passthrough -> file"
    assert chain(d, 2) == "fault -> null"
    text = dump(d)
    listed = 'filters = [ "passthrough", "fault", "passthrough" ];'
    assert listed in text, text
    assert 'filters = [ "fault" ];' in text, text    # LUN 2, the default
    run([str(build_dir() / "holdfastadm"), "-C", str(d.ctl_port), "--save"],
        env=d.env)
    saved = d.conf_path.read_text()
    assert listed in saved, saved

    # start again from what was saved (portals on fresh ports)
    d.conf_settings = None
    d.conf_text = re.sub(r'portals = \[.*?\];',
                         'portals = [ "127.0.0.1:@PORT@" ];', saved,
                         flags=re.S)
    d.restart()
    assert chain(d) == "passthrough -> fault -> passthrough -> file"
    assert chain(d, 2) == "fault -> null"
    qemu_io(d.url(1), "read -P 0x3c 0 1M")
    # and the key is settable as --params: the whole chain at once
    lun_update(d, "filters=fault")
    assert chain(d) == "fault -> file"
    lun_update(d, "filters=none")
    assert chain(d) == "file"
    assert re.search(r'filters = \[ *\];', dump(d)), dump(d)
    for bad in ("filters=file", "filters=nosuch", "filters=none,fault",
                "filters=fault,filter_add=passthrough"):
        assert lun_update(d, bad, check=False).returncode != 0, bad
        assert chain(d) == "file", bad


def test_sighup_filters_change_chain_under_io(holdfast):
    """A changed `filters` key in targets.conf changes the live chain on
    SIGHUP while qemu-img writes; every byte is checked afterwards."""
    d = holdfast()
    path = d.path("disk1.img")
    span = DISK - BLOCK
    per_pass = span // BLOCK
    lists = ["passthrough,fault", "fault,passthrough,passthrough",
             "passthrough", "none", "fault"]
    want = {"passthrough,fault": "passthrough -> fault -> file",
            "fault,passthrough,passthrough":
                "fault -> passthrough -> passthrough -> file",
            "passthrough": "passthrough -> file", "none": "file",
            "fault": "fault -> file"}
    p = bench(d, 0x6b, 2 * per_pass)
    time.sleep(0.2)
    assert p.poll() is None, "the bench ended before the first change"
    reloads = 0
    while p.poll() is None or reloads < len(lists):
        f = lists[reloads % len(lists)]
        n = d.log_text().count("reload of ")
        d.conf_settings["targets"][0]["luns"][0]["filters"] = f
        d._write_conf()
        d.send_signal(signal.SIGHUP)
        assert wait_for(lambda: d.log_text().count("reload of ") > n,
                        10 * tscale()), d.log_text()
        assert chain(d) == want[f], f
        reloads += 1
        if reloads > 200:
            break
    out, err = p.communicate(timeout=300 * tscale())
    assert p.returncode == 0, (out, err)
    print("reloads that changed the chain: %d" % reloads)
    assert reloads >= len(lists)
    qemu_io(d.url(1), "read -P 0x6b 0 %d" % span, timeout=120)
    with open(path, "rb") as fh:
        data = fh.read()
    assert regions(data[:span], 0x6b) == []
    assert "settings not changed" not in d.log_text()
