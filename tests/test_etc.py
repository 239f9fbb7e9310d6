"""The files under etc/ are shipped for operators to copy; these tests keep
them honest.

Every sample configuration is started as it is, except for what cannot
work on a test machine, which is changed by text substitution here (the
samples themselves stay as an operator would install them):

- the portal line becomes 127.0.0.1:<free port>,
- /var/lib/holdfast/ (where the samples keep backing files) becomes the
  test's tmp_path,
- "127.0.0.1" is added in front of every initiators list, so the
  sample's own entries (CIDRs, IQNs) are still parsed and checked.

Then the daemon must serve it: iscsi-ls sees every target and LUN the
sample declares (with the sample's CHAP credentials where it asks for
them).  The systemd unit is checked with systemd-analyze verify, the udev
rule and multipath snippet with the tools that can read them, when those
tools are installed.
"""

import os
import re
import shutil

import pytest

from helpers import REPO, USE_TGTD, build_dir, qemu_io, run

ETC = REPO / "etc"
SAMPLE_STATE_DIR = "/var/lib/holdfast/"

pytestmark = pytest.mark.skipif(
    USE_TGTD, reason="etc/ samples are holdfastd configurations")


# --------------------------------------------------------------------------
# helpers

def localize(text, tmp):
    """A sample made runnable on the test machine (see the module doc)."""
    out, n = re.subn(r'(?m)^portals\s*=\s*\[[^\]]*\]\s*;',
                     'portals = [ "127.0.0.1:@PORT@" ];', text)
    assert n == 1, "sample must have exactly one top-level portals line"
    out = out.replace(SAMPLE_STATE_DIR, str(tmp) + "/")
    # a gateway's SAN block devices become files of the test's own
    out = re.sub(r'path\s*=\s*"/dev/disk/by-path/([^"]+)";',
                 lambda m: 'path = "%s/%s.img"; size = "64M";' % (
                     tmp, re.sub(r"[^A-Za-z0-9.-]", "_", m.group(1))), out)
    out = re.sub(r'(?m)^(\s*initiators\s*=\s*\[)', r'\1 "127.0.0.1",', out)
    return out


def sample(name):
    return (ETC / name).read_text()


def declared(text):
    """Target names and, per target, the LUN numbers a sample declares
    (a light reading of the libconfig text: enough for our samples)."""
    targets = {}
    current = None
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        m = re.search(r'\bname\s*=\s*"([^"]+)"', line)
        if m:
            current = m.group(1)
            targets[current] = []
        for m in re.finditer(r'\blun\s*=\s*(\d+)\s*;', line):
            targets[current].append(int(m.group(1)))
    return targets


def ls_luns(out):
    """{target: set(lun numbers)} from iscsi-ls -s output."""
    seen = {}
    cur = None
    for line in out.splitlines():
        m = re.match(r'Target:(\S+)', line)
        if m:
            cur = m.group(1)
            seen[cur] = set()
            continue
        m = re.match(r'Lun:(\d+)', line)
        if m and cur:
            seen[cur].add(int(m.group(1)))
    return seen


def start_sample(holdfast, tmp_path, name):
    text = localize(sample(name), tmp_path)
    d = holdfast(conf_text=text)
    return d, declared(sample(name))


# --------------------------------------------------------------------------
# sample configurations

def test_vm_disks_sample_serves(holdfast, tmp_path):
    d, want = start_sample(holdfast, tmp_path, "targets.vm-disks.conf")
    assert len(want) == 2
    seen = ls_luns(run(["iscsi-ls", "-s", "iscsi://%s/" % d.portal]).stdout)
    for iqn, luns in want.items():
        assert iqn in seen, "target %s not served: %s" % (iqn, seen)
        assert set(luns) <= seen[iqn], (iqn, luns, seen[iqn])

    # The hang-on-error settings the sample is about are in force.
    show = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                    "target").stdout
    assert "150000" in show or "150s" in show or "150.0s" in show, show

    # The 4K-block data disk works end to end.
    iqn = "iqn.2026-11.org.example:vm.web01"
    url = "iscsi://%s/%s/2" % (d.portal, iqn)
    out = qemu_io(url, "write -P 0x5a 1M 64k", "read -P 0x5a 1M 64k").stdout
    assert "wrote 65536" in out and "read 65536" in out, out
    with open(tmp_path / "web01-data.img", "rb") as f:   # 100G, sparse
        f.seek(1 << 20)
        data = f.read(65536)
    assert data == b"\x5a" * 65536


