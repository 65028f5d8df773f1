"""cloud-init user-data: valid for Debian's cloud-init, carrying stackboot whole (or fetching it pinned),
one file per node of a cluster, and harmless when it runs again on a booted host.
"""

import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zlib

import pytest

import stackboot as stackboot_module
from conftest import TOP

SCRIPT = os.path.join(TOP, "stackboot.py")
CLOUD_INIT = shutil.which("cloud-init")
need_cloud_init = pytest.mark.skipif(CLOUD_INIT is None, reason="Debian's cloud-init is not installed (make deps)")


def stackboot(*args, cwd=None):
    return subprocess.run([sys.executable, SCRIPT] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, cwd=cwd)


def as_cloud_init_reads_it(path):
    """The user-data through cloud-init's own YAML loader (Debian's python3-yaml)."""
    code = "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    result = subprocess.run(["/usr/bin/python3", "-c", code, path], stdout=subprocess.PIPE, universal_newlines=True, check=True)
    return json.loads(result.stdout)


def valid(path):
    result = subprocess.run([CLOUD_INIT, "schema", "-c", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    return result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stdout


@need_cloud_init
def test_user_data_carries_stackboot_whole_and_passes_the_schema(tmp_path):
    result = stackboot("cloud-init", "master", "--set", "method=packages", "--set", "master_listen_host=0.0.0.0")
    assert result.returncode == 0, result.stderr
    path = str(tmp_path / "user-data")
    with open(path, "w") as handle:
        handle.write(result.stdout)
    assert result.stdout.startswith("#cloud-config\n")
    ok, why = valid(path)
    assert ok, why
    config = as_cloud_init_reads_it(path)
    files = dict((item["path"], item) for item in config["write_files"])
    carried = files["/usr/local/lib/stackboot/stackboot.py"]   # a module: Python keeps its bytecode
    assert (carried["encoding"], carried["permissions"]) == ("gz+b64", "0644")
    with open(SCRIPT, "rb") as handle:
        source = handle.read()
    copy = zlib.decompress(base64.b64decode(carried["content"]), 47)
    assert copy == stackboot_module.carried_source(source) and len(copy) < 0.9 * len(source)   # no comments, no docstrings
    assert b"# ----" not in copy and b"# ----" in source and b"def main(" in copy
    launcher = files["/usr/local/sbin/stackboot"]
    assert launcher["permissions"] == "0755" and "import stackboot" in launcher["content"]
    site = files["/etc/stackboot/site.json"]
    assert site["permissions"] == "0600"
    assert json.loads(site["content"]) == {"parameters": {"method": "packages", "master_listen_host": "0.0.0.0"}}
    assert config["runcmd"] == [["python3", "/usr/local/sbin/stackboot", "install", "master"]]
    size = len(result.stdout.encode())
    assert 65536 < size < 200000   # (as it is today: GCE's 256 KB and NoCloud, not the others)
    assert "user-data: %d bytes; fits gce, nocloud; too big for azure, ec2, openstack: use --from-url there" % size in result.stderr
    again = stackboot("cloud-init", "master", "--set", "method=packages", "--set", "master_listen_host=0.0.0.0")
    assert again.stdout == result.stdout   # the same input gives the same user-data


def test_the_carried_copy_does_what_stackboot_does(tmp_path):
    """Stripped of comments and docstrings, it plans the same plan, byte for byte."""
    with open(SCRIPT, "rb") as handle:
        copy = stackboot_module.carried_source(handle.read())
    (tmp_path / "carried.py").write_bytes(copy)
    argv = ["plan", "master", "cli", "--set", "method=packages", "--root", str(tmp_path / "root")]
    (tmp_path / "root" / "etc").mkdir(parents=True)
    shutil.copy(os.path.join(TOP, "tests/fixtures/hosts/debian-12/os-release"), str(tmp_path / "root/etc/os-release"))
    for extra in ([], ["--json"], ["--help"]):
        original = stackboot(*(argv + extra))
        carried = subprocess.run([sys.executable, str(tmp_path / "carried.py")] + argv + extra, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, universal_newlines=True)
        assert (carried.returncode, carried.stdout) == (original.returncode, original.stdout), extra


@pytest.mark.parametrize("target,fits", [("ec2", False), ("azure", False), ("openstack", False), ("gce", True), ("nocloud", True)])
def test_each_cloud_counts_the_user_data_its_own_way(target, fits):
    result = stackboot("cloud-init", "master", "--set", "method=packages", "--target", target)
    assert result.returncode == (0 if fits else 64), result.stderr
    if not fits:
        how, limit, _ = stackboot_module.CLOUD_TARGETS[target]
        assert ("and %s takes at most %d" % (target, limit)) in result.stderr and "give --from-url URL --sha256 HEX" in result.stderr
        assert result.stdout == ""
    small = stackboot("cloud-init", "master", "--set", "method=packages", "--target", target,
                      "--from-url", "https://example.org/stackboot.py", "--sha256", "a" * 64)
    assert small.returncode == 0 and "fits every cloud" in small.stderr
    text = small.stdout
    assert stackboot_module.cloud_size(text, "openstack") == len(base64.b64encode(text.encode())) > len(text.encode())
    assert stackboot_module.clouds_fitting(text) == sorted(stackboot_module.CLOUD_TARGETS)


@need_cloud_init
def test_from_url_stays_small_and_installs_only_the_pinned_file(tmp_path):
    with open(SCRIPT, "rb") as handle:
        body = handle.read()
    digest = hashlib.sha256(body).hexdigest()

    class Serve(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/stackboot.py" % server.server_address[1]
    try:
        result = stackboot("cloud-init", "master", "--set", "method=packages", "--from-url", url, "--sha256", digest)
        assert result.returncode == 0, result.stderr
        path = str(tmp_path / "user-data")
        with open(path, "w") as handle:
            handle.write(result.stdout)
        assert len(result.stdout.encode()) < 16384 and valid(path)[0]
        fetch = as_cloud_init_reads_it(path)["runcmd"][0]
        # the fetch command as the host would run it, aimed at a scratch path
        wrong = subprocess.run(fetch[:3] + [url, "0" * 64, str(tmp_path / "bad" / "stackboot")],
                               stderr=subprocess.PIPE, universal_newlines=True)
        assert wrong.returncode != 0 and "sha256 mismatch, nothing installed" in wrong.stderr
        assert not os.path.exists(str(tmp_path / "bad" / "stackboot"))
        right = subprocess.run(fetch[:3] + [url, digest, str(tmp_path / "good" / "stackboot")])
        assert right.returncode == 0
        with open(str(tmp_path / "good" / "stackboot"), "rb") as handle:
            assert handle.read() == body
        assert os.stat(str(tmp_path / "good" / "stackboot")).st_mode & 0o777 == 0o644   # a module; the launcher runs it
    finally:
        server.shutdown()


@need_cloud_init
def test_one_user_data_per_node_of_the_seed_cluster(tmp_path):
    out = str(tmp_path / "user-data")
    result = stackboot("cloud-init", "--cluster", "seed", "--out", out, "--from-url", "https://example.org/stackboot.py",
                       "--sha256", "a" * 64)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == sorted("%s.yaml" % n for n in ("master", "gui", "metalogger", "cs1", "cs2", "cs3", "cs4",
                                                                      "client1", "client2"))
    for name in os.listdir(out):
        ok, why = valid(os.path.join(out, name))
        assert ok, why
    cs2 = as_cloud_init_reads_it(os.path.join(out, "cs2.yaml"))
    assert json.loads(cs2["write_files"][1]["content"])["parameters"] == {
        "labels": "M,B", "master_host": "10.42.0.10", "method": "packages"}
    assert cs2["runcmd"][-1] == ["python3", "/usr/local/sbin/stackboot", "install", "chunkserver"]
    master = as_cloud_init_reads_it(os.path.join(out, "master.yaml"))
    assert master["runcmd"][-1][-2:] == ["master", "cli"]
    # every node reachable by name without DNS, mfsmaster the master (the name MooseFS daemons use by default)
    seed = json.load(open(os.path.join(TOP, "profiles/clusters/seed.json")))
    for name, node in seed["nodes"].items():
        config = as_cloud_init_reads_it(os.path.join(out, name + ".yaml"))
        assert config["hostname"] == name and config["manage_etc_hosts"] is False
        hosts = config["write_files"][0]
        assert hosts["path"] == "/etc/hosts" and hosts["append"] is True
        assert sorted(hosts["content"].splitlines()) == sorted(
            "%s %s%s" % (other["address"], other_name, " mfsmaster" if other_name == "master" else "")
            for other_name, other in seed["nodes"].items())
    assert "cs4.yaml: chunkserver (10.42.0.24)" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["cloud-init"], "error: give roles, or --cluster FILE --out DIR"),
    (["cloud-init", "--cluster", "seed"], "error: --cluster and --out go together"),
    (["cloud-init", "nosuchrole"], 'error: unknown role "nosuchrole"'),
    (["cloud-init", "chunkserver", "--set", "labels=M;B"], "error: parameter labels (from --set)"),
    (["cloud-init", "master", "--from-url", "http://x/s.py"], "error: --from-url needs --sha256"),
    (["cloud-init", "--cluster", "/no/such.json", "--out", "/tmp/x"], "error: cluster /no/such.json: no such file"),
])
def test_cloud_init_bad_input(args, message):
    result = stackboot(*args)
    assert result.returncode == 64 and result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("nodes,message", [
    ({"cs1": {"address": "10.0.0.1", "roles": ["chunkserver"], "parameters": {"labels": "M;"}}},
     "$.nodes.cs1: parameter labels (from cluster node cs1): labels are single letters"),
    ({"cs1": {"address": "10.0.0.1", "roles": ["chunkserver"]}, "cs2": {"address": "10.0.0.1", "roles": ["chunkserver"]}},
     "$.nodes.cs2.address: 10.0.0.1 is also cs1's address"),
    ({"CS1": {"address": "10.0.0.1", "roles": ["chunkserver"]}}, "$.nodes.CS1: node names are 1-12 lower-case letters"),
    ({"cs1": {"address": "10.0.0.300", "roles": ["chunkserver"]}}, "$.nodes.cs1.address: expected an IPv4 address"),
    ({"cs1": {"address": "10.0.0.1", "roles": ["chunkserver"], "parameters": {"nosuch": 1}}},
     "$.nodes.cs1: cluster node cs1: unknown parameter \"nosuch\""),
])
def test_a_bad_cluster_file_names_the_node(tmp_path, nodes, message):
    path = str(tmp_path / "c.json")
    with open(path, "w") as handle:
        json.dump({"nodes": nodes}, handle)
    result = stackboot("cloud-init", "--cluster", path, "--out", str(tmp_path / "out"))
    assert result.returncode == 64 and result.stderr.startswith("error: %s: %s" % (path, message)), result.stderr
    assert not os.path.exists(str(tmp_path / "out"))


