"""Changed-block tracking and backup jobs (issue 10), modelled on QEMU's
iotest 257: pattern groups written with qemu-io, then full, incremental
and differential backups in each bitmap mode, a destination that fails
part-way (a full tmpfs), the bitmap's dirty count and extents checked
exactly after every step, and every backup chain restored with
qemu-img and compared with the reference image taken at that point.

Also: guest writes during a backup do not leak into it, and after a
kill -9 a persistent bitmap still covers every acknowledged write.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from fusefs import fusefs  # noqa: F401  (fixture)
from helpers import build_dir, qemu_io, run, tscale, wait_for

KiB = 1024
MiB = 1 << 20
GRAN = 64 * KiB
SIZE = 64 * MiB

# iotest 257's pattern groups (pattern, offset, length)
GROUPS = [
    [(0x49, 0x0000000, 64 * KiB), (0x6c, 0x0100000, 64 * KiB),
     (0x6f, 0x2000000, 64 * KiB), (0x76, 0x3ff0000, 64 * KiB)],
    [(0x65, 0x0000000, 64 * KiB), (0x77, 0x00f8000, 64 * KiB),
     (0x72, 0x2008000, 64 * KiB), (0x69, 0x3fe0000, 64 * KiB)],
    [(0x74, 0x0010000, 64 * KiB), (0x69, 0x00e8000, 64 * KiB),
     (0x6e, 0x2018000, 64 * KiB), (0x67, 0x3fe0000, 64 * KiB)],
    [(0xd5, 0x0108000, 64 * KiB), (0xdc, 0x3000000, 64 * KiB)],
]


def adm(d, *args, check=True):
    sock = "%s.%d" % (d.sock_base, d.ctl_port)
    wait_for(lambda: os.path.exists(sock), 5 * tscale())
    argv = [str(build_dir() / "holdfastadm"), "-C", str(d.ctl_port)] + \
        [str(a) for a in args]
    return run(argv, check=check, env=d.env, timeout=60)


def bitmap(d, name, lun=1):
    out = adm(d, "--op", "show", "--mode", "bitmap", "--tid", 1, "--lun", lun,
              "--name", name, "--json").stdout
    doc = json.loads(out)
    assert len(doc["bitmaps"]) == 1
    return doc["bitmaps"][0]


def chunks_of(writes):
    """The 64 KiB chunks a list of (pattern, offset, length) dirties."""
    s = set()
    for _, off, length in writes:
        s.update(range(off // GRAN, (off + length - 1) // GRAN + 1))
    return s


def extents_of(chunks):
    out = []
    for c in sorted(chunks):
        if out and out[-1]["offset"] + out[-1]["length"] == c * GRAN:
            out[-1]["length"] += GRAN
        else:
            out.append({"offset": c * GRAN, "length": GRAN})
    return out


def check_bitmap(d, name, chunks):
    b = bitmap(d, name)
    assert b["dirty_bytes"] == len(chunks) * GRAN, b
    assert b["extents"] == extents_of(chunks), b
    return b


def write_group(d, writes):
    qemu_io(d.url(1), *["write -P 0x%02x 0x%x %d" % w for w in writes])


def job_new(d, params):
    out = adm(d, "--op", "new", "--mode", "job", "--tid", 1, "--lun", 1,
              "--params", params).stdout
    assert out.startswith("job "), out
    return int(out.split()[1])


def jobs(d):
    return {j["id"]: j for j in
            json.loads(adm(d, "--op", "show", "--mode", "job",
                           "--json").stdout)["jobs"]}


def job_wait(d, jid, timeout=60):
    assert wait_for(lambda: jobs(d)[jid]["state"] not in
                    ("running", "paused"), timeout * tscale()), jobs(d)[jid]
    return jobs(d)[jid]


def reference(d, name):
    """A copy of the LUN's store now (the LUN is O_DIRECT: the file is
    current once the initiator's writes are acknowledged)."""
    dst = d.path(name)
    shutil.copyfile(d.path("disk1.img"), dst)
    return dst