def test_vm_disks_sample_timeouts_agree():
    """The sample's retry_timeout, the comment's initiator timeout and the
    udev rule's timeout must tell the same story: initiators wait longer
    than a LUN may stay hung."""
    text = "\n".join(l.split("#", 1)[0]
                     for l in sample("targets.vm-disks.conf").splitlines())
    timeouts = {int(x) for x in re.findall(r'retry_timeout\s*=\s*(\d+)', text)}
    assert timeouts == {150000}
    rule = (ETC / "udev" / "99-holdfast-timeout.rules").read_text()
    secs = int(re.search(r'ATTR\{timeout\}="(\d+)"', rule).group(1))
    assert secs * 1000 > max(timeouts)
    mp = (ETC / "multipath.conf.d" / "holdfast.conf").read_text()
    assert re.search(r'^\s*vendor\s+"HOLDFAST"', mp, re.M)


def test_chap_sample_serves(holdfast, tmp_path):
    d, want = start_sample(holdfast, tmp_path, "targets.chap.conf")
    assert set(want) == {"iqn.2026-11.org.example:shared",
                         "iqn.2026-11.org.example:vault"}
    creds = dict(re.findall(r'user\s*=\s*"([^"]+)";\s*password\s*=\s*"([^"]+)"',
                            sample("targets.chap.conf")))

    # Discovery asks for CHAP: nothing without credentials, the targets
    # with them.
    anon = run(["iscsi-ls", "iscsi://%s/" % d.portal], check=False)
    assert "iqn.2026-11.org.example:shared" not in anon.stdout
    url = "iscsi://hv01%%%s@%s/" % (creds["hv01"], d.portal)
    out = run(["iscsi-ls", url]).stdout
    assert set(want) <= set(re.findall(r'Target:(\S+)', out)), out

    # One-way CHAP on "shared": hv02 logs in, a wrong secret does not.
    ok = "iscsi://hv02%%%s@%s/iqn.2026-11.org.example:shared/1" % (
        creds["hv02"], d.portal)
    qemu_io(ok, "write -P 0x11 0 4k", "read -P 0x11 0 4k")
    bad = "iscsi://hv02%%%s@%s/iqn.2026-11.org.example:shared/1" % (
        "wrong-secret-16c", d.portal)
    cp = qemu_io(bad, "read 0 4k", check=False)
    assert cp.returncode != 0 or "read 4096" not in cp.stdout

    # Mutual CHAP on "vault": hv01 plus the target's secret.
    env = dict(os.environ)
    env["LIBISCSI_CHAP_TARGET_USERNAME"] = "vault-target"
    env["LIBISCSI_CHAP_TARGET_PASSWORD"] = creds["vault-target"]
    vault = "iscsi://hv01%%%s@%s/iqn.2026-11.org.example:vault/1" % (
        creds["hv01"], d.portal)
    qemu_io(vault, "write -P 0x22 0 4k", "read -P 0x22 0 4k", env=env)
    # hv02 is not an incoming user of "vault".
    other = "iscsi://hv02%%%s@%s/iqn.2026-11.org.example:vault/1" % (
        creds["hv02"], d.portal)
    cp = qemu_io(other, "read 0 4k", check=False, env=env)
    assert cp.returncode != 0 or "read 4096" not in cp.stdout


@pytest.mark.parametrize("name", sorted(
    p.name for p in ETC.glob("targets*.conf")))
def test_every_sample_parses(holdfast, tmp_path, name):
    """Any sample added later is at least accepted and served."""
    d, want = start_sample(holdfast, tmp_path, name)
    out = run(["iscsi-ls", "iscsi://%s/" % d.portal], check=False).stdout
    if "discovery" not in sample(name):
        for iqn in want:
            assert "Target:%s " % iqn in out, out


# --------------------------------------------------------------------------
# systemd unit

UNIT = ETC / "holdfastd.service"
INSTALLED_BINARY = "/usr/local/sbin/holdfastd"


