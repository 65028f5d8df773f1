"""Every step kind: check, plan line, apply, verify, and idempotency (pyfakefs + fake tools)."""

import io
import os
import re

import pytest

import stackboot
from conftest import DEBIAN, FREEBSD, ROCKY, FakeTools, RecordingRunner, library_of, plan_of


class Harness:
    """One profile, run through the real engine (make_plan, assess, converge) against a fake host."""

    def __init__(self, steps, facts=DEBIAN, parameters=None, sets=(), tools=None, force=False, goal="present"):
        self.facts = facts
        self.tools = tools or FakeTools("/")
        self.data = {"description": "test", "parameters": parameters or {}, "steps": steps}
        self.sets = list(sets)
        self.force = force
        self.goal = goal

    def run(self):
        plan = plan_of(library_of(t=self.data), ["t"], self.facts, self.sets, self.goal)
        self.runner = RecordingRunner("/", self.tools)
        host = stackboot.Host("/", self.runner, self.facts)
        self.output = io.StringIO()
        run = stackboot.Run(host, self.facts, stackboot.Output(self.output), force=self.force)
        return run, plan

    def assessed(self):
        run, plan = self.run()
        return [(step, changes) for _, step, changes in stackboot.assess(run, [plan])]

    def plan(self):
        return ["%s %s: %s" % (c.symbol, s.describe(), c.summary) for s, cs in self.assessed() for c in stackboot.real_changes(cs)]

    def notes(self):
        return [c.summary for _, cs in self.assessed() for c in cs if c.symbol == "="]

    def apply(self):
        run, plan = self.run()
        outcome = stackboot.converge(run, [plan])
        return outcome.changed, outcome.right

    def converge(self):
        """Apply, then prove the second run finds nothing to do and runs no mutating command."""
        changed, right = self.apply()
        first_changes = self.runner.changes()
        assert self.plan() == []
        changed2, right2 = self.apply()
        assert (changed2, self.runner.changes()) == (0, [])
        return first_changes


@pytest.fixture
def fakefs(fs):
    fs.create_file("/etc/passwd", contents="root:x:0:0:root:/root:/bin/bash\n")
    fs.create_file("/etc/group", contents="root:x:0:\n")
    fs.create_dir("/var/lib/apt/lists")
    fs.create_file("/var/lib/apt/lists/deb_Packages")
    return fs


# -- packages -------------------------------------------------------------------------------

def test_packages_plan_apply_idempotent(fakefs):
    h = Harness([{"kind": "packages", "names": ["a", "b"]}])
    h.tools.installed["a"] = "1"
    assert h.plan() == ["+ packages a b: install b"]
    changes = h.converge()
    assert changes == [["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "b"]]


def test_packages_are_queried_in_one_batch(fakefs):
    h = Harness([{"kind": "packages", "names": ["a"]}, {"kind": "packages", "names": ["b", "c"]}])
    h.tools.installed.update(a="1", b="1", c="1")
    assert h.plan() == []
    assert h.runner.probes() == [["dpkg-query", "-W", "-f=${Package}\\t${db:Status-Abbrev}\\t${Version}\\n", "a", "b", "c"]]


@pytest.mark.parametrize("facts,expected", [
    (ROCKY, ["dnf", "install", "-y", "x"]),
    (dict(ROCKY, package_manager="yum"), ["yum", "install", "-y", "x"]),
    (FREEBSD, ["pkg", "install", "-y", "x"]),
])
def test_packages_other_managers(fakefs, facts, expected):
    h = Harness([{"kind": "packages", "names": ["x"]}], facts=facts)
    assert h.converge() == [expected]


def test_packages_apt_updates_when_lists_are_empty(fakefs):
    os.unlink("/var/lib/apt/lists/deb_Packages")
    h = Harness([{"kind": "packages", "names": ["x"]}])
    assert h.converge()[0] == ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "update"]


def test_a_half_done_dpkg_is_shown_and_finished_before_installing(fakefs):
    """Killed in the middle of an install, dpkg leaves its journal; the plan says so and the
    run repairs it before anything else; apt-get inherits stackboot's lock, dpkg (whose maintainer
    scripts may start a daemon) does not."""
    fakefs.create_file("/var/lib/dpkg/updates/0001")
    h = Harness([{"kind": "packages", "names": ["x"]}])
    assert h.plan() == ["~ packages x: finish the package install an earlier run left half-done (dpkg --configure -a)",
                        "+ packages x: install x"]
    h.apply()
    assert h.runner.changes() == [["dpkg", "--configure", "-a"],
                                  ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "x"]]
    holders = dict((argv[0], inherit) for argv, inherit in h.runner.inherited if argv[0] in ("dpkg", "apt-get"))
    assert holders["apt-get"] and not holders["dpkg"], "apt-get alone runs with the lock's descriptor"
    assert os.listdir("/var/lib/dpkg/updates") == [] and h.plan() == []


