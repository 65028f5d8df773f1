"""btrfs stores for real: loop image files inside a bare bookworm root, stackboot run from the host with --root.

Creation, a converged re-run, subvolumes with qgroup limits, remounting from the
fstab line, and the refusals: nothing that holds data, a partition table, a mount
or a loop device ever gets a new filesystem.
"""

import os
import subprocess
import sys

import pytest

from conftest import TOP, bare_root_copy

pytestmark = [pytest.mark.root, pytest.mark.bareroot]


def sh(*argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


@pytest.fixture
def root(tmp_path):
    path = bare_root_copy("bookworm", str(tmp_path / "root"))
    # loop devices and mkfs need the host's /dev; rslave keeps unmounts from travelling back
    assert sh("mount", "--rbind", "/dev", path + "/dev").returncode == 0
    sh("mount", "--make-rslave", path + "/dev")
    assert sh("mount", "-t", "proc", "proc", path + "/proc").returncode == 0
    yield path
    import bareroot
    for line in sh("losetup", "-a").stdout.splitlines():   # loop devices of our images only
        if "(" + path in line:
            sh("losetup", "-d", line.split(":")[0])
    bareroot.cleanup_root(path)


def stackboot(root, *args):
    return subprocess.run([sys.executable, os.path.join(TOP, "stackboot.py"), "--root", root] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def mounted(root, point):
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] == root + point:
            return line.split(" - ")[1].split()[0]
    return None


STORE = ["--set", "store_image=/srv/store.img", "--set", "store_size=300MiB", "--set", "store_mount=/srv/store"]


def test_create_rerun_subvolumes_limits_and_remount(root):
    first = stackboot(root, "install", "btrfs-store", *STORE, "--set", "store_subvolumes=/srv/store/a")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "+ btrfs-filesystem /srv/store: mkfs.btrfs -L stackboot /srv/store.img" in first.stdout
    assert mounted(root, "/srv/store") == "btrfs"
    assert os.stat(root + "/srv/store/a").st_ino == 256
    assert "/srv/store.img /srv/store btrfs loop,noatime,nofail,x-systemd.requires-mounts-for=/srv 0 0" in \
        open(root + "/etc/fstab").read()
    again = stackboot(root, "install", "btrfs-store")
    assert again.stdout.splitlines()[-1] == "Install: 0 changed, 3 already right.", again.stdout + again.stderr

    subs = ["--set", "store_subvolumes=/srv/store/a,/srv/store/b 100MiB"]
    plan = stackboot(root, "plan", "btrfs-store", *subs)
    assert [line for line in plan.stdout.splitlines() if line[:1] in "+~-!"] == [
        "+ btrfs-subvolume /srv/store/b: create subvolume limited to 100MiB (root root 0755)"]
    assert stackboot(root, "install", "btrfs-store", *subs).returncode == 0
    show = sh("chroot", root, "btrfs", "qgroup", "show", "-re", "--raw", "-f", "/srv/store/b").stdout
    assert "104857600" in show
    assert stackboot(root, "install", "btrfs-store").stdout.splitlines()[-1].startswith("Install: 0 changed")

    bigger = stackboot(root, "install", "btrfs-store", "--set", "store_subvolumes=/srv/store/a,/srv/store/b 200MiB")
    assert [line for line in bigger.stdout.splitlines() if line[:1] in "+~-!"] == [
        "~ btrfs-subvolume /srv/store/b: qgroup limit -> 200MiB"]
    assert "209715200" in sh("chroot", root, "btrfs", "qgroup", "show", "-re", "--raw", "-f", "/srv/store/b").stdout

    # persistence: unmounted, the fstab line brings it back as it was
    assert sh("umount", root + "/srv/store").returncode == 0
    assert stackboot(root, "plan", "btrfs-store").stdout.count("mount now") == 1
    remount = sh("chroot", root, "mount", "-a")
    assert remount.returncode == 0, remount.stderr
    assert mounted(root, "/srv/store") == "btrfs" and os.path.isdir(root + "/srv/store/b")
    assert stackboot(root, "plan", "btrfs-store", "--detailed-exitcode").returncode == 0


def attach(path):
    return sh("losetup", "-f", "--show", path).stdout.strip()


def refused(root, args, reason):
    fstab = open(root + "/etc/fstab").read()
    mounts = open("/proc/self/mountinfo").read().count(root)
    result = stackboot(root, "install", "btrfs-store", "--set", "store_mount=/srv/store", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.splitlines()[0]
    assert line.startswith("error: 1 step(s) refused, nothing was changed: refusing to create a filesystem on ")
    assert reason in line, line
    assert "Traceback" not in result.stderr
    assert open(root + "/etc/fstab").read() == fstab
    assert open("/proc/self/mountinfo").read().count(root) == mounts
    assert not os.path.exists(root + "/srv/store")


def test_refusals_change_nothing(root):
    ext4 = root + "/srv/ext4.img"
    sh("truncate", "-s", "300M", ext4)
    sh("mkfs.ext4", "-q", ext4)
    refused(root, ["--set", "store_image=/srv/ext4.img"], "it holds a ext4 filesystem")

    gpt = root + "/srv/gpt.img"
    sh("truncate", "-s", "300M", gpt)
    subprocess.run(["sfdisk", "-q", gpt], input="label: gpt\n", universal_newlines=True, check=True)
    refused(root, ["--set", "store_image=/srv/gpt.img"], "it has a gpt partition table")

    busy = root + "/srv/busy.img"
    sh("truncate", "-s", "300M", busy)
    device = attach(busy)
    refused(root, ["--set", "store_image=/srv/busy.img"], "loop device %s holds it" % device)

    sh("mkfs.btrfs", "-q", device)
    os.makedirs(root + "/mnt/elsewhere")
    assert sh("mount", device, root + "/mnt/elsewhere").returncode == 0
    refused(root, ["--set", "store_target=device", "--set", "store_device=" + device], "it is mounted on " + root + "/mnt/elsewhere")
    sh("umount", root + "/mnt/elsewhere")

    refused(root, ["--set", "store_target=device", "--set", "store_device=/dev/nosuchdisk"], "/dev/nosuchdisk does not exist")


def test_uninstall_keeps_the_store_and_purge_destroys_what_stackboot_made(root):
    made = stackboot(root, "install", "btrfs-store", *STORE, "--set", "store_subvolumes=/srv/store/a")
    assert made.returncode == 0, made.stdout + made.stderr
    with open(root + "/srv/store/a/chunk", "w") as handle:
        handle.write("data")
    kept = stackboot(root, "uninstall", "btrfs-store")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "  kept /srv/store/a: a store; uninstall keeps it (--purge-data destroys it, as stackboot made it)" in kept.stdout
    assert mounted(root, "/srv/store") == "btrfs" and os.path.exists(root + "/srv/store/a/chunk")

    assert stackboot(root, "install", "btrfs-store", *STORE, "--set", "store_subvolumes=/srv/store/a").returncode == 0
    sh("chroot", root, "btrfs", "subvolume", "create", "/srv/store/theirs")   # not stackboot's: never deleted by it
    purged = stackboot(root, "uninstall", "btrfs-store", "--purge-data", "--yes")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert [line for line in purged.stdout.splitlines() if line[:1] == "-"] == [
        "- btrfs-subvolume /srv/store/a: btrfs subvolume delete /srv/store/a (with its data)"]
    assert "  kept /srv/store: kept: it also holds /srv/store/theirs, which stackboot did not make" in purged.stdout
    assert mounted(root, "/srv/store") == "btrfs" and not os.path.exists(root + "/srv/store/a")

    sh("chroot", root, "btrfs", "subvolume", "delete", "/srv/store/theirs")
    assert stackboot(root, "install", "btrfs-store", *STORE, "--set", "store_subvolumes=/srv/store/a").returncode == 0
    purged = stackboot(root, "uninstall", "btrfs-store", "--purge-data", "--yes")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert [line for line in purged.stdout.splitlines() if line[:1] == "-"] == [
        "- btrfs-subvolume /srv/store/a: btrfs subvolume delete /srv/store/a (with its data)",
        "- btrfs-filesystem /srv/store: unmount",
        "- btrfs-filesystem /srv/store: fstab: remove /srv/store.img /srv/store btrfs "
        "loop,noatime,nofail,x-systemd.requires-mounts-for=/srv 0 0",
        "- btrfs-filesystem /srv/store: remove the image /srv/store.img (with all its data)"]
    assert mounted(root, "/srv/store") is None and not os.path.exists(root + "/srv/store.img")
    assert "/srv/store" not in open(root + "/etc/fstab").read()