def test_systemd_unit_verifies(tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze not installed (package systemd)")
    text = UNIT.read_text()
    assert "ExecStart=%s -f -c /etc/holdfast/targets.conf" % \
        INSTALLED_BINARY in text
    if not os.access(INSTALLED_BINARY, os.X_OK):
        # verify insists the ExecStart binary exists; check the unit as it
        # would be with holdfastd installed, using the build's binary.
        text = text.replace(INSTALLED_BINARY,
                            str((build_dir() / "holdfastd").resolve()))
    unit = tmp_path / "holdfastd.service"
    unit.write_text(text)
    cp = run([tool, "verify", str(unit)], check=False)
    # verify also reports problems of unrelated units on the host; only
    # lines about ours count.
    ours = [l for l in (cp.stdout + cp.stderr).splitlines()
            if "holdfastd" in l]
    assert not ours and cp.returncode == 0, cp.stdout + cp.stderr


def unit_syscall_filter(tool):
    """The set of system calls the unit's SystemCallFilter= lines allow."""
    allow, deny = set(), set()
    for line in UNIT.read_text().splitlines():
        m = re.match(r'SystemCallFilter=(~?)(.*)', line.strip())
        if not m:
            continue
        for item in m.group(2).split():
            names = expand_syscall_group(tool, item)
            (deny if m.group(1) else allow).update(names)
    return allow - deny


def test_systemd_unit_syscall_filter_allows_io_uring():
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze not installed (package systemd)")
    allowed = unit_syscall_filter(tool)
    for sc in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert sc in allowed, "%s not allowed by the unit's filter" % sc


def test_systemd_unit_syscall_filter_covers_daemon(holdfast, tmp_path,
                                                  monkeypatch):
    """Every system call holdfastd makes while serving (login, reads,
    writes, flush, unmap, tgtadm, shutdown) is allowed by the unit's
    filter: run it under strace -f and compare."""
    tool = shutil.which("systemd-analyze")
    strace = shutil.which("strace")
    if not tool or not strace:
        pytest.skip("needs systemd-analyze and strace")
    counts = tmp_path / "strace.txt"
    wrapper = tmp_path / "holdfastd"
    # LeakSanitizer cannot run under ptrace: no leak check in this run
    wrapper.write_text("#!/bin/sh\nASAN_OPTIONS=\"$ASAN_OPTIONS:detect_leaks=0\" "
                       "exec %s -f -qq -c -o %s %s \"$@\"\n" %
                       (strace, counts, build_dir().resolve() / "holdfastd"))
    wrapper.chmod(0o755)
    text = localize(sample("targets.vm-disks.conf"), tmp_path)
    # the fixture runs $HOLDFAST_BUILD/holdfastd: the wrapper
    monkeypatch.setenv("HOLDFAST_BUILD", str(tmp_path))
    d = holdfast(conf_text=text)
    url = "iscsi://%s/iqn.2026-11.org.example:vm.web01/1" % d.portal
    qemu_io(url, "write -P 0x33 0 1M", "read -P 0x33 0 1M", "flush",
            "discard 0 1M")
    d.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target")
    # Stop through management, not a signal: SIGTERM would go to strace
    # (which detaches) rather than to holdfastd.
    d.tgtadm("--op", "delete", "--mode", "system", "--force")
    assert d.wait(30) == 0, d.log_text()
    used = set()
    for line in counts.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[-1] not in ("syscall", "total") and \
                re.match(r'^[a-z_0-9]+$', f[-1]):
            used.add(f[-1])
    assert "io_uring_enter" in used, counts.read_text()
    missing = used - unit_syscall_filter(tool)
    assert not missing, "the unit would refuse: %s" % sorted(missing)


def expand_syscall_group(tool, item):
    if not item.startswith("@"):
        return {item}
    cp = run([tool, "syscall-filter", item])
    names = set()
    for line in cp.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == item:
            continue
        if line.startswith("@"):
            names |= expand_syscall_group(tool, line)
        else:
            names.add(line)
    return names


# --------------------------------------------------------------------------
# udev rule and multipath snippet (initiator hosts)

RULE = ETC / "udev" / "99-holdfast-timeout.rules"


def private_mounts_work():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    cp = run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"],
             check=False)
    return cp.returncode == 0


def test_udev_rule_parses(tmp_path):
    """udevadm test reads every rules file and names each line it cannot
    parse.  Run it in a private mount namespace where /etc/udev/rules.d
    holds only our rule and /run is empty, on the loopback network device
    (no device node, so nothing under /dev is touched).  A deliberately
    broken rule next to ours proves the check can fail."""
    tool = shutil.which("udevadm")
    if not tool:
        pytest.skip("udevadm not installed")
    if not private_mounts_work():
        pytest.skip("needs root and unshare -m for a private mount namespace")
    rules = tmp_path / "rules.d"
    rules.mkdir()
    shutil.copy(RULE, rules / RULE.name)
    (rules / "98-broken.rules").write_text('ACTION=="add", NOSUCHKEY=="x"\n')
    script = ("mount --bind %s /etc/udev/rules.d && mount -t tmpfs none /run"
              " && %s test --action=add /sys/class/net/lo" % (rules, tool))
    cp = run(["unshare", "-m", "sh", "-c", script], check=False)
    out = cp.stdout + cp.stderr
    assert "Reading rules file: /etc/udev/rules.d/%s" % RULE.name in out, out
    assert "98-broken.rules:1" in out, out      # the check works
    ours = [l for l in out.splitlines() if RULE.name + ":" in l]
    assert not ours, "udevadm complains about our rule:\n" + "\n".join(ours)
    # systemd >= 253 also has a dedicated checker; use it where it exists
    # (Debian 12 has 252, where the run above is the check)
    if run([tool, "verify", "--help"], check=False).returncode == 0:
        run([tool, "verify", str(RULE)])


