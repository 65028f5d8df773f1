"""Host firewalls for real: ufw in a node's own network namespace, firewalld offline and running.

Three bare bookworm roots, each in its own network namespace. On the master's node ufw is
enabled first, as an administrator would: a chunkserver on the other node cannot reach the
master (its packets are dropped) until stackboot lets the master's ports in, and then it
registers. Uninstall closes them again (dropped, not refused). firewalld is driven through
firewall-offline-cmd, as on a host without its daemon running (a chroot, an image being built),
then with its daemon running (and D-Bus, in the node's namespace), as on the RHEL family: the
port is rejected until stackboot opens it for now and for good.
"""

import os
import signal
import subprocess
import time

import pytest

from cluster import Cluster, install, wait_for
from conftest import need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]
CONNECT = ("import socket, sys\ns = socket.socket(); s.settimeout(2)\n"
           "try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print('open')\n"
           "except socket.timeout:\n    print('dropped')\n"
           "except OSError as e:\n    print({111: 'refused', 113: 'rejected'}.get(e.errno, e))\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    need_bare_root("bookworm")
    built = Cluster(str(tmp_path_factory.mktemp("firewall")))
    try:
        for name in ("master", "cs", "rhel-like"):
            built.add(name)
        yield built
    finally:
        built.destroy()


def apt_install(node, *names):
    """From the root's own apt cache (the namespace has no way out); no daemon starts (policy-rc.d)."""
    with open(node.path("/usr/sbin/policy-rc.d"), "w") as handle:
        handle.write("#!/bin/sh\nexit 101\n")
    os.chmod(node.path("/usr/sbin/policy-rc.d"), 0o755)
    node.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--no-download",
              "--no-install-recommends"] + list(names))


def reach(node, ip, port):
    return node.run(["python3", "-c", CONNECT, ip, str(port)]).stdout.strip()


def test_ufw_lets_a_chunkserver_reach_the_master_only_once_stackboot_opened_its_ports(lab):
    master, cs = lab.nodes["master"], lab.nodes["cs"]
    apt_install(master, "ufw", "procps")
    assert "Firewall is active" in master.run(["ufw", "--force", "enable"]).stdout
    common = ["--set", "method=packages", "--set", "master_host=" + master.ip]
    out = install(master, "master", "cli", "--set", "method=packages", "--set", "firewall=off")
    assert "firewall" not in out
    assert reach(cs, master.ip, 9420) == "dropped"
    install(cs, "chunkserver", "--set", "disks=/srv/hdd1", *common)

    def listed():
        out = master.run(["mfscli", "-H", master.ip, "-SCS"], check=False).stdout
        return out if cs.ip in out else None
    with pytest.raises(AssertionError, match="timed out"):
        wait_for("the chunkserver (it must not get through)", listed, timeout=6)

    plan = master.stackboot("plan", "master", "cli")   # firewall=off is remembered, as every --set is
    assert "firewall" not in plan.stdout and plan.stdout.startswith("Plan: 0 to change"), plan.stdout
    plan = master.stackboot("plan", "master", "cli", "--set", "firewall=auto")
    assert "+ firewall 9419/tcp,9420/tcp,9421/tcp: let 9419-9421/tcp in (ufw, for MooseFS master)" in plan.stdout, plan.stdout
    out = install(master, "master", "cli", "--set", "firewall=auto")
    assert "let 9419-9421/tcp in (ufw" in out
    status = master.run(["ufw", "status"]).stdout
    assert "9419:9421/tcp" in status and "# stackboot: MooseFS master" in status
    assert reach(cs, master.ip, 9420) == "open"
    wait_for("the chunkserver registered", listed, timeout=60)
    again = master.stackboot("install", "master", "cli")
    assert again.returncode == 0 and again.stdout.splitlines()[-1].startswith("Install: 0 changed"), again.stdout + again.stderr

    out = master.stackboot("uninstall", "master", "cli")
    assert out.returncode == 0 and "- firewall 9419/tcp,9420/tcp,9421/tcp: close 9419-9421/tcp (ufw)" in out.stdout, out.stdout
    assert "9419:9421" not in master.run(["ufw", "status"]).stdout
    assert reach(cs, master.ip, 9420) == "dropped"   # the port is closed again, not merely unserved (that would be refused)


