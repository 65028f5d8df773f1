"""lab for real, on this host: the seed topology (master+cli, GUI, metalogger, four labelled
chunkservers, two clients) from Debian's MooseFS packages, each node in its own network
namespace. A file written through client 1 is read through client 2, the GUI answers the
host, `down` keeps the data and `up` brings it back, `destroy` leaves nothing behind.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request

import pytest

from conftest import TOP, run_main
from stackboot import topology
from test_json import document

pytestmark = [pytest.mark.root]

NAME = "lt%d" % (os.getpid() % 10000)
SUBNET = "10.215.%d" % (os.getpid() % 200 + 20)


def stackboot(*args):
    result = subprocess.run([sys.executable, os.path.join(TOP, "stackboot.py")] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    return result.returncode, result.stdout, result.stderr


def lab_cluster(directory, name=NAME, subnet=SUBNET):
    """The built-in seed cluster moved into a subnet of this test's own."""
    with open(os.path.join(TOP, "profiles/clusters/seed.json")) as handle:
        text = handle.read().replace("10.42.0.", subnet + ".")
    path = os.path.join(directory, name + ".json")
    with open(path, "w") as handle:
        handle.write(text)
    return path, json.loads(text)


def namespaces():
    return sorted(name for name in os.listdir("/run/netns") if name.startswith("sb-%s-" % NAME)) \
        if os.path.isdir("/run/netns") else []


def mounts_under(path):
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(path)]


def daemon_pids(labdir):
    """The pids in every node's lock files (what the lab started)."""
    pids = []
    for folder, _, files in os.walk(labdir):
        for name in files:
            if name.endswith(".lock") and name.startswith(".mfs"):
                with open(os.path.join(folder, name)) as handle:
                    text = handle.read().split()
                if text and text[0].isdigit():
                    pids.append(int(text[0]))
    return pids


def lab_pids():
    """Every process in the lab's namespaces: the daemons and the clients' FUSE processes."""
    return [int(pid) for netns in namespaces() for pid in
            subprocess.run(["ip", "netns", "pids", netns], stdout=subprocess.PIPE, universal_newlines=True).stdout.split()]


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def workdir():
    """Under /var/tmp, not pytest's 0700 tmp: the daemons run as mfs and must reach their dirs.
    Whatever a failed test leaves is taken down here, by the lab itself and then by hand."""
    had_state = os.path.exists("/var/lib/stackboot"), os.path.exists("/var/log/stackboot.log")
    path = tempfile.mkdtemp(prefix="stackboot-lab-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    labdir = os.path.join(path, NAME)
    if os.path.exists(os.path.join(labdir, "lab.json")):
        stackboot("lab", "destroy", "--dir", labdir)
    for point in reversed(mounts_under(path)):
        subprocess.run(["umount", "-l", point])
    for pid in daemon_pids(path) + lab_pids():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    for netns in namespaces() + ["sb-%s-switch" % NAME]:
        subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "del", "sb-" + NAME], stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)
    if not had_state[0]:
        shutil.rmtree("/var/lib/stackboot", ignore_errors=True)
    if not had_state[1] and os.path.exists("/var/log/stackboot.log"):
        os.unlink("/var/log/stackboot.log")


