"""Interrupted for real: Debian's MooseFS packages in bare bookworm roots, killed anywhere.

The in-process harness (test_interrupted.py) proves every step kind against fakes; this one
meets real apt, dpkg, mfsmaster, btrfs and signals. For each role set, one uninterrupted
install is recorded by stackboot's own log (every host operation and every mutating command
is a line there). Then, for each operation k, a fresh root gets the same install SIGKILLed
right before operation k (a driver counts the operations and kills its own process: nothing
after it runs, no cleanup), and a second, ordinary run. The root must then equal the
uninterrupted one: stackboot's state (records, no open intent, no pending restart), every
file the install touched (content, mode, owner), the packages (dpkg --audit clean), the
daemons running, each started after its config was last written. A third run changes nothing.

Then the ways people stop a run: SIGKILL of the process group at random moments of the
package install (with and without apt-get and dpkg), two runs at once, SIGINT and SIGTERM,
Ctrl-C during start-up, and a full filesystem where a config, the state or a package goes.

Every root runs in a network namespace of its own (the daemons listen there, not on this host).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import TOP, need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]

NETNS = "sb-fault-%d" % os.getpid()
DAEMONS = {"mfsmaster": "mfsmaster.cfg", "mfschunkserver": "mfschunkserver.cfg", "mfsmetalogger": "mfsmetalogger.cfg"}
MASTER = "10.254.77.1"
PACKAGES = ["--set", "method=packages", "--set", "master_host=" + MASTER]
ROLE_SETS = {
    "master": ["master"],
    "chunkserver": ["chunkserver"],
    "master+metalogger+cli": ["master", "metalogger", "cli"],
}
# Kill points: every operation for master and chunkserver; for the set of three, which repeats
# their step kinds, every operation but a sample of the state saves between them.
EVERY = {"master": 1, "chunkserver": 1, "master+metalogger+cli": 3}

# Counts the host operations and mutating commands as the log records them, and SIGKILLs its
# own process right before number FAULT_AT: what kill -9 leaves, at a chosen point.
DRIVER = r'''
import os, signal, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stackboot
kill_at, seen = int(os.environ.get("FAULT_AT", "-1")), [0]

def tick():
    if seen[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    seen[0] += 1

permit, run = stackboot.Runner.permit, stackboot.Runner.run

def counted_permit(self, op, path, **detail):
    tick()
    return permit(self, op, path, **detail)

def counted_run(self, argv, change=False, **options):
    if change and self.allow_changes:
        tick()
    return run(self, argv, change=change, **options)

stackboot.Runner.permit, stackboot.Runner.run = counted_permit, counted_run
sys.exit(stackboot.main())
'''


def sh(*argv, **options):
    return subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **options)


@pytest.fixture(scope="module")
def netns():
    assert sh("ip", "netns", "add", NETNS).returncode == 0
    try:
        sh("ip", "-n", NETNS, "link", "set", "lo", "up")
        # an address that is not loopback (a chunkserver refuses a master on 127.0.0.1): a veth
        # pair with both ends in the namespace
        assert sh("ip", "-n", NETNS, "link", "add", "sbf0", "type", "veth", "peer", "name", "sbf1").returncode == 0
        sh("ip", "-n", NETNS, "addr", "add", MASTER + "/24", "dev", "sbf0")
        for end in ("sbf0", "sbf1"):
            sh("ip", "-n", NETNS, "link", "set", end, "up")
        yield NETNS
    finally:
        sh("ip", "netns", "delete", NETNS)


class Root:
    """A fresh bookworm root with stackboot and the driver in it, run inside the namespace:
    an overlay on the cached root (hundreds of trials: a copy each would take minutes)."""

    def __init__(self, base, netns):
        import bareroot
        need_bare_root("bookworm")
        self.base, self.netns = base, netns
        self.path = os.path.join(base, "root")
        for name in ("root", "upper", "work"):
            os.makedirs(os.path.join(base, name))
        mounted = sh("mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s/upper,workdir=%s/work" % (
            bareroot.base_root("bookworm"), base, base), self.path)
        assert mounted.returncode == 0, mounted.stderr
        for name, text in (("stackboot.py", open(os.path.join(TOP, "stackboot.py")).read()), ("fault.py", DRIVER)):
            with open(os.path.join(self.path, name), "w") as handle:
                handle.write(text)

    def argv(self, *args):
        # (ip netns exec also gives the command a mount namespace of its own: a root that mounts
        # a store runs without it, so its mounts stay where the next run sees them)
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        return inside + ["chroot", self.path, "python3", "/fault.py"] + list(args)

    def run(self, *args, kill_at=None):
        env = dict(os.environ, FAULT_AT=str(kill_at if kill_at is not None else -1))
        return sh(*self.argv(*args), env=env, timeout=600)

    def start(self, *args):
        """stackboot as a terminal starts it: its own process group, signals reach it alone."""
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, start_new_session=True)

    def file(self, path):
        return os.path.join(self.path, path.lstrip("/"))

    def processes(self):
        """{pid: name} of the processes whose root is this root."""
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink("/proc/%s/root" % pid) == self.path:
                    found[int(pid)] = open("/proc/%s/comm" % pid).read().strip()
            except OSError:
                continue
        return found

    def wait_for_no(self, names, seconds=120):
        deadline = time.time() + seconds
        while set(self.processes().values()) & set(names):
            assert time.time() < deadline, "still running: %s" % self.processes()
            time.sleep(0.05)

    def remove(self):
        import bareroot
        import shutil
        if os.path.isdir(self.base):   # not removed yet
            bareroot.cleanup_root(self.path)   # its processes ended, the overlay unmounted, the mount point gone
            shutil.rmtree(self.base)


@pytest.fixture
def fresh(tmp_path, netns):
    made = []

    def make(name="root"):
        made.append(Root(str(tmp_path / name), netns))
        return made[-1]
    yield make
    for root in made:
        root.remove()


def operations(root):
    """The changes stackboot's log recorded, in order: what the driver counts."""
    ops = []
    for line in open(root.file("/var/log/stackboot.log")):
        record = json.loads(line)
        if record.get("kind") == "change":
            ops.append(record.get("op", "run") + " " + (record.get("path") or " ".join(record["argv"])))
    return ops