def test_firewalld_without_its_daemon_is_edited_with_its_offline_tool(lab):
    node = lab.nodes["rhel-like"]
    apt_install(node, "firewalld", "netbase")   # (firewalld needs /etc/protocols, which every host but a bare root has)
    assert os.path.lexists(node.path("/etc/systemd/system/multi-user.target.wants/firewalld.service"))   # enabled at boot
    plan = node.stackboot("plan", "gui", "--set", "method=packages", "--set", "master_host=10.1.0.1")
    assert "+ firewall 9425/tcp: let 9425/tcp in (firewalld zone public, for MooseFS GUI)" in plan.stdout, plan.stdout + plan.stderr
    out = install(node, "gui", "--set", "method=packages", "--set", "master_host=10.1.0.1")
    assert node.run(["firewall-offline-cmd", "--query-port=9425/tcp"], check=False).stdout.strip() == "yes"
    assert '<port port="9425" protocol="tcp"/>' in open(node.path("/etc/firewalld/zones/public.xml")).read()
    again = node.stackboot("install", "gui")
    assert again.stdout.splitlines()[-1].startswith("Install: 0 changed"), again.stdout + again.stderr
    out = node.stackboot("uninstall", "gui")
    assert out.returncode == 0 and "- firewall 9425/tcp: close 9425/tcp (firewalld zone public)" in out.stdout, out.stdout + out.stderr
    assert node.run(["firewall-offline-cmd", "--query-port=9425/tcp"], check=False).stdout.strip() == "no"


def test_firewalld_running_lets_the_master_in_now_and_at_boot(lab):
    node, cs = lab.nodes["rhel-like"], lab.nodes["cs"]
    os.makedirs(node.path("/run"), exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", node.path("/run")], check=True)   # the daemons' own /run
    lab.mounts.append(node.path("/run"))
    os.makedirs(node.path("/run/dbus"))
    dbus = int(node.run(["dbus-daemon", "--system", "--fork", "--print-pid"]).stdout.split()[0])
    daemon = subprocess.Popen(node.enter() + ["firewalld", "--nofork", "--nopid"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    try:
        wait_for("firewalld", lambda: node.run(["firewall-cmd", "--state"], check=False).stdout.strip() == "running", timeout=60)
        install(node, "master", "--set", "method=packages", "--set", "firewall=off")
        assert reach(cs, node.ip, 9421) == "rejected"   # firewalld's public zone rejects what it does not know
        plan = node.stackboot("plan", "master", "--set", "firewall=auto")
        assert "+ firewall 9419/tcp,9420/tcp,9421/tcp: let 9419-9421/tcp in (firewalld zone public, for MooseFS master)" \
            in plan.stdout, plan.stdout + plan.stderr
        install(node, "master", "--set", "firewall=auto")
        assert reach(cs, node.ip, 9421) == "open"   # now (runtime) ...
        assert node.run(["firewall-cmd", "--permanent", "--query-port=9419-9421/tcp"], check=False).stdout.strip() == "yes"   # ... for good
        again = node.stackboot("install", "master")
        assert again.stdout.splitlines()[-1].startswith("Install: 0 changed"), again.stdout + again.stderr
        out = node.stackboot("uninstall", "master")
        assert "- firewall 9419/tcp,9420/tcp,9421/tcp: close 9419-9421/tcp (firewalld zone public)" in out.stdout, out.stdout + out.stderr
        assert node.run(["firewall-cmd", "--query-port=9419-9421/tcp"], check=False).stdout.strip() == "no"
        assert node.run(["firewall-cmd", "--permanent", "--query-port=9419-9421/tcp"], check=False).stdout.strip() == "no"
    finally:
        daemon.send_signal(signal.SIGTERM)   # it removes its rules as it goes
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        os.kill(dbus, signal.SIGTERM)
        time.sleep(0.5)