def boot(node, config):
    """What cloud-init's write_files and runcmd modules do with this user-data, on the node."""
    for item in config["write_files"]:
        data = item["content"].encode()
        if item.get("encoding") == "gz+b64":
            data = zlib.decompress(base64.b64decode(data), 47)
        path = node.path(item["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, int(item["permissions"], 8))
    return [node.run(argv, check=False) for argv in config["runcmd"]]


@pytest.mark.root
@pytest.mark.bareroot
def test_running_the_user_data_again_on_a_booted_host_is_harmless(tmp_path):
    from cluster import Cluster, wait_for
    from conftest import need_bare_root
    need_bare_root("bookworm")
    result = stackboot("cloud-init", "master", "metalogger", "cli", "--set", "method=packages")
    path = str(tmp_path / "user-data")
    with open(path, "w") as handle:
        handle.write(result.stdout)
    config = json.loads(result.stdout.split("\n", 2)[2])   # the JSON body after the two comment lines
    lab = Cluster(str(tmp_path / "hosts"))
    try:
        node = lab.add("vm")
        first = boot(node, config)[-1]
        assert first.returncode == 0, first.stdout + first.stderr
        assert "+ moosefs-metadata /var/lib/mfs/metadata.mfs: new cluster" in first.stdout
        assert node.pid_of("/var/lib/mfs/.mfsmaster.lock")
        # no DNS, no /etc/hosts: mfsmaster, the name the metalogger and the CLI use, is this host's own address
        assert "+ host-name mfsmaster: mfsmaster -> %s in /etc/hosts" % node.ip in first.stdout
        with open(node.path("/etc/hosts")) as handle:
            assert handle.read() == "%s mfsmaster\n" % node.ip
        # what the metalogger downloads from the master once connected (metadata_ml.*, changelog_ml_back.*)
        wait_for("the metalogger's copies from the master", lambda: [name for name in os.listdir(node.path("/var/lib/mfs"))
                                                                     if name.startswith(("metadata_ml", "changelog_ml_back"))])
        assert node.run(["mfscli", "-SIN"], check=False).returncode == 0
        cached = os.listdir(node.path("/usr/local/lib/stackboot/__pycache__"))   # the installed copy keeps its bytecode
        assert [name for name in cached if name.startswith("stackboot.cpython-") and name.endswith(".pyc")], cached
        again = boot(node, config)[-1]
        assert again.returncode == 0 and again.stdout.splitlines()[-1].startswith("Install: 0 changed"), again.stdout
        with open(node.path("/etc/stackboot/site.json")) as handle:
            assert json.load(handle) == {"parameters": {"method": "packages"}}
    finally:
        lab.destroy()
