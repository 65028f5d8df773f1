"""MooseFS roles built from source: a small autotools-style tarball served on loopback.

The tarball stands in for moosefs-X.Y.Z-1.tar.gz: its configure records the flags
it was given and `make install` installs a daemon that behaves like mfsmaster
(start/stop/reload, a lock file holding its pid). It is built for real inside a
bare bookworm root by stackboot piped into the root's python3.
"""

import hashlib
import io
import os
import tarfile

import pytest

from conftest import DEBIAN, FakeTools, RecordingRunner
from test_build import Server

import stackboot

CONFIGURE = r"""#!/bin/sh
prefix=/usr/local; localstatedir=/var; sysconfdir=/etc
for arg in "$@"; do
  case "$arg" in
    --prefix=*) prefix="${arg#*=}";;
    --localstatedir=*) localstatedir="${arg#*=}";;
    --sysconfdir=*) sysconfdir="${arg#*=}";;
    --enable-*|--disable-*|--with-*|--mandir=*) ;;
    *) echo "configure: error: unrecognized option: $arg" >&2; exit 1;;
  esac
done
echo "$@" > configure.flags
sed -e "s|@prefix@|$prefix|g" -e "s|@localstatedir@|$localstatedir|g" -e "s|@PYTHON@|$PYTHON|g" Makefile.in > Makefile
"""
MAKEFILE = """all: mfsmaster
mfsmaster: daemon.in
\tsed -e "s|%%PYTHON%%|@PYTHON@|" -e "s|%%VERSION%%|{version}|" daemon.in > mfsmaster
\tchmod 755 mfsmaster
install: all
\tmkdir -p $(DESTDIR)@prefix@/sbin $(DESTDIR)@localstatedir@/mfs $(DESTDIR)@prefix@/share/moosefs
\tcp mfsmaster $(DESTDIR)@prefix@/sbin/mfsmaster
\tprintf 'MFSM NEW' > $(DESTDIR)@localstatedir@/mfs/metadata.mfs.empty
\tcp configure.flags $(DESTDIR)@prefix@/share/moosefs/configure.flags
"""
DAEMON = r'''#!%%PYTHON%%
"""A stand-in mfsmaster %%VERSION%%: [-c CFG] start|stop|reload|restore, lock file DATA_PATH/.mfsmaster.lock."""
import os, signal, sys, time
args = sys.argv[1:]
cfg = args[args.index("-c") + 1] if "-c" in args else "/etc/mfs/mfsmaster.cfg"
conf = dict(l.split(" = ", 1) for l in open(cfg).read().splitlines() if " = " in l)
lock = os.path.join(conf["DATA_PATH"], ".mfsmaster.lock")
def pid():
    try:
        p = int(open(lock).read().split()[0]); os.kill(p, 0); return p
    except (OSError, ValueError, IndexError):
        return None
action = args[-1]
if action == "start":
    if pid(): sys.exit(1)
    if os.fork():
        for _ in range(100):
            if pid(): sys.exit(0)
            time.sleep(0.05)
        sys.exit(1)
    os.setsid()
    if os.fork(): os._exit(0)
    open(lock, "w").write("%d\n" % os.getpid())
    while True: time.sleep(1)
elif action == "stop":
    p = pid()
    if p: os.kill(p, signal.SIGTERM); os.unlink(lock)
'''


def tarball(version):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text, mode in (("configure", CONFIGURE, 0o755), ("Makefile.in", MAKEFILE.format(version=version), 0o644),
                                 ("daemon.in", DAEMON, 0o644)):
            data = text.encode()
            info = tarfile.TarInfo("moosefs-%s/%s" % (version, name))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def plan_recipe(roles, facts=DEBIAN, sets=()):
    library = stackboot.Library()
    for name, text in stackboot.EMBEDDED_PROFILES.items():
        library.add(stackboot.parse_profile_text(name, name, text))
    inputs = stackboot.Inputs().add("--set", stackboot.parse_sets(list(sets)), "strict")
    build = [step for step in stackboot.make_plan(library, roles, facts, inputs).steps if step.kind == "build"]
    assert len(build) == 1, "one build for all the roles of a host"
    return build[0].recipe().strip()


COMMON = ("PYTHON=/usr/bin/python3 ./configure --prefix=/usr --mandir=/usr/share/man --sysconfdir=/etc "
          "--localstatedir=/var/lib --with-default-user=mfs --with-default-group=mfs --with-systemdsystemunitdir=no "
          "--enable-option-checking=fatal --disable-all")


@pytest.mark.parametrize("roles,modules", [
    (["master"], "--enable-mfsmaster"),
    (["chunkserver"], "--enable-mfschunkserver"),
    (["metalogger"], "--enable-mfsmetalogger"),
    (["client"], "--enable-mfsmount"),
    (["cli"], "--enable-mfscli"),
    (["gui"], "--enable-mfsgui --enable-mfscgi"),   # the pages it serves: without them every page is 404
    (["master", "metalogger", "gui"], "--enable-mfsmaster --enable-mfsmetalogger --enable-mfsgui --enable-mfscgi"),
    (["chunkserver", "client", "cli"], "--enable-mfschunkserver --enable-mfsmount --enable-mfscli"),
])
def test_exact_configure_flags_for_each_role_set(roles, modules):
    assert plan_recipe(roles) == COMMON + " " + modules


