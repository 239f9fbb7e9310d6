#!/usr/bin/python3
"""Build the guest initramfs for the QEMU end-to-end tests.

The guest is the host's own Debian kernel (linux-image-amd64) booted with a
small initramfs assembled here from installed Debian packages:

  - busybox-static and its applet links (the shell, mount, ip, dd, ...);
  - mke2fs / e2fsck from e2fsprogs (busybox's mke2fs only makes ext2) and
    the shared libraries they need, found with ldd;
  - iscsid, iscsiadm and iscsistart from open-iscsi with their libraries,
    our own iscsid.conf and initiatorname.iscsi;
  - multipath, multipathd (with the tur checker and alua prioritizer
    plugins) from multipath-tools and dmsetup, with a multipath.conf that
    is README's holdfast stanza;
  - the kernel modules for virtio disks and NICs, ext4 and the iSCSI
    initiator, resolved with `modprobe -S KVER --show-depends` (which also
    follows soft dependencies such as ext4 -> crc32c) and indexed with
    `depmod -b`, so both busybox insmod (in the listed order) and modprobe
    work in the guest;
  - tests/guest/init.sh as /init.

Nothing is downloaded.  The result is cached under build/guest/ by a hash
of every input (this script, init.sh and the path, size and mtime of every
host file copied), so it is rebuilt only when a package or a script
changes.  Usage:

    tests/guest/initramfs.py [--out DIR] [--force]   # prints the paths
"""

import argparse
import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
INIT_SCRIPT = HERE / "init.sh"
GUEST_INITIATOR_IQN = "iqn.2026-11.org.example:guest"

# Kernel modules the scenarios need; dependencies come from modprobe.
MODULES = [
    "virtio_pci", "virtio_blk", "virtio_net",
    "crc32c_generic", "crct10dif_generic",
    "ext4", "sd_mod", "iscsi_tcp",
    # dm-multipath with the ALUA device handler (the two-node scenario)
    "dm_multipath", "dm_service_time", "dm_round_robin", "scsi_dh_alua",
]

# Host programs copied into the guest (with their libraries).
PROGRAMS = {
    "/usr/sbin/mke2fs": ["mke2fs", "mkfs.ext4"],
    "/usr/sbin/e2fsck": ["e2fsck", "fsck.ext4"],
    "/usr/sbin/iscsid": ["iscsid"],
    "/usr/sbin/iscsiadm": ["iscsiadm"],
    "/usr/sbin/iscsistart": ["iscsistart"],
    # multipath-tools (README "Two nodes in front of shared storage")
    "/sbin/multipath": ["multipath"],
    "/sbin/multipathd": ["multipathd"],
    "/sbin/dmsetup": ["dmsetup"],
}
# multipath-tools' checkers and prioritizers, loaded with dlopen
MULTIPATH_PLUGINS = ["/lib/multipath/libchecktur.so",
                     "/lib/multipath/libcheckdirectio.so",
                     "/lib/multipath/libcheckreadsector0.so",
                     "/lib/multipath/libprioalua.so",
                     "/lib/multipath/libpriosysfs.so",
                     "/lib/multipath/libprioconst.so"]
# The guest's multipath.conf: README's device stanza for holdfast.  There
# is no udev in the guest: uid_attribute "" makes multipath read the
# WWID from sysfs (VPD page 83h), which holdfast makes the same on both
# nodes.
MULTIPATH_CONF = """\
defaults {
    user_friendly_names   yes
    find_multipaths       no
    uid_attribute         ""
    polling_interval      1
    verbosity             2
}
blacklist {
    devnode "^vd[a-z]"
}
devices {
    device {
        vendor                "HOLDFAST"
        product               "VIRTUAL-DISK"
        hardware_handler      "1 alua"
        prio                  "alua"
        path_grouping_policy  "group_by_prio"
        path_checker          "tur"
        failback              "immediate"
        no_path_retry         "queue"
    }
}
"""
BUSYBOX = "/usr/bin/busybox"       # busybox-static: no libraries needed
DATA_FILES = ["/etc/mke2fs.conf",
              # glibc loads it for pthread_cancel (multipathd)
              "/lib/x86_64-linux-gnu/libgcc_s.so.1"]

