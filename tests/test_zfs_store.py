"""ZFS stores for real through Debian's zfs-fuse: a pool from a listed file vdev, datasets with
properties and stackboot's user property, a converged re-run, one property changed alone, and
the refusals. The test starts its own zfs-fuse daemon and ends it by its PID."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import time

import pytest

import stackboot

pytestmark = [pytest.mark.root]


def sh(*argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


@pytest.fixture(scope="module")
def zfs_daemon():
    if os.geteuid() != 0 or not shutil.which("zfs-fuse"):
        pytest.skip("needs root and zfs-fuse")
    if sh("pgrep", "-x", "zfs-fuse").stdout.strip():
        pytest.skip("another zfs-fuse daemon is running")
    daemon = subprocess.Popen(["zfs-fuse", "--no-daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while sh("zpool", "list").returncode != 0:
        assert time.time() < deadline, "zfs-fuse did not come up"
        time.sleep(0.3)
    yield daemon
    daemon.terminate()
    try:
        daemon.wait(10)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


@pytest.fixture
def store(zfs_daemon, tmp_path, monkeypatch):
    monkeypatch.setattr(stackboot, "STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(stackboot, "LOG_FILE", str(tmp_path / "stackboot.log"))
    pool = "sbt%d" % os.getpid()

    class Store:
        vdev = str(tmp_path / "vdev.img")
        mount = str(tmp_path / "zfs")
        log = str(tmp_path / "stackboot.log")
        base = ["--set", "zfs_pool=" + pool, "--set", "zfs_packages=zfs-fuse", "--set", "zfs_mount=" + str(tmp_path / "zfs")]

        def __init__(self):
            self.pool = pool

        def main(self, *argv):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = stackboot.main(list(argv))
            return code, out.getvalue(), err.getvalue()

        def get(self, prop, dataset):
            return sh("zfs", "get", "-H", "-o", "value", prop, dataset).stdout.strip()

    yield Store()
    for _ in range(20):   # zfs-fuse answers "busy" now and then while it unmounts: the next test needs it gone
        if sh("zpool", "list", pool).returncode != 0:
            break
        sh("zpool", "destroy", "-f", pool)
        time.sleep(0.5)
    assert sh("zpool", "list", pool).returncode != 0, "pool %s outlived its test" % pool


def changes(out):
    return [line for line in out.splitlines() if line[:1] in "+~-!"]


def test_pool_datasets_rerun_and_a_property_changed_alone(store):
    args = store.base + ["--set", "zfs_vdevs=" + store.vdev, "--set", "zfs_vdev_size=200MiB",
                         "--set", "zfs_datasets=images,volumes"]
    code, out, err = store.main("install", "zfs-store", *args)
    assert code == 0, out + err
    assert "+ zfs-pool %s: zpool create %s %s" % (store.pool, store.pool, store.vdev) in out
    assert sh("zpool", "list", "-H", "-o", "health", store.pool).stdout.strip() == "ONLINE"
    images = "%s/stackboot/images" % store.pool
    assert (store.get("compression", images), store.get("atime", images)) == ("on", "off")
    assert store.get("stackboot:profile", images) == "zfs-store"
    assert store.get("canmount", store.pool + "/stackboot") == "off"
    assert store.get("mountpoint", images) == store.mount + "/images"
    assert os.path.isdir(store.mount + "/images")

    code, out, err = store.main("install", "zfs-store")
    assert out.splitlines()[-1] == "Install: 0 changed, 5 already right.", out + err

    code, out, err = store.main("plan", "zfs-store", "--set", "zfs_properties=compression=gzip,atime=off")
    assert changes(out) == ["~ zfs-dataset %s/stackboot/images: set compression=gzip (now on)" % store.pool,
                            "~ zfs-dataset %s/stackboot/volumes: set compression=gzip (now on)" % store.pool]
    start = len(open(store.log).readlines())
    code, out, err = store.main("install", "zfs-store", "--set", "zfs_properties=compression=gzip,atime=off")
    assert code == 0, out + err
    records = [json.loads(line) for line in open(store.log).readlines()[start:]]
    ran = [record["argv"] for record in records if record.get("kind") == "change" and "argv" in record]
    assert ran == [["zfs", "set", "compression=gzip", images], ["zfs", "set", "compression=gzip", store.pool + "/stackboot/volumes"]]
    assert store.get("compression", images) == "gzip" and store.get("atime", images) == "off"

    # an existing pool is used as it is, with no vdevs at all
    code, out, err = store.main("install", "zfs-store", "--set", "zfs_vdevs=")
    assert code == 0 and out.splitlines()[-1].startswith("Install: 0 changed"), out + err


def test_a_property_this_zfs_lacks_is_a_clear_error(store):
    code, out, err = store.main("install", "zfs-store", *(store.base + [
        "--set", "zfs_vdevs=" + store.vdev, "--set", "zfs_vdev_size=200MiB", "--set", "zfs_datasets=data",
        "--set", "zfs_properties=compression=lz4"]))
    assert code == 1
    line = err.splitlines()[0]
    assert "'compression' must be one of" in line and "zfs-fuse has no lz4" in line, err
    assert "Traceback" not in err
    assert sh("zfs", "list", store.pool + "/stackboot/data").returncode != 0


def test_refusals(store, tmp_path):
    code, out, err = store.main("install", "zfs-store", *store.base)
    assert code == 1 and "no vdevs are listed to create it" in err.splitlines()[0]
    ext4 = str(tmp_path / "ext4.img")
    sh("truncate", "-s", "200M", ext4)
    sh("mkfs.ext4", "-q", ext4)
    code, out, err = store.main("install", "zfs-store", *(store.base + ["--set", "zfs_vdevs=" + ext4]))
    assert code == 1 and "%s: it holds a ext4 filesystem" % ext4 in err.splitlines()[0], err
    assert sh("zpool", "list", store.pool).returncode != 0


def test_uninstall_keeps_the_store_and_purge_destroys_only_what_stackboot_made(store):
    args = store.base + ["--set", "zfs_vdevs=" + store.vdev, "--set", "zfs_vdev_size=200MiB", "--set", "zfs_datasets=images"]
    code, out, err = store.main("install", "zfs-store", *args)
    assert code == 0, out + err
    sh("zfs", "create", store.pool + "/theirs")   # somebody's own dataset in the same pool

    code, out, err = store.main("uninstall", "zfs-store")
    assert code == 0, out + err
    assert "  kept %s/stackboot/images: a store; uninstall keeps it (--purge-data destroys it, as stackboot made it)" \
        % store.pool in out
    assert sh("zfs", "list", store.pool + "/stackboot/images").returncode == 0

    code, out, err = store.main("install", "zfs-store", *args)
    assert code == 0 and out.splitlines()[-1].startswith("Install: 0 changed"), out + err
    code, out, err = store.main("uninstall", "zfs-store", "--purge-data")
    assert code == 64 and "--purge-data deletes data and nobody is here to confirm it; add --yes" in err
    code, out, err = store.main("uninstall", "zfs-store", "--purge-data", "--yes")
    assert code == 0, out + err
    # what stackboot made goes; the pool stays, since it also holds a dataset stackboot did not make
    assert "- zfs-dataset %s/stackboot/images: zfs destroy %s/stackboot/images (with its data)" % (store.pool, store.pool) in out
    assert "  kept %s: kept: it also holds %s/theirs, which stackboot did not make (zpool destroy would take it)" \
        % (store.pool, store.pool) in out
    assert sh("zfs", "list", store.pool + "/stackboot/images").returncode != 0
    assert sh("zfs", "list", store.pool + "/theirs").returncode == 0

    # without that dataset, a second purge (after a re-install) takes the pool and its file vdev
    for _ in range(5):   # zfs-fuse answers "busy" while the unmount it started finishes
        if sh("zfs", "destroy", store.pool + "/theirs").returncode == 0:
            break
        time.sleep(1)
    code, out, err = store.main("install", "zfs-store", *args)
    assert code == 0, out + err
    code, out, err = store.main("uninstall", "zfs-store", "--purge-data", "--yes")
    assert code == 0, out + err
    assert "- zfs-pool %s: zpool destroy %s (with all its data); remove %s" % (store.pool, store.pool, store.vdev) in out
    assert sh("zpool", "list", store.pool).returncode != 0 and not os.path.exists(store.vdev)