def test_freebsd_build_uses_the_ports_layout():
    from conftest import FREEBSD
    assert plan_recipe(["master"], FREEBSD) == (
        "PYTHON=/usr/local/bin/python3 ./configure --prefix=/usr/local --mandir=/usr/local/man --sysconfdir=/usr/local/etc "
        "--localstatedir=/var --with-default-user=mfs --with-default-group=mfs --with-systemdsystemunitdir=no "
        "--enable-option-checking=fatal --disable-all --enable-mfsmaster")


def test_unknown_version_needs_an_explicit_sha256(tmp_path, capsys):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\nVERSION_ID=12\n")
    code = stackboot.main(["--root", str(root), "plan", "master", "--set", "version=4.58.3"],
                          runner=RecordingRunner(str(root), FakeTools(str(root))))
    assert code == 64
    assert capsys.readouterr().err.splitlines()[0] == (
        "error: parameter source_sha256 has no value, and the download step of moosefs-common needs one; "
        "pass --set source_sha256=VALUE")


def piped(root, *args):
    import subprocess
    from conftest import TOP
    with open(os.path.join(TOP, "stackboot.py")) as script:
        return subprocess.run(["chroot", root, "/usr/bin/python3", "-"] + list(args), stdin=script,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


@pytest.mark.root
@pytest.mark.bareroot
def test_master_from_source_in_a_bare_root(root):
    server = Server()
    try:
        sets = lambda version, sha: ["--set", "source_url=%s/moosefs-%s-1.tar.gz" % (server.url, version),
                                     "--set", "version=" + version, "--set", "source_sha256=" + sha,
                                     "--set", "build_packages=make"]
        for version in ("4.99.1", "4.99.2"):
            server.files["/moosefs-%s-1.tar.gz" % version] = tarball(version)
        good = hashlib.sha256(server.files["/moosefs-4.99.1-1.tar.gz"]).hexdigest()

        # a wrong sha256: refused before anything is extracted or built
        bad = piped(root, "install", "master", *sets("4.99.1", "0" * 64))
        assert bad.returncode == 1 and "sha256 is %s, expected %s" % (good, "0" * 64) in bad.stderr, bad.stderr
        assert not os.path.exists(os.path.join(root, "var/cache/stackboot/build"))
        assert not os.path.exists(os.path.join(root, "usr/sbin/mfsmaster"))
        assert os.listdir(os.path.join(root, "var/cache/stackboot/downloads")) == []

        first = piped(root, "install", "master", *sets("4.99.1", good))
        assert first.returncode == 0, first.stdout + first.stderr
        assert "+ build moosefs: build and install moosefs 4.99.1" in first.stdout
        flags = open(os.path.join(root, "usr/share/moosefs/configure.flags")).read().split()
        assert flags == COMMON.split()[2:] + ["--enable-mfsmaster"]
        assert open(os.path.join(root, "var/lib/mfs/metadata.mfs")).read() == "MFSM NEW"
        assert "+ service moosefs-master: start" in first.stdout
        pid = int(open(os.path.join(root, "var/lib/mfs/.mfsmaster.lock")).read())

        again = piped(root, "install", "master")   # remembered inputs; the same inputs never rebuild
        assert again.returncode == 0 and again.stdout.splitlines()[-1] == "Install: 0 changed, 14 already right.", again.stdout
        assert "moosefs: configure" not in again.stdout

        upgrade = piped(root, "plan", "master", *sets("4.99.2", hashlib.sha256(server.files["/moosefs-4.99.2-1.tar.gz"]).hexdigest()))
        assert "~ build moosefs: upgrade moosefs 4.99.1 -> 4.99.2: rebuild and reinstall" in upgrade.stdout
        assert "~ service moosefs-master: restart (moosefs-build changed)" in upgrade.stdout
        done = piped(root, "install", "master", *sets("4.99.2", hashlib.sha256(server.files["/moosefs-4.99.2-1.tar.gz"]).hexdigest()))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "4.99.2" in open(os.path.join(root, "usr/sbin/mfsmaster")).read()
        assert int(open(os.path.join(root, "var/lib/mfs/.mfsmaster.lock")).read()) != pid
        assert piped(root, "install", "master").stdout.splitlines()[-1].startswith("Install: 0 changed")
    finally:
        server.close()


def test_a_3x_version_builds_the_3x_gui():
    """The series follows the version built: 3.x has mfscgiserv, not mfsgui."""
    assert plan_recipe(["gui"], sets=["version=3.0.117", "source_sha256=" + "0" * 64]).endswith(
        "--disable-all --enable-mfscgi --enable-mfscgiserv")
