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
    fuse = os.path.join(path, "dev/fuse")
    try:
        upstream.add_build_debs(path, "bookworm")
        os.makedirs(os.path.join(path, "srv/src"))
        shutil.copy(upstream.moosefs_source(), os.path.join(path, SOURCE.lstrip("/")))
        open(fuse, "a").close()   # a client on this host: mfsmount needs /dev/fuse, a mount step /proc
        assert sh("mount", "--bind", "/dev/fuse", fuse).returncode == 0
        assert sh("mount", "-t", "proc", "proc", os.path.join(path, "proc")).returncode == 0
        yield path
    finally:
        sh("umount", "-l", os.path.join(path, "mnt/mfs"))
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
    """curl ... | python3 - ARGS on the host (the root) in its namespace (nsenter, not ip netns exec:
    a client's FUSE mount must outlive the command that made it)."""
    with open(os.path.join(TOP, "stackboot.py")) as script:
        return subprocess.run(["nsenter", "--net=/run/netns/" + SERVER, "chroot", root, "/usr/bin/python3", "-"] + list(args),
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


def tree(top):
    """Every path under top, with what it is (the metadata a master keeps: no chunk needed)."""
    found = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, top)] = os.readlink(path) if os.path.islink(path) else os.path.isdir(path)
    return found


ROLES = ("master", "gui", "cli", "client")


def test_from_debian_packages_to_an_upstream_build(root):
    """A host running Debian's 3.0.117 master, GUI, CLI and client is switched to upstream's 4.x
    source: the files the 3.x master knew are all there when the 4.x one runs."""
    packaged = piped(root, "install", *(ROLES + ("--set", "method=packages", "--set", "master_host=" + MASTER)))
    assert packaged.returncode == 0, packaged.stdout[-3000:] + packaged.stderr[-3000:]
    assert "3.0.117" in sh("chroot", root, "/usr/sbin/mfsmaster", "-v").stdout
    assert browse("http://%s:9425/mfs.cgi?masterhost=%s" % (MASTER, MASTER))[0] == 200   # mfscgiserv, 3.x
    mount = os.path.join(root, "mnt/mfs")
    assert os.path.ismount(mount)
    for directory in ("projects/a/b", "projects/c", "home"):
        os.makedirs(os.path.join(mount, directory))
    for name in ("projects/a/b/empty.txt", "home/notes"):
        open(os.path.join(mount, name), "w").close()
    os.symlink("a/b/empty.txt", os.path.join(mount, "projects/link"))
    before = tree(mount)
    assert len(before) == 8

    plan = piped(root, "plan", *(ROLES + ("--set", "method=source") + tuple(BUILD)))
    assert plan.returncode == 0, plan.stderr
    removal = [line for line in plan.stdout.splitlines() if "remove packages" in line]
    assert len(removal) == 1 and all("%s 3.0.117" % name in removal[0] for name in (
        "moosefs-master", "moosefs-cli", "moosefs-cgi", "moosefs-cgiserv", "moosefs-client")), plan.stdout
    assert "their configuration, the data and the metadata stay" in removal[0]

    upgrade = [line for line in plan.stdout.splitlines() if line.startswith("~ moosefs-upgrade")]
    assert len(upgrade) == 1 and " upgrade 3.0.117-1 -> %s: first save " % upstream.MOOSEFS["version"] in upgrade[0], plan.stdout

    first = piped(root, "install", *(ROLES + ("--set", "method=source") + tuple(BUILD)))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # the 3.x metadata was copied before the 4.x master first ran on it
    lines = first.stdout.splitlines()
    saved_at = [index for index, line in enumerate(lines) if line.startswith("~ moosefs-upgrade") and "first save" in line]
    removed = [index for index, line in enumerate(lines) if "remove packages" in line]
    restart = [index for index, line in enumerate(lines) if line.startswith("~ service moosefs-master: restart")]
    assert saved_at and removed and restart and saved_at[0] < removed[0] < restart[0], first.stdout
    [backup] = os.listdir(os.path.join(root, "var/lib/mfs.backups"))
    assert backup.endswith("-3.0.117-1-to-" + upstream.MOOSEFS["version"])
    assert "metadata.mfs.back" in os.listdir(os.path.join(root, "var/lib/mfs.backups", backup))
    # the packages went (those with configuration files keep them: dpkg's "rc"), nothing dpkg owns was overwritten
    for name in ("moosefs-master", "moosefs-cli", "moosefs-cgi", "moosefs-cgiserv", "moosefs-client"):
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
        {"--enable-mfsmaster", "--enable-mfsgui", "--enable-mfscgi", "--enable-mfscli", "--enable-mfsmount"}
    assert "--with-systemdsystemunitdir=no" in configure[0] and "--disable-all" in configure[0]
    state = json.load(open(os.path.join(root, "var/lib/stackboot/state.json")))
    files = state["builds"]["moosefs"]["files"]
    for wanted in ("/usr/sbin/mfsmaster", "/usr/sbin/mfsgui", "/usr/bin/mfscli", "/usr/share/mfscgi/mfs.cgi", "/usr/bin/mfsmount"):
        assert wanted in files
    assert not [path for path in files if re.search(r"mfschunkserver|mfsmetalogger|\.service$", path)]

    # the master runs 4.x on the metadata the 3.x master kept; the GUI serves its pages to another host
    assert upstream.MOOSEFS["version"] in sh("chroot", root, "/usr/sbin/mfsmaster", "-v").stdout
    deadline = time.time() + 30   # the client reconnects to the new master on its own
    while tree(mount) != before and time.time() < deadline:
        time.sleep(0.5)
    assert tree(mount) == before
    status, body = browse("http://%s:9425/mfs.cgi?masterhost=%s" % (MASTER, MASTER))
    assert status == 200 and "MooseFS" in body and upstream.MOOSEFS["version"] in body, body[:500]
    assert browse("http://%s:9425/" % MASTER)[0] == 200
    cli = sh("ip", "netns", "exec", SERVER, "chroot", root, "mfscli", "-H", MASTER, "-SIN")
    assert cli.returncode == 0 and upstream.MOOSEFS["version"] in cli.stdout, cli.stdout + cli.stderr

    again = piped(root, "install", *ROLES)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("Install: 0 changed"), again.stdout

    # back to Debian's 3.0.117 would start a 3.x master on metadata a 4.x one wrote: refused, nothing changed
    back = piped(root, "install", *(ROLES + ("--set", "method=packages")))
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