def started_at(pid):
    """When a process started, in seconds since the epoch (to 10 ms: /proc/stat's btime is
    whole seconds, so the time since it started is measured against /proc/uptime instead)."""
    ticks = int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[19])
    uptime, now = float(open("/proc/uptime").read().split()[0]), time.time()
    return now - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def picture(root, paths):
    """What an interrupted run could get wrong, as one comparable value."""
    state = json.load(open(root.file("/var/lib/stackboot/state.json")))
    for record in state["roles"].values():
        record.pop("installed")
    state["digests"] = sorted(state["digests"])   # the paths; their stamps are times
    files = {}
    for path in paths:
        full = root.file(path)
        if not os.path.lexists(full):
            files[path] = None
            continue
        st = os.lstat(full)
        data = path.startswith("/var/lib/mfs/")   # the master rewrites its metadata: that it is there counts
        content = open(full, "rb").read() if os.path.isfile(full) and not data else None
        files[path] = (st.st_mode, st.st_uid, st.st_gid, content)
    audit = sh("chroot", root.path, "dpkg", "--audit").stdout
    packages = sh("chroot", root.path, "dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev} ${Version}\n",
                  "moosefs-*").stdout
    daemons = {}
    for pid, name in root.processes().items():
        if name in DAEMONS:
            config = root.file("/etc/mfs/" + DAEMONS[name])
            # started after its config was last written (clock ticks are 10 ms)
            daemons[name] = started_at(pid) >= os.stat(config).st_mtime - 0.05
    listening = sorted(line.split()[1] for line in sh("ip", "netns", "exec", root.netns, "cat", "/proc/net/tcp").stdout
                       .splitlines()[1:] if line.split()[3] == "0A")
    users = sorted(line.split(":")[0] + ":" + line.split(":")[2] for name in ("passwd", "group")
                   for line in open(root.file("/etc/" + name)) if line.startswith("mfs:"))
    # A run killed after a restart but before saying so restarts once more (the restart was owed
    # first, done second: never lost, at worst twice); the master then keeps one more backup.
    metadata = sorted(name for name in os.listdir(root.file("/var/lib/mfs")) if name.startswith("metadata.mfs")
                      and not name.startswith("metadata.mfs.back.")) if os.path.isdir(root.file("/var/lib/mfs")) else None
    return {"state": state, "files": files, "audit": audit, "packages": packages, "daemons": daemons,
            "listening": listening, "users": users, "metadata": metadata}


