"""A real MooseFS cluster from Debian's packages, installed node by node by stackboot.

master, metalogger, two chunkservers with different labels and a client, each a
bare bookworm root in its own network namespace. The second chunkserver keeps its
disks on btrfs subvolumes of a loop-image store made by the btrfs-store role. A file written through the FUSE
mount reads back; mfscli shows the labelled chunkservers; a second install
changes nothing anywhere; a master killed with -9 comes back through install
(metadata recovered by mfsmaster's own restore) with the file intact. Then the
rescue command: `recover master` after a kill -9 with metadata.mfs gone (and a
backup owned by root), its refusal where nothing can be recovered, and the
promotion of the metalogger host when the master host is lost.
"""

import os
import signal
import subprocess

import pytest

from cluster import Cluster, install, wait_for
from conftest import need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]




@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    need_bare_root("bookworm")
    built = Cluster(str(tmp_path_factory.mktemp("cluster")))
    try:
        for name in ("master", "metalogger", "cs1", "cs2", "client"):
            built.add(name)
        built.give_fuse(built.nodes["client"])
        built.give_devices(built.nodes["cs2"])
        yield built
    finally:
        built.destroy()


def chunkservers(cluster):
    client, master = cluster.nodes["client"], cluster.nodes["master"]
    out = client.run(["mfscli", "-H", master.ip, "-SCS"], check=False).stdout
    return out if out.count(cluster.nodes["cs1"].ip) and out.count(cluster.nodes["cs2"].ip) else None


def test_cluster_installs_node_by_node(cluster):
    master, metalogger, cs1, cs2, client = (cluster.nodes[n] for n in ("master", "metalogger", "cs1", "cs2", "client"))
    common = ["--set", "method=packages", "--set", "master_host=" + master.ip]
    out = install(master, "master", "--set", "method=packages")
    assert "+ moosefs-metadata /var/lib/mfs/metadata.mfs: new cluster" in out
    assert master.pid_of("/var/lib/mfs/.mfsmaster.lock")
    install(metalogger, "metalogger", *common)
    install(cs1, "chunkserver", "--set", "labels=M", "--set", "disks=/srv/hdd1", *common)
    store = ["--set", "store_image=/srv/store.img", "--set", "store_size=2GiB", "--set", "store_mount=/srv/store",
             "--set", "disk_store=btrfs-subvolume", "--set", "leave_space=64MiB"]
    out = install(cs2, "btrfs-store", "chunkserver", "--set", "labels=B",
                  "--set", "disks=/srv/store/hdd1 700MiB,/srv/store/hdd2", *(store + common))
    assert "+ btrfs-subvolume /srv/store/hdd1: create subvolume limited to 700MiB (mfs mfs 0750)" in out, out
    for disk in ("hdd1", "hdd2"):
        assert os.stat(cs2.path("/srv/store/" + disk)).st_ino == 256   # a subvolume's root inode
    assert open(cs2.path("/etc/mfs/mfshdd.cfg")).read().splitlines()[-2:] == ["/srv/store/hdd1 700MiB",
                                                                                "/srv/store/hdd2"]
    out = install(client, "client", "cli", *common)
    assert "+ mount /mnt/mfs: mount now" in out
    listing = wait_for("two chunkservers", lambda: chunkservers(cluster))
    labels = dict((row.split("\t")[1], row.split("\t")[4]) for row in listing.splitlines() if row.count("\t") > 4)
    assert (labels[cs1.ip], labels[cs2.ip]) == ("M", "B"), listing

    # a file written through the FUSE mount (seen from the host) reads back identical
    data = os.urandom(3 * 1024 * 1024 + 17)
    target = client.path("/mnt/mfs/payload.bin")
    wait_for("the mount", lambda: os.path.ismount(client.path("/mnt/mfs")) or None)
    with open(target, "wb") as handle:
        handle.write(data)
    with open(target, "rb") as handle:
        assert handle.read() == data
    def chunks(node, where):
        return [name for root, _, files in os.walk(node.path(where)) for name in files if name.startswith("chunk_")]
    assert chunks(cs1, "/srv/hdd1"), "no chunk files on cs1's disk"
    assert chunks(cs2, "/srv/store/hdd1") + chunks(cs2, "/srv/store/hdd2"), "no chunk files on cs2's subvolumes"

    # every node converged: a second install changes nothing
    for node, args in ((master, ["master"]), (metalogger, ["metalogger"]), (cs1, ["chunkserver"]),
                       (cs2, ["btrfs-store", "chunkserver"]), (client, ["client", "cli"])):
        assert install(node, *args).splitlines()[-1].startswith("Install: 0 changed"), node.name

    # the GUI (3.x packages: mfscgiserv) on the master host, reached from the client's namespace
    install(master, "gui", "--set", "method=packages")
    fetch = "import urllib.request; print(urllib.request.urlopen('http://%s:9425/mfs.cgi', timeout=10).status)" % master.ip
    assert wait_for("the GUI", lambda: client.run(["python3", "-c", fetch], check=False).stdout.strip() == "200")

    # a clean stop writes metadata.mfs; install must leave it as it is and start the master on it
    master.run(["mfsmaster", "-c", "/etc/mfs/mfsmaster.cfg", "stop"])
    metadata = master.path("/var/lib/mfs/metadata.mfs")
    saved = open(metadata, "rb").read()
    assert saved.startswith(b"MFSM") and len(saved) > 8
    out = install(master, "master")
    assert "moosefs-metadata" not in out and "+ service moosefs-master: start" in out
    assert open(master.path("/var/lib/mfs/metadata.mfs.back"), "rb").read() == saved   # the master's own rename

    # the master dies hard; install recovers the metadata with mfsmaster's own restore
    pid = master.pid_of("/var/lib/mfs/.mfsmaster.lock")
    os.kill(pid, signal.SIGKILL)
    wait_for("the master to die", lambda: not os.path.exists("/proc/%d" % pid) or None)
    if os.path.exists(metadata):
        os.unlink(metadata)
    plan = master.stackboot("plan", "master").stdout
    assert "~ moosefs-metadata /var/lib/mfs/metadata.mfs: recover metadata.mfs from the cluster's history" in plan
    out = install(master, "master")
    assert "recover metadata.mfs" in out and "+ service moosefs-master: start" in out
    assert master.pid_of("/var/lib/mfs/.mfsmaster.lock") != pid
    wait_for("the chunkservers to return", lambda: chunkservers(cluster))

    def read_back():
        try:
            with open(target, "rb") as handle:
                return handle.read() == data
        except OSError:
            return None
    assert wait_for("the file after recovery", read_back)