def test_a_package_upgrade_is_planned_and_saves_the_metadata_first(trixie):
    """Debian's 4.57.5 master and CLI, upgraded to 4.58.1 from trixie-backports because the user
    asked for that version: the metadata copied before dpkg touches the master, the master
    restarted on the new binary, the way back refused."""
    sets = ["--set", "method=packages", "--set", "master_host=" + MASTER]
    first = piped(trixie, "install", "master", "cli", *sets)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "4.57.5" in sh("chroot", trixie, "/usr/sbin/mfsmaster", "-v").stdout
    assert piped(trixie, "install", "master", "cli").stdout.splitlines()[-1].startswith("Install: 0 changed")

    wanted = ["--set", "packages_version=4.58.1"]
    plan = piped(trixie, "plan", "master", "cli", *wanted)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    lines = plan.stdout.splitlines()
    new = "4.58.1-1~bpo13+1"
    guard = [index for index, line in enumerate(lines) if line.startswith("~ moosefs-upgrade /var/lib/mfs/metadata.mfs: upgrade "
                                                                          "4.57.5-1 -> %s: first save " % new)]
    master = lines.index("~ packages moosefs-master: upgrade moosefs-master 4.57.5-1 -> " + new)
    restart = lines.index("~ service moosefs-master: restart (master-packages changed)")
    assert guard and guard[0] < master < restart, plan.stdout
    assert "~ packages moosefs-cli: upgrade moosefs-cli 4.57.5-1 -> " + new in lines, plan.stdout

    upgraded = piped(trixie, "install", "master", "cli", *wanted)
    assert upgraded.returncode == 0, upgraded.stdout[-3000:] + upgraded.stderr[-3000:]
    for name in ("moosefs-master", "moosefs-cli", "moosefs-common"):   # its dependency came from backports with it
        assert sh("chroot", trixie, "dpkg-query", "-W", "-f=${Version}", name).stdout == new, name
    [backup] = os.listdir(os.path.join(trixie, "var/lib/mfs.backups"))
    assert backup.endswith("-4.57.5-1-to-" + new) and "metadata.mfs.back" in os.listdir(os.path.join(trixie, "var/lib/mfs.backups", backup))
    cli = sh("ip", "netns", "exec", SERVER, "chroot", trixie, "mfscli", "-H", MASTER, "-SIN")
    assert cli.returncode == 0 and "4.58.1" in cli.stdout, cli.stdout + cli.stderr   # the running master is the new one
    verified = sh("chroot", trixie, "dpkg", "-V")
    assert verified.returncode == 0 and verified.stdout == "", verified.stdout
    again = piped(trixie, "install", "master", "cli")   # the version asked for is remembered
    assert again.stdout.splitlines()[-1].startswith("Install: 0 changed"), again.stdout

    back = piped(trixie, "install", "master", "cli", "--set", "packages_version=4.57.5")
    assert back.returncode == 1, back.stdout + back.stderr
    assert "refusing mfsmaster 4.57.5-1 on metadata that mfsmaster %s wrote" % new in back.stdout + back.stderr
    assert sh("chroot", trixie, "dpkg-query", "-W", "-f=${Version}", "moosefs-master").stdout == new
    nowhere = piped(trixie, "plan", "cli", "--set", "packages_version=4.99.0")
    assert nowhere.returncode == 0 and ("! packages moosefs-cli: moosefs-cli 4.99.0: the package sources have no such version "
                                        "(they have: 4.57.5-1, %s)" % new) in nowhere.stdout, nowhere.stdout + nowhere.stderr


