"""Real upstream software for tests, fetched once per machine and checked like apt checks it.

    python3 tests/upstream.py fetch              # warm the cache, print the paths

MooseFS 4.x source: Debian carries upstream's tarball as the orig tarball of its source package
(moosefs_4.58.1.orig.tar.xz, in trixie-backports' pool). It is trusted the way apt trusts it: the
suite's InRelease is checked with gpgv against Debian's archive keyring, the Sources index against
the InRelease's sha256, the tarball against the Sources entry, and all of that against the pin here.
The build toolchain a source build installs (build-essential, libpcap-dev...) is kept as .debs
beside the roots, so a test installs it into a fresh root without reaching the network.

Standard library only, so `make deps` can call it before pytest is installed.
"""
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import bareroot

MIRROR = os.environ.get("STACKBOOT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MOOSEFS = {"version": "4.58.1", "suite": "trixie-backports", "package": "moosefs",
           "file": "moosefs_4.58.1.orig.tar.xz", "top": "moosefs-4.58.1",
           "sha256": "45d3481632d4df5804710f35d24e2d77293c0eb86804096bae534bd07426cc61", "size": 1116032}
# What a MooseFS source build installs on Debian (the moosefs-common profile's build_packages).
BUILD_DEBS = {"name": "moosefs-build", "suites": ("bookworm", "trixie"),
              "packages": ["build-essential", "libpcap-dev", "zlib1g-dev", "libfuse3-dev", "pkg-config"]}


def _get(url):
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _signed_index(suite):
    """The InRelease text of suite, its signature checked with gpgv against Debian's keyring."""
    data = _get("%s/dists/%s/InRelease" % (MIRROR, suite))
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as signed:
        signed.write(data)
        signed.flush()
        checked = subprocess.run(["gpgv", "--keyring", KEYRING, signed.name], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, universal_newlines=True)
    if checked.returncode != 0:
        raise RuntimeError("%s InRelease: bad signature:\n%s" % (suite, checked.stdout[-2000:]))
    return data.decode("utf-8")


def _index_sha256(inrelease, name):
    """The sha256 the InRelease's SHA256 section gives for the index file `name`."""
    section = inrelease.split("\nSHA256:\n", 1)[1]
    for line in section.splitlines():
        if not line.startswith(" "):
            break
        digest, _, path = line.split()
        if path == name:
            return digest
    raise RuntimeError("InRelease lists no %s" % name)


def _orig_sha256(sources, package, filename):
    """The sha256 a Sources index gives for one file of one source package."""
    for stanza in sources.split("\n\n"):
        if ("\nPackage: %s\n" % package) not in "\n" + stanza + "\n":
            continue
        checksums = stanza.split("\nChecksums-Sha256:\n", 1)[-1]
        for line in checksums.splitlines():
            fields = line.split()
            if line.startswith(" ") and len(fields) == 3 and fields[2] == filename:
                return fields[0]
    raise RuntimeError("the Sources index lists no %s in %s" % (filename, package))


def moosefs_source():
    """Path of the checked MooseFS 4.x source tarball (fetched and verified once per machine)."""
    spec = MOOSEFS
    path = os.path.join(bareroot.CACHE, spec["file"])
    if os.path.isfile(path):
        with open(path, "rb") as cached:
            if _sha256(cached.read()) == spec["sha256"]:
                return path
    inrelease = _signed_index(spec["suite"])
    sources_xz = _get("%s/dists/%s/main/source/Sources.xz" % (MIRROR, spec["suite"]))
    if _sha256(sources_xz) != _index_sha256(inrelease, "main/source/Sources.xz"):
        raise RuntimeError("%s Sources.xz does not match its signed InRelease" % spec["suite"])
    listed = _orig_sha256(lzma.decompress(sources_xz).decode("utf-8"), spec["package"], spec["file"])
    if listed != spec["sha256"]:
        raise RuntimeError("%s: the signed index says sha256 %s, the pin here %s" % (spec["file"], listed, spec["sha256"]))
    data = _get("%s/pool/main/m/%s/%s" % (MIRROR, spec["package"], spec["file"]))
    if _sha256(data) != spec["sha256"] or len(data) != spec["size"]:
        raise RuntimeError("%s: the download does not match the signed index" % spec["file"])
    os.makedirs(bareroot.CACHE, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=bareroot.CACHE, delete=False) as temp:
        temp.write(data)
    os.rename(temp.name, path)
    return path


def build_debs(suite):
    """Directory of the .debs (with dependencies) a source build's toolchain needs in a bare
    root of `suite`, downloaded once through a copy of that root."""
    spec = BUILD_DEBS
    final = os.path.join(bareroot.CACHE, "%s-%s" % (suite, spec["name"]))
    marker = os.path.join(final, ".packages")
    wanted = " ".join(spec["packages"]) + "\n"
    if os.path.isfile(marker) and open(marker).read() == wanted:
        return final
    scratch = tempfile.mkdtemp(prefix=".debs-", dir=bareroot.CACHE)
    try:
        root = bareroot.fresh_root(suite, os.path.join(scratch, "root"))
        archives = os.path.join(root, "var/cache/apt/archives")
        before = set(os.listdir(archives))
        bareroot._run(["chroot", root, "apt-get", "-o", "Acquire::Languages=none", "install", "-y",
                       "--download-only", "--no-install-recommends"] + spec["packages"])
        debs = os.path.join(scratch, "debs")
        os.makedirs(debs)
        for name in sorted(set(os.listdir(archives)) - before):
            if name.endswith(".deb"):
                shutil.move(os.path.join(archives, name), os.path.join(debs, name))
        with open(os.path.join(debs, ".packages"), "w") as handle:
            handle.write(wanted)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(debs, final)
    finally:
        bareroot.cleanup_root(os.path.join(scratch, "root"))
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def add_build_debs(root, suite):
    """Put the toolchain's .debs into a fresh root's apt cache: apt then installs them offline."""
    source = build_debs(suite)
    archives = os.path.join(root, "var/cache/apt/archives")
    for name in os.listdir(source):
        if name.endswith(".deb"):
            shutil.copy(os.path.join(source, name), os.path.join(archives, name))


def main(argv):
    if argv != ["fetch"]:
        sys.exit("usage: upstream.py fetch")
    print(moosefs_source(), flush=True)
    for suite in BUILD_DEBS["suites"]:
        print(build_debs(suite), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