def test_a_half_done_dpkg_alone_is_repaired_with_the_packages_installed(fakefs):
    fakefs.create_file("/var/lib/dpkg/updates/0001")
    h = Harness([{"kind": "packages", "names": ["x"]}])
    h.tools.installed["x"] = "1.0-1"
    assert h.plan() == ["~ packages x: finish the package install an earlier run left half-done (dpkg --configure -a)"]
    assert h.converge() == [["dpkg", "--configure", "-a"]]


def test_a_yum_transaction_left_unfinished_is_completed_first(fakefs):
    fakefs.create_file("/var/lib/yum/transaction-all.2026-11-29.12:00.01")
    centos = dict(ROCKY, package_manager="yum", major="7", version="7.9")
    h = Harness([{"kind": "packages", "names": ["x"]}], facts=centos)
    assert h.plan()[0] == "~ packages x: finish the package install an earlier run left half-done (yum-complete-transaction -y)"
    assert h.converge()[:2] == [["yum-complete-transaction", "-y"], ["yum", "install", "-y", "x"]]


def test_pkg_waits_for_a_live_lock_on_its_database(fakefs):
    h = Harness([{"kind": "packages", "names": ["x"]}], facts=FREEBSD)
    h.apply()
    env = [env for argv, kind, env in h.runner.calls if argv[:2] == ["pkg", "install"]]
    assert env and env[0]["LOCK_RETRIES"] == "300" and env[0]["LOCK_WAIT"] == "1"


def test_unknown_package_fails_with_the_tools_message(fakefs):
    h = Harness([{"kind": "packages", "names": ["nosuch"]}])
    h.tools.available = set()
    with pytest.raises(stackboot.StackbootError, match="Unable to locate package nosuch"):
        h.apply()


# -- repository -----------------------------------------------------------------------------

KEY = ["-----BEGIN PGP PUBLIC KEY BLOCK-----", "abc", "-----END PGP PUBLIC KEY BLOCK-----"]


def test_apt_repository_with_signed_by_then_update(fakefs):
    h = Harness([{"kind": "repository", "name": "moosefs", "url": "http://repo.example/apt", "suite": "bookworm",
                  "components": ["main"], "key": KEY},
                 {"kind": "packages", "names": ["moosefs-master"]}])
    plan = h.plan()
    assert plan[:2] == ["+ repository moosefs: create /etc/apt/keyrings/moosefs.asc",
                        "+ repository moosefs: create /etc/apt/sources.list.d/moosefs.list"]
    changes = h.converge()
    assert changes[0] == ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "update"]
    with open("/etc/apt/sources.list.d/moosefs.list") as handle:
        assert handle.read() == "deb [signed-by=/etc/apt/keyrings/moosefs.asc] http://repo.example/apt bookworm main\n"
    with open("/etc/apt/keyrings/moosefs.asc") as handle:
        assert handle.read().splitlines() == KEY


def test_rpm_and_pkg_repository_files(fakefs):
    step = {"kind": "repository", "name": "mfs", "url": "http://repo.example/el9", "key": "KEY\n"}
    Harness([step], facts=ROCKY).converge()
    with open("/etc/yum.repos.d/mfs.repo") as handle:
        assert "gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-mfs\n" in handle.read()
    Harness([step], facts=FREEBSD).converge()
    with open("/usr/local/etc/pkg/repos/mfs.conf") as handle:
        assert 'pubkey: "/usr/local/etc/pkg/keys/mfs.pub"' in handle.read()


# -- users and groups -----------------------------------------------------------------------

def test_group_and_user_created_then_left_alone(fakefs):
    h = Harness([{"kind": "group", "name": "mfs", "gid": 420},
                 {"kind": "user", "name": "mfs", "uid": 420, "group": "mfs", "home": "/var/lib/mfs",
                  "shell": "/usr/sbin/nologin"}])
    assert h.plan() == ["+ group mfs: create group mfs (gid 420)", "+ user mfs: create user mfs (uid 420)"]
    assert h.converge() == [
        ["groupadd", "--system", "-g", "420", "mfs"],
        ["useradd", "--system", "--no-create-home", "-u", "420", "-g", "mfs", "-d", "/var/lib/mfs", "-s",
         "/usr/sbin/nologin", "mfs"]]
    with open("/etc/passwd") as handle:
        assert "mfs:x:420:420::/var/lib/mfs:/usr/sbin/nologin\n" in handle.read()


def test_user_shell_drift_is_fixed_with_usermod(fakefs):
    with open("/etc/passwd", "a") as handle:
        handle.write("mfs:x:420:0::/var/lib/mfs:/bin/sh\n")
    h = Harness([{"kind": "user", "name": "mfs", "home": "/var/lib/mfs", "shell": "/usr/sbin/nologin"}])
    assert h.plan() == ["~ user mfs: shell -> /usr/sbin/nologin"]
    assert h.converge() == [["usermod", "-d", "/var/lib/mfs", "-s", "/usr/sbin/nologin", "mfs"]]