def test_from_an_upstream_build_back_to_debian_packages(trixie):
    """The way back, where it is not a downgrade: upstream's 4.58.1 built on trixie, then Debian's
    own 4.58.1 from trixie-backports takes its place (the build's files first, dpkg -V clean)."""
    upstream.add_build_debs(trixie, "trixie")
    os.makedirs(os.path.join(trixie, "srv/src"))
    shutil.copy(upstream.moosefs_source(), os.path.join(trixie, SOURCE.lstrip("/")))
    built = piped(trixie, "install", "master", "cli", "--set", "method=source", *BUILD)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert upstream.MOOSEFS["version"] in sh("chroot", trixie, "/usr/sbin/mfsmaster", "-v").stdout
    files = json.load(open(os.path.join(trixie, "var/lib/stackboot/state.json")))["builds"]["moosefs"]["files"]

    packages = ["--set", "method=packages", "--set", "packages_release=trixie-backports"]
    plan = piped(trixie, "plan", "master", "cli", *packages)
    assert ("- packages moosefs-master: remove the %d files build moosefs %s installed: these packages replace it"
            % (len(files), upstream.MOOSEFS["version"])) in plan.stdout, plan.stdout
    assert "upgrade %s -> 4.58.1-1~bpo13+1: first save" % upstream.MOOSEFS["version"] in plan.stdout, plan.stdout
    back = piped(trixie, "install", "master", "cli", *packages)
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
    assert sh("chroot", trixie, "dpkg-query", "-W", "-f=${Version}", "moosefs-master").stdout == "4.58.1-1~bpo13+1"
    verified = sh("chroot", trixie, "dpkg", "-V")
    assert verified.returncode == 0 and verified.stdout == "", verified.stdout
    state = json.load(open(os.path.join(trixie, "var/lib/stackboot/state.json")))
    assert "moosefs" not in state["builds"]
    leftovers = [path for path in files if os.path.lexists(os.path.join(trixie, path.lstrip("/")))
                 and not sh("chroot", trixie, "dpkg", "-S", path).returncode == 0]
    assert leftovers == [], leftovers   # every file of the build is gone or now a package's
    cli = sh("ip", "netns", "exec", SERVER, "chroot", trixie, "mfscli", "-H", MASTER, "-SIN")
    assert cli.returncode == 0 and "4.58.1" in cli.stdout, cli.stdout + cli.stderr
    assert piped(trixie, "install", "master", "cli").stdout.splitlines()[-1].startswith("Install: 0 changed")
