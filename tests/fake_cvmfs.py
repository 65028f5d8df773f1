#!/usr/bin/python3
"""Stateful fakes of CernVM-FS's `cvmfs_server` and `cvmfs_config` (neither can be installed here).

They make the on-disk effects FACTS.md lists (config directory, keys, storage,
spool, /cvmfs/FQRN with its `new_repository` file, fstab lines, Apache config
through a2enconf) and behave the way the real 2.11.5 did: mkfs without -o takes
the caller as owner, stops on an existing config directory or a partial key
set, fails its health check on a stale spool after leaving a half-made
repository, and for the local backend needs Apache installed and `service apache2
status` saying it runs; server.conf has the real defaults without -z and -G;
a second transaction retries for -t seconds, then exits 17; `rmfs -f` deletes the
keys and exits 2 on a config directory without server.conf; import fails while
stale mounts exist; `list` flags a repository in transaction. The client's
chksetup counts errors only, setup writes the autofs drop-in, and the probe
needs /cvmfs mounted (autofs, or fstab: conftest's mount checks what mount.cvmfs
checks), a proxy setting, the public key, and a manifest signed by that key,
fetched over HTTP.

Used two ways: in-process by tests/conftest.py's FakeTools (on pyfakefs), and as
a script copied into a bare root as /usr/bin/cvmfs_server and /usr/bin/cvmfs_config,
where it talks real HTTP to a real Apache. FAKE_CVMFS_FAIL injects a failure:
"publish", "mkfs-keys" (mkfs dies after its config directory), "mkfs-poll",
"mkfs-upload" (the S3 upload of the whitelist fails: keys, config and spool stay,
the bucket holds nothing), "fuse" (chksetup's /dev/fuse error).
"""

import getpass
import hashlib
import os
import shutil
import subprocess
import sys
import time

KEYS = (".masterkey", ".key", ".pub", ".crt")