def test_a_fixed_id_is_for_creating_an_existing_user_keeps_its_own(fakefs):
    """FreeBSD's ports give mfs uid and gid 925: stackboot creates it so, and leaves an mfs user
    another tool made (renumbering would orphan every file it owns)."""
    h = Harness([{"kind": "group", "name": "mfs", "gid": 925, "keep_existing_id": True},
                 {"kind": "user", "name": "mfs", "uid": 925, "group": "mfs", "keep_existing_id": True}], facts=FREEBSD)
    assert h.plan() == ["+ group mfs: create group mfs (gid 925)", "+ user mfs: create user mfs (uid 925)"]
    assert h.converge() == [["pw", "groupadd", "mfs", "-g", "925"], ["pw", "useradd", "mfs", "-u", "925", "-g", "mfs"]]
    with open("/etc/group", "w") as handle:
        handle.write("root:x:0:\nmfs:x:1001:\n")
    with open("/etc/passwd", "w") as handle:
        handle.write("root:x:0:0:root:/root:/bin/sh\nmfs:x:1001:1001::/var/mfs:/usr/sbin/nologin\n")
    assert h.plan() == []
    assert Harness([{"kind": "group", "name": "mfs", "gid": 925}], facts=FREEBSD).plan() == [
        "! group mfs: group exists with gid 1001, not 925; stackboot never renumbers groups"]


def test_user_with_other_uid_is_refused(fakefs):
    with open("/etc/passwd", "a") as handle:
        handle.write("mfs:x:999:0::/home/mfs:/bin/sh\n")
    h = Harness([{"kind": "user", "name": "mfs", "uid": 420}])
    assert h.plan() == ["! user mfs: user exists with uid 999, not 420; stackboot never renumbers users"]
    with pytest.raises(stackboot.StackbootError, match="refused, nothing was changed"):
        h.apply()
    assert h.runner.changes() == []


def test_freebsd_uses_pw(fakefs):
    h = Harness([{"kind": "group", "name": "mfs"}, {"kind": "user", "name": "mfs", "group": "mfs", "home": "/var/mfs"}],
                facts=FREEBSD)
    assert h.converge() == [["pw", "groupadd", "mfs"], ["pw", "useradd", "mfs", "-g", "mfs", "-d", "/var/mfs"]]


# -- directory ------------------------------------------------------------------------------

def test_directory_created_with_owner_and_mode_then_mode_drift(fakefs):
    with open("/etc/passwd", "a") as handle:
        handle.write("mfs:x:420:420::/var/lib/mfs:/bin/sh\n")
    with open("/etc/group", "a") as handle:
        handle.write("mfs:x:420:\n")
    h = Harness([{"kind": "directory", "path": "/srv/mfs/data", "owner": "mfs", "group": "mfs", "mode": "0750"}])
    assert h.plan() == ["+ directory /srv/mfs/data: create (mfs mfs 0750)"]
    assert h.converge() == []
    st = os.stat("/srv/mfs/data")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (420, 420, 0o750)
    os.chmod("/srv/mfs/data", 0o777)
    assert h.plan() == ["~ directory /srv/mfs/data: mode 0777 -> 0750"]
    h.converge()


def test_directory_over_a_file_is_refused(fakefs):
    fakefs.create_file("/srv/x")
    assert Harness([{"kind": "directory", "path": "/srv/x"}]).plan() == ["! directory /srv/x: exists and is not a directory"]


def test_missing_owner_fails_clearly(fakefs):
    h = Harness([{"kind": "directory", "path": "/srv/y", "owner": "nobody2"}])
    with pytest.raises(stackboot.StackbootError, match="user nobody2 does not exist"):
        h.apply()


# -- file -----------------------------------------------------------------------------------

def test_file_settings_in_stable_order_with_nulls_and_extras(fakefs):
    h = Harness([{"kind": "file", "path": "/etc/mfs/a.cfg", "header": "# managed",
                  "settings": {"B": "{{b}}", "A": 1, "SKIP": None, "extra": "{{extra}}"}}],
                parameters={"b": {"type": "string", "default": "x"}, "extra": {"type": "settings", "default": {}}},
                sets=["extra=Z=9,Y=8"])
    h.converge()
    with open("/etc/mfs/a.cfg") as handle:
        assert handle.read() == "# managed\nB = x\nA = 1\nZ = 9\nY = 8\n"


def test_file_template_and_literal_content(fakefs):
    h = Harness([{"kind": "file", "path": "/etc/t1", "template": ["host={{h}}", "end"]},
                 {"kind": "file", "path": "/etc/t2", "content": "keep {{h}} as is\n"}],
                parameters={"h": {"type": "host", "default": "mfsmaster"}})
    plan = h.plan()
    assert plan == ["+ file /etc/t1: create", "+ file /etc/t2: create"]
    h.converge()
    assert open("/etc/t1").read() == "host=mfsmaster\nend\n"
    assert open("/etc/t2").read() == "keep {{h}} as is\n"


def test_file_change_shows_a_diff_and_updates(fakefs):
    h = Harness([{"kind": "file", "path": "/etc/f", "template": "v={{v}}\n"}],
                parameters={"v": {"type": "int", "default": 1}})
    h.converge()
    h.sets = ["v=2"]
    (step, changes), = h.assessed()
    assert changes[0].summary == "update /etc/f"
    assert "-v=1" in changes[0].diff and "+v=2" in changes[0].diff
    h.converge()
    assert open("/etc/f").read() == "v=2\n"


