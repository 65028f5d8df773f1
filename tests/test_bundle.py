"""Offline bundles: a zipapp carrying stackboot and the verified source tarball, used in a bare
root that has no network at all (`unshare --net`: a namespace with only a downed loopback).

The tarball is test_moosefs_source's stand-in for moosefs-X.Y.Z-1.tar.gz, served on loopback only
while the bundle is made. Inside the bundle stackboot is offline by itself: a missing artifact or
build dependency stops it before anything changes, with the full list.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import TOP
from test_build import Server
from test_moosefs_source import tarball

pytestmark = [pytest.mark.root, pytest.mark.bareroot]


def offline(root, *args):
    """The bundle run inside the root, in a network namespace of its own with nothing in it."""
    return subprocess.run(["unshare", "--net", "chroot", root, "/usr/bin/python3", "/root/stackboot.pyz"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


def test_install_master_from_a_bundle_without_network(root, tmp_path):
    server = Server()
    try:
        server.files["/moosefs-4.99.1-1.tar.gz"] = tarball("4.99.1")
        sha = hashlib.sha256(server.files["/moosefs-4.99.1-1.tar.gz"]).hexdigest()
        url = "%s/moosefs-4.99.1-1.tar.gz" % server.url
        bundle = str(tmp_path / "stackboot.pyz")
        made = subprocess.run([sys.executable, os.path.join(TOP, "stackboot.py"), "bundle", "master", "--with", "moosefs=4.99.1",
                               "--set", "source_url=" + url, "--set", "source_sha256=" + sha, "-o", bundle],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        assert made.returncode == 0, made.stdout + made.stderr
        assert "+ %s (sha256 %s…" % (url, sha[:12]) in made.stdout
    finally:
        server.close()   # from here on nothing can be downloaded
    with zipfile.ZipFile(bundle) as zipped:
        assert zipped.read("stackboot.py") == open(os.path.join(TOP, "stackboot.py"), "rb").read()
        assert b"import stackboot" in zipped.read("__main__.py")
        assert hashlib.sha256(zipped.read("artifacts/" + sha)).hexdigest() == sha
        manifest = json.loads(zipped.read("bundle.json").decode())
    assert manifest["parameters"] == {"version": "4.99.1", "source_url": url, "source_sha256": sha}
    shutil.copyfile(bundle, os.path.join(root, "root/stackboot.pyz"))

    # a version the bundle lacks and a build tool that is not installed: both named, nothing changed
    missing = offline(root, "install", "master", "--set", "version=4.99.2", "--set", "source_sha256=" + "b" * 64,
                      "--set", "build_packages=make")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert missing.stderr.startswith("error: --offline, and 2 thing(s) are missing: package make (not installed); "), missing.stderr
    assert "(sha256 bbbbbbbbbbbb…, not in the cache or in this bundle); bring them with a bundle" in missing.stderr
    assert not os.path.exists(os.path.join(root, "usr/sbin/mfsmaster"))
    assert not os.path.exists(os.path.join(root, "var/cache/stackboot/downloads"))

    # build tools come from the host's own package cache, as on an air-gapped site's mirror
    subprocess.run(["chroot", root, "apt-get", "install", "-y", "-q", "--no-install-recommends", "make"], check=True,
                   stdout=subprocess.DEVNULL, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"})
    first = offline(root, "install", "master", "--set", "build_packages=make")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "+ download %s: copy to /var/cache/stackboot/downloads/moosefs-4.99.1.tar.gz from the bundle" % url in first.stdout, first.stdout
    assert "+ build moosefs: build and install moosefs 4.99.1" in first.stdout
    assert "+ service moosefs-master: start" in first.stdout
    assert "4.99.1" in open(os.path.join(root, "usr/sbin/mfsmaster")).read()
    again = offline(root, "install", "master")
    assert again.returncode == 0 and again.stdout.splitlines()[-1].startswith("Install: 0 changed"), again.stdout + again.stderr
