"""CernVM-FS server, client and publishing against the stateful fakes in fake_cvmfs.py (pyfakefs).

Every half-made state FACTS.md knows is set up, and install must list what it
found, change nothing, and (with --repair) clean up only what never published.
Keys are never touched. Publishing never leaves a transaction open.
"""

import hashlib
import json
import os
import shutil
import stat

import pytest

from conftest import TESTS, FakeTools, RecordingRunner, run_main
from test_json import document

UNAME = ("Linux", "x86_64")
REPO = "sw.example.org"
SERVER = ["--set", "repositories=%s,data.example.org" % REPO, "--set", "cvmfs_release=false"]


with open(os.path.join(TESTS, "fixtures", "hosts", "debian-12", "host.json")) as _handle:
    SPEC = json.load(_handle)
with open(os.path.join(TESTS, "fixtures", "hosts", "debian-12", "os-release")) as _handle:
    OS_RELEASE = _handle.read()


@pytest.fixture
def host(fs):
    """A Debian 12 host with systemd, as the fixture under tests/fixtures/hosts describes it."""
    fs.create_file("/etc/os-release", contents=OS_RELEASE)
    for binary in SPEC["binaries"]:
        fs.create_file(binary, st_mode=0o100755)
    fs.create_dir("/run/systemd/system")
    fs.create_file("/etc/passwd", contents="root:x:0:0:root:/root:/bin/bash\ncvmfsowner:x:990:990::/home/c:/bin/sh\n")
    fs.create_file("/etc/group", contents="root:x:0:\ncvmfsowner:x:990:\n")
    fs.create_file("/etc/fstab", contents="# fstab\n")
    fs.create_file("/proc/self/mountinfo", contents="22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
    fs.create_file("/var/lib/apt/lists/deb_Packages")
    return FakeTools("/")


def stackboot(tools, *argv):
    runner = RecordingRunner("/", tools)
    code, out, err = run_main(list(argv), runner, UNAME)
    return code, out, err, runner


def install(tools, *argv):
    code, out, err, runner = stackboot(tools, "install", *argv)
    assert code == 0, out + err
    return out, runner


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def tree(*bases):
    """Every path under bases with its content, to prove that nothing changed."""
    found = {}
    for base in bases:
        for root, dirs, files in os.walk(base):
            for name in dirs + files:
                path = os.path.join(root, name)
                found[path] = read(path) if os.path.isfile(path) else None
    return found


def test_server_creates_each_repository_once_and_converges(host):
    out, runner = install(host, "cvmfs-server", *SERVER)
    changes = runner.changes()
    mkfs = [argv for argv in changes if argv[:2] == ["cvmfs_server", "mkfs"]]
    assert mkfs == [["cvmfs_server", "mkfs", "-o", "root", "-w", "http://localhost/cvmfs/" + name, "-z", name]
                    for name in (REPO, "data.example.org")]
    assert changes.index(["systemctl", "start", "apache2.service"]) < changes.index(mkfs[0])   # Apache up before mkfs
    assert ["a2enmod", "-q", "proxy_http"] in changes
    for suffix in (".masterkey", ".key", ".pub", ".crt"):
        assert os.path.exists("/etc/cvmfs/keys/%s%s" % (REPO, suffix))
    pub = read("/etc/cvmfs/keys/%s.pub" % REPO)
    assert read("/var/www/html/cvmfs-meta/%s.pub" % REPO) == pub
    conf = read("/etc/cvmfs/repositories.d/%s/server.conf" % REPO).decode().splitlines()
    assert "CVMFS_AUTO_TAG_TIMESPAN=\"4 weeks ago\"" in conf and "CVMFS_GARBAGE_COLLECTION=true" in conf
    for unit in ("stackboot-cvmfs-resign@%s.timer" % REPO, "stackboot-cvmfs-gc.timer"):
        assert host.units[unit]["enabled"] and host.units[unit]["active"], unit
    assert host.units["stackboot-cvmfs-mount.service"]["enabled"]
    assert "OnCalendar=weekly" in read("/etc/systemd/system/stackboot-cvmfs-resign@.timer").decode()
    gc = read("/etc/systemd/system/stackboot-cvmfs-gc.service").decode()
    argv = [line for line in gc.splitlines() if line.startswith("ExecStart=")][0][len("ExecStart="):].split()
    assert os.path.basename(argv[0]) == "cvmfs_server" and host.cvmfs().server(argv[1:])[0] == 0   # its log directory is there
    digest = hashlib.sha256(pub).hexdigest()
    assert "CVMFS repository %s: clients need" % REPO in out
    assert "  CVMFS_SERVER_URL=http://localhost/cvmfs/@fqrn@" in out
    assert "from http://localhost/cvmfs-meta/%s.pub (sha256 %s)" % (REPO, digest) in out

    again, runner = install(host, "cvmfs-server")
    assert again.splitlines()[-1].startswith("Install: 0 changed")
    assert runner.changes() == []


def test_server_conf_settings_change_alone(host):
    install(host, "cvmfs-server", *SERVER)
    keys = tree("/etc/cvmfs/keys")
    code, out, err, runner = stackboot(host, "plan", "cvmfs-server", "--set", "auto_tag=false")
    assert [line for line in out.splitlines() if line[:1] in "+~-!"] == [
        "~ cvmfs-repository %s: server.conf: CVMFS_AUTO_TAG=false (was true)" % name for name in (REPO, "data.example.org")]
    out, runner = install(host, "cvmfs-server", "--set", "auto_tag=false", "--set", "server_extra=CVMFS_IGNORE_XDIR_HARDLINKS=true")
    conf = read("/etc/cvmfs/repositories.d/%s/server.conf" % REPO).decode().splitlines()
    assert "CVMFS_AUTO_TAG=false" in conf and "CVMFS_IGNORE_XDIR_HARDLINKS=true" in conf
    assert not [argv for argv in runner.changes() if "mkfs" in argv] and tree("/etc/cvmfs/keys") == keys


def refuse(tools, *extra):
    """install must refuse, naming what it found, with nothing changed."""
    before = tree("/etc", "/srv", "/var/spool", "/var/www")
    code, out, err, runner = stackboot(tools, "install", "cvmfs-server", "--set", "repositories=" + REPO,
                                       "--set", "cvmfs_release=false", *extra)
    assert code == 1, out + err
    assert runner.changes() == [] and tree("/etc", "/srv", "/var/spool", "/var/www") == before
    return [line for line in out.splitlines() if line.startswith("!")], err


def make_half(tools, state):
    """The half-made states FACTS.md lists, each as the real tools leave it."""
    tools.units["apache2.service"] = {"enabled": True, "active": True}
    if state == "config-without-storage":   # mkfs died after its config directory (cvmfs#3743)
        tools.cvmfs().fail = "mkfs-keys"
        code, out, err, _ = stackboot(tools, "install", "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false")
        assert code == 1 and "fail! (creating the master key)" in err
        tools.cvmfs().fail = ""
    elif state == "partial-keys":
        for suffix in (".pub", ".crt"):
            tools.append("/etc/cvmfs/keys/%s%s" % (REPO, suffix), "old key")
    elif state == "stale-spool":   # the seed's trouble: a spool pinning an old root hash
        tools.append("/var/spool/cvmfs/%s/client.local" % REPO, "CVMFS_ROOT_HASH=0123abcd")
    elif state == "stale-fstab":
        for what in ("cvmfs2#%s /var/spool/cvmfs/%s/rdonly fuse" % (REPO, REPO), "overlay_%s /cvmfs/%s overlay" % (REPO, REPO)):
            tools.append("/etc/fstab", "%s defaults 0 0 # added by CernVM-FS for %s" % (what, REPO))
    elif state == "published-storage":   # config lost, the storage still holds a published revision
        tools.append("/srv/cvmfs/%s/.cvmfspublished" % REPO, "Cabc\nS7\nN%s" % REPO)


HALF_MADE = [
    ("config-without-storage", "config directory /etc/cvmfs/repositories.d/%s but no storage /srv/cvmfs/%s" % (REPO, REPO),
     "`rm -rf /etc/cvmfs/repositories.d/%s`" % REPO, True),   # never rmfs -f: it deletes the keys
    ("partial-keys", "partial key set in /etc/cvmfs/keys: %s.pub, %s.crt (no %s.masterkey, %s.key)" % ((REPO,) * 4), "", False),
    ("stale-spool", "stale spool /var/spool/cvmfs/" + REPO, "`rm -rf /var/spool/cvmfs/%s`" % REPO, True),
    ("stale-fstab", "2 fstab line(s) added by CernVM-FS for " + REPO,
     "`sed -i '/# added by CernVM-FS for sw\\.example\\.org$/d' /etc/fstab`", True),
    ("published-storage", "storage /srv/cvmfs/%s with a published manifest" % REPO, "", False),   # and no keys to import with
]


@pytest.mark.parametrize("state,found,cleanup,repairable", HALF_MADE, ids=[case[0] for case in HALF_MADE])
def test_half_made_repository_is_listed_refused_and_repaired_only_when_safe(host, state, found, cleanup, repairable):
    make_half(host, state)
    keys = tree("/etc/cvmfs/keys")
    refused, err = refuse(host)
    assert len(refused) == 1 and refused[0].startswith("! cvmfs-repository %s: half-made repository %s: " % (REPO, REPO))
    assert found in refused[0] and ("; clean it up with %s; " % cleanup in refused[0] if cleanup else "clean" not in refused[0])
    assert "error: 1 step(s) refused, nothing was changed" in err
    if not repairable:
        refused, err = refuse(host, "--repair")
        assert "never touches keys" in refused[0] if state == "partial-keys" else \
            "its keys are gone from /etc/cvmfs/keys (import needs all four), so --repair leaves it alone" in refused[0]
        assert tree("/etc/cvmfs/keys") == keys
        return
    out, runner = install(host, "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false", "--repair")
    assert "~ cvmfs-repository %s: repair half-made repository (remove %s" % (REPO, found) in out
    assert not [argv for argv in runner.changes() if argv[:2] == ["cvmfs_server", "rmfs"]]
    assert read("/etc/fstab").decode().count("added by CernVM-FS for " + REPO) == 2   # mkfs's own, once
    again, runner = install(host, "cvmfs-server")
    assert again.splitlines()[-1].startswith("Install: 0 changed") and runner.changes() == []


def test_a_missing_owner_is_refused_before_mkfs(host):
    refused, err = refuse(host, "--set", "repository_owner=nobody")
    assert refused == ["! cvmfs-repository %s: the owner nobody does not exist: create that user first (mkfs would stop)" % REPO]
    out, runner = install(host, "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false",
                          "--set", "repository_owner=cvmfsowner")
    assert ["cvmfs_server", "mkfs", "-o", "cvmfsowner", "-w", "http://localhost/cvmfs/" + REPO, "-z", REPO] in runner.changes()


def test_open_transaction_is_refused_until_published_or_aborted(host):
    install(host, "cvmfs-server", *SERVER)
    assert host.cvmfs().server(["transaction", REPO])[0] == 0
    refused, err = refuse(host)
    assert refused == ["! cvmfs-repository %s: %s is in an open transaction; publish it (`cvmfs_server publish %s`) or drop it "
                       "(`cvmfs_server abort -f %s`), then run again" % (REPO, REPO, REPO, REPO)]
    assert host.cvmfs().server(["abort", "-f", REPO])[0] == 0
    assert install(host, "cvmfs-server")[0].splitlines()[-1].startswith("Install: 0 changed")


def test_fake_mkfs_fails_like_the_real_one(host):
    """The failure modes stackboot guards against, reproduced by the fake (and never triggered by stackboot)."""
    fake = host.cvmfs()
    rc, out, err = fake.server(["mkfs", "-o", "root", REPO])
    assert rc == 1 and "Apache must be installed and running" in err   # no /etc/apache2
    os.makedirs("/etc/apache2")
    rc, out, err = fake.server(["mkfs", "-o", "root", REPO])
    assert rc == 1 and "Apache must be installed and running" in err   # `service apache2 status` fails
    host.units["apache2.service"] = {"enabled": True, "active": True}
    assert fake.server(["mkfs", REPO])[0] == 0   # no -o, no terminal: whoever runs it owns it
    conf = read("/etc/cvmfs/repositories.d/%s/server.conf" % REPO).decode().splitlines()
    assert "CVMFS_USER=root" in conf and "CVMFS_GARBAGE_COLLECTION=false" in conf and 'CVMFS_AUTO_TAG_TIMESPAN=""' in conf
    assert os.listdir("/cvmfs/" + REPO) == ["new_repository"]
    assert os.readlink("/etc/apache2/conf-enabled/cvmfs.%s.conf" % REPO) == "../conf-available/cvmfs.%s.conf" % REPO
    assert os.path.exists("/etc/apache2/conf-enabled/cvmfs.info.conf")
    rc, out, err = fake.server(["mkfs", "-o", "root", REPO])
    assert rc == 1 and "already exists" in err
    assert fake.server(["transaction", REPO])[0] == 0
    assert fake.server(["list"])[1] == "%s (stratum0 / local - in transaction)  \n" % REPO
    assert fake.server(["transaction", "-t", "60", REPO])[0] == 17 and fake.waited == 60
    rc, out, err = fake.server(["rmfs", "-f", REPO])   # the real one takes the keys with it
    assert rc == 0 and "Removing Keys and Certificate" in out and os.listdir("/etc/cvmfs/keys") == []
    os.makedirs("/etc/cvmfs/repositories.d/" + REPO)
    assert fake.server(["rmfs", "-f", REPO])[:1] == (2,)   # cvmfs#3743's shape: no server.conf
    assert fake.server(["list"])[0] == 2


S3 = ["--set", "backend=s3", "--set", "s3_host=minio.example", "--set", "s3_port=9000", "--set", "s3_https=false",
      "--set", "s3_bucket=cvmfs", "--set", "s3_access_key=AKIAFAKE", "--set", "s3_secret_key=topsecret99"]


def test_s3_backend_config_is_secret_and_path_style(host):
    code, out, err, runner = stackboot(host, "install", "cvmfs-server", *(SERVER + S3[:-4]))
    assert code == 64 and "parameter s3_access_key has no value" in err
    out, runner = install(host, "cvmfs-server", *(SERVER + S3))
    st = os.stat("/etc/cvmfs/stackboot-s3.conf")
    assert st.st_mode & 0o777 == 0o600
    config = read("/etc/cvmfs/stackboot-s3.conf").decode().splitlines()
    assert "CVMFS_S3_DNS_BUCKETS=false" in config and "CVMFS_S3_SECRET_KEY=topsecret99" in config
    assert ["cvmfs_server", "mkfs", "-o", "root", "-w", "http://minio.example:9000/cvmfs", "-s",
            "/etc/cvmfs/stackboot-s3.conf", "-z", REPO] in runner.changes()
    assert "  CVMFS_SERVER_URL=http://minio.example:9000/cvmfs/@fqrn@" in out   # mkfs puts each repository under its name
    assert os.path.isfile("/var/lib/fake-s3/cvmfs/%s/.cvmfspublished" % REPO)
    log = read("/var/log/stackboot.log").decode()
    for secret in ("topsecret99", "AKIAFAKE"):
        assert secret not in out and secret not in log
    assert install(host, "cvmfs-server")[0].splitlines()[-1].startswith("Install: 0 changed")


def test_s3_repair_refuses_when_publishing_cannot_be_ruled_out(host):
    s3 = ["--set", "backend=s3", "--set", "s3_host=127.0.0.1", "--set", "s3_port=9", "--set", "s3_https=false",
          "--set", "s3_bucket=cvmfs", "--set", "s3_access_key=AKIAFAKE", "--set", "s3_secret_key=topsecret99"]
    host.append("/var/spool/cvmfs/%s/client.local" % REPO, "CVMFS_ROOT_HASH=0123abcd")
    refused, err = refuse(host, *(s3 + ["--repair"]))
    assert refused[0].endswith("--repair refused: cannot tell whether it ever published "
                               "(http://127.0.0.1:9/cvmfs/%s unreachable)" % REPO), refused


def test_repository_identity_is_never_changed_silently(host):
    install(host, "cvmfs-server", *SERVER)
    code, out, err, runner = stackboot(host, "plan", "cvmfs-server", "--set", "repository_owner=cvmfsowner")
    assert "! cvmfs-repository %s: %s was made with owner root (asked: cvmfsowner); stackboot never re-creates a " \
           "repository" % (REPO, REPO) in out


def test_a_store_that_is_not_mounted_gets_no_repository(host):
    host.pools.add("tank")
    host.datasets.update({"tank": {}, "tank/cvmfs": {}, "tank/cvmfs/storage": {"mountpoint": "/srv/cvmfs", "atime": "off"},
                          "tank/cvmfs/spool": {"mountpoint": "/var/spool/cvmfs", "atime": "off"}})   # made, not mounted
    code, out, err, runner = stackboot(host, "install", "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false",
                                       "--set", "cvmfs_store=zfs-dataset", "--set", "cvmfs_store_root=tank/cvmfs")
    assert code == 1 and "error: cvmfs-repository %s: /srv/cvmfs, /var/spool/cvmfs is not mounted" % REPO in err
    assert not [argv for argv in runner.changes() if "mkfs" in argv] and not os.path.exists("/etc/cvmfs/repositories.d")


def test_freebsd_refuses_at_once(fs):
    for role, repos in (("cvmfs-server", "repositories=" + REPO), ("cvmfs-client", "client_repositories=" + REPO)):
        code, out, err = run_main(["plan", role, "--set", repos], RecordingRunner("/", FakeTools("/")), ("FreeBSD", "amd64"))
        assert code == 64
        assert ("error: role %s supports only linux (CernVM-FS runs only on Linux); this host is" % role) in err


def published(tools, name):
    return [line for line in read("/srv/cvmfs/%s/.cvmfspublished" % name).decode().splitlines() if line.startswith("S")]


def test_publish_syncs_with_deletions_tags_and_closes(host, fs):
    install(host, "cvmfs-server", *SERVER)
    fs.create_file("/work/site/bin/tool", contents="v1")
    fs.create_file("/work/site/README", contents="hello")
    fs.create_file("/cvmfs/%s/old-file" % REPO, contents="gone soon")
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site", "--tag", "v1", "--message", "first")
    assert code == 0, out + err
    assert runner.changes()[0] == ["cvmfs_server", "transaction", "-t", "300", REPO]
    assert runner.changes()[-1] == ["cvmfs_server", "publish", "-a", "v1", "-m", "first", REPO]
    assert "~ synced /work/site into /cvmfs/%s: 3 new, 0 changed, 2 removed" % REPO in out   # and mkfs's new_repository
    assert sorted(os.listdir("/var/spool/cvmfs/%s/rdonly" % REPO)) == ["README", "bin"]
    assert published(host, REPO) == ["S2"] and not os.path.exists("/var/spool/cvmfs/%s/in_transaction.lock" % REPO)
    assert "v1 2 first" in read("/var/spool/cvmfs/%s/tags" % REPO).decode()


def test_publish_is_the_cvmfs_publish_role_converged_once(host, fs, plan_spy):
    install(host, "cvmfs-server", *SERVER)
    fs.create_file("/work/site/file", contents="v1")
    del plan_spy[:]
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site")
    assert code == 0, out + err
    assert [plan.roles for plan in plan_spy] == [["cvmfs-publish"]]
    assert plan_spy[0].values.values["source"] == "/work/site" and "~ cvmfs-publish %s: publish %s: 1 new" % (REPO, REPO) in out
    code, out, err, runner = stackboot(host, "check")
    assert code == 0 and "cvmfs-publish" not in out   # a one-shot publish is not an installed role
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site")
    assert code == 0 and runner.changes() == [] and "nothing to publish" in out
    fs.create_file("/work/site/second", contents="v2")
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site", "--json")
    data = document(out, "cvmfs", 0)   # the publish as data; its progress on stderr
    assert [step["kind"] for step in data["steps"]] == ["cvmfs-publish"] and data["summary"]["changed"] == 1
    assert "publish %s: 1 new" % REPO in data["steps"][0]["changes"][0]["summary"]


def test_publish_failure_aborts_and_leaves_nothing_open(host, fs):
    install(host, "cvmfs-server", *SERVER)
    fs.create_file("/work/site/file", contents="new")
    host.cvmfs().fail = "publish"
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site")
    assert code == 1 and "failed to commit files (injected)" in err
    assert runner.changes()[-1] == ["cvmfs_server", "abort", "-f", REPO]
    assert "- transaction on %s aborted" % REPO in out
    assert not os.path.exists("/var/spool/cvmfs/%s/in_transaction.lock" % REPO)
    assert os.listdir("/cvmfs/" + REPO) == ["new_repository"] and published(host, REPO) == ["S1"]


def test_publish_interrupted_aborts(host, fs):
    install(host, "cvmfs-server", *SERVER)
    fs.create_file("/work/site/file", contents="new")

    def interrupt(argv):
        raise KeyboardInterrupt
    host.on(lambda argv: argv[:2] == ["cvmfs_server", "publish"], interrupt)
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site")
    assert code == 130 and "interrupted" in err
    assert runner.changes()[-1] == ["cvmfs_server", "abort", "-f", REPO]
    assert not os.path.exists("/var/spool/cvmfs/%s/in_transaction.lock" % REPO) and os.listdir("/cvmfs/" + REPO) == ["new_repository"]


def test_publish_refuses_a_busy_repository(host, fs):
    install(host, "cvmfs-server", *SERVER)
    fs.create_dir("/work/site")
    host.cvmfs().server(["transaction", REPO])
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site")
    assert code == 1 and runner.changes() == []
    assert "error: 1 step(s) refused, nothing was changed: %s already has an open transaction " \
           "(/var/spool/cvmfs/%s/in_transaction.lock): wait for the other publish to finish" % (REPO, REPO) in err
    # a transaction opened by somebody else between our look and our own open: rc 17, and no abort of theirs
    host.cvmfs().server(["abort", "-f", REPO])
    fs.create_file("/work/site/new", contents="something to publish")

    def race(argv):   # theirs opens first; ours retries for -t seconds, as the real one does, then gets 17
        host.cvmfs().server(["transaction", REPO])
        return host.cvmfs().server(argv[1:])
    host.on(lambda argv: argv[:2] == ["cvmfs_server", "transaction"], race)
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site", "--timeout", "30")
    assert code == 1 and "%s already has an open transaction (waited 30 s for it); nothing was changed" % REPO in err
    assert host.cvmfs().waited == 30 and ["cvmfs_server", "abort", "-f", REPO] not in runner.changes()
    code, out, err, runner = stackboot(host, "cvmfs", "publish", "not a name", "/work/site")
    assert code == 64


CLIENT = ["--set", "cvmfs_release=false", "--set", "small_setup=true"]


def test_client_key_from_file_probe_and_bad_key(host, fs):
    # the server side, as the fake web sees it (a stratum 0 is never its own autofs client)
    key = "-----BEGIN PUBLIC KEY-----\nkey of %s\n-----END PUBLIC KEY-----\n" % REPO
    fs.create_file("/srv/cvmfs/%s/.cvmfspublished" % REPO,
                   contents="Cabc\nS4\nN%s\nK%s\n--\n" % (REPO, hashlib.sha256(key.encode()).hexdigest()))
    host.units["apache2.service"] = {"enabled": True, "active": True}
    pub = "/etc/cvmfs/keys/%s.pub" % REPO
    fs.create_file("/root/keys/%s.pub" % REPO, contents=key)
    out, runner = install(host, "cvmfs-client", "--set", "client_repositories=%s /root/keys/%s.pub" % (REPO, REPO), *CLIENT)
    assert ["cvmfs_config", "setup"] in runner.changes() and ["cvmfs_config", "probe", REPO] in runner.changes()
    assert read("/etc/cvmfs/default.local").decode().splitlines()[1:] == [
        "CVMFS_REPOSITORIES=" + REPO, 'CVMFS_HTTP_PROXY=DIRECT', "CVMFS_QUOTA_LIMIT=4000", "CVMFS_CACHE_BASE=/var/lib/cvmfs"]
    assert "CVMFS_SERVER_URL=http://localhost/cvmfs/@fqrn@" in read("/etc/cvmfs/config.d/%s.conf" % REPO).decode()
    assert oct(os.stat(pub).st_mode & 0o777) == "0o444"
    again, runner = install(host, "cvmfs-client")
    assert again.splitlines()[-1].startswith("Install: 0 changed") and runner.changes() == []   # no probe when nothing changed

    # a wrong key: the probe fails with the client's own message, and stays pending until it passes
    fs.create_file("/root/keys/wrong.pub", contents="somebody else's key\n")
    code, out, err, runner = stackboot(host, "install", "cvmfs-client", "--set",
                                       "client_repositories=%s /root/keys/wrong.pub" % REPO, "--force")
    assert code == 1 and "failed to verify repository manifest (bad signature)" in err
    code, out, err, runner = stackboot(host, "install", "cvmfs-client")
    assert code == 1 and ["cvmfs_config", "probe", REPO] in runner.changes()


def test_client_setup_is_judged_by_what_it_establishes(host, fs):
    """As the real 2.11.5 does: chksetup exits 0 on a fresh host (warnings only), so it cannot
    say whether setup ran; the autofs map can. Errors setup cannot fix stop the install."""
    key = "-----BEGIN PUBLIC KEY-----\nkey of %s\n-----END PUBLIC KEY-----\n" % REPO
    fs.create_file("/srv/cvmfs/%s/.cvmfspublished" % REPO,
                   contents="Cabc\nS4\nN%s\nK%s\n--\n" % (REPO, hashlib.sha256(key.encode()).hexdigest()))
    fs.create_file("/root/keys/%s.pub" % REPO, contents=key)
    fs.create_dir("/etc/auto.master.d")
    host.units["apache2.service"] = {"enabled": True, "active": True}
    sets = ["--set", "client_repositories=%s /root/keys/%s.pub" % (REPO, REPO)] + CLIENT
    host.cvmfs().fail = "fuse"
    code, out, err, runner = stackboot(host, "install", "cvmfs-client", *sets)
    assert code == 1 and "Error: /dev/fuse is not readable and writable by user cvmfs" in err
    assert "cvmfs_config chksetup found errors setup cannot fix" in err
    host.cvmfs().fail = ""
    code, out, err, runner = stackboot(host, "install", "cvmfs-client")   # (the check stays owed, and passes now)
    assert code == 0, out + err
    assert ["cvmfs_config", "chksetup"] in runner.changes() and ["cvmfs_config", "probe", REPO] in runner.changes()
    assert read("/etc/auto.master.d/cvmfs.autofs").decode() == "/cvmfs /etc/auto.cvmfs\n"
    code, out, err, runner = stackboot(host, "install", "cvmfs-client")
    assert code == 0 and runner.changes() == []


def test_client_without_autofs_mounts_each_repository_from_fstab(host, fs):
    """fstab mode, as CernVM-FS documents it: no setup, no autofs map; each repository mounted now
    (its directory made first: mount.cvmfs wants it) and at boot; a bad key fails at the mount."""
    key = "-----BEGIN PUBLIC KEY-----\nkey of %s\n-----END PUBLIC KEY-----\n" % REPO
    fs.create_file("/srv/cvmfs/%s/.cvmfspublished" % REPO,
                   contents="Cabc\nS4\nN%s\nK%s\n--\n" % (REPO, hashlib.sha256(key.encode()).hexdigest()))
    fs.create_file("/root/keys/%s.pub" % REPO, contents=key)
    fs.create_file("/root/keys/wrong/%s.pub" % REPO, contents="another key\n")
    host.units["apache2.service"] = {"enabled": True, "active": True}
    base = ["--set", "client_mount=fstab"] + CLIENT
    code, out, err, runner = stackboot(host, "install", "cvmfs-client", "--set", "client_repositories=%s /root/keys/wrong/%s.pub"
                                       % (REPO, REPO), *base)
    assert code == 1 and "failed to verify repository manifest (bad signature)" in err
    code, out, err, runner = stackboot(host, "install", "cvmfs-client", "--set", "client_repositories=%s /root/keys/%s.pub"
                                       % (REPO, REPO), *base)
    assert code == 0, out + err
    assert "%s /cvmfs/%s cvmfs defaults,_netdev,nodev 0 0" % (REPO, REPO) in read("/etc/fstab").decode().splitlines()
    assert host.mounted["/cvmfs/" + REPO] == ("cvmfs2", "fuse")
    assert ["cvmfs_config", "setup"] not in runner.changes() and not os.path.exists("/etc/auto.master.d/cvmfs.autofs")
    assert runner.changes()[-1] == ["cvmfs_config", "probe", REPO]
    code, out, err, runner = stackboot(host, "install", "cvmfs-client")
    assert code == 0 and runner.changes() == [], out
    code, out, err, runner = stackboot(host, "uninstall", "cvmfs-client")
    assert code == 0 and ["umount", "/cvmfs/" + REPO] in runner.changes()
    assert REPO not in read("/etc/fstab").decode()


def test_client_files_are_quoted_for_the_shell_that_sources_them(host, fs):
    code, out, err, runner = stackboot(host, "plan", "cvmfs-client", "--set", "client_repositories=%s %s" % (REPO, "a" * 64),
                                       "--set", "cvmfs_release=false", "--set", "http_proxy=http://s1:3128|http://s2:3128;DIRECT",
                                       "--set", "server_url=http://a/cvmfs/@fqrn@;http://b/cvmfs/@fqrn@",
                                       "--set", "client_extra=CVMFS_X=a b;c")
    assert code == 0, err
    assert '+CVMFS_HTTP_PROXY="http://s1:3128|http://s2:3128;DIRECT"' in out
    assert '+CVMFS_SERVER_URL="http://a/cvmfs/@fqrn@;http://b/cvmfs/@fqrn@"' in out and '+CVMFS_X="a b;c"' in out
    for bad in ("http_proxy=DIRECT$(id)", "server_url=http://a/`id`", "client_extra=CVMFS_X=\"x\""):
        code, out, err, runner = stackboot(host, "plan", "cvmfs-client", "--set", "client_repositories=%s %s" % (REPO, "a" * 64),
                                           "--set", "cvmfs_release=false", "--set", "small_setup=true", "--set", bad)
        assert code == 64, bad


def test_client_needs_a_proxy_decision(host):
    code, out, err, runner = stackboot(host, "plan", "cvmfs-client", "--set", "cvmfs_release=false",
                                       "--set", "client_repositories=" + REPO + " " + "a" * 64)
    assert code == 64 and "parameter http_proxy (role cvmfs-client) needs a value: CVMFS_HTTP_PROXY" in err
    code, out, err, runner = stackboot(host, "plan", "cvmfs-client", "--set", "cvmfs_release=false",
                                       "--set", "client_repositories=" + REPO, *CLIENT)
    assert code == 64 and "expected FQRN SHA256 or FQRN /path/to/key.pub (a key is never taken unpinned)" in err


def test_sync_tree_mirrors_types_links_modes_and_deletions(tmp_path):
    import stackboot
    source, dest = tmp_path / "src", tmp_path / "dest"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f").write_text("one")
    (source / "was-dir").write_text("now a file")
    os.symlink("d/f", str(source / "link"))
    (source / "exe").write_text("#!/bin/sh\n")
    os.chmod(str(source / "exe"), 0o755)
    (dest / "was-dir" / "deep").mkdir(parents=True)
    (dest / "stale").write_text("remove me")
    os.symlink("elsewhere", str(dest / "link"))
    host = stackboot.Host("/")
    assert stackboot.sync_tree(host, str(source), str(dest), dry_run=True) == {"new": 3, "changed": 2, "removed": 1, "problems": []}
    with pytest.raises(stackboot.StackbootError, match="refused to remove .*stale while only reading"):   # a dry run is the plan: it only reads
        stackboot.sync_tree(host, str(source), str(dest))
    with host.changes_allowed():
        counts = stackboot.sync_tree(host, str(source), str(dest))
    assert counts == {"new": 3, "changed": 2, "removed": 1}   # d, d/f, exe; was-dir (dir -> file), link
    assert sorted(os.listdir(str(dest))) == ["d", "exe", "link", "was-dir"]
    assert os.readlink(str(dest / "link")) == "d/f" and (dest / "was-dir").read_text() == "now a file"
    assert os.stat(str(dest / "exe")).st_mode & 0o777 == 0o755
    assert stackboot.sync_tree(host, str(source), str(dest)) == {"new": 0, "changed": 0, "removed": 0}
    os.chmod(str(source / "d"), 0o700)   # a directory's mode is content too
    assert stackboot.sync_tree(host, str(source), str(dest), dry_run=True) == {"new": 0, "changed": 1, "removed": 0, "problems": []}
    with host.changes_allowed():
        stackboot.sync_tree(host, str(source), str(dest))
    assert os.stat(str(dest / "d")).st_mode & 0o777 == 0o700


def test_publish_refuses_what_it_could_not_copy_before_opening_a_transaction(host, fs):
    """A pipe, a socket or a file nobody may read would fail the copy half-way: the plan names them."""
    install(host, "cvmfs-server", *SERVER)
    fs.create_file("/work/site/fine", contents="ok")
    fs.create_file("/work/site/pipe", st_mode=stat.S_IFIFO | 0o644)
    fs.create_file("/work/site/deep/dir/secret", contents="x")
    fs.create_file("/work/site/deep/dir/pipe2", st_mode=stat.S_IFIFO | 0o644)
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site")
    assert code == 1 and runner.changes() == []
    assert "2 entries of /work/site cannot be published: /work/site/deep/dir/pipe2: a socket, pipe or device; " \
           "/work/site/pipe: a socket, pipe or device; a repository holds readable files" in err
    os.unlink("/work/site/pipe")
    os.unlink("/work/site/deep/dir/pipe2")
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site")
    assert code == 0, out + err


def test_publish_that_cannot_read_a_file_aborts_with_what_to_fix(host, fs, monkeypatch):
    """A file unreadable only at copy time (it changed after the plan): the transaction is aborted, the error names it."""
    install(host, "cvmfs-server", *SERVER)
    fs.create_file("/work/site/file", contents="v1")
    import stackboot as module
    real_copy = module.Host.copy_in

    def copy_in(self, src, target):
        if src.endswith("/file"):
            raise PermissionError(13, "Permission denied", src)
        return real_copy(self, src, target)
    monkeypatch.setattr(module.Host, "copy_in", copy_in)
    code, out, err, runner = stackboot(host, "cvmfs", "publish", REPO, "/work/site")
    assert code == 1 and runner.changes()[-1] == ["cvmfs_server", "abort", "-f", REPO]
    assert "error: cvmfs-publish %s: cannot read /work/site/file: Permission denied; the transaction is aborted, nothing was published" % REPO in err
    assert "make it readable to the user stackboot runs as" in err and "free space" not in err


def test_sync_tree_finds_what_it_could_not_copy(tmp_path):
    """On the real disk: a socket and a pipe deep in a new directory; root reads every plain file."""
    import socket
    import stackboot
    source, dest = tmp_path / "src", tmp_path / "dest"
    (source / "new" / "deeper").mkdir(parents=True)
    (source / "new" / "deeper" / "ok").write_text("fine")
    os.mkfifo(str(source / "new" / "deeper" / "fifo"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(source / "sock"))
    dest.mkdir()
    try:
        counts = stackboot.sync_tree(stackboot.Host("/"), str(source), str(dest), dry_run=True)
    finally:
        sock.close()
    assert sorted(counts["problems"]) == ["%s: a socket, pipe or device" % (source / "new" / "deeper" / "fifo"),
                                          "%s: a socket, pipe or device" % (source / "sock")]


@pytest.fixture
def bucket(host):
    """The fake S3 bucket (files under /var/lib/fake-s3 on the fake disk) served over real HTTP on
    loopback, where stackboot asks it whether a manifest exists."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                data = host.http_get("http://s3" + self.path)
            except OSError:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield ["--set", "backend=s3", "--set", "s3_host=127.0.0.1", "--set", "s3_port=%d" % httpd.server_address[1],
           "--set", "s3_https=false", "--set", "s3_bucket=cvmfs", "--set", "s3_access_key=AKIAFAKE", "--set", "s3_secret_key=topsecret99"]
    httpd.shutdown()
    httpd.server_close()


def test_s3_repository_with_nothing_in_its_bucket_is_half_made_and_repaired_keeping_its_keys(host, bucket):
    """The real mkfs that failed uploading the whitelist left keys, server.conf and the spool, and an
    empty bucket: not a repository, whatever the local files say (it was once taken for one)."""
    host.cvmfs().fail = "mkfs-upload"
    code, out, err, runner = stackboot(host, "install", "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false",
                                       *bucket)
    assert code == 1 and "cannot upload whitelist" in err
    host.cvmfs().fail = ""
    keys = tree("/etc/cvmfs/keys")
    assert len(keys) == 4
    refused, err = refuse(host, *bucket)
    assert refused == ["! cvmfs-repository %s: half-made repository %s: config directory /etc/cvmfs/repositories.d/%s; spool "
                       "/var/spool/cvmfs/%s; no manifest in its bucket (http://127.0.0.1:%s/cvmfs/%s/.cvmfspublished: "
                       "not found); clean it up with `rm -rf /var/spool/cvmfs/%s`; `rm -rf /etc/cvmfs/repositories.d/%s`; "
                       "or run install again with --repair if it never published anything"
                       % (REPO, REPO, REPO, REPO, bucket[5].split("=")[1], REPO, REPO, REPO)]
    out, runner = install(host, "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false", *(bucket + ["--repair"]))
    assert "~ cvmfs-repository %s: repair half-made repository" % REPO in out
    assert "(reusing the keys in /etc/cvmfs/keys)" in out and tree("/etc/cvmfs/keys") == keys
    assert os.path.isfile("/var/lib/fake-s3/cvmfs/%s/.cvmfspublished" % REPO)
    assert not [argv for argv in runner.changes() if argv[:2] == ["cvmfs_server", "rmfs"]]
    assert install(host, "cvmfs-server")[0].splitlines()[-1].startswith("Install: 0 changed")


def stale_mounts(name):
    """What a published repository keeps mounted (and in fstab) after its config directory went away."""
    with open("/proc/self/mountinfo", "a") as table:
        table.write("60 1 0:60 / /var/spool/cvmfs/%s/rdonly rw - fuse cvmfs2 rw\n" % name)
        table.write("61 1 0:61 / /cvmfs/%s rw - overlay overlay_%s rw\n" % (name, name))


def test_published_repository_that_lost_its_config_gets_it_back_by_import(host, fs):
    install(host, "cvmfs-server", *SERVER)
    fs.create_file("/work/site/file", contents="v1")
    assert stackboot(host, "cvmfs", "publish", REPO, "/work/site")[0] == 0
    keys = tree("/etc/cvmfs/keys")
    shutil.rmtree("/etc/cvmfs/repositories.d/" + REPO)
    stale_mounts(REPO)
    assert host.cvmfs().server(["import", "-o", "root", REPO])[0] == 1   # as the real one: read-only while mounted
    refused, err = refuse(host)
    cleanup = ["umount /cvmfs/%s" % REPO, "umount /var/spool/cvmfs/%s/rdonly" % REPO,
               "sed -i '/# added by CernVM-FS for sw\\.example\\.org$/d' /etc/fstab", "rm -rf /var/spool/cvmfs/%s" % REPO,
               "cvmfs_server import -o root -w http://localhost/cvmfs/%s %s" % (REPO, REPO)]   # the URL it was made with
    assert refused[0].endswith("clean it up with %s; or run install again with --repair: it keeps what was published and "
                               "brings the config back" % "; ".join("`%s`" % command for command in cleanup)), refused
    out, runner = install(host, "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false", "--repair")
    assert "~ cvmfs-repository %s: restore published repository (" % REPO in out
    assert [argv for argv in runner.changes() if argv[0] in ("umount", "cvmfs_server")] == [
        ["umount", "/cvmfs/" + REPO], ["umount", "/var/spool/cvmfs/%s/rdonly" % REPO],
        ["cvmfs_server", "import", "-o", "root", "-w", "http://localhost/cvmfs/" + REPO, REPO]]
    assert tree("/etc/cvmfs/keys") == keys and published(host, REPO) == ["S2"]
    assert read("/etc/fstab").decode().count("added by CernVM-FS for " + REPO) == 2   # import's own, once
    conf = read("/etc/cvmfs/repositories.d/%s/server.conf" % REPO).decode().splitlines()
    assert "CVMFS_GARBAGE_COLLECTION=true" in conf   # the role's settings over import's defaults
    assert install(host, "cvmfs-server")[0].splitlines()[-1].startswith("Install: 0 changed")


def test_restore_keeps_the_stratum0_url_it_was_made_with(host, fs):
    url = ["--set", "stratum0_url=http://127.0.0.1/cvmfs/@fqrn@"]
    install(host, "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false", *url)
    fs.create_file("/work/site/file", contents="v1")
    assert stackboot(host, "cvmfs", "publish", REPO, "/work/site")[0] == 0
    shutil.rmtree("/etc/cvmfs/repositories.d/" + REPO)
    out, runner = install(host, "cvmfs-server", "--repair")
    assert ["cvmfs_server", "import", "-o", "root", "-w", "http://127.0.0.1/cvmfs/" + REPO, REPO] in runner.changes()
    assert install(host, "cvmfs-server")[0].splitlines()[-1].startswith("Install: 0 changed")


def test_s3_repository_published_in_its_bucket_is_never_made_again(host, bucket):
    """Nothing of it left here (a reinstalled host with its keys back), but its bucket holds it: no mkfs over it."""
    install(host, "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false", *bucket)
    shutil.rmtree("/etc/cvmfs/repositories.d/" + REPO)
    shutil.rmtree("/var/spool/cvmfs/" + REPO)
    with open("/etc/fstab") as handle:
        kept = [line for line in handle if "added by CernVM-FS" not in line]
    with open("/etc/fstab", "w") as handle:
        handle.writelines(kept)
    refused, err = refuse(host, *bucket)
    assert refused == ["! cvmfs-repository %s: %s is published in its bucket (http://127.0.0.1:%s/cvmfs/%s/.cvmfspublished) but has "
                       "no configuration here: stackboot never makes a repository over a published one; bring its configuration "
                       "back (cvmfs_server import with the S3 options) or choose another name"
                       % (REPO, REPO, bucket[5].split("=")[1], REPO)]


def test_offline_never_asks_the_bucket(host, bucket, monkeypatch):
    install(host, "cvmfs-server", "--set", "repositories=" + REPO, "--set", "cvmfs_release=false", *bucket)
    import urllib.request
    asked, real = [], urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, *a, **k: asked.append(url) or real(url, *a, **k))
    code, out, err, runner = stackboot(host, "plan", "--offline", "cvmfs-server")
    assert code == 0 and asked == [], out + err
