"""Test hosts on one machine: each node a bare Debian root in its own network namespace.

Nodes hang off a bridge inside a private "switch" namespace, so nothing is added to
the host's own network. Commands reach a node with `nsenter --net` (not `ip netns
exec`), so a FUSE mount made on a node stays visible from the host. Everything
made here is undone by `destroy()`: mounts, daemons (by the PIDs in their lock
files), namespaces and roots.
"""

import os
import signal
import subprocess
import time

import bareroot

TESTS = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(TESTS)
SUBNET = "10.213.%d" % (os.getpid() % 200 + 20)


def sh(argv, check=True, **kwargs):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError("%s failed (rc %d): %s%s" % (" ".join(argv), result.returncode, result.stdout, result.stderr))
    return result


class Node:
    def __init__(self, cluster, name, number):
        self.cluster, self.name, self.number = cluster, name, number
        self.netns = "%s-%s" % (cluster.prefix, name)
        self.ip = "%s.%d" % (SUBNET, number)
        self.root = os.path.join(cluster.workdir, name)

    def enter(self):
        return ["nsenter", "--net=/run/netns/" + self.netns, "chroot", self.root]

    def run(self, argv, check=True):
        return sh(self.enter() + list(argv), check=check, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})

    def stackboot(self, *args):
        """stackboot piped into the node's own python3, as `curl ... | python3 -` would."""
        with open(os.path.join(TOP, "stackboot.py")) as script:
            return subprocess.run(self.enter() + ["/usr/bin/python3", "-"] + list(args), stdin=script,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                  env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})

    def path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def pid_of(self, lockfile):
        try:
            with open(self.path(lockfile)) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None


class Cluster:
    def __init__(self, workdir, suite="bookworm"):
        self.workdir, self.suite = workdir, suite
        self.prefix = "sb%d" % (os.getpid() % 100000)
        self.switch = self.prefix + "-sw"
        self.nodes = {}
        self.mounts = []
        sh(["ip", "netns", "add", self.switch])
        sh(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", self.switch, "link", "set", "br0", "up"])

    def add(self, name):
        node = Node(self, name, len(self.nodes) + 1)
        self.nodes[name] = node
        bareroot.fresh_root(self.suite, node.root)
        sh(["mount", "-t", "proc", "proc", node.path("/proc")])
        self.mounts.append(node.path("/proc"))
        sh(["ip", "netns", "add", node.netns])
        peer = "p%d" % node.number
        sh(["ip", "link", "add", "eth0", "netns", node.netns, "type", "veth", "peer", "name", peer, "netns", self.switch])
        sh(["ip", "-n", self.switch, "link", "set", peer, "master", "br0"])
        sh(["ip", "-n", self.switch, "link", "set", peer, "up"])
        sh(["ip", "-n", node.netns, "addr", "add", node.ip + "/24", "dev", "eth0"])
        sh(["ip", "-n", node.netns, "link", "set", "eth0", "up"])
        sh(["ip", "-n", node.netns, "link", "set", "lo", "up"])
        return node

    def give_fuse(self, node):
        """mfsmount needs /dev/fuse inside the node's root."""
        target = node.path("/dev/fuse")
        open(target, "a").close()
        sh(["mount", "--bind", "/dev/fuse", target])
        self.mounts.append(target)

    def give_devices(self, node):
        """Loop devices and mkfs need the host's /dev; rslave keeps unmounts from travelling back."""
        sh(["mount", "--rbind", "/dev", node.path("/dev")])
        sh(["mount", "--make-rslave", node.path("/dev")])
        self.mounts.append(node.path("/dev"))

    def destroy(self):
        for node in self.nodes.values():
            for line in open("/proc/self/mountinfo"):
                point = line.split()[4]
                if point.startswith(node.root + "/") and " - fuse" in line:
                    sh(["umount", "-l", point], check=False)
        for node in self.nodes.values():
            for directory in ("var/lib/mfs",):
                base = node.path(directory)
                for name in os.listdir(base) if os.path.isdir(base) else []:
                    if name.endswith(".lock"):
                        pid = node.pid_of(os.path.join(directory, name))
                        if pid:
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
        time.sleep(0.3)
        for point in reversed(self.mounts):
            sh(["umount", "-l", point], check=False)
        for node in self.nodes.values():
            sh(["ip", "netns", "del", node.netns], check=False)
            bareroot.cleanup_root(node.root)
        for line in sh(["losetup", "-a"], check=False).stdout.splitlines():   # loop devices of our images only
            if "(" + self.workdir in line:
                sh(["losetup", "-d", line.split(":")[0]], check=False)
        sh(["ip", "netns", "del", self.switch], check=False)


def wait_for(what, probe, timeout=60):
    """probe()'s first true answer, polled for up to `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.5)


def install(node, *args):
    """`stackboot install ARGS` on a node, which must succeed; its output."""
    result = node.stackboot("install", *args)
    assert result.returncode == 0, "%s: %s%s" % (node.name, result.stdout, result.stderr)
    return result.stdout
