"""The engine's shape, proven: every command gets its steps from make_plan, the one Plan function,
and `plan` changes nothing even when something tries (every low-level mutator raises)."""

import builtins
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile

import pytest

import stackboot
from conftest import TESTS, FakeTools, RecordingRunner, run_main, write_profile

HOSTS = os.path.join(TESTS, "fixtures", "hosts")


class MutationDuringPlan(BaseException):
    """Not an Exception: nothing in stackboot may catch it and carry on."""


def guard_mutators(monkeypatch):
    """Every way Python changes a file, a directory or a process, made to raise."""
    def refuse(name):
        def refused(*args, **kwargs):
            raise MutationDuringPlan("%s%r" % (name, args[:2]))
        return refused
    for name in ("chown", "lchown", "fchown", "chmod", "fchmod", "makedirs", "mkdir", "unlink", "remove", "rename",
                 "replace", "rmdir", "symlink", "link", "truncate", "ftruncate", "utime", "chroot"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse("os." + name))
    for name in ("rmtree", "copy", "copy2", "copyfile", "copytree", "move"):
        monkeypatch.setattr(shutil, name, refuse("shutil." + name))
    monkeypatch.setattr(tarfile.TarFile, "extractall", refuse("extractall"))
    real_kill, real_open, real_os_open = os.kill, builtins.open, os.open

    def kill(pid, sig):
        if sig != 0:   # signal 0 only asks whether a process is alive
            raise MutationDuringPlan("os.kill(%d, %d)" % (pid, sig))
        return real_kill(pid, sig)

    def open_(file, mode="r", *args, **kwargs):
        if set(mode) & set("wax+"):
            raise MutationDuringPlan("open(%r, %r)" % (file, mode))
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            raise MutationDuringPlan("os.open(%r)" % path)
        return real_os_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)


def fixture_root(tmp_path, host):
    """A root with the host fixture's os-release and binaries, as detect_facts reads them."""
    with open(os.path.join(HOSTS, host, "host.json")) as handle:
        spec = json.load(handle)
    root = tmp_path / host
    (root / "etc").mkdir(parents=True)
    shutil.copyfile(os.path.join(HOSTS, host, "os-release"), str(root / "etc" / "os-release"))
    for binary in spec["binaries"]:
        path = root / binary.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    if spec.get("systemd_running"):
        (root / "run" / "systemd" / "system").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "fstab").write_text("# fstab\n")
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "mountinfo").write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    return str(root), (spec["system"], spec["machine"])


# What each role needs to plan at all (the rest is each role's defaults).
ROLE_SETS = {
    "zfs-store": ["zfs_pool=tank"],
    "cvmfs-server": ["repositories=sw.example.org", "cvmfs_release=false"],
    "cvmfs-client": ["client_repositories=sw.example.org " + "a" * 64, "http_proxy=DIRECT", "cvmfs_release=false"],
    "cvmfs-publish": ["repository=sw.example.org", "source=/srv/site"],
    "cvmfs-common": ["cvmfs_release=false"],
}
ROLES = sorted(name for name in stackboot.EMBEDDED_PROFILES)
PLAN_CASES = [(host, role, []) for host in sorted(os.listdir(HOSTS)) for role in ROLES] + \
             [(host, role, ["method=packages", "repo_key_sha256=" + "b" * 64]) for host in ("freebsd-14", "rocky-9", "ubuntu-24.04", "debian-12")
              for role in ("master", "metalogger", "chunkserver", "client", "gui", "cli")]


@pytest.mark.parametrize("host,role,sets", PLAN_CASES, ids=["%s-%s%s" % (h, r, "-packages" if s else "") for h, r, s in PLAN_CASES])
def test_plan_changes_nothing_even_when_it_tries(tmp_path, monkeypatch, host, role, sets):
    """`plan` for every built-in role on every host fixture, with every mutator raising: it
    must succeed (or refuse a role the platform lacks, as bad input) without touching anything."""
    root, uname = fixture_root(tmp_path, host)
    argv = ["--root", root, "plan", role] + [item for pair in (("--set", s) for s in ROLE_SETS.get(role, []) + sets) for item in pair]
    runner = RecordingRunner(root, FakeTools(root))
    guard_mutators(monkeypatch)
    code, out, err = run_main(argv, runner, uname)
    monkeypatch.undo()
    assert code in (0, 64), err
    if code == 64:
        assert "supports only" in err or "cannot run on" in err or "no package manager" in err, err
    else:
        assert out.splitlines()[-1].startswith("Plan: ")
    assert runner.changes() == [] and runner.counts["change"] == 0


# -- every command gets its steps from make_plan ------------------------------------------

