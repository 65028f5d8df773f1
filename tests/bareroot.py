"""Bare Debian roots for tests: built once per machine with debootstrap, copied per test.

    python3 tests/bareroot.py build bullseye bookworm   # warm the cache, print the paths

Standard library only, so .ci/run can call it before pytest is installed.
"""
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CACHE = os.environ.get("STACKBOOT_ROOT_CACHE", "/var/cache/stackboot-tests")
SUITES = ("bullseye", "bookworm", "trixie")
MARKER = ".stackboot-base-complete"
# Fetched into the root's apt cache (not installed), so a test can install them offline.
PREFETCH = ["busybox", "moosefs-master", "moosefs-chunkserver", "moosefs-metalogger", "moosefs-client",
            "moosefs-cli", "moosefs-cgi", "moosefs-cgiserv", "fuse3", "make", "btrfs-progs", "apache2", "cron", "iproute2",
            "ufw", "procps", "firewalld"]
# A suite's backports, in its sources (apt gives them priority 100: used only when asked for) with
# these packages fetched from them: trixie-backports has MooseFS 4.58.1 and the C GUI, moosefs-gui.
BACKPORTS = {"trixie": ["moosefs-gui", "moosefs-master", "moosefs-cli", "moosefs-common"]}
MIRROR = os.environ.get("STACKBOOT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The host PATH may hold pyenv shims or /usr/local paths that mean nothing inside a root;
# proxy settings are kept so debootstrap and apt reach the mirror the way the host does.
ENV = dict({k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")},
           PATH="/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL="C", HOME="/root",
           DEBIAN_FRONTEND="noninteractive")


def _complete(path):
    return os.path.isfile(os.path.join(path, MARKER))


def available(suite=None):
    """(True, "") when roots can be had here, else (False, why) for pytest.skip."""
    if os.geteuid() != 0:
        return False, "bare roots need root (debootstrap, chroot)"
    if suite and _complete(os.path.join(CACHE, suite)):
        return True, ""
    if not shutil.which("debootstrap", path=ENV["PATH"]):
        return False, "debootstrap is not installed (apt-get install debootstrap)"
    return True, ""


def _run(argv, **kw):
    """Run quietly; on failure raise with the tail of the output (debootstrap is verbose)."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=ENV,
                       stderr=subprocess.STDOUT, universal_newlines=True, **kw)
    if p.returncode != 0:
        raise RuntimeError("%s failed (rc %d):\n%s"
                           % (" ".join(argv), p.returncode, p.stdout[-3000:]))


def _mounts_under(path):
    """Mount points at or below path, deepest first. Field 5 of /proc/self/mountinfo is
    the mount point, with space, tab, newline and backslash written as octal escapes."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        mps = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
               for line in f]
    return sorted((mp for mp in mps if mp == path or mp.startswith(path + "/")),
                  key=lambda mp: mp.count("/"), reverse=True)


def _unmount_all(path):
    mounts = _mounts_under(path)
    for mp in mounts:
        # A `mount --rbind /dev ROOT/dev` without --make-rslave joins the host's peer
        # group: unmounting ROOT/dev/pts would then unmount the host's /dev/pts too (seen).
        # Making each mount private first cuts that link; it changes only that mount.
        subprocess.call(["mount", "--make-private", mp], stderr=subprocess.DEVNULL)
    for mp in mounts:
        if subprocess.call(["umount", mp], stderr=subprocess.DEVNULL) != 0:
            subprocess.call(["umount", "-l", mp])  # busy: detach now, freed when unused
    left = _mounts_under(path)
    if left:
        raise RuntimeError("still mounted under %s: %s" % (path, left))


def _kill_processes_in(root):
    """SIGKILL every process whose root directory is in this root (a daemon a test or a
    maintainer script started) and wait for them: they keep mounts busy."""
    root = os.path.realpath(root)
    for _ in range(50):
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                r = os.readlink("/proc/%s/root" % pid)  # fails for kernel threads, zombies
            except OSError:
                continue
            if r == root or r.startswith(root + "/"):
                pids.append(int(pid))
        if not pids:
            return
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def cleanup_root(path):
    """Unmount everything under path, then delete it. Deleting only after checking that
    nothing is mounted there is what keeps rmtree out of the host's /proc, /dev or /sys."""
    if not os.path.lexists(path):
        return
    if os.path.realpath(path) == "/":
        raise ValueError("cleanup_root: refusing to remove /")
    _kill_processes_in(path)
    _unmount_all(path)  # raises if anything is still mounted: never rmtree then
    shutil.rmtree(path)


def _build(suite, final, lock):
    tmp = tempfile.mkdtemp(prefix=".%s.build-" % suite, dir=CACHE)
    # Children inherit the locked fd, so if this process is killed the lock stays held
    # until the orphaned debootstrap/apt exit too: no one cleans a dir still being written.
    held = {"pass_fds": (lock.fileno(),)}
    apt = ["chroot", tmp, "apt-get", "-o", "Acquire::Languages=none"]
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a root's / must be world-readable
        _run(["debootstrap", "--variant=minbase", "--include=python3", suite, tmp], **held)
        # debootstrap leaves its ~40 MB of .debs in the apt cache: drop them, since every
        # test copies the root. Translations (~30 MB) are not needed to install anything.
        _run(apt + ["clean"], **held)
        _run(apt + ["update"], **held)
        _run(apt + ["install", "-y", "--download-only"] + PREFETCH, **held)
        _fetch_backports(suite, tmp, **held)
        _kill_processes_in(tmp)
        _unmount_all(tmp)  # some debootstrap versions leave /proc or /sys mounted
        _write_marker(tmp, suite)
        os.rename(tmp, final)  # atomic: a reader sees no root or a complete one
    except BaseException:
        cleanup_root(tmp)
        raise


def _fetch_backports(suite, root, **kw):
    if suite not in BACKPORTS:
        return
    with open(os.path.join(root, "etc/apt/sources.list.d/backports.list"), "w") as f:
        f.write("deb %s %s-backports main\n" % (MIRROR, suite))
    apt = ["chroot", root, "apt-get", "-o", "Acquire::Languages=none"]
    _run(apt + ["update"], **kw)
    _run(apt + ["install", "-y", "--download-only", "-t", suite + "-backports"] + BACKPORTS[suite], **kw)


def _prefetch_line(suite):
    return "prefetch: %s%s\n" % (" ".join(PREFETCH), "; backports: " + " ".join(BACKPORTS[suite]) if suite in BACKPORTS else "")


def _write_marker(root, suite):
    with open(os.path.join(root, MARKER), "w") as f:
        f.write("%s built %s\n%s" % (suite, time.strftime("%Y-%m-%d %H:%M:%S"), _prefetch_line(suite)))


def _prefetched(root, suite):
    with open(os.path.join(root, MARKER)) as f:
        return _prefetch_line(suite) in f.read()


def _top_up(suite, root):
    """A cache built before PREFETCH grew: fetch the new packages into it instead of rebuilding."""
    apt = ["chroot", root, "apt-get", "-o", "Acquire::Languages=none"]
    _run(apt + ["install", "-y", "--download-only"] + PREFETCH)
    _fetch_backports(suite, root)
    _kill_processes_in(root)
    _write_marker(root, suite)


def base_root(suite):
    """Path of the pristine cached root for suite, built once per machine. Never modify
    it: take a fresh_root() copy."""
    if suite not in SUITES:
        raise ValueError("unknown suite %r (known: %s)" % (suite, ", ".join(SUITES)))
    final = os.path.join(CACHE, suite)
    if _complete(final) and _prefetched(final, suite):
        return final  # fast path, no lock: the marker is only ever seen in a finished root
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".%s.lock" % suite), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per suite; others wait, then reuse
        if _complete(final):
            if not _prefetched(final, suite):
                _top_up(suite, final)
            return final
        # Holding the lock, any leftover build dir belongs to a builder that died.
        for name in os.listdir(CACHE):
            if name.startswith(".%s.build-" % suite):
                cleanup_root(os.path.join(CACHE, name))
        cleanup_root(final)  # a root without its marker is not trusted
        _build(suite, final, lock)
    return final


def fresh_root(suite, dest):
    """Copy the pristine root to dest (absent or an empty directory) and return dest."""
    src = base_root(suite)
    os.makedirs(dest, exist_ok=True)
    if os.listdir(dest):
        raise ValueError("fresh_root: %s is not empty" % dest)
    # "src/." copies the contents, so an existing empty dest (pytest's tmp_path) works too.
    _run(["cp", "-a", "--reflink=auto", src + "/.", dest])
    return dest


def main(argv):
    if len(argv) < 2 or argv[0] != "build":
        sys.exit("usage: bareroot.py build SUITE...  (suites: %s)" % " ".join(SUITES))
    for suite in argv[1:]:
        ok, why = available(suite)
        if not ok:
            sys.exit("bareroot: %s: %s" % (suite, why))
        t = time.time()
        try:
            print(base_root(suite), flush=True)
        except (ValueError, RuntimeError) as e:
            sys.exit("bareroot: %s" % e)
        print("%s ready in %.1f s" % (suite, time.time() - t), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
