"""Interrupted anywhere, the next run finishes the job: a fault-injection harness.

An install of a profile with a step of nearly every kind runs once against a fake host (pyfakefs
and the stateful fake tools), recording every change it makes: each host operation (a file, a
directory, an owner, a mode, a removal, a state save) and each mutating command. Then, for every
operation k in turn, a fresh host gets the same install killed right before operation k (a
BaseException, as kill -9 leaves things: nothing after it runs, no cleanup), and a second run.
The host (every path, mode, owner and content), the fake tools' state (packages, units, mounts,
pools), stackboot's state (records, pending restarts, no open intent) and what each service runs
with must equal the uninterrupted run's; a third run changes nothing. The same for an upgrade
(a changed config) killed at every point: the service must end up running the new config.
"""

import hashlib
import io
import json
import os
import re

import pytest
from pyfakefs.fake_filesystem_unittest import Patcher

import stackboot
from conftest import DEBIAN, FakeTools, RecordingRunner, library_of, plan_of

BUILD = "/srv/src/widget.tar"


class Killed(BaseException):
    """What kill -9 leaves: the run stops here, nothing after it runs."""


class KillingRunner(RecordingRunner):
    """Counts every change, a host operation or a mutating command; dies before number `kill_at`."""

    def __init__(self, root, tools, kill_at=None):
        RecordingRunner.__init__(self, root, tools)
        self.kill_at, self.ops = kill_at, []

    def tick(self, what):
        if self.kill_at is not None and len(self.ops) == self.kill_at:
            raise Killed(what)
        self.ops.append(what)

    def permit(self, op, path, **detail):
        RecordingRunner.permit(self, op, path, **detail)
        self.tick("%s %s" % (op, path))

    def run(self, argv, change=False, **kwargs):
        if change:
            if not self.allow_changes:
                raise stackboot.StackbootError("refused")
            self.tick(" ".join(str(part) for part in argv))
        return RecordingRunner.run(self, argv, change=change, **kwargs)


def profile(version):
    return {"description": "a step of nearly every kind", "parameters": {"x": {"type": "int", "default": version}},
            "steps": [
                {"kind": "packages", "names": ["widget-tools"]},
                {"kind": "repository", "name": "widgets", "url": "http://repo.example.org/apt", "suite": "stable",
                 "components": ["main"], "key": "KEY\n"},
                {"kind": "group", "name": "widget"},
                {"kind": "user", "name": "widget", "group": "widget", "home": "/srv/widget"},
                {"kind": "directory", "path": "/srv/widget", "owner": "widget", "group": "widget", "mode": "0750", "data": True},
                {"kind": "file", "id": "cfg", "path": "/etc/widget.cfg", "settings": {"X": "{{x}}", "NAME": "widget"}},
                {"kind": "file", "path": "/etc/widget.secret", "template": "token={{x}}\n", "mode": "0600", "secret": True},
                {"kind": "line", "path": "/etc/hosts", "line": "10.0.0.1 widgets"},
                {"kind": "download", "id": "tarball", "url": "file://" + BUILD, "sha256": hashlib.sha256(tarball()).hexdigest(),
                 "dest": "/var/cache/widget.tar"},
                {"kind": "host-name", "name": "widget-master", "address": "10.9.9.%d" % version},
                {"kind": "moosefs-upgrade", "data_path": "/srv/widget", "version": str(version), "backups": "/srv/widget.backups"},
                {"kind": "build", "name": "widget", "archive": "/var/cache/widget.tar", "version": str(version),
                 "configure": ["--prefix=/usr"], "replaces": ["widget-pkg"]},
                {"kind": "moosefs-metadata", "data_path": "/srv/widget", "empty": "/usr/share/widget/metadata.mfs.empty",
                 "owner": "widget", "group": "widget", "version": str(version)},
                {"kind": "zfs-pool", "name": "tank"},
                {"kind": "zfs-dataset", "name": "tank/widget", "properties": {"mountpoint": "/srv/tank-widget", "atime": "off"}},
                {"kind": "mount", "path": "/mnt/widget", "device": "widgets:/", "fstype": "nfs", "options": ["defaults"]},
                {"kind": "command", "argv": ["/usr/bin/widget-init"], "creates": "/srv/widget/.initialised"},
                {"kind": "require", "path": "/usr/share/widget/metadata.mfs.empty", "fix": "install widget-data"},
                {"kind": "dnf-repo", "names": ["widget-extras"]},
                {"kind": "selinux-context", "path": "/srv/widget", "type": "widget_data_t"},
                {"kind": "firewall", "ports": ["9%d00/tcp" % version], "label": "widget"},
                {"kind": "service", "name": "widget", "restart_on": ["cfg", "build:widget"]},
            ]}