def test_lab_up_down_up_destroy(workdir):
    if not os.path.exists("/usr/sbin/mfsmaster") or not os.path.exists("/dev/fuse"):
        pytest.skip("needs Debian's moosefs-* packages on this host (make deps) and /dev/fuse")
    cluster_file, cluster = lab_cluster(workdir)
    labdir = os.path.join(workdir, NAME)
    nodes = cluster["nodes"]

    code, out, err = stackboot("lab", "up", cluster_file, "--dir", labdir)
    assert code == 0, out + err
    assert "Lab %s is up: 9 nodes on %s.0/24, this host is %s.1 (sb-%s)" % (NAME, SUBNET, SUBNET, NAME) in out
    assert namespaces() == sorted(["sb-%s-%s" % (NAME, node) for node in nodes] + ["sb-%s-switch" % NAME])
    # each node has its own config and data, written by the roles' own steps
    for node in ("cs1", "cs2", "cs3", "cs4"):
        with open(os.path.join(labdir, "nodes", node, "etc/mfs/mfschunkserver.cfg")) as handle:
            config = handle.read()
        assert "MASTER_HOST = %s.10" % SUBNET in config
        assert "LABELS = %s" % nodes[node]["parameters"]["labels"] in config
    gui_url = "http://%s.11:9425/mfs.cgi?masterhost=%s.10" % (SUBNET, SUBNET)
    assert "MooseFS GUI: " + gui_url in out

    client1 = os.path.join(labdir, "nodes/client1/mnt/mfs")
    client2 = os.path.join(labdir, "nodes/client2/mnt/mfs")
    assert mounts_under(labdir) == [client1, client2]
    payload = os.urandom(3 * 1024 * 1024)
    with open(os.path.join(client1, "written-by-client1"), "wb") as handle:
        handle.write(payload)
    with open(os.path.join(client2, "written-by-client1"), "rb") as handle:
        assert handle.read() == payload

    # the GUI answers the host itself, through the lab's veth
    with urllib.request.urlopen(gui_url, timeout=30) as response:
        assert response.status == 200 and b"MooseFS" in response.read()

    code, out, err = stackboot("lab", "status", "--dir", labdir)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "Lab %s: up, 9 nodes on %s.0/24, this host is %s.1 (sb-%s)" % (NAME, SUBNET, SUBNET, NAME)
    assert re.search(r"^  master +%s\.10 +master cli +moosefs-master running$" % SUBNET, out, re.M), out
    assert re.search(r"^  client2 +%s\.32 +client +%s mounted$" % (SUBNET, re.escape(client2)), out, re.M), out
    for node, labels in (("cs1", "M"), ("cs2", "B,M"), ("cs3", "B,M"), ("cs4", "B")):
        at = lines.index(next(line for line in lines if line.startswith("  %s " % node)))
        assert "moosefs-chunkserver running" in lines[at]
        # what the master says about this chunkserver: its address, port and labels
        assert re.match(r"^ +master says: chunk servers: %s\.2\d 9422 \d %s " % (SUBNET, re.escape(labels)), lines[at + 1]), out
    assert "master says: metadata backup loggers: %s.12 " % SUBNET in out
    assert "master says: active mounts, parameters: " in out and "%s.31 %s " % (SUBNET, client1) in out
    code, out, err = stackboot("lab", "status", "--dir", labdir, "--json")
    data = document(out, "lab", 0)   # the same, as data
    assert data["lab"]["name"] == NAME and [node["name"] for node in data["nodes"]] == list(nodes)
    assert data["nodes"][0]["running"] == ["moosefs-master running"]
    assert any(line.startswith("master says: chunk servers: %s.21 " % SUBNET) for line in data["nodes"][3]["reported"])

    code, out, err = stackboot("lab", "up", cluster_file, "--dir", labdir)
    assert code == 0 and out.splitlines()[-1].endswith("; 0 changed."), out + err

    # another lab cannot take the same subnet while this one holds it
    other_file, _ = lab_cluster(workdir, name="other")
    code, out, err = stackboot("lab", "up", other_file, "--dir", os.path.join(workdir, "other"))
    assert code == 64 and "already has a route into the lab's subnet %s.0/24: %s.0/24 via sb-%s" % (SUBNET, SUBNET, NAME) in err
    assert not os.path.exists(os.path.join(workdir, "other"))

    pids = lab_pids()
    assert len(pids) >= 9   # master, cgiserv, metalogger, four chunkservers, two mfsmounts (and helpers)
    code, out, err = stackboot("lab", "down", "--dir", labdir)
    assert code == 0, out + err
    assert "- service moosefs-master: stop" in out and "- mount %s: unmount" % client1 in out
    assert out.splitlines()[-1].startswith("Lab %s is down: 9 stopped" % NAME)
    assert namespaces() == [] and mounts_under(labdir) == []
    assert not any(alive(pid) for pid in pids)
    assert not os.path.exists("/sys/class/net/sb-" + NAME)
    assert os.path.exists(os.path.join(labdir, "nodes/master/var/lib/mfs/metadata.mfs"))

    code, out, err = stackboot("lab", "up", cluster_file, "--dir", labdir)
    assert code == 0, out + err
    assert "+ service moosefs-master: start" in out and "+ directory" not in out   # same cluster, same files
    for client in (client1, client2):
        with open(os.path.join(client, "written-by-client1"), "rb") as handle:
            assert handle.read() == payload

    pids = lab_pids()
    assert len(pids) >= 9
    code, out, err = stackboot("lab", "destroy", "--dir", labdir, "--json")
    assert code == 0, out + err
    assert "Lab %s destroyed: 9 stopped" % NAME in err   # (--json: the text is progress, on stderr)
    destroyed = document(out, "lab", 0)
    assert {step["node"] for step in destroyed["steps"] if "node" in step} == set(nodes)
    assert any(step["kind"] == "netns" and step["changes"][0]["action"] == "remove" for step in destroyed["steps"])
    assert namespaces() == [] and not os.path.exists("/run/netns/sb-%s-switch" % NAME)
    assert mounts_under(workdir) == []
    assert not any(alive(pid) for pid in pids)
    assert not os.path.exists(labdir) and not os.path.exists("/sys/class/net/sb-" + NAME)