def touched(ops):
    return sorted(set(op.split(" ", 1)[1] for op in ops if not op.startswith("run ")) - {"/var/lib/stackboot/state.json"})


def kill_points(ops, every):
    """Every operation, or all but a sample of the state saves (each kind's saves are the same code)."""
    saves = [k for k, op in enumerate(ops) if op == "write /var/lib/stackboot/state.json"]
    return [k for k in range(len(ops)) if k not in saves or saves.index(k) % every == 0]


def reference(fresh, roles, args=PACKAGES, before=None):
    """The uninterrupted run: its operations and the root it leaves."""
    root = fresh("reference")
    if before:
        assert root.run("install", *roles, *before).returncode == 0
        os.rename(root.file("/var/log/stackboot.log"), root.file("/var/log/stackboot.log.before"))
    done = root.run("install", *roles, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    ops = operations(root)
    wanted = picture(root, touched(ops))
    assert not wanted["audit"] and all(wanted["daemons"].values()) and not wanted["state"]["intents"]
    assert not wanted["state"]["pending"]
    root.remove()
    return ops, wanted


def killed_then_finished(fresh, roles, k, ops, wanted, args=PACKAGES, before=None):
    root = fresh("trial-%d" % k)
    try:
        if before:
            assert root.run("install", *roles, *before).returncode == 0
        killed = root.run("install", *roles, *args, kill_at=k)
        assert killed.returncode == -signal.SIGKILL, "never reached %d (%s): %s" % (k, ops[k], killed.stderr)
        root.wait_for_no(["apt-get", "dpkg", "http"])   # a command it started may still be ending
        second = root.run("install", *roles, *args)
        assert second.returncode == 0, "killed before %s (%d): %s" % (ops[k], k, second.stdout + second.stderr)
        got = picture(root, touched(ops))
        for key in wanted:
            assert got[key] == wanted[key], "killed before %s (%d): %s differ\n%s" % (ops[k], k, key, second.stdout)
        third = root.run("install", *roles)
        assert "Install: 0 changed" in third.stdout.splitlines()[-1], "killed before %s (%d): %s" % (ops[k], k, third.stdout)
    finally:
        root.remove()


@pytest.mark.parametrize("name", sorted(ROLE_SETS))
def test_killed_before_each_operation_the_next_run_finishes_the_install(fresh, name):
    roles = ROLE_SETS[name]
    ops, wanted = reference(fresh, roles)
    kinds = set(op.split()[0] for op in ops)
    assert {"write", "mkdir", "chmod", "run"} <= kinds and len(ops) > 25
    points = kill_points(ops, EVERY[name])
    for k in points:
        killed_then_finished(fresh, roles, k, ops, wanted)
    sys.stderr.write("%s: %d operations, %d kill points\n" % (name, len(ops), len(points)))


def test_killed_during_a_config_change_the_master_ends_up_running_the_new_config(fresh):
    """The lost restart: killed after mfsmaster.cfg changed, before the restart happened."""
    before, args = ["--set", "method=packages"], ["--set", "master_listen_host=127.0.0.1"]
    ops, wanted = reference(fresh, ["master"], args, before)
    assert "0100007F:24CD" in wanted["listening"] and "00000000:24CD" not in wanted["listening"]   # 127.0.0.1:9421
    assert len(ops) >= 6
    for k in range(len(ops)):
        killed_then_finished(fresh, ["master"], k, ops, wanted, args, before)
    sys.stderr.write("master config change: %d operations, every one a kill point\n" % len(ops))


# --- stopped while installing packages -------------------------------------------------------

def during_apt(root, process):
    """Wait until apt-get runs in the root (the install has begun; a dpkg alone may be apt-cache's
    `dpkg --print-foreign-architectures` while stackboot asks apt what it has)."""
    deadline = time.time() + 60
    while "apt-get" not in root.processes().values():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "apt-get never started"
        time.sleep(0.005)


def kill_all(root):
    """SIGKILL every process in the root (each one this test started, or one of theirs)."""
    for pid in root.processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:   # it ended meanwhile
            pass


def converges(root, roles):
    again = root.run("install", *roles, *PACKAGES)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not sh("chroot", root.path, "dpkg", "--audit").stdout
    third = root.run("install", *roles)
    assert "Install: 0 changed" in third.stdout.splitlines()[-1], third.stdout
    return again


@pytest.mark.parametrize("seed", range(4))
def test_process_group_killed_during_apt_the_next_run_says_so_then_finishes(fresh, seed):
    """kill -9 of stackboot's process group (what a supervisor without cgroups does): its
    apt-get runs on in a group of its own; a run meanwhile names it instead of failing on
    dpkg's lock, and once it ends the next run finishes the job."""
    root = fresh()
    assert sh("mount", "-t", "proc", "proc", root.file("/proc")).returncode == 0   # where holders are found
    process = root.start("install", "master", *PACKAGES)
    during_apt(root, process)
    time.sleep(random.Random(seed).uniform(0, 0.5))
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    meanwhile = root.run("install", "master", *PACKAGES)
    if meanwhile.returncode != 0:   # apt-get had not ended yet
        line = meanwhile.stderr.splitlines()[0]
        assert line.startswith("error: stackboot run (pid %d, install) was stopped, and apt-get (pid " % process.pid) \
            or line.startswith("error: stackboot run (pid %d, install) was stopped, and dpkg (pid " % process.pid), line
        assert "still holds /var/lib/stackboot/lock; wait for it to end, then run again" in line
        assert "Traceback" not in meanwhile.stderr
    root.wait_for_no(["apt-get", "dpkg", "http"])
    converges(root, ["master"])


@pytest.mark.parametrize("moment", ["dpkg-journal", 1, 2, 3])
def test_everything_killed_during_apt_the_next_run_repairs_dpkg(fresh, moment):
    """kill -9 of stackboot, apt-get and dpkg at once (a cgroup killed, the power gone), once the
    moment dpkg has begun writing its journal, then at random moments: dpkg is left half-done;
    the plan says so, and the next run repairs it (dpkg --configure -a) first."""
    root = fresh()
    process = root.start("install", "master", *PACKAGES)
    during_apt(root, process)
    if moment == "dpkg-journal":
        while not os.listdir(root.file("/var/lib/dpkg/updates")):
            assert process.poll() is None, "the install ended before dpkg's journal was seen"
    else:
        time.sleep(random.Random(moment).uniform(0, 0.6))
    kill_all(root)
    process.communicate()
    root.wait_for_no(["apt-get", "dpkg", "http"])
    half_done = bool(os.listdir(root.file("/var/lib/dpkg/updates")))
    assert half_done or moment != "dpkg-journal"
    plan = root.run("plan", "master", *PACKAGES)
    assert plan.returncode == 0, plan.stderr
    assert half_done == ("~ packages moosefs-master: finish the package install an earlier run left half-done "
                         "(dpkg --configure -a)" in plan.stdout), plan.stdout
    again = converges(root, ["master"])
    assert half_done == ('"dpkg", "--configure", "-a"' in open(root.file("/var/log/stackboot.log")).read()), again.stdout


def test_two_runs_at_once_one_waits_its_turn_and_no_role_is_lost(fresh):
    """Two first runs started together, of different roles: one takes the lock (the state
    directory made by either), the other says who holds it; run again, both roles are there."""
    root = fresh()
    first, second = root.start("install", "master", *PACKAGES), root.start("install", "cli", *PACKAGES)
    results = [first.communicate(), second.communicate()]
    codes = [first.returncode, second.returncode]
    assert 0 in codes, results
    for code, (out, err) in zip(codes, results):
        assert "Traceback" not in err and "File exists" not in err
        if code != 0:
            assert code == 1 and err.splitlines()[0].startswith("error: another stackboot run (pid "), err
            assert "holds /var/lib/stackboot/lock; wait for it to finish, then run again" in err.splitlines()[0]
    for roles, code in ((["master"], codes[0]), (["cli"], codes[1])):
        if code != 0:
            assert root.run("install", *roles, *PACKAGES).returncode == 0
    state = json.load(open(root.file("/var/lib/stackboot/state.json")))
    assert sorted(state["roles"]) == ["cli", "master"]


def test_runs_racing_on_a_new_host_never_trip_on_the_state_directory(tmp_path):
    """Many pairs of first runs at the same instant (a small profile, --root): never 'File
    exists', never a traceback; each pair leaves one run's work or both."""
    profile = tmp_path / "profiles" / "tiny.json"
    profile.parent.mkdir()
    profile.write_text(json.dumps({"description": "one file", "steps": [
        {"kind": "file", "path": "/etc/tiny.cfg", "template": "x\n"}]}))
    for pair in range(12):
        root = tmp_path / ("r%d" % pair)
        root.mkdir()
        argv = [sys.executable, os.path.join(TOP, "stackboot.py"), "--root", str(root), "--profiles", str(profile.parent),
                "install", "tiny"]
        runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
                for _ in range(2)]
        for run in runs:
            out, err = run.communicate()
            assert "Traceback" not in err and "File exists" not in err, err
            assert run.returncode == 0 or err.startswith("error: another stackboot run (pid "), err
        assert (root / "etc" / "tiny.cfg").read_text() == "x\n"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_apt_stops_after_the_step(fresh, signum):
    """One SIGINT or SIGTERM while apt-get installs: the install ends (never a half-configured
    dpkg), stackboot records it and stops there, 130 or 143, one error line."""
    root = fresh()
    process = root.start("install", "master", *PACKAGES)
    during_apt(root, process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, out + err
    assert "stopping once this step is done (again to stop now)" in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: %s after packages moosefs-master; run the same command again to finish the job"
                      % {signal.SIGINT: "interrupted (SIGINT, Ctrl-C)", signal.SIGTERM: "stopped (SIGTERM)"}[signum]], err
    assert "Traceback" not in err and err.splitlines()[-1] == "stackboot: failed (exit %d)" % (128 + signum)
    assert not set(root.processes().values()) & {"apt-get", "dpkg"}
    assert "ii " in sh("chroot", root.path, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "moosefs-master").stdout
    assert not sh("chroot", root.path, "dpkg", "--audit").stdout
    state = json.load(open(root.file("/var/lib/stackboot/state.json")))
    assert not state["intents"] and "master" in state["roles"]
    again = converges(root, ["master"])
    assert "packages moosefs-master" not in again.stdout