# The guest's open-iscsi configuration.  Short login timeouts and a bounded
# initial login retry count, or a login to a dead portal retries forever;
# the hang scenarios raise the session timeouts per node with iscsiadm.
ISCSID_CONF = """\
iscsid.startup = /usr/sbin/iscsid
node.startup = manual
node.session.initial_login_retry_max = 2
node.conn[0].timeo.login_timeout = 15
node.conn[0].timeo.logout_timeout = 15
node.session.timeo.replacement_timeout = 20
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 10
node.session.err_timeo.abort_timeout = 15
node.session.err_timeo.lu_reset_timeout = 30
node.session.err_timeo.tgt_reset_timeout = 30
node.session.auth.authmethod = None
discovery.sendtargets.auth.authmethod = None
discovery.sendtargets.iscsi.MaxRecvDataSegmentLength = 32768
node.session.iscsi.InitialR2T = No
node.session.iscsi.ImmediateData = Yes
node.session.iscsi.FirstBurstLength = 262144
node.session.iscsi.MaxBurstLength = 16776192
node.conn[0].iscsi.MaxRecvDataSegmentLength = 262144
node.session.cmds_max = 128
node.session.queue_depth = 32
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\n"


class BuildError(RuntimeError):
    pass


def _run(argv):
    cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, timeout=120)
    if cp.returncode != 0:
        raise BuildError("%s failed (%d): %s" % (" ".join(argv),
                                                 cp.returncode, cp.stderr))
    return cp.stdout


def _version_key(v):
    return [int(x) if x.isdigit() else x for x in re.split(r"[.-]", v)]


def find_kernel():
    """(vmlinuz path, release): $HOLDFAST_GUEST_KERNEL, else the newest
    /boot/vmlinuz-* that has a matching /lib/modules directory."""
    env = os.environ.get("HOLDFAST_GUEST_KERNEL")
    cands = [env] if env else glob.glob("/boot/vmlinuz-*")
    found = []
    for p in cands:
        rel = os.path.basename(p)[len("vmlinuz-"):]
        if os.path.isdir("/lib/modules/%s/kernel" % rel):
            found.append((rel, p))
    if not found:
        raise BuildError("no /boot/vmlinuz-* with modules in /lib/modules "
                         "(apt-get install linux-image-amd64)")
    found.sort(key=lambda x: _version_key(x[0]))
    rel, path = found[-1]
    return path, rel


def resolve_modules(kver):
    """Module files in load order (dependencies first, no duplicates)."""
    order = []
    for m in MODULES:
        out = _run(["modprobe", "-S", kver, "--show-depends", m])
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = parts[1]
                if path not in order:
                    order.append(path)
    return order


def resolve_libs(binaries):
    """Shared libraries (real paths and the names they are loaded by)."""
    libs = {}
    for b in binaries:
        out = _run(["ldd", b])
        for line in out.splitlines():
            m = re.match(r"\s*(\S+)\s+=>\s+(/\S+)", line) or \
                re.match(r"\s*(/\S+)\s+\(", line)
            if not m:
                continue
            path = m.group(m.lastindex)
            libs[path] = True
    return sorted(libs)


def plan(kver):
    """Every host file that goes into the image: [(host path, guest path)]."""
    files = [(BUSYBOX, "/bin/busybox")]
    for prog in PROGRAMS:
        if not os.path.exists(prog):
            raise BuildError("%s missing (make deps)" % prog)
        files.append((prog, prog))
    # libraries are copied (dereferenced) to the path ldd names, which is
    # the path the loader looks for in the guest too
    plugins = [p for p in MULTIPATH_PLUGINS if os.path.exists(p)]
    for p in plugins:
        files.append((p, p))
    for lib in resolve_libs([p for p in PROGRAMS if os.path.exists(p)] +
                            plugins):
        files.append((lib, lib))
    for f in DATA_FILES:
        files.append((f, f))
    mods = resolve_modules(kver)
    for m in mods:
        files.append((m, m))
    for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        p = "/lib/modules/%s/%s" % (kver, f)
        if os.path.exists(p):
            files.append((p, p))
    return files, mods


def input_hash(kernel, kver, files):
    h = hashlib.sha256()
    for p in (Path(__file__), INIT_SCRIPT):
        h.update(p.read_bytes())
    h.update(ISCSID_CONF.encode())
    h.update(MULTIPATH_CONF.encode())
    for host, guest in [(kernel, kernel)] + files:
        st = os.stat(host)
        h.update(("%s %s %d %d\n" % (host, guest, st.st_size,
                                     int(st.st_mtime))).encode())
    h.update(kver.encode())
    return h.hexdigest()[:16]


def _busybox_applets():
    out = _run([BUSYBOX, "--list-full"])
    return [line.strip() for line in out.splitlines() if line.strip()]


def _populate(root, kver, files, mods):
    for d in ("proc", "sys", "dev", "tmp", "mnt", "run", "root",
              "etc/iscsi", "var/lib/iscsi", "var/lock/iscsi", "run/lock/iscsi",
              "bin", "sbin", "usr/bin", "usr/sbin", "lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for host, guest in files:
        dst = root / guest.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host, dst)         # follows symlinks
    for prog, names in PROGRAMS.items():
        for n in names[1:]:
            os.symlink(os.path.basename(prog),
                       root / os.path.dirname(prog).lstrip("/") / n)
    real = {os.path.basename(p) for p in PROGRAMS} | {
        n for names in PROGRAMS.values() for n in names}
    for applet in _busybox_applets():
        name = os.path.basename(applet)
        if name in real or name == "busybox":
            continue
        dst = root / applet.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists() and not dst.is_symlink():
            os.symlink("/bin/busybox", dst)
    (root / "etc/iscsi/iscsid.conf").write_text(ISCSID_CONF)
    (root / "etc/multipath").mkdir(parents=True, exist_ok=True)
    (root / "etc/multipath.conf").write_text(MULTIPATH_CONF)
    (root / "etc/iscsi/initiatorname.iscsi").write_text(
        "InitiatorName=%s\n" % GUEST_INITIATOR_IQN)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/hostname").write_text("guest\n")
    (root / "etc/modules-load").write_text(
        "".join("%s\n" % m for m in mods))
    shutil.copy2(INIT_SCRIPT, root / "init")
    os.chmod(root / "init", 0o755)
    _run(["depmod", "-b", str(root), kver])


def _pack(root, out):
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        cpio = subprocess.Popen(["cpio", "--quiet", "-o", "-H", "newc",
                                 "-R", "0:0"], cwd=root,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        gz = subprocess.Popen(["gzip", "-6", "-n"], stdin=cpio.stdout,
                              stdout=f)
        cpio.stdout.close()
        cpio.stdin.write(("\n".join(["."] + names) + "\n").encode())
        cpio.stdin.close()
        if cpio.wait() != 0 or gz.wait() != 0:
            raise BuildError("cpio | gzip failed")
    os.replace(tmp, out)


_built = {}


def build(out_dir=None, force=False):
    """Build (or reuse) the initramfs.  Returns (kernel, initramfs path,
    kernel release).  Checked once per process and cache directory."""
    out_dir = Path(out_dir or os.environ.get("HOLDFAST_GUEST_DIR") or
                   REPO / "build" / "guest")
    if not force and out_dir in _built and _built[out_dir][1].exists():
        return _built[out_dir]
    _built[out_dir] = _build(out_dir, force)
    return _built[out_dir]


def _build(out_dir, force):
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel, kver = find_kernel()
    files, mods = plan(kver)
    digest = input_hash(kernel, kver, files)
    image = out_dir / ("initramfs-%s.cpio.gz" % digest)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.exists() and not force:
            return kernel, image, kver
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            root = Path(tmp) / "root"
            root.mkdir()
            _populate(root, kver, files, mods)
            _pack(root, image)
        # drop stale images, but not one another run may be booting now
        for old in out_dir.glob("initramfs-*.cpio.gz"):
            if old != image and time.time() - old.stat().st_mtime > 3600:
                old.unlink()
    return kernel, image, kver


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="cache directory (default build/guest)")
    ap.add_argument("--force", action="store_true", help="rebuild")
    a = ap.parse_args()
    try:
        kernel, image, kver = build(a.out, a.force)
    except BuildError as e:
        print("initramfs: %s" % e, file=sys.stderr)
        return 1
    print("kernel %s (%s)\ninitramfs %s (%d bytes)" % (
        kernel, kver, image, image.stat().st_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
