"""The engine end to end through main(): plan reads only, install converges, state, log, lock, kill -9."""

import json
import os
import signal
import subprocess
import time

import pytest

import stackboot
from conftest import TOP, FakeTools, RecordingRunner, bare_root_copy, write_profile

PARAMS = {
    "port": {"type": "port", "default": 9421, "help": "a port"},
    "where": {"type": "path", "default": "/srv/demo"},
    "password": {"type": "text", "default": "", "secret": True, "help": "a secret"},
}


def every_kind_profile(base):
    return {
        "description": "one step of every kind",
        "parameters": PARAMS,
        "overlays": {"freebsd": {"port": 9500}},
        "steps": [
            {"kind": "packages", "names": ["moosefs-master", "python3"]},
            {"kind": "repository", "name": "demo", "url": "http://repo.invalid/apt", "suite": "bookworm",
             "components": ["main"], "key": "KEY\n"},
            {"kind": "group", "name": "demo"},
            {"kind": "user", "name": "demo", "group": "demo", "home": base + "/home"},
            {"kind": "directory", "path": base + "{{where}}", "owner": "demo", "group": "demo", "mode": "0750"},
            {"kind": "file", "id": "cfg", "path": base + "/etc/demo.cfg", "settings": {"PORT": "{{port}}"}},
            {"kind": "file", "path": base + "/etc/demo.secret", "template": "pw={{password}}\n", "mode": "0600",
             "secret": True},
            {"kind": "line", "path": base + "/etc/hosts", "line": "10.0.0.1 mfsmaster"},
            {"kind": "download", "url": "file://" + base + "/src.tar", "sha256": "0" * 64, "dest": base + "/cache/src.tar"},
            {"kind": "command", "argv": ["/bin/touch", base + "/done"], "creates": base + "/done"},
            {"kind": "service", "name": "demo", "restart_on": ["cfg"]},
        ],
    }