def test_a_second_sigint_stops_at_once_and_ends_what_it_started(fresh):
    root = fresh()
    process = root.start("install", "master", *PACKAGES)
    during_apt(root, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: packages moosefs-master: interrupted (SIGINT, Ctrl-C); run the same command again to finish the job"] \
        or process.returncode == 130 and "after packages moosefs-master" in err   # apt had just ended
    assert "Traceback" not in err
    root.wait_for_no(["apt-get", "dpkg", "http"], seconds=30)
    state = json.load(open(root.file("/var/lib/stackboot/state.json")))
    assert "master" in state["roles"]
    converges(root, ["master"])


def test_ctrl_c_at_any_moment_of_start_up_is_one_line(fresh):
    """SIGINT from the first millisecond on: never a traceback from stackboot's code; 130, or
    Python's own doing before the file's first line runs (killed by SIGINT; a traceback of its
    start-up code, which it prints and goes on from, or of compiling the file, 'line 0')."""
    root = fresh()
    for delay in [0, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15]:
        process = subprocess.Popen(["chroot", root.path, "python3", "/stackboot.py", "plan", "master"] + PACKAGES,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        frames = [line for line in err.splitlines() if line.strip().startswith('File "/stackboot.py"')]
        assert all(", line 0," in frame for frame in frames), (delay, err)   # line 0: Python compiling it
        if process.returncode == 130 or "stackboot:" in err:   # stackboot's own code had begun
            assert err.splitlines()[-1] in ("stackboot: failed (exit 130)", "stackboot: done (exit 0)"), (delay, err)
            assert process.returncode in (130, 0)
        else:   # Python's own start-up: killed by SIGINT, or a message of its own (site, __main__'s loader)
            assert process.returncode in (-signal.SIGINT, 1), (delay, err)
            assert not [line for line in err.splitlines() if line.startswith("error:")], (delay, err)


# --- a full filesystem -----------------------------------------------------------------------

def small_filesystem(root, path, size):
    """A tmpfs of `size` mounted at `path` in the root, filled but for a few bytes."""
    full = root.file(path)
    os.makedirs(full, exist_ok=True)
    assert sh("mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", full).returncode == 0
    with open(os.path.join(full, ".filler"), "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 512)
        except OSError:
            pass
    return full


def give_space(full):
    os.unlink(os.path.join(full, ".filler"))


def unmount(full):
    sh("umount", full)


@pytest.mark.parametrize("where, names", [
    ("/etc/mfs", "/etc/mfs/mfsmaster.cfg (write)"),
    ("/var/lib/stackboot", "/var/lib/stackboot/lock (lock)"),
])
def test_a_full_filesystem_is_one_line_naming_it_and_the_next_run_with_space_finishes(fresh, where, names):
    root = fresh()
    full = small_filesystem(root, where, "64k")
    try:
        failed = root.run("install", "master", *PACKAGES)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "no space left on the filesystem holding %s" % names in errors[0], failed.stderr
        assert "free some space there, then run again" in errors[0] and "Traceback" not in failed.stderr
        assert [name for name in os.listdir(full) if name != ".filler"] == ([] if where == "/etc/mfs" else ["lock"])
        give_space(full)
        converges(root, ["master"])
    finally:
        root.wait_for_no(["apt-get", "dpkg"])
        kill_all(root)   # the master, before its config's filesystem goes
        root.wait_for_no(list(DAEMONS))
        unmount(full)


def test_a_package_that_does_not_fit_fails_on_one_line_and_is_finished_later(fresh):
    """dpkg runs out of space unpacking (its documentation goes to a full filesystem): the one
    line is dpkg's own 'No space left' with where, and the next run with space installs."""
    root = fresh()
    full = small_filesystem(root, "/usr/share/doc", "256k")
    try:
        failed = root.run("install", "master", *PACKAGES)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0], failed.stderr
        assert errors[0].endswith("; free some space there, then run again (the next run finishes the job)")
        give_space(full)
        converges(root, ["master"])
    finally:
        root.wait_for_no(["apt-get", "dpkg"])
        kill_all(root)
        root.wait_for_no(list(DAEMONS))
        unmount(full)


# --- a btrfs store on a loop image -----------------------------------------------------------

STORE = ["--set", "store_image=/srv/store.img", "--set", "store_size=300MiB", "--set", "store_mount=/srv/store",
         "--set", "store_subvolumes=/srv/store/a,/srv/store/b 100MiB"]


def with_devices(root):
    """mkfs and loop mounts need the host's /dev and a /proc (rslave: unmounts stay in the root);
    its mounts must outlive each run, so no namespace (a store has no daemon listening)."""
    root.netns = None
    assert sh("mount", "--rbind", "/dev", root.file("/dev")).returncode == 0
    sh("mount", "--make-rslave", root.file("/dev"))
    assert sh("mount", "-t", "proc", "proc", root.file("/proc")).returncode == 0
    return root


def store_picture(root):
    state = json.load(open(root.file("/var/lib/stackboot/state.json")))
    for record in state["roles"].values():
        record.pop("installed")
    state["digests"] = sorted(state["digests"])
    mounts = [line.split(" - ")[1].split()[0] for line in open("/proc/self/mountinfo")
              if line.split()[4] == root.file("/srv/store")]
    subvolumes = dict((name, os.stat(root.file("/srv/store/" + name)).st_ino if os.path.exists(root.file("/srv/store/" + name))
                       else None) for name in ("a", "b"))
    show = sh("chroot", root.path, "btrfs", "qgroup", "show", "-re", "--raw", "-f", "/srv/store/b").stdout
    limit = [line.split()[3] for line in show.splitlines() if line.startswith("0/")]   # Max referenced
    return {"state": state, "fstab": open(root.file("/etc/fstab")).read(), "mounts": mounts, "subvolumes": subvolumes,
            "image": os.stat(root.file("/srv/store.img")).st_size, "limit": limit,
            "left": sorted(name for name in os.listdir(root.file("/srv")) if name.startswith("."))}


def test_a_btrfs_store_killed_before_each_operation_is_finished_and_remembered_as_made(fresh):
    """Lost records of what stackboot made, a 0-byte image: the filesystem and the subvolumes
    a killed run made are recorded by the next (so --purge-data still removes them), and no
    image is ever left unsized."""
    reference = with_devices(fresh("reference"))
    done = reference.run("install", "btrfs-store", *STORE)
    assert done.returncode == 0, done.stdout + done.stderr
    ops = operations(reference)
    wanted = store_picture(reference)
    assert wanted["mounts"] == ["btrfs"] and wanted["subvolumes"] == {"a": 256, "b": 256}
    assert wanted["limit"] == ["104857600"] and len(wanted["state"]["made"]) == 3, wanted["state"]["made"]
    reference.remove()
    for k in range(len(ops)):
        root = with_devices(fresh("trial-%d" % k))
        try:
            killed = root.run("install", "btrfs-store", *STORE, kill_at=k)
            assert killed.returncode == -signal.SIGKILL, "never reached %d (%s): %s" % (k, ops[k], killed.stderr)
            if os.path.exists(root.file("/srv/store.img")):
                assert os.stat(root.file("/srv/store.img")).st_size == 300 << 20, "killed before %s: image unsized" % ops[k]
            second = root.run("install", "btrfs-store", *STORE)
            assert second.returncode == 0, "killed before %s (%d): %s" % (ops[k], k, second.stdout + second.stderr)
            got = store_picture(root)
            for key in wanted:
                assert got[key] == wanted[key], "killed before %s (%d): %s differ\n%s" % (ops[k], k, key, second.stdout)
            third = root.run("install", "btrfs-store")
            assert "Install: 0 changed" in third.stdout.splitlines()[-1], third.stdout
        finally:
            root.remove()
    sys.stderr.write("btrfs-store: %d operations, every one a kill point\n" % len(ops))
