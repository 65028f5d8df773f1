"""stackboot.py as an Ansible module, for real: ansible-core (pinned in the Makefile) runs a
playbook whose library/ holds stackboot.py, against a bare bookworm root (the module's `root:`,
ansible_connection=local), in a network namespace of the test's own so the master it starts
listens there. First run changed, second changed=0, --check changes nothing, --diff shows
mfsmaster.cfg's diff, a bad parameter fails the task with the error line, and a secret given in
`set:` never shows, even with -vvv."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

import bareroot
from conftest import TOP, need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]

NETNS = "sb-ans-%d" % os.getpid()
SECRET = "Vault-Token-7f3a9c"
PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: a MooseFS master, from Debian's packages
      stackboot:
        roles: [master, cli]
        root: "{{ root }}"
        set: "{{ values }}"
"""


def sh(*argv, **options):
    return subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **options)


@pytest.fixture
def play(tmp_path):
    pytest.importorskip("ansible")
    need_bare_root("bookworm")
    root = bareroot.fresh_root("bookworm", str(tmp_path / "root"))
    os.makedirs(str(tmp_path / "library"))
    shutil.copy(os.path.join(TOP, "stackboot.py"), str(tmp_path / "library" / "stackboot.py"))
    (tmp_path / "inventory").write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    assert sh("ip", "netns", "add", NETNS).returncode == 0
    sh("ip", "-n", NETNS, "link", "set", "lo", "up")

    def run(*options, values=None, playbook=PLAYBOOK, roles=None):
        (tmp_path / "play.yml").write_text(playbook if roles is None else playbook.replace("[master, cli]", roles))
        extra = json.dumps({"root": root, "values": dict({} if roles else {"method": "packages"}, **(values or {}))})
        env = dict(os.environ, ANSIBLE_LIBRARY=str(tmp_path / "library"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
                   ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_STDOUT_CALLBACK="default")
        return sh("ip", "netns", "exec", NETNS, sys.executable, "-m", "ansible.cli.playbook", "-i", str(tmp_path / "inventory"),
                  "-e", extra, str(tmp_path / "play.yml"), *options, env=env, timeout=900)
    try:
        yield root, run
    finally:
        try:
            with open(os.path.join(root, "var/lib/mfs/.mfsmaster.lock")) as handle:
                os.kill(int(handle.read().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass
        bareroot.cleanup_root(root)
        sh("ip", "netns", "delete", NETNS)


def recap(result):
    line = next(line for line in result.stdout.splitlines() if line.startswith("localhost "))
    return dict((key, int(value)) for key, value in (word.split("=") for word in line.split()[2:]))


def installed(root, package):
    return sh("chroot", root, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", package).stdout.startswith("ii")


def test_stackboot_as_an_ansible_module(play):
    root, run = play
    checked = run("--check")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert recap(checked)["changed"] == 1 and not installed(root, "moosefs-master")   # check mode: planned only
    assert not os.path.exists(os.path.join(root, "etc/mfs/mfsmaster.cfg"))

    first = run()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert recap(first)["changed"] == 1 and installed(root, "moosefs-master") and installed(root, "moosefs-cli")
    assert os.path.exists(os.path.join(root, "var/lib/mfs/.mfsmaster.lock"))
    second = run()
    assert second.returncode == 0 and recap(second)["changed"] == 0, second.stdout[-3000:]
    assert run("--check").stdout.count("ok: [localhost]") == 1   # converged: check mode says so too

    before = open(os.path.join(root, "etc/mfs/mfsmaster.cfg")).read()
    diffed = run("--check", "--diff", values={"master_listen_host": "0.0.0.0"})
    assert diffed.returncode == 0 and recap(diffed)["changed"] == 1, diffed.stdout[-3000:]
    assert "-MATOCL_LISTEN_HOST = *" in diffed.stdout and "+MATOCL_LISTEN_HOST = 0.0.0.0" in diffed.stdout, diffed.stdout[-3000:]
    assert open(os.path.join(root, "etc/mfs/mfsmaster.cfg")).read() == before

    bad = run(values={"master_listen_host": "0.0.0.0; rm -rf /"})
    assert bad.returncode == 2 and recap(bad)["failed"] == 1, bad.stdout[-3000:]
    assert "parameter master_listen_host (from --set)" in bad.stdout and "Traceback" not in bad.stdout + bad.stderr
    assert open(os.path.join(root, "etc/mfs/mfsmaster.cfg")).read() == before

    # a secret parameter: never in the output, whatever the verbosity
    os.makedirs(os.path.join(root, "etc/stackboot/profiles"))
    with open(os.path.join(root, "etc/stackboot/profiles/vault.json"), "w") as handle:
        json.dump({"description": "a token in a file", "parameters": {"token": {"type": "string", "secret": True, "default": None}},
                   "steps": [{"kind": "file", "path": "/etc/vault.conf", "template": "token = {{token}}", "mode": "0600"}]}, handle)
    secret = run("-vvv", "--diff", values={"token": SECRET}, roles="[vault]")
    assert secret.returncode == 0 and recap(secret)["changed"] == 1, secret.stdout[-3000:] + secret.stderr[-3000:]
    assert open(os.path.join(root, "etc/vault.conf")).read().strip() == "token = " + SECRET
    assert SECRET not in secret.stdout + secret.stderr, [line for line in (secret.stdout + secret.stderr).splitlines() if SECRET in line]
