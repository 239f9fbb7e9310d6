"""Helpers for tests that drive mirror jobs (issue 11) with holdfastadm:
start one, read its JSON progress, act on it, and see which files the
daemon holds open."""

import json
import os

from helpers import build_dir, run, tscale, wait_for


def adm(d, *args, check=True):
    sock = "%s.%d" % (d.sock_base, d.ctl_port)
    wait_for(lambda: os.path.exists(sock), 5 * tscale())
    argv = [str(build_dir() / "holdfastadm"), "-C", str(d.ctl_port)] + \
        [str(a) for a in args]
    return run(argv, check=check, env=d.env, timeout=60)


def job_new(d, params, tid=1, lun=1):
    """--op new --mode job; returns the job id."""
    out = adm(d, "--op", "new", "--mode", "job", "--tid", tid, "--lun", lun,
              "--params", params).stdout
    assert out.startswith("job "), out
    return int(out.split()[1])


def job(d, jid):
    """The job's entry of `--op show --mode job --json`."""
    doc = json.loads(adm(d, "--op", "show", "--mode", "job",
                         "--json").stdout)
    return {j["id"]: j for j in doc["jobs"]}[jid]


def job_action(d, jid, action, check=True):
    return adm(d, "--op", "update", "--mode", "job", "--params",
               "id=%d,action=%s" % (jid, action), check=check)


def job_wait(d, jid, states, timeout):
    """Wait until the job is in one of states (or failed/cancelled/
    completed); returns its entry."""
    final = set(states) | {"failed", "cancelled", "completed"}
    ok = wait_for(lambda: job(d, jid)["state"] in final, timeout,
                  interval=0.2)
    j = job(d, jid)
    assert ok, "job %d still %s after %.0fs: %r" % (jid, j["state"],
                                                     timeout, j)
    return j


def mode_in_force(j):
    """The copy mode the job applies now (background / write-blocking)."""
    return j["active_mode"]


def open_fds(d, path):
    """How many descriptors of the daemon point at path."""
    fddir = "/proc/%d/fd" % d.proc.pid
    n = 0
    for fd in os.listdir(fddir):
        try:
            if os.readlink(os.path.join(fddir, fd)) == str(path):
                n += 1
        except OSError:
            pass
    return n