def compare(image, ref):
    run(["qemu-img", "check", "-q", str(image)]) if str(image).endswith(
        ".qcow2") else None
    r = run(["qemu-img", "compare", "-F", "raw", str(image), str(ref)],
            check=False, cwd=str(os.path.dirname(str(image))))
    assert r.returncode == 0, r.stdout + r.stderr


def restore_and_compare(d, image, ref):
    out = d.path("restored.raw")
    run(["qemu-img", "convert", "-O", "raw", str(image), str(out)],
        cwd=str(os.path.dirname(str(image))))
    assert open(out, "rb").read() == open(ref, "rb").read()
    os.unlink(out)


@pytest.fixture
def d(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "64M", "block_size": 512}])
    d.require_holdfast("changed-block tracking is holdfast's")
    if not shutil.which("qemu-img"):
        pytest.skip("qemu-img missing")
    return d


def test_bitmap_management(d):
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b0")
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b1", "--params", "granularity=4096,enabled=0")
    r = adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
            "--name", "b0", check=False)
    assert r.returncode != 0
    r = adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
            "--name", "bad", "--params", "granularity=3000", check=False)
    assert r.returncode != 0
    write_group(d, GROUPS[0])
    check_bitmap(d, "b0", chunks_of(GROUPS[0]))
    assert bitmap(d, "b1")["dirty_bytes"] == 0 and \
        not bitmap(d, "b1")["enabled"]
    doc = json.loads(adm(d, "--op", "show", "--mode", "bitmap", "--tid", 1,
                         "--lun", 1, "--json").stdout)
    assert [b["name"] for b in doc["bitmaps"]] == ["b0", "b1"]
    assert set(doc["bitmaps"][0]) == {"name", "granularity", "dirty_bytes",
                                      "enabled", "persistent", "busy",
                                      "inconsistent"}
    # enable b1 (4 KiB), write, merge b1 into b0, clear, delete
    adm(d, "--op", "update", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b1", "--params", "action=enable")
    qemu_io(d.url(1), "write -P 0x11 0x500000 4k")
    assert bitmap(d, "b1")["dirty_bytes"] == 4 * KiB
    adm(d, "--op", "update", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b0", "--params", "action=merge,source=b1")
    check_bitmap(d, "b0", chunks_of(GROUPS[0]) | {0x500000 // GRAN})
    adm(d, "--op", "update", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b0", "--params", "action=clear")
    check_bitmap(d, "b0", set())
    adm(d, "--op", "update", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b0", "--params", "action=disable")
    qemu_io(d.url(1), "write -P 0x12 0 4k")
    check_bitmap(d, "b0", set())
    adm(d, "--op", "delete", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b1")
    text = adm(d, "--op", "show", "--mode", "bitmap", "--tid", 1, "--lun",
               1).stdout
    assert "Bitmap: b0" in text and "b1" not in text


def full_then_incrementals(d, fmt_full):
    """257's flow for bitmap_mode on-success: full (clears the bitmap),
    then two incrementals, each restored through its chain."""
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b0", "--params", "persistent=1")
    write_group(d, GROUPS[0])
    check_bitmap(d, "b0", chunks_of(GROUPS[0]))
    ref0 = reference(d, "ref0.raw")
    full = d.path("full." + fmt_full)
    j = job_new(d, "type=backup,target=%s,format=%s,sync=full,bitmap=b0,"
                "bitmap_mode=on-success" % (full, fmt_full))
    info = job_wait(d, j)
    assert info["state"] == "completed" and info["error"] is None, info
    # the LUN's file is sparse: its holes are skipped, not read
    assert info["bytes_done"] == info["bytes_total"] < SIZE
    assert info["bytes_done"] + info["bytes_holes"] == SIZE
    check_bitmap(d, "b0", set())
    compare(full, ref0)

    chain = [full]
    refs = [ref0]
    for n, group in enumerate(GROUPS[1:3], 1):
        write_group(d, group)
        check_bitmap(d, "b0", chunks_of(group))
        ref = reference(d, "ref%d.raw" % n)
        inc = d.path("inc%d.qcow2" % n)
        j = job_new(d, "type=backup,target=%s,format=qcow2,backing=%s,"
                    "backing_format=%s,sync=bitmap,bitmap=b0" %
                    (inc, chain[-1].name,
                     "qcow2" if str(chain[-1]).endswith("qcow2") else "raw"))
        info = job_wait(d, j)
        assert info["state"] == "completed", info
        assert info["bytes_total"] == len(chunks_of(group)) * GRAN
        check_bitmap(d, "b0", set())
        compare(inc, ref)
        restore_and_compare(d, inc, ref)
        chain.append(inc)
        refs.append(ref)
        adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    # every older image of the chain still restores its own point in time
    for img, ref in zip(chain, refs):
        compare(img, ref)


def test_full_qcow2_and_incremental_chain(d):
    full_then_incrementals(d, "qcow2")


def test_full_raw_and_incremental_chain(d):
    full_then_incrementals(d, "raw")


@pytest.fixture
def small_fs(tmp_path):
    """A 512 KiB tmpfs: a backup destination that fills up part-way."""
    mnt = tmp_path / "smallfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs",
                        str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.decode())
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.parametrize("mode", ["on-success", "always", "never"])
def test_failing_destination_bitmap_modes(d, small_fs, mode):
    """A destination that fills part-way fails the job, never a guest
    command; the bitmap keeps every chunk on-success/never, and only the
    ones not copied with always.  A retry to a good destination then
    restores the point in time."""
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b0")
    # 24 chunks spread out (1.5 MiB of data: more than the tmpfs holds)
    writes = [(0x30 + i, i * 2 * MiB + (i % 3) * GRAN, GRAN)
              for i in range(24)]
    write_group(d, writes)
    want = chunks_of(writes)
    check_bitmap(d, "b0", want)
    j = job_new(d, "type=backup,target=%s,format=raw,sync=bitmap,bitmap=b0,"
                "bitmap_mode=%s" % (small_fs / "fail.raw", mode))
    info = job_wait(d, j)
    assert info["state"] == "failed" and info["error"], info
    b = bitmap(d, "b0")
    assert not b["busy"]
    left = {e["offset"] // GRAN for e in b["extents"]}
    if mode == "always":
        # what was copied is gone, the rest stays, nothing new appears
        assert left < want and len(left) >= len(want) - 8, (left, want)
        assert b["dirty_bytes"] == len(left) * GRAN
    else:
        check_bitmap(d, "b0", want)
    # guest I/O was never affected
    qemu_io(d.url(1), "read -P 0x30 0 64k")
    # a retry to a good destination copies what is left
    ref = reference(d, "ref.raw")
    dst = d.path("retry.raw")
    j2 = job_new(d, "type=backup,target=%s,format=raw,sync=full,bitmap=b0,"
                 "bitmap_mode=%s" % (dst, mode))
    assert job_wait(d, j2)["state"] == "completed"
    compare(dst, ref)
    if mode == "never":
        check_bitmap(d, "b0", want)
    else:
        check_bitmap(d, "b0", set())


def test_writes_during_backup_do_not_leak(d):
    """Copy-before-write: the backup is the LUN at the moment the job
    started while the initiator keeps overwriting it."""
    qemu_io(d.url(1), "write -P 0xaa 0 64M")
    ref = reference(d, "before.raw")
    dst = d.path("pit.qcow2")
    # slow the job down so the writes land while it runs
    j = job_new(d, "type=backup,target=%s,format=qcow2,sync=full,"
                "rate_limit=%d" % (dst, 16 * MiB))
    time.sleep(0.3)
    assert jobs(d)[j]["state"] == "running"
    qemu_io(d.url(1), "write -P 0xbb 0 1M", "write -P 0xcc 40M 2M",
            "write -P 0xdd 63M 1M")
    adm(d, "--op", "update", "--mode", "job", "--params",
        "id=%d,action=pause" % j)
    assert jobs(d)[j]["state"] == "paused"
    adm(d, "--op", "update", "--mode", "job", "--params",
        "id=%d,action=resume" % j)
    info = job_wait(d, j, timeout=60)
    assert info["state"] == "completed", info
    compare(dst, ref)
    qemu_io(d.url(1), "read -P 0xcc 40M 2M")
    r = adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    assert j not in jobs(d)


def test_cancel(d):
    dst = d.path("cancel.raw")
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "b0")
    qemu_io(d.url(1), "write -P 0x5a 0 8M")
    j = job_new(d, "type=backup,target=%s,format=raw,sync=bitmap,bitmap=b0,"
                "rate_limit=%d" % (dst, 1 * MiB))
    adm(d, "--op", "update", "--mode", "job", "--params",
        "id=%d,action=cancel" % j)
    info = job_wait(d, j)
    assert info["state"] == "cancelled", info
    # on-success: a cancelled job merges everything back
    assert bitmap(d, "b0")["dirty_bytes"] == 8 * MiB
    r = adm(d, "--op", "update", "--mode", "job", "--params",
            "id=%d,action=pause" % j, check=False)
    assert r.returncode != 0


def test_persistent_bitmap_survives_kill9(d):
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "p", "--params", "persistent=1,granularity=65536")
    adm(d, "--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--name", "m")
    sidecar = d.path("%s.lun1.bitmaps" % d.iqn)
    assert sidecar.exists()
    # acknowledged writes, then a crash right after the last one
    writes = [(0x40 + i, (i * 7 % 64) * MiB + i * 4 * KiB, 4 * KiB)
              for i in range(40)]
    write_group(d, writes)
    d.ok_exit = {0, -9}
    d.stop(sig=9)
    d.start()
    names = [b["name"] for b in json.loads(
        adm(d, "--op", "show", "--mode", "bitmap", "--tid", 1, "--lun", 1,
            "--json").stdout)["bitmaps"]]
    assert names == ["p"], "only the persistent bitmap comes back"
    b = check_bitmap(d, "p", chunks_of(writes))
    assert b["persistent"] and not b["inconsistent"]


def test_bitmaps_in_targets_conf(holdfast):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "64M", "block_size": 512,
                        "bitmaps": [{"name": "cfg", "granularity": 4096,
                                     "persistent": True},
                                    {"name": "mem"}]}])
    d.require_holdfast("changed-block tracking is holdfast's")
    b = bitmap(d, "cfg")
    assert b["granularity"] == 4096 and b["persistent"] and b["enabled"]
    assert not bitmap(d, "mem")["persistent"]
    qemu_io(d.url(1), "write -P 0x31 1M 4k")
    assert bitmap(d, "cfg")["extents"] == [{"offset": MiB, "length": 4096}]
    dump = adm(d, "--dump").stdout
    assert 'name = "cfg"; granularity = 4096; persistent = true' in dump
    # a clean restart keeps the persistent bits, the declared in-memory
    # bitmap comes back empty
    d.restart()
    assert bitmap(d, "cfg")["extents"] == [{"offset": MiB, "length": 4096}]
    assert bitmap(d, "mem")["dirty_bytes"] == 0


def test_bad_bitmap_in_targets_conf_is_refused(holdfast, tmp_path):
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "64M",
                        "bitmaps": [{"name": "x", "granularity": 3000}]}],
                 wait=False)
    d.require_holdfast("changed-block tracking is holdfast's")
    assert d.wait(15) != 0
    d.ok_exit = {1}
    assert "granularity: 3000 is not a power of two" in d.log_text()


