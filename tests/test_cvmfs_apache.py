"""A CernVM-FS stratum 0 with real Apache from Debian, and a client fetching from it over HTTP.

Two bare bookworm roots in their own network namespaces. cvmfs_server and
cvmfs_config are the fakes from fake_cvmfs.py (CERN's packages cannot be had
here); Apache, a2enmod, cron, btrfs and the HTTP between the nodes are real. The
server keeps its storage and spool on btrfs subvolumes of a loop-image store,
bind-mounted at /srv/cvmfs and /var/spool/cvmfs; Apache serves the storage and
the public key; the client downloads the key pinned by its sha256 and probes
the repository through Apache; a publish shows up on the client's side.
"""

import hashlib
import os
import re
import shutil

import pytest

from cluster import Cluster
from conftest import TESTS, need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]
REPO = "sw.example.org"


def give_fakes(node):
    for tool in ("cvmfs_server", "cvmfs_config"):
        target = node.path("/usr/bin/" + tool)
        shutil.copyfile(os.path.join(TESTS, "fake_cvmfs.py"), target)
        os.chmod(target, 0o755)
    assert not os.path.exists(node.path("/etc/hosts"))   # a debootstrap root has none: the server role adds localhost


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    need_bare_root("bookworm")
    built = Cluster(str(tmp_path_factory.mktemp("cvmfs")))
    try:
        for name in ("s0", "client"):
            give_fakes(built.add(name))
        built.give_devices(built.nodes["s0"])
        yield built
    finally:
        built.destroy()


def fetch(node, url):
    code = "import urllib.request; print(urllib.request.urlopen(%r, timeout=10).read().decode())" % url
    return node.run(["python3", "-c", code], check=False)


def test_stratum0_on_a_btrfs_store_served_by_apache_and_a_pinned_client(lab):
    s0, client = lab.nodes["s0"], lab.nodes["client"]
    server = ["btrfs-store", "cvmfs-server", "--set", "store_image=/srv/store.img", "--set", "store_size=1GiB",
              "--set", "store_mount=/srv/store", "--set", "cvmfs_store=btrfs-subvolume", "--set", "cvmfs_store_root=/srv/store",
              "--set", "repositories=" + REPO, "--set", "cvmfs_release=false", "--set", "server_packages=",
              "--set", "server_host=" + s0.ip]
    result = s0.stackboot("install", *server)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "+ host-name localhost: localhost -> 127.0.0.1 in /etc/hosts" in out   # mkfs signs through it
    assert "+ cvmfs-repository %s: create repository: `cvmfs_server mkfs -o root -w http://localhost/cvmfs/%s -z %s`" % (
        REPO, REPO, REPO) in out
    assert "+ command a2enmod -q proxy_http: run a2enmod -q proxy_http" in out
    # storage and spool live on the store's subvolumes, seen through the bind mounts
    assert os.path.isfile(s0.path("/srv/store/cvmfs-storage/%s/.cvmfspublished" % REPO))
    assert os.path.isdir(s0.path("/srv/store/cvmfs-spool/%s/rdonly" % REPO))
    assert os.stat(s0.path("/srv/store/cvmfs-storage")).st_ino == 256
    # the whitelist is resigned by cron (no systemd here), which runs
    cron = open(s0.path("/etc/cron.d/stackboot-cvmfs")).read().splitlines()
    assert "@weekly root /usr/bin/cvmfs_server resign %s" % REPO in cron and "@reboot root /usr/bin/cvmfs_server mount -a" in cron
    assert s0.pid_of("/run/crond.pid") and os.path.exists("/proc/%d" % s0.pid_of("/run/crond.pid"))

    pub = open(s0.path("/etc/cvmfs/keys/%s.pub" % REPO), "rb").read()
    digest = hashlib.sha256(pub).hexdigest()
    assert "  CVMFS_PUBLIC_KEY=/etc/cvmfs/keys/%s.pub, from http://%s/cvmfs-meta/%s.pub (sha256 %s)" % (
        REPO, s0.ip, REPO, digest) in out
    assert "  stackboot install cvmfs-client --set server_host=HOST --set client_repositories=\"%s %s\"" % (REPO, digest) in out
    again = s0.stackboot("install", "btrfs-store", "cvmfs-server")
    assert again.returncode == 0 and re.search(r"^Install: 0 changed", again.stdout, re.M), again.stdout + again.stderr

    # Apache serves the storage and the key to another host
    manifest = fetch(client, "http://%s/cvmfs/%s/.cvmfspublished" % (s0.ip, REPO)).stdout
    assert "N%s" % REPO in manifest and "S1" in manifest.split()

    # the client: a wrong pin is refused and nothing lands; the right one is fetched and probed
    base = ["cvmfs-client", "--set", "cvmfs_release=false", "--set", "client_packages=", "--set", "server_host=" + s0.ip,
            "--set", "small_setup=true"]
    wrong = client.stackboot("install", *base, "--set", "client_repositories=%s %s" % (REPO, "0" * 64))
    assert wrong.returncode == 1 and "sha256 is %s, expected %s; nothing was installed" % (digest, "0" * 64) in wrong.stderr
    assert not os.path.exists(client.path("/etc/cvmfs/keys/%s.pub" % REPO))
    right = client.stackboot("install", *base, "--set", "client_repositories=%s %s" % (REPO, digest))
    assert right.returncode == 0, right.stdout + right.stderr
    assert "+ command cvmfs_config probe %s" % REPO in right.stdout
    assert open(client.path("/etc/cvmfs/keys/%s.pub" % REPO), "rb").read() == pub
    assert client.stackboot("install", "cvmfs-client").stdout.splitlines()[-1].startswith("Install: 0 changed")

    # a publish from a directory on the server reaches the client over HTTP
    site = s0.path("/work/site")
    os.makedirs(site + "/bin")
    with open(site + "/bin/tool", "w") as handle:
        handle.write("v2\n")
    published = s0.stackboot("cvmfs", "publish", REPO, "/work/site", "--tag", "v2")
    assert published.returncode == 0, published.stdout + published.stderr
    assert "S2" in fetch(client, "http://%s/cvmfs/%s/.cvmfspublished" % (s0.ip, REPO)).stdout.split()
    probe = client.run(["cvmfs_config", "probe", REPO], check=False)
    assert probe.returncode == 0 and "Probing /cvmfs/%s... OK" % REPO in probe.stdout