def test_hand_edited_file_needs_force_and_keeps_a_backup(fakefs):
    h = Harness([{"kind": "file", "path": "/etc/f", "content": "managed\n"}])
    h.converge()
    with open("/etc/f", "w") as handle:
        handle.write("edited by hand\n")
    assert h.plan()[0].startswith("! file /etc/f: /etc/f was edited by hand")
    with pytest.raises(stackboot.StackbootError):
        h.apply()
    assert open("/etc/f").read() == "edited by hand\n"
    h.force = True
    h.converge()
    assert open("/etc/f").read() == "managed\n"
    backups = [name for name in os.listdir("/etc") if name.startswith("f.stackboot-backup-")]
    assert len(backups) == 1 and open("/etc/" + backups[0]).read() == "edited by hand\n"


def test_preexisting_unmanaged_file_is_replaced_with_backup(fakefs):
    fakefs.create_file("/etc/g", contents="from the package\n")
    Harness([{"kind": "file", "path": "/etc/g", "content": "ours\n"}]).converge()
    assert any(name.startswith("g.stackboot-backup-") for name in os.listdir("/etc"))


def test_secret_file_is_0600_and_never_shown(fakefs):
    h = Harness([{"kind": "file", "path": "/etc/s3.conf", "template": "KEY={{key}}\n", "mode": "0600", "secret": True}],
                parameters={"key": {"type": "text", "secret": True, "default": "hunter2"}})
    (step, changes), = h.assessed()
    assert changes[0].diff is None
    h.converge()
    assert os.stat("/etc/s3.conf").st_mode & 0o777 == 0o600
    h.sets = ["key=other"]
    (step, changes), = h.assessed()
    assert changes[0].diff == "(secret content not shown)"


def test_file_mode_and_owner_drift(fakefs):
    h = Harness([{"kind": "file", "path": "/etc/m", "content": "x\n", "mode": "0640"}])
    h.converge()
    os.chmod("/etc/m", 0o644)
    assert h.plan() == ["~ file /etc/m: mode 0644 -> 0640"]
    h.converge()


# -- line -----------------------------------------------------------------------------------

def test_line_append_replace_and_remove(fakefs):
    fakefs.create_file("/etc/fstab", contents="# fstab\nold /mnt/mfs fuse 0 0\n")
    h = Harness([{"kind": "line", "path": "/etc/fstab", "line": "mfsmaster: /mnt/mfs moosefs defaults 0 0",
                  "match": " /mnt/mfs "}])
    assert h.plan() == ['~ line /etc/fstab: set line "mfsmaster: /mnt/mfs moosefs defaults 0 0"']
    h.converge()
    assert open("/etc/fstab").read() == "# fstab\nmfsmaster: /mnt/mfs moosefs defaults 0 0\n"
    h.data["steps"][0]["state"] = "absent"
    assert h.plan() == ['- line /etc/fstab: remove line "mfsmaster: /mnt/mfs moosefs defaults 0 0"']
    h.converge()
    assert open("/etc/fstab").read() == "# fstab\n"


def test_line_creates_missing_file(fakefs):
    h = Harness([{"kind": "line", "path": "/etc/new.conf", "line": "a=1", "mode": "0600"}])
    h.converge()
    assert open("/etc/new.conf").read() == "a=1\n"
    assert os.stat("/etc/new.conf").st_mode & 0o777 == 0o600


# -- service --------------------------------------------------------------------------------

SERVICE_STEPS = [
    {"kind": "file", "id": "cfg", "path": "/etc/d.cfg", "template": "x={{x}}\n"},
    {"kind": "file", "id": "exports", "path": "/etc/d.exports", "template": "y={{y}}\n"},
    {"kind": "service", "name": "demo", "restart_on": ["cfg"], "reload_on": ["exports"]},
]
SERVICE_PARAMS = {"x": {"type": "int", "default": 1}, "y": {"type": "int", "default": 1}}


def test_systemd_service_enable_start_then_restart_only_on_change(fakefs):
    h = Harness(SERVICE_STEPS, parameters=SERVICE_PARAMS)
    assert h.plan()[2:] == ["+ service demo: enable at boot", "+ service demo: start"]
    assert h.converge() == [["systemctl", "enable", "demo.service"], ["systemctl", "start", "demo.service"]]
    assert h.tools.units["demo.service"]["restarts"] == 0
    h.sets = ["y=2"]
    assert h.plan() == ["~ file /etc/d.exports: update /etc/d.exports", "~ service demo: reload (exports changed)"]
    h.sets = ["x=2", "y=2"]
    assert h.plan()[-1] == "~ service demo: restart (cfg changed)"
    assert h.converge() == [["systemctl", "restart", "demo.service"]]
    assert h.tools.units["demo.service"]["restarts"] == 1


def test_restart_survives_a_run_killed_after_the_config_changed(fakefs):
    h = Harness(SERVICE_STEPS, parameters=SERVICE_PARAMS)
    h.converge()
    h.sets = ["x=3"]
    run, plan = h.run()
    # the config step is applied, then the run dies before the service step acts
    plan.steps[2].apply = lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        stackboot.converge(run, [plan])
    assert open("/etc/d.cfg").read() == "x=3\n"
    assert h.plan() == ["~ service demo: restart (cfg changed)"]
    h.converge()