def test_backup_of_hanging_lun_resumes_after_recovery(holdfast):
    """A source read that fails is retried with the LUN's own hang
    settings: the job waits, and completes once the store is back."""
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "64M", "block_size": 512, "rerror": "retry",
                        "werror": "retry", "retry_interval": 100}])
    d.require_holdfast("changed-block tracking is holdfast's")
    qemu_io(d.url(1), "write -P 0x77 0 64M")
    ref = reference(d, "ref.raw")
    d.tgtadm("--lld", "iscsi", "--op", "update", "--mode", "logicalunit",
             "--tid", "1", "--lun", "1", "--params", "fault=eio:ops=r")
    dst = d.path("hang.qcow2")
    j = job_new(d, "type=backup,target=%s,format=qcow2,sync=full" % dst)
    time.sleep(1.0 * tscale())
    info = jobs(d)[j]
    assert info["state"] == "running" and info["bytes_done"] == 0, info
    d.tgtadm("--lld", "iscsi", "--op", "update", "--mode", "logicalunit",
             "--tid", "1", "--lun", "1", "--params", "fault=off")
    info = job_wait(d, j)
    assert info["state"] == "completed", info
    compare(dst, ref)


def test_snapshot_lun(d):
    """type=snapshot exports the point in time as a read-only LUN while
    the origin keeps changing; deleting the job removes LUN and scratch."""
    qemu_io(d.url(1), "write -P 0x61 0 64M")
    ref = reference(d, "pit.raw")
    scratch = d.path("snap.scratch")
    j = job_new(d, "type=snapshot,export_lun=5,scratch=%s" % scratch)
    info = jobs(d)[j]
    assert info["type"] == "snapshot" and info["state"] == "running", info
    # the origin changes; the snapshot does not
    qemu_io(d.url(1), "write -P 0x62 0 1M", "write -P 0x63 32M 4M",
            "write -P 0x64 63M 1M")
    r = run(["qemu-io", "-r", "-f", "raw", "-c", "read -P 0x61 0 1M", "-c",
             "read -P 0x61 32M 4M", d.url(5)])
    assert "verification failed" not in r.stdout + r.stderr, r.stdout
    r = qemu_io(d.url(5), "write -P 0x65 0 4k", check=False)
    assert r.returncode != 0 and "write protected" in r.stderr
    out = d.path("snap-read.raw")
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", d.url(5), str(out)])
    assert open(out, "rb").read() == open(ref, "rb").read()
    qemu_io(d.url(1), "read -P 0x63 32M 4M")
    assert "SNAPSHOT" not in adm(d, "--dump").stdout
    adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    assert j not in jobs(d)
    assert not scratch.exists()
    r = run(["qemu-io", "-r", "-f", "raw", "-c", "read 0 4k", d.url(5)],
            check=False)
    assert r.returncode != 0, "the snapshot LUN is gone"