def read_back_through(client, name="payload.bin"):
    def probe():
        try:
            with open(client.path("/mnt/mfs/" + name), "rb") as handle:
                return handle.read()
        except OSError:
            return None
    return probe


def kill_hard(node, lockfile):
    pid = node.pid_of(lockfile)
    os.kill(pid, signal.SIGKILL)
    wait_for("pid %d to die" % pid, lambda: not os.path.exists("/proc/%d" % pid) or None)


def test_recover_master_after_kill_with_metadata_lost(cluster):
    master, client = cluster.nodes["master"], cluster.nodes["client"]
    data = wait_for("the file", read_back_through(client))
    kill_hard(master, "/var/lib/mfs/.mfsmaster.lock")
    if os.path.exists(master.path("/var/lib/mfs/metadata.mfs")):
        os.unlink(master.path("/var/lib/mfs/metadata.mfs"))
    os.chown(master.path("/var/lib/mfs/metadata.mfs.back"), 0, 0)   # as a hand-copied backup would be
    result = master.stackboot("recover", "master")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "  found /var/lib/mfs/metadata.mfs.back (" in out and "~ ownership /var/lib/mfs: metadata.mfs.back -> mfs:mfs" in out
    assert "~ moosefs-metadata /var/lib/mfs/metadata.mfs: recover metadata.mfs from the cluster's history" in out
    assert "+ service moosefs-master: start" in out and out.splitlines()[-1].startswith("Recover: ")
    assert wait_for("the file after recover", lambda: read_back_through(client)() == data or None)


def test_recover_refuses_where_there_is_nothing_to_recover(cluster):
    client = cluster.nodes["client"]   # no MooseFS metadata has ever been here
    result = client.stackboot("recover", "master", "--set", "method=packages")
    assert result.returncode == 1
    assert result.stderr.startswith("error: nothing to recover master from: no /var/lib/mfs/metadata.mfs, "), result.stderr
    assert not os.path.exists(client.path("/var/lib/mfs/metadata.mfs"))


def test_metalogger_promoted_when_the_master_host_is_lost(cluster):
    master, metalogger, client = cluster.nodes["master"], cluster.nodes["metalogger"], cluster.nodes["client"]
    data = wait_for("the file", read_back_through(client))
    kill_hard(master, "/var/lib/mfs/.mfsmaster.lock")   # the master host is gone: nothing on it is touched again
    result = metalogger.stackboot("recover", "master")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "- service moosefs-metalogger: stop (metalogger becomes master)" in out
    assert "  found /var/lib/mfs/changelog_ml" in out, out
    assert "recover metadata.mfs from the cluster's history" in out and "+ service moosefs-master: start" in out
    assert not metalogger.pid_of("/var/lib/mfs/.mfsmetalogger.lock") or \
        not os.path.exists("/proc/%d" % metalogger.pid_of("/var/lib/mfs/.mfsmetalogger.lock"))
    # the mfsmaster name moves: chunkservers and the client follow the new master
    moved = ["--set", "master_host=" + metalogger.ip]
    install(cluster.nodes["cs1"], "chunkserver", *moved)
    install(cluster.nodes["cs2"], "btrfs-store", "chunkserver", *moved)
    for line in open("/proc/self/mountinfo"):
        if line.split()[4] == client.path("/mnt/mfs"):
            subprocess.run(["umount", "-l", client.path("/mnt/mfs")], check=True)
    install(client, "client", "cli", *moved)
    assert wait_for("the file through the promoted master", lambda: read_back_through(client)() == data or None, timeout=90)