WIDGET = {
    "description": "a test role: a downloaded file, a config and a data directory",
    "parameters": {
        "greeting": {"type": "string", "default": "hello"},
        "token": {"type": "text", "default": "", "secret": True},
        "artifact_url": {"type": "url"},
        "artifact_sha256": {"type": "sha256"},
    },
    "recover": {"evidence": ["/srv/widget/data/*"], "replaces": [],
                "steps": [{"kind": "ownership", "path": "/srv/widget/data", "owner": "root", "group": "root"}]},
    "steps": [
        {"kind": "download", "url": "{{artifact_url}}", "sha256": "{{artifact_sha256}}", "dest": "/srv/widget/widget.tar"},
        {"kind": "directory", "path": "/srv/widget/data", "mode": "0750", "data": True},
        {"kind": "file", "id": "widget.cfg", "path": "/etc/widget.cfg", "settings": {"GREETING": "{{greeting}}"}},
        {"kind": "file", "path": "/etc/widget.token", "template": "{{token}}\n", "mode": "0600", "secret": True},
    ],
}


@pytest.fixture
def widget(tmp_path, plan_spy):
    """A root with the widget role in a test library and a file:// artifact; plan_spy fails the
    test when a command's steps do not come from make_plan."""
    artifact = tmp_path / "widget.tar"
    artifact.write_bytes(b"widget artifact\n")
    root, uname = fixture_root(tmp_path, "debian-12")
    (tmp_path / "debian-12" / "var" / "lib" / "apt" / "lists").mkdir(parents=True)
    profiles = str(tmp_path / "profiles")
    write_profile(profiles, "widget", WIDGET)

    class Widget:
        sets = ["--set", "artifact_url=file://" + str(artifact),
                "--set", "artifact_sha256=" + hashlib.sha256(artifact.read_bytes()).hexdigest(), "--set", "token=t0ps3cret"]

        def __init__(self):
            self.root, self.made, self.tools = root, plan_spy, FakeTools(root)

        def main(self, *argv):
            del plan_spy[:]
            return run_main(["--root", root, "--profiles", profiles] + list(argv), RecordingRunner(root, self.tools), uname)

        def roles_planned(self):
            return [list(plan.roles) for plan in plan_spy]
    return Widget()


def test_plan_install_check_and_uninstall_take_make_plans_steps(widget):
    code, out, err = widget.main("plan", "widget", *widget.sets)
    assert code == 0, err
    assert widget.roles_planned() == [["widget"]]
    assert "+ download file://" in out and "+ file /etc/widget.cfg: create" in out and "t0ps3cret" not in out
    code, out, err = widget.main("install", "widget", *widget.sets)
    assert code == 0 and out.splitlines()[-1] == "Install: 4 changed, 0 already right.", out + err
    assert widget.roles_planned() == [["widget"]]
    code, out, err = widget.main("check")
    assert code == 0 and widget.roles_planned() == [["widget"]], err
    code, out, err = widget.main("uninstall", "widget")
    assert code == 0 and out.splitlines()[-1].startswith("Uninstall: "), out + err
    assert widget.roles_planned() == [["widget"]]
    assert not os.path.exists(os.path.join(widget.root, "etc/widget.cfg"))


def test_recover_plans_the_role_with_its_recover_steps_first(widget):
    assert widget.main("install", "widget", *widget.sets)[0] == 0
    data = os.path.join(widget.root, "srv/widget/data")
    with open(os.path.join(data, "restored"), "w") as handle:
        handle.write("a backup copied in by hand\n")
    os.chown(os.path.join(data, "restored"), 4242, 4242)
    code, out, err = widget.main("recover", "widget")
    assert code == 0, out + err
    assert "  found /srv/widget/data/restored (" in out
    assert "~ ownership /srv/widget/data: restored -> root:root" in out and out.splitlines()[-1].startswith("Recover: ")
    assert widget.roles_planned() == [["widget"]]
    assert os.stat(os.path.join(data, "restored")).st_uid == 0
    # the plan command does not recover: its plan has no recover steps
    assert "ownership" not in widget.main("plan", "widget")[1]


def test_bundle_and_cloud_init_take_their_roles_from_make_plan(widget, tmp_path):
    output = str(tmp_path / "widget.pyz")
    code, out, err = widget.main("bundle", "widget", "-o", output, *widget.sets)
    assert code == 0, out + err
    assert widget.roles_planned() == [["widget"]]
    download = [step for step in widget.made[0].steps if step.kind == "download"][0]
    with zipfile.ZipFile(output) as zipped:
        assert sorted(name for name in zipped.namelist() if name.startswith("artifacts/")) == ["artifacts/" + download.args["sha256"]]
        assert json.loads(zipped.read("bundle.json").decode())["parameters"]["token"] == "t0ps3cret"   # the bundle needs it
        assert (zipped.getinfo("bundle.json").external_attr >> 16) & 0o777 == 0o600
    assert os.stat(output).st_mode & 0o777 == 0o600 and "secret values of token" in out
    assert "t0ps3cret" not in out + err
    code, out, err = widget.main("cloud-init", "widget", *widget.sets)
    assert code == 0, err
    assert widget.roles_planned() == [["widget"]]
    body = json.loads(out.split("\n", 2)[2])
    site = json.loads(body["write_files"][0]["content"])["parameters"]
    assert sorted(site) == ["artifact_sha256", "artifact_url", "token"] and body["runcmd"][-1][-2:] == ["install", "widget"]
    code, out, err = widget.main("cloud-init", "widget", "--set", "greeting=a b;c")   # checked by the same plan
    assert code == 64 and "parameter greeting (from --set)" in err


