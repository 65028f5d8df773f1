"""uninstall for real: a MooseFS master from Debian's packages in a bare root (in its own network
namespace) is stopped and its written configs removed, a hand-edited one and the metadata kept;
a re-install finds the data; --purge-data asks for --yes, then deletes the data directory.
Client mounts and source-build manifests are undone on fake hosts in test_steps-style tests below.
"""

import os

import pytest

from cluster import Cluster
from conftest import need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]


def run(node, *args):
    result = node.stackboot(*args)
    return result.returncode, result.stdout, result.stderr


def test_uninstall_keeps_data_and_edits_and_a_reinstall_finds_the_data(tmp_path):
    need_bare_root("bookworm")
    lab = Cluster(str(tmp_path / "hosts"))
    try:
        node = lab.add("m1")
        code, out, err = run(node, "install", "master", "--set", "method=packages")
        assert code == 0, out + err
        pid = node.pid_of("/var/lib/mfs/.mfsmaster.lock")
        with open(node.path("/etc/mfs/mfsexports.cfg"), "a") as handle:
            handle.write("10.0.0.0/8 / ro\n")   # somebody's own export

        code, out, err = run(node, "uninstall", "master")
        assert code == 0, out + err
        assert "- service moosefs-master: stop" in out
        assert "- file /etc/mfs/mfsmaster.cfg: remove /etc/mfs/mfsmaster.cfg" in out
        assert "  kept /etc/mfs/mfsexports.cfg: edited by hand since stackboot wrote it" in out
        assert "  kept /var/lib/mfs/metadata.mfs: MooseFS metadata; a re-install finds it" in out
        assert "  kept /var/lib/mfs: data (--purge-data removes it)" in out
        assert out.splitlines()[-1].startswith("Uninstall: ")
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split(")")[-1].split()[0] == "Z"
        assert not os.path.exists(node.path("/etc/mfs/mfsmaster.cfg"))
        assert os.path.exists(node.path("/etc/mfs/mfsexports.cfg"))
        metadata = open(node.path("/var/lib/mfs/metadata.mfs"), "rb").read()   # a clean stop wrote it
        assert metadata.startswith(b"MFSM")
        code, out, err = run(node, "uninstall", "master")
        assert code == 64 and "master not installed here" in err

        # a re-install finds the data: the metadata is used, not replaced
        code, out, err = run(node, "install", "master", "--set", "method=packages", "--force")
        assert code == 0, out + err
        assert "moosefs-metadata" not in out and "+ service moosefs-master: start" in out
        assert open(node.path("/var/lib/mfs/metadata.mfs.back"), "rb").read() == metadata

        code, out, err = run(node, "uninstall", "master", "--purge-data")
        assert code == 64 and "error: --purge-data deletes data and nobody is here to confirm it; add --yes" in err
        assert os.path.isdir(node.path("/var/lib/mfs"))
        code, out, err = run(node, "uninstall", "master", "--purge-data", "--yes")
        assert code == 0, out + err
        assert "- directory /var/lib/mfs: remove /var/lib/mfs and everything in it (--purge-data)" in out
        assert not os.path.exists(node.path("/var/lib/mfs"))
    finally:
        lab.destroy()
