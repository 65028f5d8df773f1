"""Golden plans for platforms this machine cannot run (FreeBSD, the RHEL family).

Each case plans roles on a fake host made from tests/fixtures/hosts (its real
os-release and binaries), then, for method=packages, installs against stateful
fake tools and records every command. The result must match tests/golden/ to the
byte: a change to a plan fails here until the golden file is regenerated on
purpose (STACKBOOT_UPDATE_GOLDEN=1) and reviewed against FACTS.md.
"""

import hashlib
import json
import os

import pytest

from conftest import TESTS, FakeTools, RecordingRunner, quote, run_main

HOSTS = os.path.join(TESTS, "fixtures", "hosts")
GOLDEN = os.path.join(TESTS, "golden")
FAKE_KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nfake MooseFS key for the golden tests\n-----END PGP PUBLIC KEY BLOCK-----\n"
ROLE_SETS = [["master"], ["metalogger"], ["chunkserver"], ["client"], ["gui"], ["cli"], ["master", "metalogger", "gui", "cli"]]
CASES = [(host, roles, method) for host in ("freebsd-13", "freebsd-14", "rocky-8", "rocky-9", "ubuntu-22.04") for roles in ROLE_SETS
         for method in ("packages", "source")]
# Stores (method names the case; the sets below say what it installs).
CASES += [("freebsd-14", ["zfs-store"], "zfs"), ("freebsd-14", ["zfs-store", "chunkserver"], "zfs")]
# CernVM-FS (Linux only): a server (one case with its storage and spool on ZFS datasets) and a client.
CASES += [(host, roles, method) for host in ("rocky-8", "rocky-9", "ubuntu-22.04", "ubuntu-24.04")
          for roles, method in ((["cvmfs-server"], "cvmfs"), (["cvmfs-client"], "cvmfs"))]
# The RHEL family: no btrfs in 8 and 9; ZFS only from OpenZFS's own repository (refused until it is there).
REFUSALS = [("rocky-8", ["btrfs-store"], "role btrfs-store cannot run on Rocky Linux 8.10 (Green Obsidian) (rhel-8): RHEL 8 removed btrfs"),
            ("rocky-9", ["btrfs-store"], "role btrfs-store cannot run on Rocky Linux 9.4 (Blue Onyx) (rhel-9): RHEL 9 has no btrfs"),
            ("rocky-9", ["zfs-store"], "/usr/sbin/zpool is missing: OpenZFS is in none of the RHEL family's or Fedora's repositories")]
CASES += [("ubuntu-24.04", ["cvmfs-server"], "cvmfs-zfs"), ("rocky-9", ["cvmfs-client"], "cvmfs-fstab")]
FAKE_RELEASE = b"fake cvmfs-release package for the golden tests\n"
FAKE_CVMFS_KEY = "-----BEGIN PUBLIC KEY-----\nfake key of sw.example.org\n-----END PUBLIC KEY-----\n"
STORE_SETS = ["--set", "zfs_pool=tank", "--set", "zfs_datasets=images,volumes"]
CHUNKS_ON_ZFS = ["--set", "method=packages", "--set", "master_host=10.1.0.1", "--set", "disk_store=zfs-dataset",
                 "--set", "disk_dataset_root=tank/mfs", "--set", "disks=/srv/mfs/hdd1 100GiB,/srv/mfs/hdd2"]
FIXTURES = {}
for _host in ("freebsd-13", "freebsd-14", "rocky-8", "rocky-9", "ubuntu-22.04", "ubuntu-24.04"):
    with open(os.path.join(HOSTS, _host, "host.json")) as _handle, open(os.path.join(HOSTS, _host, "os-release")) as _release:
        FIXTURES[_host] = (json.load(_handle), _release.read())