# ---- snapshot with a bitmap, destination retry, holes, SIGHUP, resize ----

def new_bitmap(d, name, params=None):
    args = ["--op", "new", "--mode", "bitmap", "--tid", 1, "--lun", 1,
            "--name", name]
    if params:
        args += ["--params", params]
    adm(d, *args)


def test_snapshot_with_bitmap_returns_extents(d):
    """type=snapshot,bitmap=N: the job carries N's dirty extents at the
    point in time; N is busy while the snapshot lives and records new
    writes; deleting the snapshot consumes the frozen bits, a cancelled
    one keeps them."""
    new_bitmap(d, "b0")
    write_group(d, GROUPS[0])
    want = chunks_of(GROUPS[0])
    scratch = d.path("snapb.scratch")
    j = job_new(d, "type=snapshot,export_lun=6,scratch=%s,bitmap=b0" % scratch)
    info = jobs(d)[j]
    assert info["bitmap"] == "b0" and info["extents"] == extents_of(want), info
    assert bitmap(d, "b0")["busy"]
    text = adm(d, "--op", "show", "--mode", "job").stdout
    assert "Extents:" in text and "%d +%d" % (0, GRAN) in text, text
    # the export reads the point in time at exactly those extents
    ref = reference(d, "pitb.raw")
    write_group(d, GROUPS[1])
    for e in info["extents"]:
        r = run(["qemu-io", "-r", "-f", "raw", "-c", "read -v %d %d" %
                 (e["offset"], e["length"]), d.url(6)])
        assert r.returncode == 0
    out = d.path("snapb-read.raw")
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", d.url(6), str(out)])
    assert open(out, "rb").read() == open(ref, "rb").read()
    # deleting consumes the frozen bits; GROUPS[1] (after it) stays
    adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    check_bitmap(d, "b0", chunks_of(GROUPS[1]))
    # a cancelled snapshot keeps everything
    j = job_new(d, "type=snapshot,export_lun=6,scratch=%s,bitmap=b0" % scratch)
    assert jobs(d)[j]["extents"] == extents_of(chunks_of(GROUPS[1]))
    write_group(d, GROUPS[2])
    adm(d, "--op", "update", "--mode", "job", "--params",
        "id=%d,action=cancel" % j)
    adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)
    check_bitmap(d, "b0", chunks_of(GROUPS[1]) | chunks_of(GROUPS[2]))
    # a snapshot refuses sync=bitmap; a backup job has no extents
    r = adm(d, "--op", "new", "--mode", "job", "--tid", 1, "--lun", 1,
            "--params", "type=snapshot,export_lun=6,scratch=%s,bitmap=nope"
            % scratch, check=False)
    assert r.returncode != 0


