"""MooseFS 4.x for real: upstream's source (4.58.1, through Debian's pool, checked against the
signed index by tests/upstream.py) built by stackboot in a bare bookworm root, and Debian's own 4.x
packages in a bare trixie root (4.57.5, and 4.58.1 with the C GUI from trixie-backports).

The root runs in a network namespace of its own; a second namespace, joined to it by a veth
pair, is "another host" that opens the GUI, as a user's browser would.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import bareroot
import upstream
from conftest import TOP, need_bare_root

pytestmark = [pytest.mark.root, pytest.mark.bareroot]

SERVER, BROWSER = "sb-m4s-%d" % os.getpid(), "sb-m4b-%d" % os.getpid()
MASTER, OTHER = "10.254.78.1", "10.254.78.2"
SOURCE = "/srv/src/" + upstream.MOOSEFS["file"]
BUILD = ["--set", "version=" + upstream.MOOSEFS["version"], "--set", "source_url=file://" + SOURCE,
         "--set", "source_sha256=" + upstream.MOOSEFS["sha256"], "--set", "source_archive=" + SOURCE + ".cached",
         "--set", "master_host=" + MASTER]


def sh(*argv, **options):
    return subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **options)


@pytest.fixture(scope="module")
def namespaces():
    for name in (SERVER, BROWSER):
        assert sh("ip", "netns", "add", name).returncode == 0
    try:
        assert sh("ip", "-n", SERVER, "link", "add", "sbm0", "type", "veth", "peer", "name", "sbm1", "netns", BROWSER).returncode == 0
        for name, end, address in ((SERVER, "sbm0", MASTER), (BROWSER, "sbm1", OTHER)):
            sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "-n", name, "addr", "add", address + "/24", "dev", end)
            sh("ip", "-n", name, "link", "set", end, "up")
        yield SERVER, BROWSER
    finally:
        for name in (SERVER, BROWSER):
            sh("ip", "netns", "delete", name)


@pytest.fixture
def root(namespaces, tmp_path):
    """(Its daemons end with the test: the next one's master takes the same address.)"""
    need_bare_root("bookworm")
    path = bareroot.fresh_root("bookworm", str(tmp_path / "root"))
    try:
        upstream.add_build_debs(path)
        os.makedirs(os.path.join(path, "srv/src"))
        shutil.copy(upstream.moosefs_source(), os.path.join(path, SOURCE.lstrip("/")))
        yield path
    finally:
        for lock in ("var/lib/mfs/.mfsmaster.lock", "var/lib/mfs/.mfsgui.lock", "var/lib/mfs/.mfscgiserv.lock"):
            try:
                os.kill(int(open(os.path.join(path, lock)).read().split()[0]), signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                pass
        bareroot.cleanup_root(path)


@pytest.fixture
def trixie(namespaces, tmp_path):
    need_bare_root("trixie")
    path = bareroot.fresh_root("trixie", str(tmp_path / "root"))
    try:
        yield path
    finally:
        for lock in ("var/lib/mfs/.mfsmaster.lock", "var/lib/mfs/.mfsgui.lock"):
            try:
                os.kill(int(open(os.path.join(path, lock)).read().split()[0]), signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                pass
        bareroot.cleanup_root(path)


def piped(root, *args):
    """curl ... | python3 - ARGS on the host (the root) in its namespace."""
    with open(os.path.join(TOP, "stackboot.py")) as script:
        return subprocess.run(["ip", "netns", "exec", SERVER, "chroot", root, "/usr/bin/python3", "-"] + list(args),
                              stdin=script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}, timeout=3000)


def browse(url):
    """GET url from the other namespace: (status, body)."""
    fetch = ("import sys, urllib.request, urllib.error\n"
             "try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status); print(r.read().decode('utf-8', 'replace'))\n"
             "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    deadline = time.time() + 20
    while True:
        got = sh("ip", "netns", "exec", BROWSER, "/usr/bin/python3", "-c", fetch, url)
        if got.returncode == 0 or time.time() > deadline:
            break
        time.sleep(0.3)
    status, _, body = got.stdout.partition("\n")
    return int(status) if status.isdigit() else got.stderr, body


def dpkg(root, *args):
    return sh("chroot", root, "dpkg", *args)


def test_from_debian_packages_to_an_upstream_build(root):
    """A host running Debian's 3.0.117 master, GUI and CLI is switched to upstream's 4.x source."""
    packaged = piped(root, "install", "master", "gui", "cli", "--set", "method=packages", "--set", "master_host=" + MASTER)
    assert packaged.returncode == 0, packaged.stdout[-3000:] + packaged.stderr[-3000:]
    assert "3.0.117" in sh("chroot", root, "/usr/sbin/mfsmaster", "-v").stdout
    assert browse("http://%s:9425/mfs.cgi?masterhost=%s" % (MASTER, MASTER))[0] == 200   # mfscgiserv, 3.x

    plan = piped(root, "plan", "master", "gui", "cli", "--set", "method=source", *BUILD)
    assert plan.returncode == 0, plan.stderr
    removal = [line for line in plan.stdout.splitlines() if "remove packages" in line]
    assert len(removal) == 1 and all("%s 3.0.117" % name in removal[0] for name in (
        "moosefs-master", "moosefs-cli", "moosefs-cgi", "moosefs-cgiserv")), plan.stdout
    assert "their configuration, the data and the metadata stay" in removal[0]

    upgrade = [line for line in plan.stdout.splitlines() if line.startswith("~ moosefs-metadata")]
    assert len(upgrade) == 1 and " upgrade 3.0.117-1 -> %s: first save " % upstream.MOOSEFS["version"] in upgrade[0], plan.stdout

    first = piped(root, "install", "master", "gui", "cli", "--set", "method=source", *BUILD)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # the 3.x metadata was copied before the 4.x master first ran on it
    lines = first.stdout.splitlines()
    saved_at = [index for index, line in enumerate(lines) if line.startswith("~ moosefs-metadata") and "first save" in line]
    restart = [index for index, line in enumerate(lines) if line.startswith("~ service moosefs-master: restart")]
    assert saved_at and restart and saved_at[0] < restart[0], first.stdout
    [backup] = os.listdir(os.path.join(root, "var/lib/mfs.backups"))
    assert backup.endswith("-3.0.117-1-to-" + upstream.MOOSEFS["version"])
    assert "metadata.mfs.back" in os.listdir(os.path.join(root, "var/lib/mfs.backups", backup))
    # the packages went (those with configuration files keep them: dpkg's "rc"), nothing dpkg owns was overwritten
    for name in ("moosefs-master", "moosefs-cli", "moosefs-cgi", "moosefs-cgiserv"):
        status = sh("chroot", root, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", name).stdout
        assert status in ("", "un ", "rc "), (name, status)   # unknown, or its configuration kept
    assert sh("chroot", root, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", "moosefs-master").stdout == "rc "
    assert os.path.exists(os.path.join(root, "etc/default/moosefs-master"))   # its conffile, kept
    verified = dpkg(root, "-V")
    assert verified.returncode == 0 and verified.stdout == "", verified.stdout
    assert dpkg(root, "--audit").stdout == ""

    # one build with exactly these modules, and stackboot's own units, never upstream's beside them
    log = [json.loads(line) for line in open(os.path.join(root, "var/log/stackboot.log"))]
    configure = [entry["argv"] for entry in log if entry.get("argv", [None])[0] == "./configure"]
    assert len(configure) == 1
    assert {flag for flag in configure[0] if flag.startswith("--enable-mfs")} == \
        {"--enable-mfsmaster", "--enable-mfsgui", "--enable-mfscgi", "--enable-mfscli"}
    assert "--with-systemdsystemunitdir=no" in configure[0] and "--disable-all" in configure[0]
    state = json.load(open(os.path.join(root, "var/lib/stackboot/state.json")))
    files = state["builds"]["moosefs"]["files"]
    for wanted in ("/usr/sbin/mfsmaster", "/usr/sbin/mfsgui", "/usr/bin/mfscli", "/usr/share/mfscgi/mfs.cgi"):
        assert wanted in files
    assert not [path for path in files if re.search(r"mfschunkserver|mfsmetalogger|mfsmount|\.service$", path)]

    # the master runs 4.x on the metadata the 3.x master kept; the GUI serves its pages to another host
    assert upstream.MOOSEFS["version"] in sh("chroot", root, "/usr/sbin/mfsmaster", "-v").stdout
    status, body = browse("http://%s:9425/mfs.cgi?masterhost=%s" % (MASTER, MASTER))
    assert status == 200 and "MooseFS" in body and upstream.MOOSEFS["version"] in body, body[:500]
    assert browse("http://%s:9425/" % MASTER)[0] == 200
    cli = sh("ip", "netns", "exec", SERVER, "chroot", root, "mfscli", "-H", MASTER, "-SIN")
    assert cli.returncode == 0 and upstream.MOOSEFS["version"] in cli.stdout, cli.stdout + cli.stderr

    again = piped(root, "install", "master", "gui", "cli")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("Install: 0 changed"), again.stdout

    # back to Debian's 3.0.117 would start a 3.x master on metadata a 4.x one wrote: refused, nothing changed
    back = piped(root, "install", "master", "gui", "cli", "--set", "method=packages")
    assert back.returncode == 1, back.stdout + back.stderr
    assert ("refusing mfsmaster 3.0.117-1 on metadata that mfsmaster %s wrote" % upstream.MOOSEFS["version"]) in back.stdout + back.stderr
    assert upstream.MOOSEFS["version"] in sh("chroot", root, "/usr/sbin/mfsmaster", "-v").stdout
    assert dpkg(root, "-V").stdout == "" and "moosefs" in json.load(open(os.path.join(root, "var/lib/stackboot/state.json")))["builds"]


def test_debian_4x_packages_pick_series_4_by_themselves(trixie):
    """trixie ships 4.57.5 (with the 3.x-style mfscgiserv); its backports 4.58.1 and moosefs-gui.
    Nobody says which: stackboot asks apt."""
    sets = ["--set", "method=packages", "--set", "master_host=" + MASTER]
    version = piped(trixie, "facts")
    assert "python           3.13." in version.stdout, version.stdout
    show = piped(trixie, "show", "master", *sets)
    assert "the package manager (moosefs-master 4.57.5-1)" in show.stdout, show.stdout
    assert re.search(r"^series +\= 4 ", show.stdout, re.M), show.stdout
    first = piped(trixie, "install", "master", "cli", *sets)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "4.57.5" in sh("chroot", trixie, "/usr/sbin/mfsmaster", "-v").stdout
    cli = sh("ip", "netns", "exec", SERVER, "chroot", trixie, "mfscli", "-H", MASTER, "-SIN")
    assert cli.returncode == 0 and "4.57.5" in cli.stdout, cli.stdout + cli.stderr
    assert piped(trixie, "install", "master", "cli").stdout.splitlines()[-1].startswith("Install: 0 changed")

    # the C GUI is in trixie-backports only: asked for by release, apt finds moosefs-gui and mfsgui it is
    gui = piped(trixie, "plan", "gui", "--set", "packages_release=trixie-backports", *sets)
    assert "+ packages moosefs-gui: install moosefs-gui" in gui.stdout and "mfscgiserv" not in gui.stdout, gui.stdout
    installed = piped(trixie, "install", "gui", "--set", "packages_release=trixie-backports", *sets)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert sh("chroot", trixie, "dpkg-query", "-W", "-f=${Version}", "moosefs-gui").stdout == "4.58.1-1~bpo13+1"
    status, body = browse("http://%s:9425/mfs.cgi?masterhost=%s" % (MASTER, MASTER))
    assert status == 200 and "MooseFS" in body and "4.57.5" in body, body[:500]
    assert piped(trixie, "install", "gui").stdout.splitlines()[-1].startswith("Install: 0 changed")