def url_get(url, timeout=5):
    import urllib.request
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def service_status(name):
    return subprocess.call(["service", name, "status"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


class Cvmfs:
    def __init__(self, root="/", http_get=url_get, fail=None, poll_seconds=15, running=service_status, user=None, spawn=None):
        """spawn: how the script runs a command of the host (Apache's reload); in-process fakes run none."""
        self.root, self.http_get, self.poll_seconds, self.running, self.spawn = root, http_get, poll_seconds, running, spawn
        self.user = user or getpass.getuser()
        self.fail = fail if fail is not None else os.environ.get("FAKE_CVMFS_FAIL", "")
        self.out, self.err = [], []
        self.waited = 0   # seconds `transaction -t` would have slept, retrying

    # helpers
    def path(self, path):
        return os.path.join(self.root, path.lstrip("/")) if self.root != "/" else path

    def exists(self, path):
        return os.path.lexists(self.path(path))

    def read(self, path):
        with open(self.path(path)) as handle:
            return handle.read()

    def write(self, path, text, mode=0o644):
        full = self.path(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(text)
        os.chmod(full, mode)

    def settings(self, path):
        values = {}
        if self.exists(path):
            for line in self.read(path).splitlines():
                key, sep, value = line.partition("=")
                if sep and not line.lstrip().startswith("#"):
                    values[key.strip()] = value.strip().strip("\"'")
        return values

    def result(self, rc):
        out, err = "".join(line + "\n" for line in self.out), "".join(line + "\n" for line in self.err)
        self.out, self.err = [], []
        return rc, out, err

    def failed(self, message, rc=1):
        self.err.append(message)
        return self.result(rc)

    @staticmethod
    def options(args, with_value):
        """getopt-style: ({flag: value or True}, [positional])."""
        flags, rest, index = {}, [], 0
        while index < len(args):
            arg = args[index]
            if arg.startswith("-") and len(arg) == 2:
                if arg[1] in with_value:
                    flags[arg[1]] = args[index + 1]
                    index += 2
                    continue
                flags[arg[1]] = True
            else:
                rest.append(arg)
            index += 1
        return flags, rest

    def spool(self, name):
        return "/var/spool/cvmfs/" + name

    def mounted(self, path):
        """Whether the kernel's mount table (the fake one under pyfakefs) has a mount at path."""
        try:
            with open("/proc/self/mountinfo") as table:
                return any(line.split()[4] == self.path(path) for line in table if len(line.split()) > 4)
        except OSError:
            return False

    def apache(self):
        return "/etc/apache2" if self.exists("/etc/apache2") else "/etc/httpd" if self.exists("/etc/httpd") else None

    def storage(self, name):
        """(directory holding .cvmfspublished, URL-ish description)."""
        conf = self.settings("/etc/cvmfs/repositories.d/%s/server.conf" % name)
        upstream = conf.get("CVMFS_UPSTREAM_STORAGE", "local,/srv/cvmfs/%s/data/txn,/srv/cvmfs/%s" % (name, name))
        if upstream.startswith("S3,"):
            s3 = self.settings(upstream.split("@", 1)[1])
            return "/var/lib/fake-s3/%s/%s" % (s3.get("CVMFS_S3_BUCKET", "bucket"), name)
        return upstream.split(",")[2]

    def manifest(self, name, revision):
        pub = self.read("/etc/cvmfs/keys/%s.pub" % name)
        root_hash = hashlib.sha1(("%s-%d" % (name, revision)).encode()).hexdigest()
        self.write(self.storage(name) + "/.cvmfspublished",
                   "C%s\nS%d\nN%s\nK%s\n--\n" % (root_hash, revision, name, hashlib.sha256(pub.encode()).hexdigest()))
        self.write(self.spool(name) + "/client.local", "CVMFS_ROOT_HASH=%s\n" % root_hash)
        return root_hash

    def revision(self, name):
        for line in self.read(self.storage(name) + "/.cvmfspublished").splitlines():
            if line.startswith("S"):
                return int(line[1:])
        return 0

    # cvmfs_server
    def server(self, args):
        if not args:
            return self.failed("usage: cvmfs_server COMMAND")
        command = getattr(self, "server_" + args[0].replace("-", "_"), None)
        if command is None:
            return self.failed("cvmfs_server: unknown command %s" % args[0])
        return command(args[1:])

    def server_mkfs(self, args):
        flags, rest = self.options(args, "owuskaZfVXmG")
        if len(rest) != 1:
            return self.failed("usage: cvmfs_server mkfs [options] <fully qualified repository name>")
        name = rest[0]
        owner = flags.get("o") or self.user   # without -o and a terminal, 2.11.5 asked nothing: whoami
        if not any(line.split(":")[0] == owner for line in self.read("/etc/passwd").splitlines()):
            return self.failed("user %s does not exist" % owner)
        config = "/etc/cvmfs/repositories.d/" + name
        if self.exists(config):
            return self.failed("The repository %s already exists" % name)
        have = [suffix for suffix in KEYS if self.exists("/etc/cvmfs/keys/" + name + suffix)]
        if have and len(have) < len(KEYS):
            return self.failed("fail! partial key set for %s in /etc/cvmfs/keys (%s)" % (name, ", ".join(have)))
        stratum0 = flags.get("w", "http://localhost/cvmfs/" + name)
        if flags.get("s"):
            s3 = self.settings(flags["s"])
            missing = [key for key in ("CVMFS_S3_HOST", "CVMFS_S3_BUCKET", "CVMFS_S3_ACCESS_KEY", "CVMFS_S3_SECRET_KEY")
                       if not s3.get(key)]
            if missing:
                return self.failed("S3 config %s lacks %s" % (flags["s"], ", ".join(missing)))
            upstream = "S3,/var/spool/cvmfs/%s/tmp,%s@%s" % (name, name, flags["s"])
            if not stratum0.rstrip("/").endswith("/" + name):   # mkfs puts the repository under its name
                stratum0 = stratum0.rstrip("/") + "/" + name
        else:   # as the real one: /etc/apache2 (or /etc/httpd), then `service apache2 status`
            apache = self.apache()
            if apache is None or not self.running("apache2" if apache == "/etc/apache2" else "httpd"):
                return self.failed("Apache must be installed and running")
            upstream = flags.get("u", "local,/srv/cvmfs/%s/data/txn,/srv/cvmfs/%s" % (name, name))
        self.out.append("Creating Configuration Files... done")
        server_conf = ["CVMFS_REPOSITORY_NAME=" + name, "CVMFS_REPOSITORY_TYPE=stratum0", "CVMFS_USER=" + owner,
                       "CVMFS_UNION_DIR=/cvmfs/" + name, "CVMFS_SPOOL_DIR=/var/spool/cvmfs/" + name,
                       "CVMFS_STRATUM0=" + stratum0, "CVMFS_UPSTREAM_STORAGE=" + upstream,
                       "CVMFS_AUTO_TAG=true", "CVMFS_AUTO_TAG_TIMESPAN=\"%s\"" % flags.get("G", ""),
                       "CVMFS_GARBAGE_COLLECTION=%s" % ("true" if flags.get("z") else "false")]
        if flags.get("z"):
            server_conf += ["CVMFS_AUTO_GC=true"]
        self.write(config + "/server.conf", "\n".join(server_conf) + "\n")
        if self.fail == "mkfs-keys":
            return self.failed("fail! (creating the master key)")
        self.write(config + "/client.conf", "CVMFS_SERVER_URL=%s\nCVMFS_PUBLIC_KEY=/etc/cvmfs/keys/%s.pub\n" % (stratum0, name))
        self.out.append("Creating CernVM-FS Master Key and Self-Signed Certificate... done")
        if not have:
            for suffix, mode in zip(KEYS, (0o400, 0o400, 0o444, 0o444)):
                self.write("/etc/cvmfs/keys/" + name + suffix, "%s %s %s\n" % (suffix[1:], name, os.urandom(8).hex()), mode)
        storage = self.storage(name)
        self.out.append("Creating Backend Storage... done")
        spool = self.spool(name)
        if self.fail == "mkfs-upload":   # S3: keys, config and the spool exist, the bucket holds nothing
            os.makedirs(self.path(spool + "/tmp"), exist_ok=True)
            return self.failed("Signing 30 day whitelist with master key... fail! (cannot upload whitelist)")
        for sub in ("data", "data/txn"):
            os.makedirs(self.path(storage + "/" + sub), exist_ok=True)
        self.write(storage + "/.cvmfswhitelist", "%s\nE%d\nN%s\n" % (time.strftime("%Y%m%d%H%M%S"), time.time() + 30 * 86400, name))
        stale = self.exists(spool + "/client.local")
        for sub in ("rdonly", "scratch/current", "tmp", "cache", "ospaths"):
            os.makedirs(self.path(spool + "/" + sub), exist_ok=True)
        self.write("/cvmfs/%s/new_repository" % name, "")   # the real first revision holds this file
        self.write(spool + "/rdonly/new_repository", "")
        self.add_fstab(name)
        if not flags.get("s"):
            self.apache_conf(name, storage)
        self.out.append("Signing 30 day whitelist with master key... done")
        if stale:
            self.out.append("Mounting CernVM-FS Storage... (overlayfs) done")
            return self.failed("%s is not based on the newest published revision\nfail! (health check after mount)" % name)
        self.manifest(name, 1)
        self.out.append("Initial commit... New CernVM-FS repository for %s" % name)
        deadline = time.time() + self.poll_seconds
        while True:   # the real mkfs polls $STRATUM0/.cvmfspublished
            try:
                if self.fail == "mkfs-poll":
                    raise OSError("injected")
                self.http_get(stratum0.rstrip("/") + "/.cvmfspublished")
                break
            except Exception:
                if time.time() > deadline:
                    return self.failed("fail! (%s/.cvmfspublished is not reachable)" % stratum0)
                time.sleep(0.5)
        self.out.append("Before you can install anything, call `cvmfs_server transaction`")
        return self.result(0)

    def add_fstab(self, name):
        spool = self.spool(name)
        with open(self.path("/etc/fstab"), "a") as fstab:
            fstab.write("cvmfs2#%s %s/rdonly fuse allow_other,fsname=%s,x-systemd.requires=... 0 0 # added by CernVM-FS for %s\n"
                        % (name, spool, name, name))
            fstab.write("overlay_%s /cvmfs/%s overlay upperdir=%s/scratch/current,lowerdir=%s/rdonly 0 0 # added by CernVM-FS for %s\n"
                        % (name, name, spool, spool, name))

    def apache_conf(self, name, storage):
        """As the real mkfs on Debian: conf-available, a2enconf, and the global cvmfs.info.conf; conf.d elsewhere."""
        text = ("Alias /cvmfs/%s %s\n<Directory \"%s\">\n  Options -MultiViews\n  AllowOverride All\n"
                "  Require all granted\n</Directory>\n" % (name, storage, storage))
        if self.apache() != "/etc/apache2":
            self.write("/etc/httpd/conf.d/cvmfs.%s.conf" % name, text)
            return
        for conf, body in (("cvmfs.%s.conf" % name, text), ("cvmfs.info.conf", "Alias /cvmfs/info /srv/cvmfs/info\n")):
            self.write("/etc/apache2/conf-available/" + conf, body)
            if not self.exists("/etc/apache2/conf-enabled/" + conf):
                os.makedirs(self.path("/etc/apache2/conf-enabled"), exist_ok=True)
                os.symlink("../conf-available/" + conf, self.path("/etc/apache2/conf-enabled/" + conf))
        if self.spawn:   # cvmfs_server tells systemd by /bin/systemctl, else it uses the init script
            self.spawn(["systemctl", "reload", "apache2"] if self.exists("/bin/systemctl") else ["service", "apache2", "reload"])

    def existing(self, name):
        return name and self.exists("/etc/cvmfs/repositories.d/%s/server.conf" % name)

    def lock(self, name):
        return self.spool(name) + "/in_transaction.lock"

    def server_transaction(self, args):
        flags, rest = self.options(args, "t")
        name = rest[0] if rest else None
        if not self.existing(name):
            return self.failed("repository %s does not exist" % name)
        if self.exists(self.lock(name)):   # 2.11.5 retries for -t seconds, then gives up with 17
            seconds = int(flags.get("t") or 0)
            self.waited += seconds
            self.err += ["repository busy, retrying"] * min(3, seconds)
            return self.failed("%s is already in a transaction" % name, rc=17)
        self.write(self.lock(name), "%d\n" % os.getpid())
        self.out.append("Gateway reply: ok")
        return self.result(0)

    def server_publish(self, args):
        flags, rest = self.options(args, "amf")
        name = rest[0] if rest else None
        if not self.existing(name):
            return self.failed("repository %s does not exist" % name)
        if not self.exists(self.lock(name)):
            return self.failed("%s is not in a transaction" % name)
        if self.fail == "publish":
            return self.failed("failed to commit files (injected); the transaction stays open")
        rdonly = self.path(self.spool(name) + "/rdonly")
        shutil.rmtree(rdonly)
        shutil.copytree(self.path("/cvmfs/" + name), rdonly, symlinks=True)
        revision = self.revision(name) + 1
        self.manifest(name, revision)
        if flags.get("a"):
            with open(self.path(self.spool(name) + "/tags"), "a") as tags:
                tags.write("%s %d %s\n" % (flags["a"], revision, flags.get("m", "")))
        os.unlink(self.path(self.lock(name)))
        self.out.append("Exporting repository manifest... revision %d" % revision)
        return self.result(0)

    def server_abort(self, args):
        flags, rest = self.options(args, "")
        name = rest[0] if rest else None
        if not self.existing(name):
            return self.failed("repository %s does not exist" % name)
        if not flags.get("f"):
            return self.failed("You are about to DISCARD ALL CHANGES OF THE CURRENT TRANSACTION! Are you sure (y/N)?")
        if not self.exists(self.lock(name)):
            return self.failed("%s is not in a transaction" % name)
        union = self.path("/cvmfs/" + name)
        shutil.rmtree(union)
        shutil.copytree(self.path(self.spool(name) + "/rdonly"), union, symlinks=True)
        os.unlink(self.path(self.lock(name)))
        return self.result(0)

    def server_list(self, args):
        base = self.path("/etc/cvmfs/repositories.d")
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if not self.existing(name):   # 2.11.5 stops there: the repositories after it go unlisted
                return self.failed("/usr/bin/cvmfs_server: 2357: .: cannot open /etc/cvmfs/repositories.d/%s/server.conf: "
                                   "No such file" % name, rc=2)
            upstream = self.settings("/etc/cvmfs/repositories.d/%s/server.conf" % name).get("CVMFS_UPSTREAM_STORAGE", "")
            self.out.append("%s (stratum0 / %s%s)  " % (name, "S3" if upstream.startswith("S3") else "local",
                                                       " - in transaction" if self.exists(self.lock(name)) else ""))
        return self.result(0)

    def server_rmfs(self, args):
        """As 2.11.5: everything of the repository goes, its keys included; no server.conf, rc 2."""
        flags, rest = self.options(args, "")
        name = rest[0] if rest else None
        config = "/etc/cvmfs/repositories.d/%s" % name
        if not name or not self.exists(config):
            return self.failed("The repository %s does not exist" % name)
        if not self.exists(config + "/server.conf"):
            return self.failed("cannot open %s/server.conf" % config, rc=2)
        if not flags.get("f"):
            return self.failed("You are about to WIPE OUT THE CERNVM-FS REPOSITORY %s INCLUDING SIGNING KEYS! Are you sure (y/N)?" % name)
        storage = self.storage(name)
        for path in (config, self.spool(name), storage, "/cvmfs/" + name):
            shutil.rmtree(self.path(path), ignore_errors=True)
        self.drop_fstab(name)
        for conf in ("/etc/apache2/conf-enabled/cvmfs.%s.conf" % name, "/etc/apache2/conf-available/cvmfs.%s.conf" % name,
                     "/etc/httpd/conf.d/cvmfs.%s.conf" % name):
            if self.exists(conf):
                os.unlink(self.path(conf))
        self.out.append("Removing Keys and Certificate... done")
        for suffix in KEYS:
            if self.exists("/etc/cvmfs/keys/" + name + suffix):
                os.unlink(self.path("/etc/cvmfs/keys/" + name + suffix))
        return self.result(0)

    def server_import(self, args):
        """A published local storage back under a new config: the keys must be there, stale mounts must not."""
        flags, rest = self.options(args, "owuk")
        name = rest[0] if rest else None
        if not name:
            return self.failed("usage: cvmfs_server import [options] <fully qualified repository name>")
        if self.exists("/etc/cvmfs/repositories.d/" + name):
            return self.failed("The repository %s already exists" % name)
        storage = "/srv/cvmfs/" + name
        if not self.exists(storage + "/.cvmfspublished"):
            return self.failed("%s is not a CernVM-FS storage" % storage)
        missing = [name + suffix for suffix in KEYS if not self.exists("/etc/cvmfs/keys/" + name + suffix)]
        if missing:
            return self.failed("missing keys in /etc/cvmfs/keys: %s" % ", ".join(missing))
        stale = [path for path in ("/cvmfs/" + name, self.spool(name) + "/rdonly") if self.mounted(path)]
        if stale:
            return self.failed("cannot create %s/rdonly: Read-only file system" % self.spool(name))
        owner = flags.get("o") or self.user
        self.write("/etc/cvmfs/repositories.d/%s/server.conf" % name, "\n".join([
            "CVMFS_REPOSITORY_NAME=" + name, "CVMFS_REPOSITORY_TYPE=stratum0", "CVMFS_USER=" + owner,
            "CVMFS_UNION_DIR=/cvmfs/" + name, "CVMFS_SPOOL_DIR=" + self.spool(name),
            "CVMFS_STRATUM0=" + flags.get("w", "http://localhost/cvmfs/" + name),
            "CVMFS_UPSTREAM_STORAGE=local,%s/data/txn,%s" % (storage, storage),
            "CVMFS_AUTO_TAG=true", "CVMFS_AUTO_TAG_TIMESPAN=\"\"", "CVMFS_GARBAGE_COLLECTION=false"]) + "\n")
        for sub in ("rdonly", "scratch/current", "tmp", "cache"):
            os.makedirs(self.path(self.spool(name) + "/" + sub), exist_ok=True)
        os.makedirs(self.path("/cvmfs/" + name), exist_ok=True)
        self.add_fstab(name)
        self.apache_conf(name, storage)
        self.write(self.spool(name) + "/client.local", "CVMFS_ROOT_HASH=%s\n" % hashlib.sha1(
            ("%s-%d" % (name, self.revision(name))).encode()).hexdigest())
        self.out.append("Importing CernVM-FS repository %s... done" % name)
        return self.result(0)

    def drop_fstab(self, name):
        if self.exists("/etc/fstab"):
            kept = [line for line in self.read("/etc/fstab").splitlines(True) if not line.rstrip().endswith("for " + name)]
            self.write("/etc/fstab", "".join(kept))

    def server_resign(self, args):
        name = args[-1] if args else None
        if not self.existing(name):
            return self.failed("repository %s does not exist" % name)
        self.write(self.storage(name) + "/.cvmfswhitelist", "%s\nE%d\nN%s\n" % (
            time.strftime("%Y%m%d%H%M%S"), time.time() + 30 * 86400, name))
        return self.result(0)

    def server_gc(self, args):
        if "-a" in args and not os.path.isdir(self.path("/var/log/cvmfs")):   # as 2.11.5: its log lives there
            return self.failed("cannot write /var/log/cvmfs/gc.log", rc=2)
        return self.result(0)

    def server_mount(self, args):
        return self.result(0)

    # cvmfs_config
    def config(self, args):
        verb = args[0] if args else ""
        if verb == "setup":   # as on bookworm: the map in auto.master.d where autofs reads it, else in auto.master
            if os.path.isdir(self.path("/etc/auto.master.d")):
                self.write("/etc/auto.master.d/cvmfs.autofs", "/cvmfs /etc/auto.cvmfs\n")
            else:
                self.add_line("/etc/auto.master", self.MAP_LINE)
            self.add_line("/etc/fuse.conf", "user_allow_other")
            return self.result(0)
        if verb == "chksetup":   # its exit code counts errors only: a fresh host has warnings, and 0
            errors = ["Error: /dev/fuse is not readable and writable by user cvmfs"] if self.fail == "fuse" else []
            if not self.mapped():
                self.out += ["Warning: CernVM-FS map is not referenced from autofs maps (/etc/auto.master)",
                             "Warning: autofs service is not running"]
            self.out += errors or ["OK"]
            return self.result(len(errors))
        if verb == "probe":
            return self.probe(args[1:])
        return self.failed("usage: cvmfs_config setup|chksetup|probe")

    def add_line(self, path, line):
        text = self.read(path) if self.exists(path) else ""
        if line not in text.splitlines():
            self.write(path, text + line + "\n")

    MAP_LINE = "/cvmfs /etc/auto.cvmfs"

    def mapped(self):
        """autofs knows /cvmfs: what `cvmfs_config setup` establishes."""
        return any(self.exists(path) and self.MAP_LINE in self.read(path).splitlines()
                   for path in ("/etc/auto.master", "/etc/auto.master.d/cvmfs.autofs"))

    def probe(self, names):
        local = self.settings("/etc/cvmfs/default.local")
        names = names or [name for name in local.get("CVMFS_REPOSITORIES", "").split(",") if name]
        rc = 0
        for name in names:
            settings = dict(local, **self.settings("/etc/cvmfs/config.d/%s.conf" % name))
            # the real probe only lists /cvmfs/NAME and checks df: unless autofs or fstab mounted it, "Failed!", no more
            problem = self.probe_one(name, settings) if self.mapped() or self.mounted("/cvmfs/" + name) else ""
            self.out.append("Probing /cvmfs/%s... %s" % (name, "Failed!" if problem is not None else "OK"))
            if problem is not None:
                if problem:
                    self.err.append(problem)
                rc = 1
        return self.result(rc)

    def probe_one(self, name, settings):
        if not settings.get("CVMFS_HTTP_PROXY"):
            return "failed to discover HTTP proxy servers (23 - proxy auto-discovery failed)"
        key = settings.get("CVMFS_PUBLIC_KEY", "/etc/cvmfs/keys/%s.pub" % name)
        if not self.exists(key):
            return "Failed to initialize root file catalog (16 - file catalog failure)"
        url = settings.get("CVMFS_SERVER_URL", "").replace("@fqrn@", name)
        try:
            manifest = self.http_get(url + "/.cvmfspublished")
        except Exception as exc:
            return "failed to download repository manifest (%s)" % exc
        signer = [line[1:] for line in manifest.decode().splitlines() if line.startswith("K")]
        if signer != [hashlib.sha256(self.read(key).encode()).hexdigest()]:
            return "failed to verify repository manifest (bad signature)"
        return None


def main():
    tool = os.path.basename(sys.argv[0])
    fake = Cvmfs("/", spawn=lambda argv: subprocess.call(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    rc, out, err = (fake.config if tool == "cvmfs_config" else fake.server)(sys.argv[1:])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