def test_failing_destination_retry(d, fusefs):
    """A destination on FUSE that starts failing with EIO part-way: by
    default the job fails; with on_target_error=retry it holds, guest
    writes meanwhile are not held up, and once the destination recovers
    the job completes and the image compares equal."""
    qemu_io(d.url(1), "write -P 0x5a 0 64M")
    ref = reference(d, "ref.raw")
    # about 16 s for the LUN: the EIO must come part-way even when a
    # loaded machine makes each holdfastadm call take a second or more
    slow = "rate_limit=%d" % (4 * MiB)

    def start_then_fail(params):
        fusefs.ok()
        j = job_new(d, params + "," + slow)
        assert wait_for(lambda: jobs(d)[j]["bytes_done"] > 0,
                        10 * tscale()), jobs(d)[j]
        # part-way: running, with most of the LUN still to copy (the job
        # may fail the moment the EIO is in force, so look before)
        info = jobs(d)[j]
        assert info["state"] == "running" and \
            info["bytes_done"] < info["bytes_total"] // 2, info
        fusefs.set("write=EIO")
        return j

    bad = fusefs.path("fail.qcow2")
    j = start_then_fail("type=backup,target=%s,format=qcow2,sync=full" % bad)
    info = job_wait(d, j)
    assert info["state"] == "failed" and "writing the destination" in \
        info["error"], info
    dst = fusefs.path("held.qcow2")
    j = start_then_fail("type=backup,target=%s,format=qcow2,sync=full,"
                        "on_target_error=retry,retry_interval=100" % dst)
    assert wait_for(lambda: jobs(d)[j]["holding"], 10 * tscale()), jobs(d)[j]
    time.sleep(0.5 * tscale())
    info = jobs(d)[j]
    assert info["state"] == "running" and "holding" in info["error"], info
    # a guest write to a chunk not yet copied goes on at once
    t0 = time.monotonic()
    qemu_io(d.url(1), "write -P 0x5b 60M 64k")
    assert time.monotonic() - t0 < 5 * tscale()
    assert fusefs.stats()["failed_writes"] > 0
    fusefs.ok()
    info = job_wait(d, j)
    assert info["state"] == "completed" and not info["holding"], info
    assert info["error"] is None, info
    compare(dst, ref)
    # a timeout ends the hold as a failure
    fusefs.set("write=EIO")
    j = job_new(d, "type=backup,target=%s,format=raw,sync=full,"
                "on_target_error=retry,retry_interval=50,retry_timeout=300"
                % fusefs.path("timeout.raw"))
    info = job_wait(d, j)
    assert info["state"] == "failed" and "retry_timeout" in info["error"], info
    fusefs.ok()
    r = adm(d, "--op", "new", "--mode", "job", "--tid", 1, "--lun", 1,
            "--params", "type=backup,target=%s,retry_interval=5" %
            d.path("x.raw"), check=False)
    assert r.returncode != 0, "retry_interval without on_target_error=retry"