def test_lab_refuses_bad_clusters_and_missing_labs(tmp_path, monkeypatch):
    monkeypatch.setattr("stackboot.LAB_BASE", str(tmp_path / "labs"))
    path = tmp_path / "far.json"
    path.write_text(json.dumps({"subnet": "10.216.0.0/24", "parameters": {"method": "packages", "master_host": "10.216.0.10"},
                                "nodes": {"master": {"address": "10.216.1.10", "roles": ["master"]}}}))
    code, out, err = run_main(["lab", "up", str(path)], None, None)
    assert code == 64
    assert "error: %s: node master: 10.216.1.10 is outside the subnet 10.216.0.0/24; " \
           "give it an address in the subnet, or change the subnet" % path in err
    bad_name = tmp_path / "Not_A_Name.json"
    bad_name.write_text(path.read_text())
    code, out, err = run_main(["lab", "up", str(bad_name)], None, None)
    assert code == 64 and 'lab name "Not_A_Name"' in err
    code, out, err = run_main(["lab", "status"], None, None)
    assert code == 64 and "error: no lab under %s; start one with `stackboot lab up`" % (tmp_path / "labs") in err
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    path.write_text(path.read_text().replace("10.216.1.10", "10.216.0.10"))
    code, out, err = run_main(["lab", "up", str(path), "--dir", str(private / "far")], None, None)
    assert code == 64 and "is mode 0700: the nodes' daemons, which run as their own user, cannot reach" in err
    assert not os.path.exists(str(private / "far"))
    assert "Traceback" not in err


def test_lab_set_values_and_what_may_change_while_it_is_up(workdir, monkeypatch):
    """--set is a lab's upgrade path (lab up only); a lab that is up keeps its nodes, not its values."""
    import pathlib
    tmp_path = pathlib.Path(workdir)
    monkeypatch.setattr("stackboot.LAB_BASE", str(tmp_path / "labs"))
    cluster = {"subnet": "10.217.0.0/24", "parameters": {"method": "packages", "master_host": "10.217.0.10"},
               "nodes": {"master": {"address": "10.217.0.10", "roles": ["master"]}}}
    path = tmp_path / "held.json"
    path.write_text(json.dumps(cluster))
    code, out, err = run_main(["lab", "status", "--set", "version=4.58.1"], None, None)
    assert code == 64 and "error: --set is for lab up (the values of its nodes)" in err
    code, out, err = run_main(["lab", "up", str(path), "--set", "verison=4.58.1"], None, None)
    assert code == 64 and 'unknown parameter "verison"' in err
    labdir = tmp_path / "labs" / "held"
    labdir.mkdir(parents=True)
    (labdir / "lab.json").write_text(json.dumps({"name": "held", "origin": str(path), "cluster": cluster, "status": "up",
                                                 "network": "10.217.0.0/24", "host_address": "10.217.0.1"}))
    moved = dict(cluster, nodes={"master": {"address": "10.217.0.11", "roles": ["master"]}})
    path.write_text(json.dumps(moved))
    code, out, err = run_main(["lab", "up", str(path)], None, None)
    assert code == 64 and "error: lab held is up with other nodes (names, addresses or roles)" in err
    assert topology(cluster) == topology(dict(cluster, parameters={"method": "source"}))
    assert topology(cluster) != topology(moved)