def parse_rule_line(line):
    """[(key, op, value)] of one rules line; asserts it is all pairs."""
    parts = re.findall(
        r'\s*([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"'
        r'\s*(?:,|$)', line)
    rebuilt = ", ".join('%s%s"%s"' % p for p in parts)
    assert re.sub(r'\s', '', rebuilt) == re.sub(r'\s', '', line), line
    return parts


def rule_lines():
    out = []
    for line in RULE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert not line.endswith("\\"), "no continuation lines"
            out.append(parse_rule_line(line))
    return out


def rule_applies(rule, event):
    """Evaluate the match keys of one rule against a fake event the way
    udev does: shell globs, '|' alternatives, trailing blanks of sysfs
    attribute values ignored.  Returns the assignments it would make, or
    None if it does not match."""
    import fnmatch
    sets = {}
    for key, op, value in rule:
        if op in ("==", "!="):
            have = event.get(key)
            if have is None:
                ok = False
            else:
                have = have.rstrip() if key.startswith("ATTR") else have
                ok = any(fnmatch.fnmatchcase(have, alt)
                         for alt in value.split("|"))
            if ok != (op == "=="):
                return None
        else:
            sets[key] = value
    return sets


def scsi_event(vendor, dtype, action="add", subsystem="scsi",
               devtype="scsi_device"):
    # sysfs pads the INQUIRY vendor to 8 characters
    return {"ACTION": action, "SUBSYSTEM": subsystem,
            "ENV{DEVTYPE}": devtype, "ATTRS{vendor}": vendor.ljust(8),
            "ATTR{type}": str(dtype)}


def test_udev_rule_match_logic():
    rules = rule_lines()
    assert len(rules) == 1
    rule = rules[0]
    keys = {k for k, _, _ in rule}
    assert "ATTRS{vendor}" in keys and "ATTR{timeout}" in keys

    sets = rule_applies(rule, scsi_event("HOLDFAST", 0))
    assert sets and int(sets["ATTR{timeout}"]) >= 180
    assert rule_applies(rule, scsi_event("HOLDFAST", 0, action="change"))
    # LUN 0 (storage array controller), other vendors, the block device
    # and partitions, removal: untouched.
    assert rule_applies(rule, scsi_event("HOLDFAST", 12)) is None
    assert rule_applies(rule, scsi_event("LIO-ORG", 0)) is None
    assert rule_applies(rule, scsi_event("IET", 0)) is None
    assert rule_applies(rule, scsi_event("HOLDFAST", 0,
                                         action="remove")) is None
    assert rule_applies(rule, scsi_event("HOLDFAST", 0, subsystem="block",
                                         devtype="disk")) is None


def test_multipath_snippet_parses(tmp_path):
    """multipath -t prints the configuration it read and names every line
    it rejects; run it in a private mount namespace whose /etc holds only a
    multipath.conf made of our snippet."""
    tool = shutil.which("multipath") or "/sbin/multipath"
    if not os.path.exists(tool):
        pytest.skip("multipath-tools not installed")
    if not private_mounts_work():
        pytest.skip("needs root and unshare -m for a private mount namespace")
    snippet = ETC / "multipath.conf.d" / "holdfast.conf"
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "multipath.conf").write_text("defaults {\n}\n" +
                                        snippet.read_text())
    cp = run(["unshare", "-m", "sh", "-c",
              "mount --bind %s /etc && %s -t" % (etc, tool)], check=False)
    assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr
    assert "invalid" not in cp.stderr.lower(), cp.stderr
    out = cp.stdout
    assert 'vendor "HOLDFAST"' in out, out[-2000:] + cp.stderr
    dev = out[out.index('vendor "HOLDFAST"'):]
    dev = dev[:dev.index("}")]
    assert 'product "VIRTUAL-DISK"' in dev
    assert 'path_checker "tur"' in dev
    assert re.search(r'no_path_retry ("queue"|\d+)', dev), dev
    assert "path_grouping_policy" in dev