def test_sparse_full_backup_skips_holes(holdfast):
    """sync=full does not read the holes the store reports: a 1 GiB LUN
    with 3 MiB of data backs up in well under the time reading it takes,
    the qcow2 image stays small and the raw one sparse, both correct."""
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "1G", "block_size": 512}])
    d.require_holdfast("changed-block tracking is holdfast's")
    qemu_io(d.url(1), "write -P 0x21 0 1M", "write -P 0x22 500M 1M",
            "write -P 0x23 1023M 1M")
    ref = d.path("disk1.img")
    for fmt in ("qcow2", "raw"):
        dst = d.path("sparse.%s" % fmt)
        t0 = time.monotonic()
        j = job_new(d, "type=backup,target=%s,format=%s,sync=full" %
                    (dst, fmt))
        info = job_wait(d, j)
        took = time.monotonic() - t0
        assert info["state"] == "completed", info
        assert info["bytes_holes"] == 1021 * MiB, info
        assert info["bytes_done"] == info["bytes_total"] == 3 * MiB, info
        assert took < 10 * tscale(), took
        assert os.stat(str(dst)).st_blocks * 512 < 16 * MiB
        if fmt == "qcow2":
            assert os.path.getsize(str(dst)) < 16 * MiB
        compare(dst, ref)
        adm(d, "--op", "delete", "--mode", "job", "--params", "id=%d" % j)