def test_a_change_in_an_earlier_converge_restarts_a_watching_service(fakefs):
    """A lab node's daemons restart for a build made by the host's own converge just before."""
    h = Harness([{"kind": "command", "id": "shared-build", "argv": ["/bin/build"], "creates": "/built"},
                 {"kind": "service", "name": "demo", "restart_on": ["shared-build"]}])
    h.tools.units["demo.service"] = {"enabled": True, "active": True}
    run, plan = h.run()
    outcome = stackboot.converge(run, [plan.part([step for step in plan.steps if step.kind == "service"])],
                                 changed_before={"shared-build"})
    assert h.runner.changes() == [["systemctl", "restart", "demo.service"]] and outcome.changed == 1
    assert run.state.pending("service:demo", "restart") == []


def test_systemd_service_stopped_and_disabled_on_request(fakefs):
    tools = FakeTools("/")
    tools.units["demo.service"] = {"enabled": True, "active": True}
    h = Harness([{"kind": "service", "name": "demo", "enabled": False, "running": False}], tools=tools)
    assert h.plan() == ["- service demo: disable at boot", "- service demo: stop"]
    assert h.converge() == [["systemctl", "disable", "demo.service"], ["systemctl", "stop", "demo.service"]]


def test_offline_run_lists_everything_missing_before_changing_anything(fakefs):
    h = Harness([{"kind": "directory", "path": "/srv/early"},
                 {"kind": "packages", "names": ["gcc", "zlib1g-dev", "make"]},
                 {"kind": "download", "url": "https://example.invalid/src.tar.gz", "sha256": "c" * 64}])
    h.tools.installed["make"] = "4.3"
    run, plan = h.run()
    run.offline = True
    with pytest.raises(stackboot.StackbootError) as caught:
        stackboot.converge(run, [plan])
    assert caught.value.message == ("--offline, and 3 thing(s) are missing: package gcc (not installed); "
                                    "package zlib1g-dev (not installed); https://example.invalid/src.tar.gz (sha256 cccccccccccc…, not in the cache)")
    assert h.runner.changes() == [] and not os.path.exists("/srv/early")