def test_self_install_is_a_plan_too(widget):
    widget.tools.on(lambda argv: argv[:3] == ["python3", "-m", "py_compile"], lambda argv: (0, "", ""))
    code, out, err = run_main(["--root", widget.root, "self-install"], RecordingRunner(widget.root, widget.tools), ("Linux", "x86_64"))
    assert code == 0, out + err
    assert "+ file /usr/local/lib/stackboot/stackboot.py: create" in out and "(content not shown)" not in out
    assert "+ command python3 -m py_compile /usr/local/lib/stackboot/stackboot.py" in out
    with open(os.path.join(widget.root, "usr/local/lib/stackboot/stackboot.py"), "rb") as handle, \
            open(stackboot.__file__, "rb") as original:
        assert handle.read() == original.read()
    launcher = os.path.join(widget.root, "usr/local/sbin/stackboot")
    assert os.stat(launcher).st_mode & 0o777 == 0o755
    code, out, err = run_main(["--root", widget.root, "self-install"], RecordingRunner(widget.root, widget.tools), ("Linux", "x86_64"))
    assert code == 0 and out.splitlines()[-2] == "Self-install: 0 changed, 4 already right.", out


LAB_ROLE = {
    "description": "a lab test role: software on the host, a file in the node's own directory",
    "parameters": {"motd": {"type": "string", "default": "hi"}},
    "overlays": {"lab": {"motd": "lab {{facts.address}}"}},
    "steps": [
        {"kind": "packages", "names": ["widget-tools"]},
        {"kind": "directory", "path": "{{facts.lab}}/etc", "mode": "0755"},
        {"kind": "file", "path": "{{facts.lab}}/etc/motd", "template": "{{motd}}\n"},
    ],
}


@pytest.mark.root
def test_lab_up_status_down_destroy_take_make_plans_steps(tmp_path, monkeypatch, plan_spy):
    """The lab's network and home are plans from make_plan too (fake `ip` and `nsenter`)."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nsenter"):
        pytest.skip("lab needs root, ip and nsenter")
    monkeypatch.setattr(stackboot, "STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(stackboot, "LOG_FILE", str(tmp_path / "stackboot.log"))
    made = plan_spy
    profiles = str(tmp_path / "profiles")
    write_profile(profiles, "tiny", LAB_ROLE)
    base = tempfile.mkdtemp(prefix="stackboot-lab-", dir="/var/tmp")
    try:
        os.chmod(base, 0o755)
        cluster = os.path.join(base, "fk.json")
        with open(cluster, "w") as handle:
            json.dump({"subnet": "10.251.77.0/24", "nodes": {
                "one": {"address": "10.251.77.10", "roles": ["tiny"]},
                "two": {"address": "10.251.77.11", "roles": ["tiny"], "parameters": {"motd": "second"}}}}, handle)
        labdir = os.path.join(base, "fk")
        tools = FakeTools("/")

        def main(*argv):
            return run_main(["--profiles", profiles] + list(argv), RecordingRunner("/", tools), None)
        code, out, err = main("lab", "up", cluster, "--dir", labdir)
        assert code == 0, out + err
        assert sorted(tools.netns) == ["sb-fk-one", "sb-fk-switch", "sb-fk-two"]
        assert tools.links["sb-fk"]["addresses"] == ["10.251.77.1/24"] and tools.netns["sb-fk-switch"]["uplink"]["master"] == "br0"
        assert tools.netns["sb-fk-two"]["eth0"]["addresses"] == ["10.251.77.11/24"]
        assert tools.installed == {"widget-tools": "1.0-1"}
        with open(os.path.join(labdir, "nodes/one/etc/motd")) as handle:
            assert handle.read() == "lab 10.251.77.10\n"
        with open(os.path.join(labdir, "nodes/two/etc/motd")) as handle:
            assert handle.read() == "second\n"
        assert json.load(open(os.path.join(labdir, "lab.json")))["status"] == "up"
        assert set(tuple(plan.roles) for plan in made) >= {("lab-home",), ("lab-network",), ("tiny",)}
        code, out, err = main("lab", "up", cluster, "--dir", labdir)
        assert code == 0 and out.splitlines()[-1].endswith("; 0 changed."), out + err
        code, out, err = main("lab", "status", "--dir", labdir)
        assert code == 0 and "  one  10.251.77.10    tiny" in out, out + err
        code, out, err = main("lab", "down", "--dir", labdir)
        assert code == 0 and tools.netns == {} and "sb-fk" not in tools.links, out + err
        assert json.load(open(os.path.join(labdir, "lab.json")))["status"] == "down"
        assert os.path.exists(os.path.join(labdir, "nodes/one/etc/motd"))   # down keeps the data
        code, out, err = main("lab", "destroy", "--dir", labdir)
        assert code == 0 and not os.path.exists(labdir), out + err
        state = json.load(open(str(tmp_path / "state" / "state.json")))
        assert not any(path.startswith(labdir) for path in state["files"])   # destroy forgets what it removed
        assert stat.S_ISDIR(os.stat(base).st_mode)
    finally:
        shutil.rmtree(base, ignore_errors=True)