def fake_host(fs, host):
    spec, release = FIXTURES[host]
    fs.create_file("/etc/os-release", contents=release)
    for binary in spec["binaries"]:
        fs.create_file(binary, st_mode=0o100755)
    for path, content in spec.get("files", {}).items():   # what a default install has (firewalld, SELinux, repo files)
        fs.create_file(path, contents=content)
    if spec["systemd_running"]:
        fs.create_dir("/run/systemd/system")
    fs.create_file("/etc/passwd", contents="root:x:0:0:root:/root:/bin/sh\n")
    fs.create_file("/etc/group", contents="root:x:0:\nwheel:x:0:root\n")
    fs.create_file("/etc/fstab", contents="# fstab\n")
    if spec["system"] == "FreeBSD":
        fs.create_file("/etc/rc.conf", contents='hostname="node1"\n')
    else:
        fs.create_file("/proc/self/mountinfo", contents="22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
    data = "/var/mfs" if spec["system"] == "FreeBSD" else "/var/lib/mfs"
    tools = FakeTools("/")
    tools.package_files["moosefs-master"] = {data + "/metadata.mfs.empty": "MFSM NEW"}
    # what each platform's package manager has (Ubuntu: Debian's 3.0.117; the ports and MooseFS's
    # own repository: 4.x with the C GUI)
    series3 = spec["system"] != "FreeBSD" and "ubuntu" in release
    for part in ("master", "metalogger", "chunkserver", "client", "cli", "cgi", "cgiserv") + (() if series3 else ("gui",)):
        tools.versions["moosefs-" + part] = "3.0.117-1" if series3 else "4.59.1"
    fs.create_file("/var/cache/stackboot/downloads/moosefs-repository.key", contents=FAKE_KEY)
    return spec, tools


def cvmfs_host(fs, tools, roles, method):
    """CERN's release package already in the download cache (pinned), and for a client the
    server's published manifest, signed by the key the client is given."""
    release = "/var/cache/stackboot/downloads/" + ("cvmfs-release-latest.noarch.rpm" if os.path.exists("/usr/bin/dnf")
                                                   else "cvmfs-release-latest_all.deb")
    fs.create_file(release, contents=FAKE_RELEASE)
    tools.file_packages[release] = "cvmfs-release"
    sets = ["--set", "cvmfs_release_sha256=" + hashlib.sha256(FAKE_RELEASE).hexdigest(),
            "--set", "server_host=stratum0.example.org"]
    if roles == ["cvmfs-client"]:   # (the fake web serves stratum0.example.org from the fake S3 tree)
        fs.create_file("/root/sw.example.org.pub", contents=FAKE_CVMFS_KEY)
        fs.create_file("/var/lib/fake-s3/cvmfs/sw.example.org/.cvmfspublished",
                       contents="Cabc\nS3\nNsw.example.org\nK%s\n--\n" % hashlib.sha256(FAKE_CVMFS_KEY.encode()).hexdigest())
        return sets + ["--set", "client_repositories=sw.example.org /root/sw.example.org.pub",
                       "--set", "http_proxy=http://squid.example.org:3128;DIRECT"] + \
            (["--set", "client_mount=fstab"] if method == "cvmfs-fstab" else [])
    sets += ["--set", "repositories=sw.example.org,data.example.org"]
    if method == "cvmfs-zfs":
        sets += ["--set", "cvmfs_store=zfs-dataset", "--set", "cvmfs_store_root=tank/cvmfs"]
    return sets


def golden_text(fs, host, roles, method):
    spec, tools = fake_host(fs, host)
    uname = (spec["system"], spec["machine"])
    sets = ["--set", "method=" + method, "--set", "master_host=10.1.0.1",
            "--set", "repo_key_sha256=" + hashlib.sha256(FAKE_KEY.encode()).hexdigest()]
    if method in ("zfs", "cvmfs-zfs"):   # a pool that exists already, as on most FreeBSD hosts
        tools.pools.add("tank")
        tools.datasets["tank"] = {}
        sets = STORE_SETS + (CHUNKS_ON_ZFS if "chunkserver" in roles else [])
    if method.startswith("cvmfs"):
        sets = cvmfs_host(fs, tools, roles, method)
    code, out, err = run_main(["plan"] + roles + sets, RecordingRunner("/", tools), uname)
    assert code == 0, err
    text = "# stackboot plan %s %s\n# host: %s\n%s" % (" ".join(roles), " ".join(quote([item]) for item in sets), host, out)
    if method in ("packages", "zfs") or method.startswith("cvmfs"):
        runner = RecordingRunner("/", tools)
        code, out, err = run_main(["install"] + roles + sets, runner, uname)
        assert code == 0, out + err
        text += "\n# install runs, in order:\n" + "".join(quote(argv) + "\n" for argv in runner.changes())
        text += "# %s\n" % out.splitlines()[-1]
        code, out, err = run_main(["install"] + roles, RecordingRunner("/", tools), uname)
        text += "# again, with no flags: %s\n" % out.splitlines()[-1]
    return text


@pytest.mark.parametrize("host,roles,method", CASES, ids=["%s-%s-%s" % (h, "+".join(r), m) for h, r, m in CASES])
def test_golden_plan(fs, host, roles, method):
    name = "%s-%s-%s.txt" % (host, "+".join(roles), method)
    text = golden_text(fs, host, roles, method)
    fs.pause()   # the golden files live on the real disk
    path = os.path.join(GOLDEN, name)
    if os.environ.get("STACKBOOT_UPDATE_GOLDEN"):
        with open(path, "w") as handle:
            handle.write(text)
    with open(path) as handle:
        expected = handle.read()
    fs.resume()
    assert text == expected, "plan changed: review it, then STACKBOOT_UPDATE_GOLDEN=1 make test"
    if method in ("packages", "zfs") or method.startswith("cvmfs"):
        assert text.rstrip().splitlines()[-1].startswith("# again, with no flags: Install: 0 changed")


@pytest.mark.parametrize("host,roles,expected", REFUSALS, ids=["%s-%s" % (case[0], "+".join(case[1])) for case in REFUSALS])
def test_rhel_family_refuses_what_it_cannot_hold(fs, host, roles, expected):
    spec, tools = fake_host(fs, host)
    sets = ["--set", "zfs_pool=tank"] if roles == ["zfs-store"] else []
    runner = RecordingRunner("/", tools)
    code, out, err = run_main(["install"] + roles + sets, runner, (spec["system"], spec["machine"]))
    assert code in (1, 64) and expected in out + err and runner.changes() == [] and "Traceback" not in err
    fs.create_file("/usr/sbin/zpool", st_mode=0o100755)   # once OpenZFS is installed, zfs-store goes on
    if roles == ["zfs-store"]:
        tools.pools.add("tank")
        tools.datasets["tank"] = {}
        code, out, err = run_main(["plan"] + roles + sets, RecordingRunner("/", tools), (spec["system"], spec["machine"]))
        assert code == 0 and "zpool is missing" not in out, out + err
