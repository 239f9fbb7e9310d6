"""A guest's disk moves to new storage while the guest writes (issue 11).

The guest logs in with its kernel initiator (open-iscsi), makes ext4 on
the LUN and runs its write+fsync / O_DIRECT read-back loop (init.sh
`loop`).  Once the loop runs, the host starts a mirror job of the LUN from
its file to another file, waits for `ready`, lets the loop write through
the mirror for a few seconds, and pivots with `action=complete` half-way
through the loop.  The guest then stops the
loop, unmounts, remounts (now reading the destination), verifies its
checksums and runs e2fsck -fn; it must have seen no I/O error and no
session drop.  From the host: the daemon no longer holds the source open,
and after the daemon stops, `e2fsck -fn` of the destination file is clean
and the destination holds every file the loop wrote, with the guest's
checksums; the same check on the source, left behind at the pivot, fails.
"""

import re
import time

import pytest

import guest as G
from mirrorjob import job_action, job_new, job_wait, mode_in_force, \
    open_fds
from test_guest import (boot, check_image, guest_image,  # noqa: F401
                        limit, make_image, require_holdfast, start_target)

pytestmark = pytest.mark.slow

LOOP_S = 18             # the guest's loop; the pivot lands in its middle
JOB_DELAY_S = 2         # the job starts this long after LOOP-START
PIVOT_AT_S = 9          # and completes about this long after it


@pytest.mark.parametrize("copy_mode", ["auto", "write-blocking"])
def test_kernel_initiator_disk_moves_mid_write(holdfast, tmp_path,
                                               copy_mode):
    require_holdfast("mirror jobs are holdfast's")
    src = make_image(tmp_path / "src.img")
    dst = tmp_path / "dst.img"
    d = start_target(holdfast, src, advertise=G.GUEST_PORTAL)
    params = {"test": "loop", "expect": "clean", "dur": LOOP_S,
              "st": "strict"}
    name = "mirror_" + copy_mode.replace("-", "_")
    with boot(tmp_path, name, "kernel", d, params, 110) as g:
        g.start()
        m, _ = g.wait_line(r"LOOP-START", limit(80))
        assert m, g.report("the write loop never started")
        t_loop = time.monotonic()
        time.sleep(JOB_DELAY_S)
        jid = job_new(d, "type=mirror,target=%s,copy_mode=%s" %
                      (dst, copy_mode))
        j = job_wait(d, jid, {"ready"}, limit(LOOP_S - JOB_DELAY_S - 6))
        assert j["state"] == "ready", g.report("job: %r" % j)
        if copy_mode == "write-blocking":
            assert mode_in_force(j) == "write-blocking", j
        # the loop's writes go through the mirror for a while
        time.sleep(max(0, PIVOT_AT_S - (time.monotonic() - t_loop)))
        assert job_wait(d, jid, {"ready"}, 1)["state"] == "ready"
        job_action(d, jid, "complete")
        j = job_wait(d, jid, set(), limit(20))
        assert j["state"] == "completed", g.report("job: %r" % j)
        t_pivot = time.monotonic() - t_loop
        # mid-run: the loop was still going when the pivot was done
        assert "LOOP-END" not in g.log(), g.report(
            "the loop ended before the pivot (%.1fs after LOOP-START)" %
            t_pivot)
        assert t_pivot < LOOP_S - 3, g.report(
            "pivot %.1fs after LOOP-START, too late for a %ds loop" %
            (t_pivot, LOOP_S))
        assert open_fds(d, src) == 0, "the source is still open after " \
            "complete"
        g.finish()
    m = re.search(r"LOOP-END iterations=(\d+) errors=(\d+)", g.log())
    assert m and int(m.group(2)) == 0, g.report("loop errors")
    # show lists the new store
    out = d.tgtadm("--lld", "iscsi", "--op", "show", "--mode",
                   "target").stdout
    assert str(dst) in out and str(src) not in out, out
    rc = d.stop()
    assert rc == 0, d.log_text()[-3000:]
    n = check_image(g, dst, tmp_path)
    # the control: the source stopped at the pivot, so it lacks what the
    # loop wrote afterwards (the same check fails on it)
    with pytest.raises(AssertionError):
        check_image(g, src, tmp_path / "src-check")
    print("%s: pivot %.1fs into a %ds loop, %s iterations, %d files "
          "verified on the destination, guest wall %.1fs" %
          (name, t_pivot, LOOP_S, m.group(1), n, g.wall))