def test_new_client_software_remounts_a_mount_and_a_busy_one_stays_pending(fakefs):
    """A FUSE client runs the binary it started with: new software (a package, a build) is in use
    only after a remount, never a lazy one, and one refused while busy is owed to the next run."""
    fakefs.create_file("/proc/self/mountinfo", contents="22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    fakefs.create_file("/etc/fstab", contents="# fstab\n")
    tools = FakeTools("/")
    steps = [{"kind": "packages", "id": "client-packages", "names": ["moosefs-client"], "version": "4.58.1"},
             {"kind": "mount", "path": "/mnt/mfs", "device": "mfsmaster:9421:/", "fstype": "moosefs", "remount_on": ["client-packages"]}]
    tools.offered["moosefs-client"] = {"4.57.5-1": "trixie", "4.58.1-1~bpo13+1": "trixie-backports"}
    tools.installed["moosefs-client"] = "4.58.1-1~bpo13+1"
    assert Harness(steps, tools=tools).converge() == [["mount", "/mnt/mfs"]]   # a first mount: nothing to remount
    tools.installed["moosefs-client"] = "4.57.5-1"
    h = Harness(steps, tools=tools)
    assert h.plan() == ["~ packages moosefs-client: upgrade moosefs-client 4.57.5-1 -> 4.58.1-1~bpo13+1",
                        "~ mount /mnt/mfs: remount (client-packages changed): the mounted client runs the old software until then"]
    busy = []
    tools.on(lambda argv: argv[0] == "umount" and busy, lambda argv: (32, "", "umount: /mnt/mfs: target is busy."))
    busy.append(True)
    with pytest.raises(stackboot.StackbootError) as caught:
        h.apply()
    assert caught.value.message == "mount /mnt/mfs: /mnt/mfs is in use, so it still runs the old client (umount: /mnt/mfs: target is busy.)"
    assert "the remount stays pending" in caught.value.fix
    assert h.plan() == ["~ mount /mnt/mfs: remount (client-packages changed): the mounted client runs the old software until then"]
    busy.clear()
    assert h.converge() == [["umount", "/mnt/mfs"], ["mount", "/mnt/mfs"]]


def test_a_name_in_etc_hosts_where_nothing_else_resolves_it(fakefs, monkeypatch):
    fakefs.create_file("/etc/hosts", contents="127.0.0.1 localhost\n127.0.1.1 node1 mfsmaster old\n# mfsmaster in a comment\n")
    monkeypatch.setattr(stackboot, "own_address", lambda: "10.1.2.3")
    h = Harness([{"kind": "host-name", "name": "mfsmaster"}])   # 127.0.1.1 is loopback to the chunkservers: replaced
    assert h.plan() == ["~ host-name mfsmaster: mfsmaster -> 10.1.2.3 in /etc/hosts (was 127.0.1.1)"]
    h.converge()
    assert open("/etc/hosts").read() == ("127.0.0.1 localhost\n127.0.1.1 node1 old\n# mfsmaster in a comment\n"
                                         "10.1.2.3 mfsmaster\n")
    assert Harness([{"kind": "host-name", "name": "10.0.0.7"}]).plan() == []   # an address needs no name
    assert Harness([{"kind": "host-name", "name": "node1", "unless_resolves": True}]).plan() == []   # /etc/hosts has it
    monkeypatch.setattr(stackboot.HostNameStep, "resolves", lambda self, run: self.args["name"] == "in-dns")
    assert Harness([{"kind": "host-name", "name": "in-dns", "unless_resolves": True}]).plan() == []
    h = Harness([{"kind": "host-name", "name": "cs1", "address": "10.1.2.21"}, {"kind": "host-name", "name": "cs2", "address": "10.1.2.22"}])
    assert h.plan() == ["+ host-name cs1: cs1 -> 10.1.2.21 in /etc/hosts", "+ host-name cs2: cs2 -> 10.1.2.22 in /etc/hosts"]
    h.converge()
    monkeypatch.setattr(stackboot, "own_address", lambda: None)   # only loopback: no entry would help a chunkserver
    assert Harness([{"kind": "host-name", "name": "nowhere", "unless_resolves": True}]).plan() == []


def test_a_reused_pid_is_not_the_daemon():
    """A daemon's pidfile can outlive it and its pid be handed to another process."""
    with open("/proc/self/cmdline", "rb") as handle:
        me = os.path.basename(handle.read().split(b"\0")[0].decode())
    assert stackboot.pid_alive(os.getpid()) and stackboot.pid_alive(os.getpid(), (me, "moosefs-master"))
    assert not stackboot.pid_alive(os.getpid(), ("mfsmaster", "moosefs-master"))


def test_mount_converges_and_uninstall_unmounts_it_and_forgets_its_fstab_line(fakefs):
    fakefs.create_file("/proc/self/mountinfo", contents="22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    fakefs.create_file("/etc/fstab", contents="# fstab\n")
    spec = {"kind": "mount", "path": "/mnt/mfs", "device": "mfsmount", "fstype": "fuse", "options": ["mfsmaster=10.1.0.1"]}
    h = Harness([spec])
    assert h.converge() == [["mount", "/mnt/mfs"]]
    h.goal = "stopped"   # lab down: unmounted now, fstab stays
    assert h.plan() == ["- mount /mnt/mfs: unmount"]
    h.goal = "absent"
    assert h.plan() == ["- mount /mnt/mfs: unmount", "- mount /mnt/mfs: fstab: remove mfsmount /mnt/mfs fuse mfsmaster=10.1.0.1 0 0"]
    assert h.converge() == [["umount", "/mnt/mfs"]]
    assert open("/etc/fstab").read() == "# fstab\n"
    # a mount that holds data (a store) is never taken away, not even by --purge-data
    h = Harness([dict(spec, data=True)], tools=h.tools)
    h.converge()
    h.goal = "purged"
    assert h.plan() == [] and h.notes() == ["/mnt/mfs: data; uninstall keeps it mounted"]


# -- moosefs-metadata and moosefs-upgrade: the master version that runs on it -------------

def metadata_step(**fields):
    return dict({"kind": "moosefs-metadata", "data_path": "/var/lib/mfs"}, **fields)


def upgrade_step(**fields):
    return dict({"kind": "moosefs-upgrade", "data_path": "/var/lib/mfs", "backups": "/var/lib/mfs.backups"}, **fields)


def test_an_upgrade_saves_the_metadata_first_and_a_downgrade_is_refused(fakefs):
    os.makedirs("/var/lib/mfs")
    with open("/var/lib/mfs/metadata.mfs.empty", "w") as handle:
        handle.write("MFSM NEW")
    first = Harness([upgrade_step(version="3.0.117"), metadata_step(version="3.0.117")])
    assert first.plan() == ["+ moosefs-metadata /var/lib/mfs/metadata.mfs: new cluster: metadata.mfs from /var/lib/mfs/metadata.mfs.empty"]
    first.converge()
    assert first.plan() == []
    for name, text in (("metadata.mfs.back", "MFSM 2.0 tree"), ("changelog.0.mfs", "1: SESSION"), ("metadata.mfs.tmp", "x")):
        with open("/var/lib/mfs/" + name, "w") as handle:
            handle.write(text)
    os.rename("/var/lib/mfs/metadata.mfs", "/var/lib/mfs/metadata.mfs.back.1")   # as a running master keeps it
    with open("/var/lib/mfs/.mfsmaster.lock", "w") as handle:
        handle.write("%d\n" % os.getpid())

    upgrade = Harness([upgrade_step(version="4.58.1"), metadata_step(version="4.58.1")])
    [line] = upgrade.plan()
    stamp = re.search(r"to /var/lib/mfs\.backups/([0-9]{8}T[0-9]{6}Z)-3\.0\.117-to-4\.58\.1\Z", line)
    assert line.startswith("~ moosefs-upgrade /var/lib/mfs/metadata.mfs: upgrade 3.0.117 -> 4.58.1: first save "
                           "changelog.0.mfs, metadata.mfs.back, metadata.mfs.back.1 to ") and stamp, line
    assert upgrade.apply() == (1, 1)
    [saved] = os.listdir("/var/lib/mfs.backups")
    assert saved.endswith("-3.0.117-to-4.58.1") and sorted(os.listdir("/var/lib/mfs.backups/" + saved)) == [
        "changelog.0.mfs", "metadata.mfs.back", "metadata.mfs.back.1"]
    assert open("/var/lib/mfs.backups/%s/metadata.mfs.back" % saved).read() == "MFSM 2.0 tree"
    assert os.stat("/var/lib/mfs.backups").st_mode & 0o777 == 0o700
    assert upgrade.plan() == []

    downgrade = Harness([upgrade_step(version="4.57.5")])
    assert downgrade.plan() == ["! moosefs-upgrade /var/lib/mfs/metadata.mfs: refusing mfsmaster 4.57.5 on metadata that "
                                "mfsmaster 4.58.1 wrote: MooseFS cannot go back to an older master; keep version 4.58.1, "
                                "or restore a copy from /var/lib/mfs.backups"]
    with pytest.raises(stackboot.StackbootError):
        downgrade.apply()


def test_packages_give_the_version_installed_or_about_to_be(fakefs):
    os.makedirs("/var/lib/mfs")
    with open("/var/lib/mfs/metadata.mfs", "w") as handle:
        handle.write("MFSM 2.0")
    tools = FakeTools("/")
    tools.installed["moosefs-master"] = "3.0.117-1"
    step = upgrade_step(packages=["moosefs-master"])
    [line] = Harness([step], tools=tools).plan()   # a master stackboot did not record: saved before anything
    assert line.startswith("~ moosefs-upgrade /var/lib/mfs/metadata.mfs: upgrade an unrecorded version -> 3.0.117-1: "
                           "first save metadata.mfs to /var/lib/mfs.backups/") and line.endswith("-unrecorded-to-3.0.117-1")
    Harness([step], tools=tools).apply()
    del tools.installed["moosefs-master"]   # the packages went; what apt would bring now is older
    tools.versions["moosefs-master"] = "3.0.116-1"
    assert Harness([step], tools=tools).plan()[0].startswith("! moosefs-upgrade /var/lib/mfs/metadata.mfs: refusing "
                                                             "mfsmaster 3.0.116-1 on metadata that mfsmaster 3.0.117-1 wrote")
    tools.versions["moosefs-master"] = "3.0.118-1"
    assert Harness([step], tools=tools).plan()[0].startswith("~ moosefs-upgrade /var/lib/mfs/metadata.mfs: upgrade "
                                                             "3.0.117-1 -> 3.0.118-1: first save metadata.mfs to")


def test_packages_from_a_release_and_the_series_apt_has(fakefs):
    """packages_release is apt's target release, for the install and for what apt would bring."""
    tools = FakeTools("/")
    tools.versions.update({"moosefs-master": "4.58.1-1~bpo13+1", "moosefs-gui": "4.58.1-1~bpo13+1"})
    h = Harness([{"kind": "packages", "names": ["moosefs-gui"], "release": "trixie-backports"}], tools=tools)
    h.apply()
    assert ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "-t",
            "trixie-backports", "moosefs-gui"] in h.runner.changes()
    assert tools.installed == {"moosefs-gui": "4.58.1-1~bpo13+1"}
    with pytest.raises(stackboot.BadInput, match="only apt installs from a release"):
        Harness([{"kind": "packages", "names": ["x"], "release": "el9-extras"}], facts=ROCKY).apply()


def test_the_series_is_what_the_package_manager_has():
    library = stackboot.Library()
    for name, text in stackboot.EMBEDDED_PROFILES.items():
        library.add(stackboot.parse_profile_text(name, name, text))
    tools = FakeTools("/")
    packages = stackboot.Apt(stackboot.Host("/", RecordingRunner("/", tools), DEBIAN))

    def values(*sets):
        inputs = stackboot.Inputs().add("--set", stackboot.parse_sets(["method=packages"] + list(sets)), "strict")
        plan = stackboot.make_plan(library, ["gui"], DEBIAN, inputs, steps=False, packages=packages)
        return dict((name, (plan.values.values[name], plan.values.sources[name])) for name in ("series", "gui_server"))

    assert values()["series"] == ("3", "known for method packages")   # apt knows no moosefs: Debian's overlay stands
    tools.versions["moosefs-master"] = "4.57.5-1"
    packages.forget()
    assert values()["series"][0] == "4" and values()["gui_server"][0] == "mfscgiserv"
    tools.versions["moosefs-gui"] = "4.58.1-1~bpo13+1"
    assert values("packages_release=trixie-backports")["gui_server"][0] == "mfsgui"
    assert values("packages_release=trixie-backports", "distro_package_series=3")["series"][0] == "3"   # a value given wins


# -- packages at a version: an upgrade is asked for, never a side effect --------------------

def test_packages_upgrade_only_to_the_version_asked_for(fakefs):
    tools = FakeTools("/")
    tools.installed.update({"moosefs-master": "4.57.5-1", "moosefs-common": "4.57.5-1"})
    tools.offered["moosefs-master"] = {"4.57.5-1": "trixie", "4.58.1-1~bpo13+1": "trixie-backports"}
    step = {"kind": "packages", "id": "master-packages", "names": ["moosefs-master"]}
    h = Harness([step], tools=tools)
    assert h.plan() == [] and h.runner.probes() == [["dpkg-query", "-W", "-f=${Package}\\t${db:Status-Abbrev}\\t${Version}\\n",
                                                     "moosefs-master"]]   # installed stays: apt is not even asked
    h = Harness([dict(step, version="4.57.5")], tools=tools)
    assert h.plan() == [] and len(h.runner.probes()) == 1   # the version asked for is installed: nothing asked either
    h = Harness([dict(step, version="4.58.1")], tools=tools)
    assert h.plan() == ["~ packages moosefs-master: upgrade moosefs-master 4.57.5-1 -> 4.58.1-1~bpo13+1"]
    h.apply()
    # pinned, with the suite the version comes from as apt's target release (its dependencies come from there too)
    assert h.runner.changes() == [["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends",
                                   "-t", "trixie-backports", "moosefs-master=4.58.1-1~bpo13+1"]]
    assert tools.installed["moosefs-master"] == "4.58.1-1~bpo13+1" and Harness([dict(step, version="4.58.1")], tools=tools).plan() == []
    h = Harness([dict(step, version="4.57.5")], tools=tools)   # (the master's own guard refuses this one: not the packages')
    assert h.plan() == ["~ packages moosefs-master: downgrade moosefs-master 4.58.1-1~bpo13+1 -> 4.57.5-1"]
    h.apply()
    assert "--allow-downgrades" in h.runner.changes()[0] and h.runner.changes()[0][-3:] == ["-t", "trixie", "moosefs-master=4.57.5-1"]
    assert Harness([dict(step, version="latest")], tools=tools).plan() == []   # apt's candidate: trixie's, 500 over 100
    assert Harness([dict(step, version="latest", release="trixie-backports")], tools=tools).plan() == [
        "~ packages moosefs-master: upgrade moosefs-master 4.57.5-1 -> 4.58.1-1~bpo13+1"]
    assert Harness([dict(step, version="4.99")], tools=tools).plan() == [
        "! packages moosefs-master: moosefs-master 4.99: the package sources have no such version (they have: 4.57.5-1, "
        "4.58.1-1~bpo13+1)"]
    fresh = Harness([{"kind": "packages", "names": ["moosefs-cli"], "version": "4.58.1"}], tools=tools)
    tools.offered["moosefs-cli"] = {"4.57.5-1": "trixie", "4.58.1-1~bpo13+1": "trixie-backports"}
    assert fresh.plan() == ["+ packages moosefs-cli: install moosefs-cli=4.58.1-1~bpo13+1"]


def test_package_versions_on_the_rpm_and_freebsd_side(fakefs):
    tools = FakeTools("/")
    tools.installed["moosefs-master"] = "4.57.5-1.el9"
    tools.offered["moosefs-master"] = {"4.57.5-1.el9": None, "4.58.1-1.el9": None}
    h = Harness([{"kind": "packages", "names": ["moosefs-master"], "version": "4.58.1"}], facts=ROCKY, tools=tools)
    assert h.plan() == ["~ packages moosefs-master: upgrade moosefs-master 4.57.5-1.el9 -> 4.58.1-1.el9"]
    h.apply()
    assert h.runner.changes() == [["dnf", "install", "-y", "moosefs-master-4.58.1-1.el9"]]
    assert tools.installed["moosefs-master"] == "4.58.1-1.el9"
    assert [stackboot.upstream_version(v) for v in ("1:4.58.1-1~bpo13+1", "4.58.1-1.el9", "4.58.1_1,1", "4.58.1")] == ["4.58.1"] * 4


def test_remove_tree_takes_a_file_removed_meanwhile_as_removed(tmp_path, monkeypatch):
    """A FUSE daemon exiting after its unmount removes its own running.NAME file while stackboot
    removes the directory (seen with cvmfs2's spool): that file is gone, as wanted, not an error."""
    import shutil
    (tmp_path / "spool" / "cache").mkdir(parents=True)
    (tmp_path / "spool" / "cache" / "running.sw.example.org").write_text("pid")
    (tmp_path / "spool" / "cache" / "other").write_text("x")
    real = os.unlink

    def unlink(path, *args, **kwargs):
        real(path, *args, **kwargs)
        if str(path).endswith("running.sw.example.org"):   # somebody else got there first
            raise FileNotFoundError(2, "No such file or directory", path)
    monkeypatch.setattr(shutil.os, "unlink", unlink)
    host = stackboot.Host(str(tmp_path))
    with host.changes_allowed():
        host.remove_tree("/spool")
    assert not (tmp_path / "spool").exists()
