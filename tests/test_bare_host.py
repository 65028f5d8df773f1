"""Bare hosts: debootstrapped Debian roots, stackboot piped into `chroot ROOT python3 -` and via --root.

The roots are built once per machine (tests/bareroot.py) and copied per test.
The demo daemon is started by stackboot in direct mode; the test reaches it on
loopback and stops it by the PID in its pid file.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import bareroot
from conftest import TESTS, TOP, bare_root_copy

pytestmark = [pytest.mark.root, pytest.mark.bareroot]
PYTHONS = {"bookworm": "3.11", "bullseye": "3.9", "trixie": "3.13"}   # the SPEC's real runs: 3.9, 3.11, 3.13


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=sorted(PYTHONS))
def root(request, tmp_path):
    path = bare_root_copy(request.param, str(tmp_path / "root"))
    yield request.param, path
    stop_demo(path)
    bareroot.cleanup_root(path)


def stop_demo(root):
    try:
        pid = int(open(os.path.join(root, "run/demo/demo.pid")).read().split()[0])
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def piped(root, *args):
    """What a user does: curl ... | chroot ROOT python3 - ARGS."""
    with open(os.path.join(TOP, "stackboot.py")) as script:
        return subprocess.run(["chroot", root, "/usr/bin/python3", "-"] + list(args), stdin=script,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


def from_host(root, *args):
    return subprocess.run([sys.executable, os.path.join(TOP, "stackboot.py"), "--root", root,
                           "--profiles", os.path.join(TESTS, "profiles")] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def install_profile(root):
    target = os.path.join(root, "etc/stackboot/profiles")
    os.makedirs(target)
    with open(os.path.join(TESTS, "profiles", "demo-node.json")) as src, \
            open(os.path.join(target, "demo-node.json"), "w") as dst:
        dst.write(src.read())


def fetch(port):
    deadline = time.time() + 10
    while True:
        try:
            return urllib.request.urlopen("http://127.0.0.1:%d/index.txt" % port, timeout=5).read().decode()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def assert_converged(result):
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Install: 0 changed, 11 already right."
    assert result.stderr.splitlines()[-1] == "stackboot: done (exit 0)"


def test_piped_into_the_root(root):
    suite, path = root
    install_profile(path)
    port = free_port()
    version = piped(path, "facts")
    assert "python           %s." % PYTHONS[suite] in version.stdout and "init             none" in version.stdout
    first = piped(path, "install", "demo-node", "--set", "port=%d" % port)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines()[-1] == "Install: 11 changed, 0 already right."
    assert fetch(port) == "hello from debian %s\n" % {"bookworm": "12", "bullseye": "11", "trixie": "13"}[suite]
    assert_converged(piped(path, "install", "demo-node"))       # remembered port, nothing to do
    assert_converged(from_host(path, "install", "demo-node"))   # the same state seen from the host
    changed = piped(path, "install", "demo-node", "--set", "greeting=bonjour")
    assert "~ file /srv/demo/index.txt: update /srv/demo/index.txt" in changed.stdout
    assert "service demo" not in changed.stdout   # index.txt is not something the daemon restarts for
    assert fetch(port).startswith("bonjour from debian")
    log = open(os.path.join(path, "var/log/stackboot.log")).read()
    assert '"kind": "change"' in log and "apt-get" in log


def test_through_root_from_the_host(root):
    suite, path = root
    port = free_port()
    plan = from_host(path, "plan", "demo-node", "--set", "port=%d" % port, "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    assert "+ packages busybox: install busybox" in plan.stdout
    assert not os.path.exists(os.path.join(path, "var/lib/stackboot"))   # planning wrote nothing
    first = from_host(path, "install", "demo-node", "--set", "port=%d" % port)
    assert first.returncode == 0, first.stdout + first.stderr
    assert os.path.exists(os.path.join(path, "bin/busybox"))
    assert "demo:" in open(os.path.join(path, "etc/passwd")).read()
    assert fetch(port).startswith("hello from debian")
    assert_converged(from_host(path, "install", "demo-node"))
    # a config change restarts the daemon on the new port
    new_port = free_port()
    moved = from_host(path, "install", "demo-node", "--set", "port=%d" % new_port)
    assert "~ service demo: restart (demo.cfg changed)" in moved.stdout, moved.stdout + moved.stderr
    assert fetch(new_port).startswith("hello")
    check = from_host(path, "check")
    assert check.returncode == 0, check.stdout


def in_root(root, *argv):
    """A command inside the root with a bare environment (no PYTHONDONTWRITEBYTECODE: a host has none)."""
    return subprocess.run(["chroot", root] + list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


def test_self_install_leaves_a_module_with_its_bytecode(root):
    suite, path = root
    direct = [sys.executable, os.path.join(TOP, "stackboot.py"), "--root", path]
    first = subprocess.run(direct + ["self-install"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Self-install: 4 changed, 0 already right." in first.stdout
    cached = os.path.join(path, "usr/local/lib/stackboot/__pycache__/stackboot.cpython-%s.pyc" % PYTHONS[suite].replace(".", ""))
    assert os.path.isfile(cached)   # compiled by the root's own Python
    installed = in_root(path, "/usr/bin/python3", "/usr/local/sbin/stackboot", "list")
    listed = subprocess.run(direct + ["list"], stdout=subprocess.PIPE, universal_newlines=True)
    assert installed.returncode == 0 and installed.stdout == listed.stdout, installed.stderr
    where = in_root(path, "/usr/bin/python3", "-c", "import sys; sys.path.insert(0, '/usr/local/lib/stackboot'); "
                                                     "import stackboot; print(stackboot.__cached__)")
    assert where.stdout.strip() == cached[len(path):]
    again = subprocess.run(direct + ["self-install"], stdout=subprocess.PIPE, universal_newlines=True)
    assert "Self-install: 0 changed, 4 already right." in again.stdout
    piped_in = piped(path, "self-install")   # piped, stackboot has no file of its own to copy: one clear line
    assert piped_in.returncode == 64 and "it was piped in" in piped_in.stderr


def test_zipapp_takes_its_bytecode_where_the_python_matches_and_the_source_elsewhere(root, tmp_path):
    import stackboot
    suite, path = root
    with open(os.path.join(TOP, "stackboot.py"), "rb") as handle:
        stackboot.write_zipapp(os.path.join(path, "root/stackboot.pyz"), handle.read())
    loaded = in_root(path, "/usr/bin/python3", "-c", "import sys; sys.path.insert(0, '/root/stackboot.pyz'); "
                                                      "import stackboot; print(stackboot.__file__)")
    same = "%d.%d" % sys.version_info[:2] == PYTHONS[suite]
    assert loaded.stdout.strip() == "/root/stackboot.pyz/stackboot.py" + ("c" if same else ""), loaded.stderr
    listed = in_root(path, "/usr/bin/python3", "/root/stackboot.pyz", "list")
    assert listed.returncode == 0 and "master " in listed.stdout, listed.stderr
