"""A real MooseFS 4.x cluster: Debian trixie's 4.57.5 packages, installed node by node by stackboot.

master, two chunkservers with different labels and two clients, each a bare trixie root (Python
3.13) in its own network namespace. Nobody tells stackboot the series: it asks apt. A file
written through one client's FUSE mount reads back through the other's; mfscli sees the
labelled chunkservers; a second install changes nothing anywhere.
"""

import os

import pytest

from cluster import Cluster, install, wait_for
from conftest import need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]
VERSION = "4.57.5"




@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    need_bare_root("trixie")
    built = Cluster(str(tmp_path_factory.mktemp("cluster4")), suite="trixie")
    try:
        for name in ("master", "cs1", "cs2", "client1", "client2"):
            built.add(name)
        for name in ("client1", "client2"):
            built.give_fuse(built.nodes[name])
        yield built
    finally:
        built.destroy()


def test_a_4x_cluster_from_debian_packages(cluster):
    master, cs1, cs2, client1, client2 = (cluster.nodes[n] for n in ("master", "cs1", "cs2", "client1", "client2"))
    common = ["--set", "method=packages", "--set", "master_host=" + master.ip]
    install(master, "master", *common)
    assert VERSION in master.run(["mfsmaster", "-v"]).stdout
    install(cs1, "chunkserver", "--set", "labels=M", "--set", "disks=/srv/hdd1", *common)
    install(cs2, "chunkserver", "--set", "labels=B", "--set", "disks=/srv/hdd1", *common)
    for client in (client1, client2):
        out = install(client, "client", "cli", *common)
        assert "+ mount /mnt/mfs: mount now" in out

    def labelled():
        out = client1.run(["mfscli", "-H", master.ip, "-SCS"], check=False).stdout
        rows = dict((node.ip, [line for line in out.splitlines() if node.ip in line]) for node in (cs1, cs2))
        return rows if all(rows.values()) else None
    rows = wait_for("two chunkservers", labelled)
    for node, label in ((cs1, "M"), (cs2, "B")):
        assert label in rows[node.ip][0].split(), rows
        assert VERSION in rows[node.ip][0], rows

    # written through one client's mount, read back through the other's
    data = os.urandom(5 * 1024 * 1024 + 29)
    for client in (client1, client2):
        wait_for("the mount", lambda: os.path.ismount(client.path("/mnt/mfs")) or None)
    with open(client1.path("/mnt/mfs/payload.bin"), "wb") as handle:
        handle.write(data)
    with open(client2.path("/mnt/mfs/payload.bin"), "rb") as handle:
        assert handle.read() == data
    chunks = [name for node in (cs1, cs2) for _, _, files in os.walk(node.path("/srv/hdd1")) for name in files
              if name.startswith("chunk_")]
    assert chunks, "no chunk files on the chunkservers' disks"

    for node, args in ((master, ["master"]), (cs1, ["chunkserver"]), (cs2, ["chunkserver"]),
                       (client1, ["client", "cli"]), (client2, ["client", "cli"])):
        assert install(node, *args).splitlines()[-1].startswith("Install: 0 changed"), node.name