@pytest.fixture
def env(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    (root / "var" / "lib" / "apt" / "lists").mkdir(parents=True)
    (root / "var" / "lib" / "apt" / "lists" / "x_Packages").write_text("")
    profiles = str(tmp_path / "profiles")
    for key in list(os.environ):
        if key.startswith("STACKBOOT_"):
            monkeypatch.delenv(key)

    class Env:
        pass
    env = Env()
    env.root, env.profiles, env.tools = str(root), profiles, FakeTools(str(root))

    def main(*argv, uname=("Linux", "x86_64")):
        env.runner = RecordingRunner(env.root, env.tools)
        return stackboot.main(["--root", env.root, "--profiles", env.profiles] + list(argv),
                              runner=env.runner, uname=uname)
    env.main = main
    return env


def test_plan_runs_no_mutating_command_and_changes_nothing(env, capsys):
    write_profile(env.profiles, "every", every_kind_profile(""))
    before = sorted(os.walk(env.root))
    assert env.main("plan", "every", "--detailed-exitcode") == stackboot.EXIT_PENDING
    assert env.runner.changes() == []
    assert env.runner.counts["change"] == 0
    assert sorted(os.walk(env.root)) == before
    out = capsys.readouterr().out
    assert "+ packages moosefs-master python3: install moosefs-master python3" in out
    assert "Plan: 11 to change, 0 already right." in out
    assert env.main("plan", "every", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["to_change"] == 11 and data["steps"][5]["changes"][0]["action"] == "create"
    assert data["format_version"] == 1 and data["command"] == "plan" and data["exit_code"] == 0


def test_runner_refuses_changes_while_planning():
    runner = stackboot.Runner("/")
    with pytest.raises(stackboot.StackbootError, match="refused"):
        runner.run(["/bin/true"], change=True)


def converge_profile(base):
    return {"description": "files", "parameters": PARAMS, "steps": [
        {"kind": "group", "name": "demo"},
        {"kind": "user", "name": "demo", "group": "demo", "home": "/home/demo"},
        {"kind": "directory", "path": "{{where}}", "owner": "demo", "group": "demo", "mode": "0750"},
        {"kind": "file", "id": "cfg", "path": "{{where}}/demo.cfg", "settings": {"PORT": "{{port}}"}},
        {"kind": "file", "path": "/etc/demo.secret", "template": "pw={{password}}\n", "mode": "0600", "secret": True},
        {"kind": "service", "name": "demo", "restart_on": ["cfg"]},
    ]}


def test_install_converges_logs_and_remembers_inputs(env, capsys):
    write_profile(env.profiles, "demo", converge_profile(""))
    assert env.main("install", "demo", "--set", "port=9999", "--set", "password=s3cret!") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "Install: 6 changed, 0 already right."
    with open(os.path.join(env.root, "srv/demo/demo.cfg")) as handle:
        assert handle.read() == "PORT = 9999\n"
    assert oct(os.stat(os.path.join(env.root, "etc/demo.secret")).st_mode & 0o777) == "0o600"
    # the log: JSON lines with argv, rc, duration and kind; secrets never in it
    with open(os.path.join(env.root, "var/log/stackboot.log")) as handle:
        records = [json.loads(line) for line in handle]
    commands = [r for r in records if "argv" in r]
    assert {"argv", "rc", "seconds", "kind"} <= set(commands[0])
    assert any(r["kind"] == "change" and r["argv"][-1] == "demo.service" for r in commands)
    state_path = os.path.join(env.root, "var/lib/stackboot/state.json")
    assert os.stat(state_path).st_mode & 0o777 == 0o600
    # a re-run with no flags keeps the remembered inputs and changes nothing
    assert env.main("install", "demo") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "Install: 0 changed, 6 already right."
    assert env.runner.changes() == []
    assert env.main("show", "demo") == 0
    shown = capsys.readouterr().out
    assert "port     = 9999  [remembered]" in shown and "password = ***  [remembered]" in shown
    assert "s3cret" not in shown
    assert env.main("check") == 0
    # drift: someone edits the config by hand
    with open(os.path.join(env.root, "srv/demo/demo.cfg"), "w") as handle:
        handle.write("PORT = 1\n")
    assert env.main("check") == stackboot.EXIT_PENDING
    assert "edited by hand" in capsys.readouterr().out
    assert env.main("install", "demo") == 1
    assert "--force" in capsys.readouterr().err
    assert env.main("install", "demo", "--force") == 0
    assert env.tools.units["demo.service"]["restarts"] == 1
    assert env.main("check") == 0


def test_parameter_precedence_and_sources(env, capsys, monkeypatch):
    write_profile(env.profiles, "demo", dict(converge_profile(""), overlays={"freebsd": {"port": 9500}}))
    (open(os.path.join(env.root, "etc/os-release"), "w")).write('ID=freebsd\nVERSION_ID="14.1"\n')
    fb = ("FreeBSD", "amd64")
    assert env.main("show", "demo", "--json", uname=fb) == 0
    data = json.loads(capsys.readouterr().out)["parameters"]["port"]
    assert (data["value"], data["source"]) == (9500, "os overlay (freebsd)")
    os.makedirs(os.path.join(env.root, "etc/stackboot"))
    with open(os.path.join(env.root, "etc/stackboot/site.json"), "w") as handle:
        handle.write('{"parameters": {"port": 9600}}')
    env.main("show", "demo", "--json", uname=fb)
    assert json.loads(capsys.readouterr().out)["parameters"]["port"]["source"] == "site file /etc/stackboot/site.json"
    monkeypatch.setenv("STACKBOOT_PORT", "9700")
    env.main("show", "demo", "--json", uname=fb)
    assert json.loads(capsys.readouterr().out)["parameters"]["port"]["value"] == 9700
    env.main("show", "demo", "--json", "--set", "port=9800", uname=fb)
    data = json.loads(capsys.readouterr().out)["parameters"]["port"]
    assert (data["value"], data["source"]) == (9800, "--set")


def test_lock_refuses_a_concurrent_run(env, capsys):
    import fcntl
    write_profile(env.profiles, "demo", converge_profile(""))
    os.makedirs(os.path.join(env.root, "var/lib/stackboot"))
    lock = os.path.join(env.root, "var/lib/stackboot/lock")
    with open(lock, "w") as holder:
        holder.write("%d install\n" % os.getpid())
        holder.flush()
        fcntl.flock(holder, fcntl.LOCK_EX)
        # flock locks belong to the open file description: a second open in this process conflicts too
        assert env.main("install", "demo") == 1
        assert "error: another stackboot run (pid %d, install) holds %s; wait for it to finish, then run again" % (
            os.getpid(), lock) in capsys.readouterr().err
        # the run that wrote its pid is gone, what holds the lock now is what it started (its apt-get)
        holder.seek(0)
        holder.truncate()
        holder.write("4242 install\n")
        holder.flush()
        assert env.main("install", "demo") == 1
        assert "error: stackboot run (pid 4242, install) was stopped, and %s (pid %d) still holds %s; wait for it to " \
               "end, then run again" % (open("/proc/self/comm").read().strip(), os.getpid(), lock) in capsys.readouterr().err
    assert env.main("install", "demo") == 0


def test_stale_temp_file_from_a_killed_write_is_cleaned(env):
    write_profile(env.profiles, "demo", converge_profile(""))
    os.makedirs(os.path.join(env.root, "etc"), exist_ok=True)
    stale = os.path.join(env.root, "etc", ".demo.secret" + stackboot.TEMP_MARK + "99999")
    with open(stale, "w") as handle:
        handle.write("pw=half")
    assert env.main("install", "demo") == 0
    assert not os.path.exists(stale)


KILL_STEPS = ["directory", "file-a", "line", "file-b", "directory-2", "file-c"]


def kill_profile(base, position):
    steps = [
        {"kind": "directory", "path": base + "/d1", "mode": "0750"},
        {"kind": "file", "path": base + "/d1/a.cfg", "settings": {"A": "{{port}}", "B": "two"}},
        {"kind": "line", "path": base + "/hosts", "line": "10.0.0.1 mfsmaster"},
        {"kind": "file", "path": base + "/d1/b.cfg", "content": "b" * 100000},
        {"kind": "directory", "path": base + "/d2"},
        {"kind": "file", "path": base + "/d2/c.cfg", "content": "c\n"},
    ]
    killer = {"kind": "command", "argv": ["/bin/sh", "-c", "touch " + base + "/killed; kill -9 $PPID"],
              "creates": base + "/killed"}
    return {"description": "killed at %d" % position, "parameters": PARAMS,
            "steps": steps[:position] + [killer] + steps[position:]}


@pytest.fixture(scope="module")
def bare_root(tmp_path_factory):
    import bareroot
    path = bare_root_copy("bookworm", str(tmp_path_factory.mktemp("kill") / "root"))
    yield path
    bareroot.cleanup_root(path)


@pytest.mark.root
@pytest.mark.bareroot
@pytest.mark.parametrize("position", range(0, len(KILL_STEPS) + 1))
def test_kill_9_between_any_two_steps_then_the_next_run_finishes(bare_root, position):
    """A command step kills stackboot itself (SIGKILL, no cleanup) at every position in turn."""
    base = "/kill/%d" % position
    os.makedirs(bare_root + base)
    write_profile(bare_root + "/etc/stackboot/profiles", "k%d" % position, kill_profile(base, position))

    def run():
        with open(os.path.join(TOP, "stackboot.py")) as script:
            return subprocess.run(["chroot", bare_root, "/usr/bin/python3", "-", "install", "k%d" % position],
                                  stdin=script, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert run().returncode == -signal.SIGKILL
    for directory, _, files in os.walk(bare_root + base):   # nothing half-written, no temp file left
        for name in files:
            assert stackboot.TEMP_MARK not in name
    second = run()
    assert second.returncode == 0, second.stderr
    host = bare_root + base
    assert open(host + "/d1/a.cfg").read() == "A = 9421\nB = two\n"
    assert open(host + "/d1/b.cfg").read() == "b" * 100000
    assert open(host + "/hosts").read() == "10.0.0.1 mfsmaster\n"
    assert open(host + "/d2/c.cfg").read() == "c\n"
    assert run().stdout.splitlines()[-1] == "Install: 0 changed, 7 already right."


def test_global_options_before_and_after_the_command_are_merged(env, capsys):
    write_profile(env.profiles, "demo", converge_profile(""))
    assert stackboot.main(["--root", env.root, "--set", "port=1000", "show", "demo", "--profiles", env.profiles,
                           "--set", "where=/srv/x", "--json"], runner=RecordingRunner(env.root, env.tools)) == 0
    data = json.loads(capsys.readouterr().out)["parameters"]
    assert (data["port"]["value"], data["where"]["value"]) == (1000, "/srv/x")


def test_secrets_never_reach_the_log_or_an_error(env, capsys):
    profile = converge_profile("")
    profile["steps"].append({"kind": "command", "argv": ["/usr/bin/login-tool", "--password={{password}}"],
                             "creates": "/var/lib/demo/logged-in"})
    write_profile(env.profiles, "demo", profile)
    env.tools.on(lambda argv: argv[0] == "/usr/bin/login-tool", lambda argv: (1, "", "denied for " + argv[1]))
    assert env.main("install", "demo", "--set", "password=Very$ecret") == 1
    err = capsys.readouterr().err
    assert "Very$ecret" not in err and "--password=***" in err
    log = open(os.path.join(env.root, "var/log/stackboot.log")).read()
    assert "Very$ecret" not in log and "--password=***" in log


def test_a_zombie_is_not_a_running_daemon():
    """Where PID 1 reaps slowly (containers), a stopped daemon lingers as a zombie."""
    child = subprocess.Popen(["true"])
    deadline = time.time() + 5
    while open("/proc/%d/stat" % child.pid).read().rsplit(")", 1)[1].split()[0] != "Z" and time.time() < deadline:
        time.sleep(0.05)
    assert not stackboot.pid_alive(child.pid)
    child.wait()
    assert stackboot.pid_alive(os.getpid())


@pytest.mark.parametrize("how", ["captured", "streamed", "detached"])
def test_a_command_past_its_time_ends_with_what_it_started(how):
    """Every command has a time limit; past it, the command's whole process group goes (a
    child holding its output open would otherwise keep stackboot waiting for ever)."""
    import time
    seconds = {"captured": "1037", "streamed": "1038", "detached": "1039"}[how]   # names these sleeps alone
    options = {"streamed": {"stream": lambda line: None}, "detached": {"detach": True}}.get(how, {})
    started = time.time()
    result = stackboot.Runner("/").run(["sh", "-c", "sleep %s & sleep %s" % (seconds, seconds)], check=False,
                                       timeout=1, **options)
    assert result.rc == 124 and time.time() - started < 10, (result.rc, result.out, result.err)

    def sleeping():
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if open("/proc/%s/cmdline" % pid, "rb").read() == b"sleep\0" + seconds.encode() + b"\0":
                    found.append(pid)
            except OSError:
                pass
        return found
    deadline = time.time() + 5
    while sleeping() and time.time() < deadline:
        time.sleep(0.05)
    assert not sleeping()


def test_a_direct_stop_can_be_a_signal_to_the_pidfile_process(tmp_path):
    """A daemon whose own stop command a newer version replaced (4.x's mfscgiserv is a stub):
    its pidfile's process gets the signal; anything but a stop signal with a pidfile is refused."""
    import subprocess
    import types
    daemon = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "old.lock").write_text("%d\n" % daemon.pid)
        host = stackboot.Host(str(tmp_path), stackboot.Runner(str(tmp_path)))
        services = stackboot.DirectServices(host)
        step = types.SimpleNamespace(args={"name": "old", "direct": {
            "start": ["/usr/bin/sleep", "start"], "stop": "SIGTERM", "pidfile": "/run/old.lock"}})
        assert services.state(step).running
        with host.changes_allowed():
            services.do(step, "stop")
        assert daemon.wait(10) == -15
        assert not services.state(step).running
        step.args["direct"]["stop"] = "SIGHUP"
        with pytest.raises(stackboot.StackbootError, match="must be SIGTERM, SIGINT or SIGKILL, with a pidfile"):
            services.state(step)
    finally:
        daemon.kill()
        daemon.wait()
