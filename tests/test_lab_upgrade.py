"""A lab upgraded for real, in upstream's order: a bare bookworm root (the "host", in a network
namespace of this test's own) runs `lab up` with Debian's MooseFS 3.0.117 packages, then `lab up
--set` switches the whole cluster to upstream's 4.58.1 source. The software is built once, with
every node's modules; the master's metadata is copied before the 4.x master first runs; the
daemons restart in the cluster file's order (master, metalogger, chunkservers) and the clients
remount last; a file written before the upgrade reads back through both clients after it.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

import bareroot
import upstream
from conftest import TOP, need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]

OUTER = "sb-lu-%d" % os.getpid()   # the root's own network: the lab's host veth lands here
SUBNET = "10.213.%d" % (os.getpid() % 200 + 20)
LAB = "/var/lib/stackboot-lab/up"
SOURCE = "/srv/src/" + upstream.MOOSEFS["file"]
CLUSTER = {
    "description": "the seed's shape, smaller: master, GUI, metalogger, two labelled chunkservers, two clients",
    "subnet": SUBNET + ".0/24",
    "parameters": {"method": "packages", "master_host": SUBNET + ".10"},
    "nodes": {"master": {"address": SUBNET + ".10", "roles": ["master", "cli"]},
              "gui": {"address": SUBNET + ".11", "roles": ["gui"]},
              "metalogger": {"address": SUBNET + ".12", "roles": ["metalogger"]},
              "cs1": {"address": SUBNET + ".21", "roles": ["chunkserver"], "parameters": {"labels": "M"}},
              "cs2": {"address": SUBNET + ".22", "roles": ["chunkserver"], "parameters": {"labels": "B"}},
              "client1": {"address": SUBNET + ".31", "roles": ["client"]},
              "client2": {"address": SUBNET + ".32", "roles": ["client"]}}}
UPGRADE = ["--set", "method=source", "--set", "version=" + upstream.MOOSEFS["version"], "--set", "source_url=file://" + SOURCE,
           "--set", "source_sha256=" + upstream.MOOSEFS["sha256"], "--set", "source_archive=" + SOURCE + ".cached"]


def sh(*argv):
    return subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


@pytest.fixture
def root(tmp_path):
    need_bare_root("bookworm")
    path = bareroot.fresh_root("bookworm", str(tmp_path / "root"))
    os.chmod(str(tmp_path), 0o755)   # the daemons run as mfs: they must reach their directories
    assert sh("ip", "netns", "add", OUTER).returncode == 0
    try:
        sh("ip", "-n", OUTER, "link", "set", "lo", "up")
        upstream.add_build_debs(path, "bookworm")
        os.makedirs(os.path.join(path, "srv/src"))
        shutil.copy(upstream.moosefs_source(), os.path.join(path, SOURCE.lstrip("/")))
        with open(os.path.join(path, "srv/up.json"), "w") as handle:
            json.dump(CLUSTER, handle)
        installed = sh("chroot", path, "apt-get", "install", "-y", "-q", "--no-install-recommends", "iproute2")
        assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]   # from the root's cache
        # `ip -n` makes / a slave mount in a mount namespace of its own: the root must be a mount point
        assert sh("mount", "--bind", path, path).returncode == 0
        fuse = os.path.join(path, "dev/fuse")
        open(fuse, "a").close()
        assert sh("mount", "--bind", "/dev/fuse", fuse).returncode == 0
        assert sh("mount", "-t", "proc", "proc", os.path.join(path, "proc")).returncode == 0
        yield path
    finally:
        if os.path.exists(os.path.join(path, LAB.lstrip("/"), "lab.json")):
            lab(path, "destroy", "up")
        bareroot.cleanup_root(path)   # what is left: its processes killed, the namespaces' mounts gone
        sh("ip", "netns", "delete", OUTER)


def lab(root, *args):
    """stackboot piped into the root's Python, in the root's own network."""
    with open(os.path.join(TOP, "stackboot.py")) as script:
        return subprocess.run(["nsenter", "--net=/run/netns/" + OUTER, "chroot", root, "/usr/bin/python3", "-", "lab"] + list(args),
                              stdin=script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}, timeout=3000)


def in_lab(root, node, *argv):
    return sh("nsenter", "--net=%s/run/netns/sb-up-%s" % (root, node), "chroot", root, *argv)


def test_a_lab_upgraded_from_packages_to_a_source_build_in_upstreams_order(root):
    first = lab(root, "up", "/srv/up.json")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
    assert "3.0.117" in sh("chroot", root, "/usr/sbin/mfsmaster", "-v").stdout
    client1, client2 = (os.path.join(root, LAB.lstrip("/"), "nodes", name, "mnt/mfs") for name in ("client1", "client2"))
    payload = os.urandom(2 * 1024 * 1024)
    with open(os.path.join(client1, "before-the-upgrade"), "wb") as handle:
        handle.write(payload)
    os.makedirs(os.path.join(client1, "a/b"))

    upgrade = lab(root, "up", "/srv/up.json", *UPGRADE)
    assert upgrade.returncode == 0, upgrade.stdout[-6000:] + upgrade.stderr[-3000:]
    lines = upgrade.stdout.splitlines()
    version = upstream.MOOSEFS["version"]

    # the software first, once, for every node: every package goes, one build with every module
    assert lines[lines.index("this host, for every node: master cli gui metalogger chunkserver client") + 1:][0]
    removal = [line for line in lines if "remove packages" in line]
    assert len(removal) == 1 and all(name in removal[0] for name in (
        "moosefs-master", "moosefs-cli", "moosefs-cgiserv", "moosefs-metalogger", "moosefs-chunkserver", "moosefs-client")), removal
    log = [json.loads(line) for line in open(os.path.join(root, "var/log/stackboot.log"))]
    configure = [entry["argv"] for entry in log if entry.get("argv", [None])[0] == "./configure"]
    assert len(configure) == 1, configure
    assert {flag for flag in configure[0] if flag.startswith("--enable-mfs")} == {
        "--enable-mfsmaster", "--enable-mfscli", "--enable-mfsgui", "--enable-mfscgi", "--enable-mfsmetalogger",
        "--enable-mfschunkserver", "--enable-mfsmount"}

    # then the nodes in the cluster's order: the master's metadata saved before its restart, the
    # metalogger and the chunkservers after it, the clients remounted last
    def at(text):
        found = [index for index, line in enumerate(lines) if text in line]
        assert found, (text, upgrade.stdout)
        return found[0]
    saved = at("~ moosefs-upgrade %s/nodes/master/var/lib/mfs/metadata.mfs: upgrade 3.0.117-1 -> %s: first save" % (LAB, version))
    order = [at("~ service moosefs-master: restart"), at("~ service moosefs-metalogger: restart"),
             at("~ service moosefs-chunkserver: restart"), at("~ mount %s/nodes/client1/mnt/mfs: remount" % LAB),
             at("~ mount %s/nodes/client2/mnt/mfs: remount" % LAB)]
    assert at("this host, for every node") < saved < order[0] and order == sorted(order), upgrade.stdout
    backups = os.path.join(root, LAB.lstrip("/"), "nodes/master/var/lib/mfs.backups")
    [backup] = os.listdir(backups)
    assert backup.endswith("-3.0.117-1-to-" + version) and "metadata.mfs.back" in os.listdir(os.path.join(backups, backup))

    # every daemon is the new one, the chunkservers keep their labels, the data is all there
    cli = in_lab(root, "master", "mfscli", "-H", SUBNET + ".10", "-SIN", "-SCS")
    assert cli.returncode == 0 and version in cli.stdout, cli.stdout + cli.stderr
    for pidfile in ("master/var/lib/mfs/.mfsmaster.lock", "metalogger/var/lib/mfs/.mfsmetalogger.lock",
                    "cs1/var/lib/mfs/.mfschunkserver.lock"):
        pid = open(os.path.join(root, LAB.lstrip("/"), "nodes", pidfile)).read().split()[0]
        assert os.readlink("/proc/%s/exe" % pid) == root + "/usr/sbin/" + pidfile.split(".")[-2], pidfile   # not "(deleted)"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with open(os.path.join(client2, "before-the-upgrade"), "rb") as handle:
                if handle.read() == payload:
                    break
        except OSError:
            pass
        time.sleep(1)
    for client in (client1, client2):
        with open(os.path.join(client, "before-the-upgrade"), "rb") as handle:
            assert handle.read() == payload
        assert os.path.isdir(os.path.join(client, "a/b"))
    assert sh("chroot", root, "dpkg", "-V").stdout == ""
    status = lab(root, "status")   # the 4.x master's own account of its chunkservers: their labels kept
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"^  gui +\S+ +gui +moosefs-gui running$", status.stdout, re.M), status.stdout   # (3.x's cgiserv: gone)
    for node, labels in (("cs1", "M"), ("cs2", "B")):
        assert re.search(r"^ +master says: chunkservers: %s 9422 \d+ %s %s " % (
            re.escape(CLUSTER["nodes"][node]["address"]), labels, re.escape(version)), status.stdout, re.M), status.stdout
    for node in ("client1", "client2"):   # a session of the new client on each (the 3.x ones linger as history)
        assert re.search(r"^ +master says: active mounts, parameters: \d+ %s %s/nodes/%s/mnt/mfs \d \d %s " % (
            re.escape(CLUSTER["nodes"][node]["address"]), LAB, node, re.escape(version)), status.stdout, re.M), status.stdout

    again = lab(root, "up", "/srv/up.json", *UPGRADE)
    assert again.returncode == 0 and again.stdout.splitlines()[-1].endswith("; 0 changed."), again.stdout[-3000:]
    back = lab(root, "up", "/srv/up.json")   # the file says packages: 3.0.117 under a 4.x master's metadata
    assert back.returncode == 1 and "node master refused, nothing was changed: refusing mfsmaster 3.0.117-1" in back.stderr, \
        back.stdout[-3000:] + back.stderr
    assert version in sh("chroot", root, "/usr/sbin/mfsmaster", "-v").stdout