def sighup(d):
    marks = d.log_text().count("reload of ")
    d._write_conf()
    d.send_signal(signal.SIGHUP)
    assert wait_for(lambda: d.log_text().count("reload of ") > marks,
                    10 * tscale()), d.log_text()


def test_bitmaps_in_targets_conf_follow_sighup(holdfast):
    """bitmaps = (...) applies on SIGHUP too: new ones are added, changed
    enabled states applied, the ones the file dropped removed; a bitmap
    made with holdfastadm is never touched."""
    d = holdfast(luns=[{"lun": 1, "backend": "file", "path": "disk1.img",
                        "size": "64M", "block_size": 512,
                        "bitmaps": [{"name": "cfg1"}]}])
    d.require_holdfast("changed-block tracking is holdfast's")
    new_bitmap(d, "adm")
    names = lambda: [b["name"] for b in json.loads(adm(
        d, "--op", "show", "--mode", "bitmap", "--tid", 1, "--lun", 1,
        "--json").stdout)["bitmaps"]]
    assert names() == ["cfg1", "adm"]
    lun = d.conf_settings["targets"][0]["luns"][0]
    lun["bitmaps"] = [{"name": "cfg1", "enabled": False},
                      {"name": "cfg2", "granularity": 4096,
                       "persistent": True}]
    sighup(d)
    assert names() == ["cfg1", "adm", "cfg2"]
    assert not bitmap(d, "cfg1")["enabled"]
    b = bitmap(d, "cfg2")
    assert b["granularity"] == 4096 and b["persistent"] and b["enabled"]
    qemu_io(d.url(1), "write -P 0x31 1M 4k")
    assert bitmap(d, "cfg2")["extents"] == [{"offset": MiB, "length": 4096}]
    assert bitmap(d, "cfg1")["dirty_bytes"] == 0
    # a granularity change cannot apply to a live bitmap: kept, warned
    lun["bitmaps"] = [{"name": "cfg2", "granularity": 65536,
                       "persistent": True}]
    sighup(d)
    assert "bitmap cfg2 kept as it is" in d.log_text()
    assert names() == ["adm", "cfg2"]
    assert bitmap(d, "cfg2")["granularity"] == 4096
    lun["bitmaps"] = []
    sighup(d)
    assert names() == ["adm"]


def test_resize_resizes_bitmaps(d):
    """An online resize grows the LUN's bitmaps: a write past the old
    end is tracked; a forced shrink drops the bits past the new end; a
    resize is refused while a job holds the LUN."""
    new_bitmap(d, "b0", "persistent=1")
    qemu_io(d.url(1), "write -P 0x41 63M 64k")

    def resize(params, check=True):
        return d.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                        "logicalunit", "--tid", "1", "--lun", "1",
                        "--params", params, check=check)
    resize("size=%d" % (128 * MiB))
    qemu_io(d.url(1), "write -P 0x42 100M 64k", "write -P 0x43 127M 64k")
    check_bitmap(d, "b0", {63 * MiB // GRAN, 100 * MiB // GRAN,
                           127 * MiB // GRAN})
    dst = d.path("grown.raw")
    ref = reference(d, "grown-ref.raw")
    j = job_new(d, "type=backup,target=%s,format=raw,sync=full" % dst)
    # (a resize while the job runs is refused; it may be done already)
    r = resize("size=%d" % (192 * MiB), check=False)
    if jobs(d)[j]["state"] == "running":
        assert r.returncode != 0
    assert job_wait(d, j)["state"] == "completed"
    compare(dst, ref)
    resize("size=%d" % (128 * MiB), check=False)
    resize("size=%d,force=1" % (96 * MiB))
    check_bitmap(d, "b0", {63 * MiB // GRAN})