def tarball():
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("widget-1/configure")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"#!\n"))
    return buffer.getvalue()


def fake_host(fs):
    fs.create_file("/etc/passwd", contents="root:x:0:0:root:/root:/bin/sh\n")
    fs.create_file("/etc/group", contents="root:x:0:\n")
    fs.create_file("/etc/hosts", contents="127.0.0.1 localhost\n")
    fs.create_file("/etc/fstab", contents="# fstab\n")
    fs.create_file("/proc/self/mountinfo", contents="22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    fs.create_dir("/var/lib/apt/lists")
    fs.create_file("/var/lib/apt/lists/deb_Packages")
    fs.create_file(BUILD, contents=tarball())
    fs.create_file("/usr/share/widget/metadata.mfs.empty", contents="MFSM NEW")
    fs.create_file("/etc/yum.repos.d/widget.repo", contents="[widget-extras]\nname=extras\nenabled=0\n")
    fs.create_file("/etc/ufw/ufw.conf", contents="ENABLED=yes\n")
    fs.create_file("/etc/ufw/user.rules", contents="*filter\nCOMMIT\n")
    tools = FakeTools("/")
    tools.package_files["widget-pkg"] = {"/usr/bin/widget": "widget packaged\n"}
    tools.tool_apt_get(["install", "widget-pkg"])   # the distribution's build of it: the build replaces it
    tools.pools.add("tank")
    tools.datasets["tank"] = {}

    def staged_install(argv):   # `make install DESTDIR=STAGE`, as the widget's Makefile would
        stage = argv[2][len("DESTDIR="):]
        os.makedirs(stage + "/usr/bin", exist_ok=True)
        with open(stage + "/usr/bin/widget", "w") as handle:
            handle.write("widget built\n")
        return 0, "", ""

    def initialise(argv):
        with open("/srv/widget/.initialised", "w") as handle:
            handle.write("yes\n")
        return 0, "", ""
    tools.on(lambda argv: argv[:2] == ["make", "install"], staged_install)
    tools.on(lambda argv: argv[0] in ("./configure", "make"), lambda argv: (0, "", ""))
    tools.on(lambda argv: argv[0] == "/usr/bin/widget-init", initialise)
    seen = tools.tool_systemctl

    def systemctl(args):   # what the daemon runs with: the config it read when it (re)started
        if args[0] in ("start", "restart"):
            unit = tools.units.setdefault(args[1], {"enabled": False, "active": False, "restarts": 0})
            unit["config"] = open("/etc/widget.cfg").read() if os.path.exists("/etc/widget.cfg") else None
        return seen(args)
    tools.tool_systemctl = systemctl
    return tools


def install(tools, version, kill_at=None):
    """One install run; the runner that counted (and maybe killed) it."""
    plan = plan_of(library_of(widget=profile(version)), ["widget"], DEBIAN)
    runner = KillingRunner("/", tools, kill_at)
    run = stackboot.Run(stackboot.Host("/", runner, DEBIAN), DEBIAN, stackboot.Output(io.StringIO()))
    try:
        outcome = stackboot.converge(run, [plan])
    except Killed:
        return runner, None
    return runner, outcome


def picture(tools):
    """Everything an interrupted run could get wrong, as one comparable value."""
    tree = {}
    for directory, dirs, files in os.walk("/"):
        if directory.startswith(("/proc", "/var/log")):
            continue
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            if name == "lock" or stackboot.TEMP_MARK in name:
                continue
            st = os.lstat(path)
            content = open(path, "rb").read() if os.path.isfile(path) and path != "/var/lib/stackboot/state.json" else None
            # a metadata copy is named by the time of its run: a killed run's copy and the next one's are two copies
            tree[re.sub(r"^/srv/widget\.backups/[0-9TZ]+-", "/srv/widget.backups/COPY-", path)] = (st.st_mode, st.st_uid, st.st_gid, content)
    state = json.load(open("/var/lib/stackboot/state.json"))
    for record in state["roles"].values():
        record.pop("installed")
    state["digests"] = dict((path, digest) for path, (stamp, digest) in state["digests"].items())   # mtimes differ
    units = dict((unit, (info["enabled"], info["active"], info.get("config"))) for unit, info in tools.units.items())
    mounts = sorted(line.split()[4] for line in open("/proc/self/mountinfo"))
    return {"tree": tree, "state": state, "packages": tools.installed, "units": units, "mounts": mounts,
            "datasets": tools.datasets}


def uninterrupted(version_before=None):
    with Patcher() as patcher:
        tools = fake_host(patcher.fs)
        if version_before is not None:
            install(tools, version_before)
        runner, outcome = install(tools, 2)
        assert outcome is not None
        return runner.ops, picture(tools)


def test_the_install_is_all_kinds():
    kinds = set(step["kind"] for step in profile(1)["steps"])
    assert kinds >= set(stackboot.STEP_KINDS) - {"btrfs-filesystem", "btrfs-subvolume", "cvmfs-repository", "cvmfs-publish",
                                                 "ownership", "netns", "veth"}


@pytest.mark.parametrize("before", [None, 1], ids=["first-install", "upgrade"])
def test_killed_before_any_operation_the_next_run_finishes_the_job(before):
    ops, wanted = uninterrupted(before)
    assert wanted["units"]["widget.service"][2] == "X = 2\nNAME = widget\n"
    assert len(ops) > (40 if before is None else 15)   # every step's every change, and the state saves between them
    for k in range(len(ops)):
        with Patcher() as patcher:
            tools = fake_host(patcher.fs)
            if before is not None:
                install(tools, before)
            runner, outcome = install(tools, 2, kill_at=k)
            assert outcome is None, "never reached %d: %s" % (k, ops[k])
            second, outcome = install(tools, 2)
            assert outcome is not None
            got = picture(tools)
            assert not got["state"].get("intents"), "killed before %s: an intent stays open" % ops[k]
            for key in wanted:
                assert got[key] == wanted[key], "killed before %s (%d): %s differ" % (ops[k], k, key)
            third, outcome = install(tools, 2)
            assert outcome.changed == 0 and third.changes() == [], "killed before %s: not converged" % ops[k]


def test_the_plan_shows_what_an_interrupted_run_left_to_finish():
    """Killed after the config was written, before it was recorded: nothing is left to change
    in the file, but the plan shows the unfinished intent (the record, the restart owed), and
    the next install finishes it: the restart happens, the intent closes."""
    ops, _ = uninterrupted()
    k = ops.index("write /etc/widget.cfg") + 1
    assert ops[k] == "write /var/lib/stackboot/state.json"
    with Patcher() as patcher:
        tools = fake_host(patcher.fs)
        install(tools, 2, kill_at=k)
        assert open("/etc/widget.cfg").read() == "X = 2\nNAME = widget\n"
        plan = plan_of(library_of(widget=profile(2)), ["widget"], DEBIAN)
        run = stackboot.Run(stackboot.Host("/", RecordingRunner("/", tools), DEBIAN), DEBIAN, stackboot.Output(io.StringIO()))
        lines = ["%s %s: %s" % (change.symbol, step.describe(), change.summary)
                 for _, step, changes in stackboot.assess(run, [plan]) for change in stackboot.real_changes(changes)]
        assert "~ file /etc/widget.cfg: finish what an interrupted run began (write)" in lines, lines
        runner, outcome = install(tools, 2)
        assert tools.units["widget.service"]["active"] and tools.units["widget.service"]["config"] == "X = 2\nNAME = widget\n"
        state = json.load(open("/var/lib/stackboot/state.json"))
        assert not state["intents"] and "/etc/widget.cfg" in state["files"]
