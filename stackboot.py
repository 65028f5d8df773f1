#!/usr/bin/env python3
"""stackboot: turn a bare Linux or FreeBSD host into a working storage node.

One file, standard library only, Python 3.6 or newer. Plain JSON profiles say
what a role needs (packages, users, directories, config files, builds,
services); the engine turns them into ordered steps, shows what would change
(`plan`) and converges the host (`install`). Every run is idempotent.

    python3 stackboot.py list
    python3 stackboot.py plan master
    python3 stackboot.py install master --set method=packages

The file reads top to bottom, general to specific: errors, utilities, the
command runner, platform facts, profiles and parameters, step kinds, plan,
apply, reporting, commands, and `main()` last.
"""

import errno
import json
import os
import re
import sys
import time

__version__ = "0.1.0"

EXIT_OK = 0          # success, or nothing to change
EXIT_FAILED = 1      # a step or a command failed
EXIT_PENDING = 2     # plan --detailed-exitcode / check: changes are pending
EXIT_BAD_INPUT = 64  # bad usage or bad input (sysexits EX_USAGE); nothing changed

STATE_DIR = "/var/lib/stackboot"
LOG_FILE = "/var/log/stackboot.log"
CACHE_DIR = "/var/cache/stackboot"
SYSTEM_PROFILE_DIR = "/etc/stackboot/profiles"
SITE_FILE = "/etc/stackboot/site.json"
# A sane PATH for children: cloud-init and rescue shells often start with a short one.
CHILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class StackbootError(Exception):
    """Every error stackboot expects. `main` prints it as one `error:` line."""

    exit_code = EXIT_FAILED

    def __init__(self, message, fix=None):
        Exception.__init__(self, message)
        self.message = message
        self.fix = fix

    def line(self):
        text = self.message
        if self.fix:
            text += "; " + self.fix
        return "error: " + text


class BadInput(StackbootError):
    """The user's input is wrong (command line, profile, parameter); nothing ran."""

    exit_code = EXIT_BAD_INPUT


class CommandFailed(StackbootError):
    """A command the runner ran exited non-zero."""

    def __init__(self, result, fix=None):
        detail = (result.err or result.out).strip().splitlines()
        message = "%s exited %d" % (" ".join(result.argv), result.rc)
        if detail:
            message += ": " + detail[-1][:300]
        StackbootError.__init__(self, message, fix)
        self.result = result


# ---------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------

TEMP_MARK = ".stackboot-tmp-"


def sha256_bytes(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bytes(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def remove_stale_temps(directory, name):
    """Drop temp files a killed run left beside `name` (they never replaced it)."""
    prefix = "." + name + TEMP_MARK
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(prefix):
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass


def atomic_write(path, data, mode=0o644, uid=-1, gid=-1):
    """Write `data` so that `path` is either the old file or the new one, never half.

    Owner and mode are set on the temp file before the rename, so a secret
    never exists with wider permissions, even for an instant.
    """
    directory, name = os.path.split(path)
    remove_stale_temps(directory, name)
    temp = os.path.join(directory, "." + name + TEMP_MARK + str(os.getpid()))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    os.rename(temp, path)
    fsync_dir(directory)


def fsync_dir(directory):
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def redact(text, secrets):
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def unified_diff(old, new, path):
    import difflib
    return "".join(difflib.unified_diff(
        old.splitlines(True), new.splitlines(True),
        fromfile=path + " (now)", tofile=path + " (planned)"))


def as_text(data):
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def shell_value(value):
    """A value as a shell-sourced config file (server.conf) wants it."""
    text = render_scalar(value)
    return text if re.match(r"^[A-Za-z0-9_./:@,+-]*$", text) else '"%s"' % text


def parse_mode(text):
    """'0644' -> 0o644; anything else is a BadInput for the caller to locate."""
    if isinstance(text, str) and re.match(r"^0?[0-7]{3,4}$", text):
        return int(text, 8)
    raise ValueError("expected an octal mode like \"0644\", got %s" % json.dumps(text))


class Output:
    """Terminal output: colour only on a terminal and never with NO_COLOR."""

    COLORS = {"+": "32", "~": "33", "-": "31", "!": "31", "error": "31"}

    def __init__(self, stream=None, quiet=False, verbose=False):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.verbose = verbose
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.color = self.tty and "NO_COLOR" not in os.environ
        self.secrets = []   # parameter values that must never be printed

    def paint(self, text, key):
        code = self.COLORS.get(key)
        if self.color and code:
            return "\033[%sm%s\033[0m" % (code, text)
        return text

    def say(self, text=""):
        self.stream.write(redact(text, self.secrets) + "\n")
        self.stream.flush()

    def info(self, text):
        if not self.quiet:
            self.say(text)

    def debug(self, text):
        if self.verbose:
            sys.stderr.write(text + "\n")

    def progress(self, text):
        """One progress line; rewritten in place on a terminal, plain lines elsewhere."""
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def progress_done(self):
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------
# Runner: the one way stackboot starts a process
# ---------------------------------------------------------------------------

class Result:
    def __init__(self, argv, rc, out="", err="", seconds=0.0):
        self.argv, self.rc, self.out, self.err, self.seconds = argv, rc, out, err, seconds

    @property
    def ok(self):
        return self.rc == 0


class Runner:
    """Runs argv lists (never shell strings), inside `root` when it is not "/".

    Every command is either a probe (reads only) or a change. While planning,
    changes are refused outright, so a plan cannot touch the host even by
    mistake. Each command is appended to the JSON-lines log when one is open.
    Tests replace this class with a recording or faking subclass.
    """

    def __init__(self, root="/", prefix=()):
        self.root = root
        self.prefix = list(prefix)   # what every command runs under (a lab node: nsenter into its network)
        self.allow_changes = False
        self.log = None
        self.counts = {"probe": 0, "change": 0}
        self.secrets = []   # parameter values never to be written to the log or an error

    def display(self, argv):
        return (["chroot", self.root] if self.root != "/" else []) + [redact(part, self.secrets) for part in argv]

    def run(self, argv, change=False, check=True, cwd=None, env=None, input=None,
            timeout=None, stream=None, detach=False):
        """`detach`: the command starts a daemon, which may keep stdout open forever; read
        its output from a file once the command itself has exited, not from a pipe."""
        argv = self.prefix + [str(part) for part in argv]
        kind = "change" if change else "probe"
        if change and not self.allow_changes:
            raise StackbootError("internal: refused to run %s while only reading" % argv)
        self.counts[kind] += 1
        started = time.time()
        result = self.spawn(argv, cwd, env, input, timeout, stream, detach)
        result.out, result.err = redact(result.out, self.secrets), redact(result.err, self.secrets)
        result.seconds = time.time() - started
        self.write_log(result, kind)
        if check and result.rc != 0:
            raise CommandFailed(result)
        return result

    def spawn(self, argv, cwd, env, input, timeout, stream, detach=False):
        import subprocess
        child_env = {"PATH": CHILD_PATH, "LC_ALL": "C", "HOME": "/root"}
        for key in ("TERM", "http_proxy", "https_proxy", "no_proxy"):
            if key in os.environ:
                child_env[key] = os.environ[key]
        child_env.update(env or {})
        root = self.root

        def enter_root():
            if root != "/":
                os.chroot(root)
                os.chdir(cwd or "/")

        capture = None
        if detach:
            import tempfile
            capture = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd if root == "/" else None, env=child_env,
                preexec_fn=enter_root if root != "/" else None,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=capture or subprocess.PIPE,
                stderr=subprocess.STDOUT if capture or stream is not None else subprocess.PIPE,
                universal_newlines=True)
        except OSError as exc:
            return Result(self.display(argv), 127, "", "%s: %s" % (argv[0], exc.strerror))
        if capture is not None:
            with capture:
                rc = proc.wait()
                capture.seek(0)
                return Result(self.display(argv), rc, "", capture.read().decode("utf-8", "replace"))
        if stream is not None:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                stream(line.rstrip("\n"))
            proc.wait()
            return Result(self.display(argv), proc.returncode, "".join(lines[-200:]), "")
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return Result(self.display(argv), 124, out, err + "\ntimed out after %ss" % timeout)
        return Result(self.display(argv), proc.returncode, out, err)

    def write_log(self, result, kind):
        if self.log is None:
            return
        record = {"time": round(time.time(), 3), "argv": result.argv, "rc": result.rc,
                  "seconds": round(result.seconds, 3), "kind": kind}
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()


# ---------------------------------------------------------------------------
# Host: paths under --root, file facts read once, users and groups
# ---------------------------------------------------------------------------

class Host:
    """The machine being converged, seen through `root`.

    Reads go straight to the filesystem (under root) and are cached for the
    run; every write goes through `write_file` so the cache stays true.
    """

    def __init__(self, root="/", runner=None, facts=None):
        self.root = os.path.abspath(root)
        self.runner = runner or Runner(self.root)
        self.facts = facts
        self.cache = {}
        self.state_dir, self.log_file = STATE_DIR, LOG_FILE   # a lab node keeps its own

    def path(self, path):
        """Where `path` (as the host sees it) lives from here."""
        if self.root == "/":
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def read(self, path):
        key = ("file", path)
        if key not in self.cache:
            self.cache[key] = read_bytes(self.path(path))
        return self.cache[key]

    def forget(self, *paths):
        for path in paths:
            self.cache.pop(("file", path), None)
        self.cache.pop("passwd", None)
        self.cache.pop("group", None)

    def stat(self, path):
        try:
            return os.lstat(self.path(path))
        except OSError:
            return None

    def exists(self, path):
        return os.path.lexists(self.path(path))

    def write_file(self, path, data, mode=0o644, uid=-1, gid=-1):
        full = self.path(path)
        parent = os.path.dirname(full)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        atomic_write(full, data, mode, uid, gid)
        self.cache[("file", path)] = data

    def table(self, name):
        """/etc/passwd or /etc/group as {name: fields}; read directly, no `getent`."""
        if name not in self.cache:
            rows = {}
            for line in as_text(self.read("/etc/" + name) or b"").splitlines():
                fields = line.split(":")
                if len(fields) >= 4 and not line.startswith(("#", "+", "-")):
                    rows[fields[0]] = fields
            self.cache[name] = rows
        return self.cache[name]

    def numeric_id(self, table, name):
        """uid or gid of a name in this root's passwd/group; -1 for "leave as is", None if unknown."""
        if name is None:
            return -1
        if str(name).isdigit():
            return int(name)
        row = self.table(table).get(name)
        return int(row[2]) if row else None

    def uid(self, user):
        return self.numeric_id("passwd", user)

    def gid(self, group):
        return self.numeric_id("group", group)

    def which(self, name):
        for directory in CHILD_PATH.split(":"):
            candidate = os.path.join(directory, name)
            if os.access(self.path(candidate), os.X_OK):
                return candidate
        return None


# ---------------------------------------------------------------------------
# Platform facts
# ---------------------------------------------------------------------------

ARCH_NAMES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i686": "i386"}

# Which package manager a distribution family uses; the first binary found wins.
PACKAGE_MANAGER_BY_FAMILY = [
    (("debian", "ubuntu"), (("apt", "apt-get"),)),
    (("rhel", "fedora", "centos", "rocky", "almalinux"), (("dnf", "dnf"), ("yum", "yum"))),
    (("freebsd",), (("pkg", "pkg"),)),
    (("alpine",), (("apk", "apk"),)),
]


def parse_os_release(text):
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        values[key.strip()] = value
    return values


def detect_facts(host, uname=None):
    """What this host is. Only reads files and stats binaries: no subprocess.

    `uname` (sysname, machine) is injectable so tests can be any platform.
    """
    sysname, machine = uname or (os.uname()[0], os.uname()[4])
    release = {}
    for candidate in ("/etc/os-release", "/usr/lib/os-release", "/var/run/os-release"):
        data = host.read(candidate)
        if data is not None:
            release = parse_os_release(as_text(data))
            break
    platform_name = sysname.lower()
    distro = release.get("ID", platform_name).lower()
    id_like = release.get("ID_LIKE", "").lower().split()
    family = [distro] + id_like
    package_manager = None
    for names, managers in PACKAGE_MANAGER_BY_FAMILY:
        if any(name in family for name in names):
            for manager, binary in managers:
                if host.which(binary):
                    package_manager = manager
                    break
            package_manager = package_manager or managers[0][0]
            break
    if package_manager is None:
        for manager in ("apt-get", "dnf", "yum", "pkg", "apk"):
            if host.which(manager):
                package_manager = manager.replace("apt-get", "apt")
                break
    if platform_name == "freebsd":
        init = "rc"
    elif os.path.isdir(host.path("/run/systemd/system")):
        init = "systemd"   # the sd_booted() test: systemd is PID 1 in this root
    else:
        init = "none"
    return {
        "platform": platform_name,
        "distro": distro,
        "id_like": id_like,
        "version": release.get("VERSION_ID", ""),
        "major": release.get("VERSION_ID", "").split(".")[0],
        "codename": release.get("VERSION_CODENAME", ""),
        "pretty_name": release.get("PRETTY_NAME", sysname),
        "init": init,
        "package_manager": package_manager or "none",
        "arch": ARCH_NAMES.get(machine, machine),
        "cores": os.cpu_count() or 1,
        "python": "%d.%d.%d" % sys.version_info[:3],
        "lab": "",   # a lab node's own directory (see `lab`); empty on a real host
        "address": as_text(host.read("/etc/hostname") or b"").strip() or socket_hostname(),   # how others reach it
    }


def facts_context(facts):
    """The facts as profiles' templates see them: {{facts.NAME}}."""
    return dict(("facts." + key, facts.get(key, "")) for key in FACT_NAMES)


def socket_hostname():
    import socket
    return socket.gethostname()


def os_matches(facts, selector):
    """True when an OS selector ("freebsd", "debian", "rhel", "ubuntu-24.04") names this host."""
    names = [facts["platform"], facts["distro"]] + facts["id_like"]
    if selector in names:
        return True
    distro, _, version = selector.partition("-")
    return bool(version) and distro == facts["distro"] and (
        facts["version"] == version or facts["version"].startswith(version + "."))


# ---------------------------------------------------------------------------
# Profiles and parameters
# ---------------------------------------------------------------------------

TEMPLATE_REF = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*\}\}")
SHELL_META = set("`$;&|<>\\\"'(){}*?!#~")
SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?([kMGTPE]|[KMGTPE]i)?B?$")
HOST_RE = re.compile(r"^(\*|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
                     r"|[0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)$")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def plain(text, extra=""):
    """Reject what could break out of a config line or a shell word."""
    if not isinstance(text, str):
        raise ValueError("expected text, got %s" % json.dumps(text))
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError("must be one line without control characters")
    bad = sorted(set(text) & (SHELL_META - set(extra)))
    if bad:
        raise ValueError("must not contain %s" % " ".join(repr(ch) for ch in bad))
    return text


def split_list(value):
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    raise ValueError("expected a list or comma-separated text, got %s" % json.dumps(value))


def type_text(value, decl):
    if not isinstance(value, str) or "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("must be one line of text")
    return value


def type_string(value, decl):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return plain(value, extra=decl.get("allow", ""))


def type_int(value, decl):
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and re.match(r"^-?[0-9]+$", value))):
        raise ValueError("expected a whole number, got %s" % json.dumps(value))
    number = int(value)
    if "min" in decl and number < decl["min"] or "max" in decl and number > decl["max"]:
        raise ValueError("must be between %s and %s" % (decl.get("min", "-inf"), decl.get("max", "inf")))
    return number


def type_port(value, decl):
    return type_int(value, dict(decl, min=1, max=65535))


def type_bool(value, decl):
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    raise ValueError("expected true or false, got %s" % json.dumps(value))


def type_size(value, decl):
    if not isinstance(value, str) or not SIZE_RE.match(value):
        raise ValueError("expected a size like 100GiB, 1.5TiB or 512M, got %s" % json.dumps(value))
    return value


def type_host(value, decl):
    if not isinstance(value, str) or not HOST_RE.match(value) or len(value) > 253:
        raise ValueError("expected a host name or address, got %s" % json.dumps(value))
    return value


def type_path(value, decl):
    plain(value, extra="~")
    if not value.startswith("/") or " " in value or "/../" in value + "/":
        raise ValueError("expected an absolute path without spaces or '..', got %s" % json.dumps(value))
    return os.path.normpath(value) if value != "/" else value


def type_url(value, decl):
    plain(value, extra="~&?#")
    if not re.match(r"^(https?|file|git\+https?)://[^\s]+$", value):
        raise ValueError("expected an http(s):// or file:// URL, got %s" % json.dumps(value))
    return value


def type_sha256(value, decl):
    if not isinstance(value, str) or not re.match(r"^[0-9a-f]{64}$", value.lower()):
        raise ValueError("expected 64 hexadecimal digits, got %s" % json.dumps(value))
    return value.lower()


def type_list(value, decl):
    item_type = PARAM_TYPES[decl.get("items", "string")][1]
    return [item_type(item, {"allow": decl.get("allow", "")}) for item in split_list(value)]


def type_labels(value, decl):
    labels = split_list(value)
    for label in labels:
        if not isinstance(label, str) or not re.match(r"^[A-Za-z]$", label):
            raise ValueError("labels are single letters A-Z, got %s" % json.dumps(label))
    return [label.upper() for label in labels]


HDD_RE = re.compile(r"^([*<>~]?)(/\S*?)(?:\s+(=|=?-?[0-9]+(?:\.[0-9]+)?(?:[kMGTPE]|[KMGTPE]i)?B?%?|=-?[0-9]+%))?$")


def type_hdd(value, decl):
    """One mfshdd.cfg line: [*|<|>|~]PATH [LIMIT]; its path, marker and limit stay at hand for steps."""
    text = value.get("text") if isinstance(value, dict) else value
    if not isinstance(text, str) or "\n" in text or not HDD_RE.match(text.strip()):
        raise ValueError("expected an mfshdd.cfg line like /mnt/hdd1, */mnt/hdd2 or /mnt/hdd3 -10%%, got %s" % json.dumps(text))
    marker, path, limit = HDD_RE.match(text.strip()).groups()
    type_path(path, {})
    quota = limit if limit and SIZE_RE.match(limit) else None   # a plain size can also be a btrfs/ZFS quota
    return {"text": marker + path + (" " + limit if limit else ""), "path": path, "marker": marker, "limit": limit or "",
            "quota": quota, "name": os.path.basename(path)}


FQRN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)+$")


def type_fqrn(value, decl):
    """A CVMFS repository's fully qualified name: dot-separated words, as mkfs and the URLs need."""
    if not isinstance(value, str) or not FQRN_RE.match(value) or len(value) > 64:
        raise ValueError("expected a CVMFS repository name like software.example.org (letters, digits, - and _ "
                         "in dot-separated words, at most 64 characters), got %s" % json.dumps(value))
    return value


def type_cvmfs_repository(value, decl):
    """A client's repository: FQRN, then where its public key comes from: the sha256 that pins
    the key downloaded from the server, or an absolute path to a key file already here."""
    text = value.get("text") if isinstance(value, dict) else value
    words = text.split() if isinstance(text, str) else []
    if len(words) != 2:
        raise ValueError("expected FQRN SHA256 or FQRN /path/to/key.pub (a key is never taken unpinned), got %s"
                         % json.dumps(text))
    name, key = type_fqrn(words[0], {}), words[1]
    if key.startswith("/"):
        return {"text": text, "name": name, "key_file": type_path(key, {}), "key_sha256": None}
    return {"text": text, "name": name, "key_file": None, "key_sha256": type_sha256(key, {})}


def type_settings(value, decl):
    """KEY=VALUE pairs for config keys a profile does not model."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError("expected a JSON object or KEY=VALUE,KEY=VALUE")
        else:
            pairs = {}
            for item in split_list(text):
                key, sep, val = item.partition("=")
                if not sep:
                    raise ValueError("expected KEY=VALUE, got %s" % json.dumps(item))
                pairs[key.strip()] = val.strip()
            value = pairs
    if not isinstance(value, dict):
        raise ValueError("expected an object of settings, got %s" % json.dumps(value))
    for key, val in value.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ValueError("setting name %s must be letters, digits and _" % json.dumps(key))
        plain(str(val), extra="*:/,;~")
    return value


PARAM_TYPES = {
    "string": ("plain text: one line, no shell or config metacharacters", type_string),
    "text": ("any one line of text", type_text),
    "int": ("a whole number", type_int),
    "port": ("a TCP port 1-65535", type_port),
    "bool": ("true or false", type_bool),
    "size": ("a size like 100GiB", type_size),
    "host": ("a host name or IP address", type_host),
    "path": ("an absolute path", type_path),
    "url": ("an http(s):// or file:// URL", type_url),
    "sha256": ("a sha256 digest", type_sha256),
    "list": ("a list (comma-separated on the command line)", type_list),
    "labels": ("single-letter labels, comma-separated", type_labels),
    "hdd": ("an mfshdd.cfg line: [*|<|>|~]PATH [LIMIT]", type_hdd),
    "settings": ("KEY=VALUE pairs (comma-separated, or a JSON object)", type_settings),
    "fqrn": ("a CVMFS repository name like software.example.org", type_fqrn),
    "cvmfs_repository": ("a CVMFS repository and its key: FQRN SHA256 or FQRN /path/to/key.pub", type_cvmfs_repository),
}

PARAM_KEYS = {"type", "default", "help", "choices", "pattern", "secret", "items", "min", "max", "allow", "lookup"}
PROFILE_KEYS = {"description", "requires", "parameters", "overlays", "steps", "platforms", "platforms_why", "recover", "summary", "status"}
STEP_COMMON_KEYS = {"kind", "id", "when", "comment", "for_each", "as", "needs", "data"}


class ProfileError(BadInput):
    def __init__(self, origin, path, message):
        BadInput.__init__(self, "%s: %s: %s" % (origin, path, message),
                          "fix the profile and run again")


class Profile:
    def __init__(self, name, origin, data):
        self.name = name
        self.origin = origin
        self.description = data.get("description", "")
        self.requires = data.get("requires", [])
        self.platforms = data.get("platforms")
        self.platforms_why = data.get("platforms_why")
        self.recover = data.get("recover")
        self.summary = data.get("summary", [])   # lines printed after an install: where to find what it made
        self.status = data.get("status")          # argv whose output tells how the cluster sees each address (lab status)
        self.parameters = data.get("parameters", {})
        self.overlays = data.get("overlays", {})
        self.steps = data.get("steps", [])


def parse_profile_text(name, origin, text):
    try:
        data = json.loads(text)
    except ValueError as exc:
        if hasattr(exc, "lineno"):
            raise BadInput("%s: line %d column %d: invalid JSON: %s" % (origin, exc.lineno, exc.colno, exc.msg),
                           "fix the profile and run again")
        raise BadInput("%s: invalid JSON: %s" % (origin, exc), "fix the profile and run again")
    validate_profile(origin, data)
    return Profile(name, origin, data)


def expect(origin, path, value, kinds, what):
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,))):
        raise ProfileError(origin, path, "expected %s, got %s" % (what, json.dumps(value)))


def validate_profile(origin, data):
    """Shape checks that need no other profile: keys, types, kinds, references."""
    expect(origin, "$", data, dict, "an object")
    for key in data:
        if key not in PROFILE_KEYS:
            raise ProfileError(origin, "$." + key, "unknown key (known: %s)" % ", ".join(sorted(PROFILE_KEYS)))
    expect(origin, "$.description", data.get("description", ""), str, "text")
    requires = data.get("requires", [])
    expect(origin, "$.requires", requires, list, "a list of profile names")
    expect(origin, "$.summary", data.get("summary", []), list, "a list of lines")
    for index, line in enumerate(data.get("summary", [])):
        expect(origin, "$.summary[%d]" % index, line, str, "a line of text")
    if "status" in data:
        expect(origin, "$.status", data["status"], list, "an argv list")
        for index, part in enumerate(data["status"]):
            expect(origin, "$.status[%d]" % index, part, str, "a string")
    for index, item in enumerate(requires):
        expect(origin, "$.requires[%d]" % index, item, str, "a profile name")
    params = data.get("parameters", {})
    expect(origin, "$.parameters", params, dict, "an object")
    for pname, decl in params.items():
        where = "$.parameters." + pname
        if not NAME_RE.match(pname):
            raise ProfileError(origin, where, "parameter names are lower_case_words")
        expect(origin, where, decl, dict, "an object")
        for key in decl:
            if key not in PARAM_KEYS:
                raise ProfileError(origin, where + "." + key, "unknown key (known: %s)" % ", ".join(sorted(PARAM_KEYS)))
        ptype = decl.get("type", "string")
        if ptype not in PARAM_TYPES:
            raise ProfileError(origin, where + ".type", "unknown type %s (known: %s)" % (json.dumps(ptype), ", ".join(sorted(PARAM_TYPES))))
        expect(origin, where + ".help", decl.get("help", ""), str, "text")
        if "choices" in decl:
            expect(origin, where + ".choices", decl["choices"], list, "a list")
        if "lookup" in decl:
            lookup = decl["lookup"]
            expect(origin, where + ".lookup", lookup, dict, "an object {\"key\": PARAMETER, \"table\": {VALUE: DEFAULT}}")
            if set(lookup) != {"key", "table"} or lookup["key"] not in params or not isinstance(lookup["table"], dict):
                raise ProfileError(origin, where + ".lookup", "expected {\"key\": PARAMETER, \"table\": {VALUE: DEFAULT}}")
        if "pattern" in decl:
            expect(origin, where + ".pattern", decl["pattern"], str, "a regular expression")
            try:
                re.compile(decl["pattern"])
            except re.error as exc:
                raise ProfileError(origin, where + ".pattern", "bad regular expression: %s" % exc)
        if decl.get("default") is not None and not TEMPLATE_REF.search(str(decl["default"])):
            try:
                check_value(pname, decl, decl["default"])
            except BadInput as exc:
                raise ProfileError(origin, where + ".default", exc.message)
    recover = data.get("recover")
    if recover is not None:
        expect(origin, "$.recover", recover, dict, "an object {\"evidence\": [GLOB...], \"replaces\": [ROLE...], "
                                                   "\"own\": [{path, owner, group}...]}")
        if set(recover) - {"evidence", "replaces", "own"}:
            raise ProfileError(origin, "$.recover", "unknown key (known: evidence, own, replaces)")
        expect(origin, "$.recover.evidence", recover.get("evidence", []), list, "a list of path patterns")
        expect(origin, "$.recover.replaces", recover.get("replaces", []), list, "a list of roles")
        expect(origin, "$.recover.own", recover.get("own", []), list, "a list of {path, owner, group}")
        for index, item in enumerate(recover.get("own", [])):
            if not isinstance(item, dict) or set(item) != {"path", "owner", "group"}:
                raise ProfileError(origin, "$.recover.own[%d]" % index, "expected {\"path\", \"owner\", \"group\"}")
    overlays = data.get("overlays", {})
    expect(origin, "$.overlays", overlays, dict, "an object of OS selector -> parameter defaults")
    for selector, values in overlays.items():
        expect(origin, "$.overlays." + selector, values, dict, "an object of parameter values")
    steps = data.get("steps", [])
    expect(origin, "$.steps", steps, list, "a list of steps")
    for index, step in enumerate(steps):
        validate_step(origin, "$.steps[%d]" % index, step)


def validate_step(origin, where, step):
    expect(origin, where, step, dict, "an object")
    kind = step.get("kind")
    if kind not in STEP_KINDS:
        raise ProfileError(origin, where + ".kind", "unknown step kind %s (known: %s)" % (
            json.dumps(kind), ", ".join(sorted(STEP_KINDS))))
    cls = STEP_KINDS[kind]
    for key, value in step.items():
        if key in STEP_COMMON_KEYS:
            continue
        field = cls.schema.get(key)
        if field is None:
            raise ProfileError(origin, "%s.%s" % (where, key), "unknown key for a %s step (known: %s)" % (
                kind, ", ".join(sorted(set(cls.schema) | STEP_COMMON_KEYS))))
        if not is_whole_ref(value):
            problem = field.problem(value)
            if problem:
                raise ProfileError(origin, "%s.%s" % (where, key), problem)
    for key, field in cls.schema.items():
        if field.required and key not in step:
            raise ProfileError(origin, where, "a %s step needs %s" % (kind, json.dumps(key)))
    problem = cls.spec_problem(step)
    if problem:
        raise ProfileError(origin, where, problem)
    if "id" in step:
        expect(origin, where + ".id", step["id"], str, "text")
    if "when" in step:
        expect(origin, where + ".when", step["when"], dict, "an object of parameter -> value")
    if "data" in step:
        expect(origin, where + ".data", step["data"], bool, "true or false")
    if "needs" in step:   # parameters that must have a value wherever this step is used
        expect(origin, where + ".needs", step["needs"], list, "a list of parameter names")


def is_whole_ref(value):
    return isinstance(value, str) and TEMPLATE_REF.fullmatch(value.strip()) is not None


def template_refs(value):
    """Every {{name}} used anywhere inside a JSON value."""
    if isinstance(value, str):
        return set(TEMPLATE_REF.findall(value))
    if isinstance(value, list):
        return set().union(*[template_refs(item) for item in value]) if value else set()
    if isinstance(value, dict):
        found = set()
        for key, item in value.items():
            found |= template_refs(key) | template_refs(item)
        return found
    return set()


def check_value(name, decl, value, source=None):
    """A parameter value, converted to its type; BadInput when it is not one."""
    parse = PARAM_TYPES[decl.get("type", "string")][1]
    where = "parameter %s" % name + (" (from %s)" % source if source else "")
    if value is None:
        return None
    try:
        value = parse(value, decl)
        if "choices" in decl and value not in decl["choices"]:
            raise ValueError("must be one of: %s" % ", ".join(str(choice) for choice in decl["choices"]))
        if "pattern" in decl:
            for item in (value if isinstance(value, list) else [value]):
                if not re.fullmatch(decl["pattern"], str(item)):
                    raise ValueError("%s does not match the pattern %s" % (json.dumps(item), decl["pattern"]))
    except ValueError as exc:
        raise BadInput("%s: %s" % (where, exc))
    return value


class Library:
    """Every profile stackboot can see; the first source to define a name wins."""

    def __init__(self):
        self.profiles = {}

    def add(self, profile):
        self.profiles.setdefault(profile.name, profile)

    def get(self, name):
        if name not in self.profiles:
            raise BadInput("unknown role %s" % json.dumps(name),
                           "`stackboot list` shows the roles (known: %s)" % ", ".join(sorted(self.profiles)))
        return self.profiles[name]

    def closure(self, roles):
        """The roles and everything they require, requirements first, each once."""
        ordered, seen = [], set()

        def visit(name, chain):
            if name in chain:
                raise BadInput("profile %s requires itself through %s" % (name, " -> ".join(chain + [name])))
            if name in seen:
                return
            profile = self.get(name)
            for needed in profile.requires:
                if needed not in self.profiles:
                    raise ProfileError(profile.origin, "$.requires", "unknown profile %s" % json.dumps(needed))
                visit(needed, chain + [name])
            seen.add(name)
            ordered.append(profile)

        for role in roles:
            visit(role, [])
        return ordered

    def validate(self):
        """Cross-profile checks: every {{ref}} is a declared parameter or a fact."""
        for profile in self.profiles.values():
            known = set()
            for member in self.closure([profile.name]):
                known |= set(member.parameters)
            plain_steps = [step for step in profile.steps if "for_each" not in step]
            for where, value in [("$.steps", plain_steps), ("$.overlays", profile.overlays), ("$.summary", profile.summary), ("$.status", profile.status),
                                 ("$.parameters", {k: v.get("default") for k, v in profile.parameters.items()})]:
                for ref in template_refs(value):
                    if ref.split(".")[0] not in known and not (ref.startswith("facts.") and ref[6:] in FACT_NAMES):
                        raise ProfileError(profile.origin, where, "unknown parameter {{%s}}" % ref)
            for selector, values in profile.overlays.items():
                for pname in values:
                    if pname not in known:
                        raise ProfileError(profile.origin, "$.overlays.%s.%s" % (selector, pname), "unknown parameter")
            for index, step in enumerate(profile.steps):
                if "for_each" in step:
                    local = step.get("as", "item")
                    extra = set(ref for ref in template_refs(step) if ref == local or ref.startswith(local + "."))
                    unknown = template_refs(step) - extra - known - set("facts." + f for f in FACT_NAMES)
                    unknown = set(ref for ref in unknown if ref.split(".")[0] not in known)
                    if unknown:
                        raise ProfileError(profile.origin, "$.steps[%d]" % index, "unknown parameter {{%s}}" % sorted(unknown)[0])
                for pname in step.get("needs", []):
                    if pname not in known:
                        raise ProfileError(profile.origin, "$.steps[%d].needs" % index, "unknown parameter %s" % json.dumps(pname))
                local = step.get("as", "item") if "for_each" in step else None
                for pname in step.get("when", {}):
                    if pname.split(".")[0] == local:
                        continue
                    if pname not in known and pname != "os" and not (pname.startswith("facts.") and pname[6:] in FACT_NAMES):
                        raise ProfileError(profile.origin, "$.steps[%d].when.%s" % (index, pname), "unknown parameter")


FACT_NAMES = ("platform", "distro", "version", "major", "codename", "init", "package_manager", "arch", "cores", "python",
              "lab", "address")


def load_library(extra_dirs, host):
    """Profiles from --profiles, /etc/stackboot/profiles, the checkout, then the embedded copy."""
    library = Library()
    dirs = list(extra_dirs) + [host.path(SYSTEM_PROFILE_DIR)]
    here = os.path.dirname(os.path.abspath(__file__)) if not __file__.startswith("<") else None
    if here:
        dirs.append(os.path.join(here, "profiles"))
    for index, directory in enumerate(dirs):
        if not os.path.isdir(directory):
            if index < len(extra_dirs):
                raise BadInput("--profiles %s: no such directory" % directory)
            continue
        for entry in sorted(os.listdir(directory)):
            if entry.endswith(".json"):
                origin = os.path.join(directory, entry)
                with open(origin) as handle:
                    library.add(parse_profile_text(entry[:-5], origin, handle.read()))
    for name, text in sorted(EMBEDDED_PROFILES.items()):
        library.add(parse_profile_text(name, "embedded profile %s.json" % name, text))
    library.validate()
    return library


class Values:
    """Resolved parameter values with where each came from."""

    def __init__(self):
        self.values, self.sources, self.decls, self.secrets = {}, {}, {}, set()

    def set(self, name, value, source):
        self.values[name] = value
        self.sources[name] = source

    def secret_texts(self):
        return [str(self.values[name]) for name in self.secrets if self.values.get(name)]


def declared_parameters(profiles):
    decls, owner = {}, {}
    for profile in profiles:
        for name, decl in profile.parameters.items():
            if name in decls and decls[name] != decl:
                raise ProfileError(profile.origin, "$.parameters." + name,
                                   "also declared differently by profile %s; declare it once in a shared profile" % owner[name])
            decls[name], owner[name] = decl, profile.name
    return decls, owner


def resolve_parameters(library, profiles, facts, sets=(), site=None, env=None, remembered=None, bundled=None):
    """Values in rising precedence: default, OS overlay, the bundle's, remembered, site, environment, --set."""
    env = os.environ if env is None else env
    decls, owner = declared_parameters(profiles)
    values = Values()
    values.decls = decls
    for name, decl in decls.items():
        values.set(name, decl.get("default"), "default")
        if decl.get("secret"):
            values.secrets.add(name)
    for profile in profiles:
        for selector, overlay in profile.overlays.items():
            if os_matches(facts, selector):
                for name, value in overlay.items():
                    values.set(name, value, "os overlay (%s)" % selector)
    for profile in profiles:   # a lab node shares the machine: its own paths come last
        for name, value in (profile.overlays.get("lab", {}) if facts.get("lab") else {}).items():
            values.set(name, value, "lab overlay")

    def known(name, source):
        """A site file may hold other roles' parameters; --set may not, and nobody may hold a typo."""
        if name in decls:
            return True
        others = [p.name for p in library.profiles.values() if name in p.parameters]
        if others and source != "--set":
            return False
        hint = "it belongs to %s" % ", ".join(others) if others else "`stackboot show ROLE` lists the parameters"
        raise BadInput("%s: unknown parameter %s for %s" % (source, json.dumps(name), ", ".join(p.name for p in profiles)), hint)

    for name, value in sorted((bundled or {}).items()):
        if name in decls:
            values.set(name, value, "bundle")
    for name, value in sorted((remembered or {}).items()):
        if name in decls:
            values.set(name, value, "remembered")
    if site:
        path, data = site
        for name, value in data.items():
            if known(name, "site file " + path):
                values.set(name, value, "site file " + path)
    for name in decls:
        key = "STACKBOOT_" + name.upper()
        if key in env:
            values.set(name, env[key], "environment " + key)
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or not NAME_RE.match(name.strip()):
            raise BadInput("--set %s: expected NAME=VALUE" % json.dumps(item))
        if known(name.strip(), "--set"):
            values.set(name.strip(), value, "--set")
    # Profile-written defaults may use facts and other parameters ("{{localstate_dir}}/mfs");
    # they are filled in dependency order. Values a user typed are never expanded.
    context = facts_context(facts)
    pending = {}
    for name, value in values.values.items():
        written_by_profile = values.sources[name] in ("default", "lab overlay") or values.sources[name].startswith("os overlay")
        if written_by_profile and template_refs(value):
            pending[name] = value
        else:
            context[name] = value
    while pending:
        ready = [name for name, value in pending.items() if template_refs(value) <= set(context)]
        if not ready:
            name = sorted(pending)[0]
            raise BadInput("parameter %s: its default refers to {{%s}}, which never gets a plain value"
                           % (name, sorted(template_refs(pending[name]) - set(context))[0]),
                           "give %s a value with --set" % name)
        for name in ready:
            context[name] = values.values[name] = substitute(pending.pop(name), context)
    for name, decl in decls.items():
        values.values[name] = check_value(name, decl, values.values[name], values.sources[name])
    # Lookups, each after the lookups its key or its table entry refers to.
    pending = [name for name, decl in decls.items()
               if decl.get("lookup") and values.values[name] is None and values.sources[name] == "default"]
    while pending:
        for name in list(pending):
            lookup = decls[name]["lookup"]
            key = render_scalar(values.values.get(lookup["key"]))
            entry = lookup["table"].get(key)
            if ({lookup["key"]} | template_refs(entry)) & set(pending) - {name}:
                continue
            pending.remove(name)
            if entry is not None:
                found = substitute(entry, dict(context, **values.values))
                values.set(name, check_value(name, decls[name], found), "known for %s %s" % (lookup["key"], key))
            else:
                values.sources[name] = "no known value for %s %s" % (lookup["key"], key)
            break
        else:
            raise BadInput("parameters %s look each other up in a circle" % ", ".join(sorted(pending)), "fix the profile")
    for name, decl in decls.items():
        if values.values[name] is None and "default" not in decl:
            raise BadInput("parameter %s (role %s) needs a value%s" % (
                name, owner[name], ": " + decl["help"] if decl.get("help") else ""),
                "pass --set %s=VALUE or put it in the site file" % name)
    return values


def substitute(value, context):
    """Fill {{name}} references. A field that is only a reference keeps the value's type."""
    if isinstance(value, str):
        whole = TEMPLATE_REF.fullmatch(value.strip())
        if whole:
            return lookup_ref(context, whole.group(1))
        return TEMPLATE_REF.sub(lambda match: render_scalar(lookup_ref(context, match.group(1))), value)
    if isinstance(value, list):
        items = []
        for item in value:   # a list parameter named alone in a list is spliced into it
            filled = substitute(item, context)
            if is_whole_ref(item) and isinstance(filled, list):
                items.extend(filled)
            elif not (is_whole_ref(item) and filled is None):
                items.append(filled)
        return items
    if isinstance(value, dict):
        return dict((substitute(key, context), substitute(item, context)) for key, item in value.items())
    return value


def lookup_ref(context, name):
    """{{name}}, or {{list.field}}: that field of every item of a list of structured values."""
    if name in context:
        return context[name]
    base, _, field = name.partition(".")
    items = context.get(base)
    if not isinstance(items, list) or not all(isinstance(item, dict) and field in item for item in items):
        raise BadInput("{{%s}}: %s is not a list of values with a %s field" % (name, base, field),
                       "fix the profile: only structured list items (like disks) have fields")
    return [item[field] for item in items]


def render_scalar(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(render_scalar(item) for item in value)
    if isinstance(value, dict) and "text" in value:   # a structured value (like a disk) renders as its text
        return value["text"]
    return str(value)


def condition_holds(when, values, facts, scope=None):
    """`when`: every key (a parameter, "os", "facts.NAME", or a for_each item's field) must match;
    a list means any of its values."""
    known = values.values if scope is None else scope
    for key, wanted in when.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if key == "os":
            if not any(os_matches(facts, option) for option in options):
                return False
        elif key.startswith("facts."):
            if facts.get(key[6:]) not in options:
                return False
        elif known.get(key) not in options:
            return False
    return True


# ---------------------------------------------------------------------------
# Platform tables: package managers, user tools, service managers
# ---------------------------------------------------------------------------
# Each is chosen once from the facts; step kinds call them and never test the
# platform themselves.

class PackageManager:
    """One batch query answers for every package of the run."""

    name = ""
    install_env = {}

    def query_argv(self, names):
        raise NotImplementedError

    def parse(self, line):
        """(name, version) from one line of the query's output; version None when not installed."""
        fields = line.split("\t")
        return (fields[0], fields[1]) if len(fields) == 2 else (None, None)

    def query(self, run, names):
        result = run.runner.run(self.query_argv(names), check=False)
        versions = dict.fromkeys(names)
        for line in result.out.splitlines():
            name, version = self.parse(line)
            if name in versions and version:
                versions[name] = version
        return versions

    def install_argv(self, names):
        return [self.name, "install", "-y"] + names

    def install(self, run, names):
        run.runner.run(self.install_argv(names), change=True, env=self.install_env)


class Apt(PackageManager):
    name = "apt"
    install_env = {"DEBIAN_FRONTEND": "noninteractive"}

    def query_argv(self, names):
        return ["dpkg-query", "-W", "-f=${Package}\\t${db:Status-Abbrev}\\t${Version}\\n"] + names

    def parse(self, line):
        fields = line.split("\t")
        if len(fields) == 3 and fields[1].startswith("ii"):
            return fields[0].split(":")[0], fields[2]
        return None, None

    def lists_empty(self, run):
        try:
            return not any("Packages" in entry for entry in os.listdir(run.host.path("/var/lib/apt/lists")))
        except OSError:
            return True

    def install(self, run, names):
        if run.refresh_packages or self.lists_empty(run):
            run.runner.run(["apt-get", "update", "-q"], change=True, env=self.install_env)
            run.refresh_packages = False
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + names
        result = run.runner.run(argv, change=True, env=self.install_env, check=False)
        if result.rc != 0 and "Unable to locate package" in result.err:
            run.runner.run(["apt-get", "update", "-q"], change=True, env=self.install_env)
            result = run.runner.run(argv, change=True, env=self.install_env, check=False)
        if result.rc != 0:
            raise CommandFailed(result, "check the package names and the host's package sources")


class Dnf(PackageManager):
    name = "dnf"

    def query_argv(self, names):
        return ["rpm", "-q", "--qf", "%{NAME}\\t%{VERSION}-%{RELEASE}\\n"] + names


class Yum(Dnf):
    name = "yum"


class Pkg(PackageManager):
    name = "pkg"
    install_env = {"ASSUME_ALWAYS_YES": "yes"}

    def query_argv(self, names):
        return ["pkg", "query", "%n\\t%v"] + names


class Apk(PackageManager):
    name = "apk"

    def query_argv(self, names):
        return ["apk", "info", "-e"] + names

    def parse(self, line):
        return line.strip(), "installed"

    def install_argv(self, names):
        return ["apk", "add"] + names


class NoPackageManager(PackageManager):
    def query(self, run, names):
        raise StackbootError("no package manager found on this host",
                             "install the packages by hand, or run on a supported platform")


PACKAGE_MANAGERS = {"apt": Apt, "dnf": Dnf, "yum": Yum, "pkg": Pkg, "apk": Apk, "none": NoPackageManager}


class ShadowUsers:
    """Linux: groupadd/useradd/usermod from shadow-utils."""

    def add_group(self, name, gid, system):
        return ["groupadd"] + (["--system"] if system else []) + (["-g", str(gid)] if gid is not None else []) + [name]

    def add_user(self, name, fields, system):
        argv = ["useradd"] + (["--system"] if system else []) + ["--no-create-home"]
        return argv + self.user_flags(fields) + [name]

    def modify_user(self, name, fields):
        return ["usermod"] + self.user_flags(fields) + [name]

    def user_flags(self, fields):
        flags = {"uid": "-u", "group": "-g", "home": "-d", "shell": "-s", "comment": "-c"}
        argv = []
        for key in ("uid", "group", "home", "shell", "comment"):
            if fields.get(key) is not None:
                argv += [flags[key], str(fields[key])]
        return argv


class PwUsers(ShadowUsers):
    """FreeBSD: pw(8)."""

    def add_group(self, name, gid, system):
        return ["pw", "groupadd", name] + (["-g", str(gid)] if gid is not None else [])

    def add_user(self, name, fields, system):
        return ["pw", "useradd", name] + self.user_flags(fields)

    def modify_user(self, name, fields):
        return ["pw", "usermod", name] + self.user_flags(fields)


USER_TOOLS = {"freebsd": PwUsers}


class ServiceState:
    def __init__(self, loaded=True, enabled=False, running=False):
        self.loaded, self.enabled, self.running = loaded, enabled, running


class Systemd:
    """systemd: one `systemctl show` answers for every unit of the run."""

    persistent = True

    def unit(self, step):
        name = step.args["name"]
        return name if "." in name else name + ".service"

    def prefetch(self, run, steps):
        units = [self.unit(step) for step in steps]
        if not units:
            return
        result = run.runner.run(["systemctl", "show", "--no-pager", "-p", "Id,LoadState,ActiveState,UnitFileState"]
                                + units, check=False)
        blocks = [block for block in result.out.strip().split("\n\n")]
        for unit, block in zip(units, blocks):
            props = dict(line.partition("=")[::2] for line in block.splitlines())
            run.probed[("unit", unit)] = ServiceState(
                loaded=props.get("LoadState") == "loaded",
                enabled=props.get("UnitFileState") in ("enabled", "enabled-runtime", "static", "alias"),
                running=props.get("ActiveState") in ("active", "reloading", "activating"))

    def state(self, run, step):
        key = ("unit", self.unit(step))
        if key not in run.probed:
            self.prefetch(run, [step])
        return run.probed[key]

    def systemctl(self, run, step, verb):
        if run.unit_files_changed:   # systemd reads unit files only when told to
            run.runner.run(["systemctl", "daemon-reload"], change=True)
            run.unit_files_changed = False
        run.runner.run(["systemctl", verb, self.unit(step)], change=True)
        self.forget(run, step)

    def do(self, run, step, action):
        self.systemctl(run, step, action)

    def forget(self, run, step):
        run.probed.pop(("unit", self.unit(step)), None)


class RcD:
    """FreeBSD rc.d: enabled means NAME_enable=YES in rc.conf (read directly); sysrc writes it."""

    persistent = True

    def prefetch(self, run, steps):
        pass

    def rc_conf(self, run):
        values = {}
        for path in ("/etc/defaults/rc.conf", "/etc/rc.conf", "/etc/rc.conf.local"):
            values.update(parse_os_release(as_text(run.host.read(path) or b"")))
        return values

    def state(self, run, step):
        name = step.args["name"]
        enabled = self.rc_conf(run).get(name + "_enable", "NO").upper() in ("YES", "TRUE", "ON", "1")
        running = run.runner.run(["service", name, "onestatus"], check=False).rc == 0
        return ServiceState(True, enabled, running)

    def do(self, run, step, action):
        name = step.args["name"]
        if action in ("enable", "disable"):
            run.runner.run(["sysrc", "%s_enable=%s" % (name, "YES" if action == "enable" else "NO")], change=True)
            self.forget(run, step)
            return
        # rc.d refuses plain verbs for a service not enabled in rc.conf; one* verbs act regardless
        prefix = "" if step.args.get("enabled", True) else "one"
        run.runner.run(["service", name, prefix + action], change=True)

    def forget(self, run, step):
        run.host.forget("/etc/rc.conf")


class DirectServices:
    """No init system runs (chroot, container, rescue): the daemon's own start/stop commands."""

    persistent = False

    def prefetch(self, run, steps):
        pass

    def commands(self, step):
        direct = step.args.get("direct") or {}
        if not direct.get("start"):
            raise StackbootError("service %s: no init system runs here and the profile gives no direct start command"
                                 % step.args["name"], "add \"direct\": {\"start\": [...]} to the service step")
        return direct

    def state(self, run, step):
        direct = self.commands(step)
        pidfile = direct.get("pidfile")
        if pidfile:
            text = as_text(run.host.read(pidfile) or b"").strip().split()
            names = (os.path.basename(direct["start"][0]), step.args["name"])
            running = bool(text) and text[0].isdigit() and pid_alive(int(text[0]), names)
        elif direct.get("status"):
            running = run.runner.run(direct["status"], check=False).rc == 0
        else:
            raise StackbootError("service %s: direct mode needs a pidfile or a status command" % step.args["name"])
        return ServiceState(True, True, running)

    def do(self, run, step, verb):
        direct = self.commands(step)
        if verb in direct:
            run.runner.run(direct[verb], change=True, detach=True)
        elif verb in ("restart", "reload") and direct.get("stop"):
            run.runner.run(direct["stop"], change=True, detach=True)
            run.runner.run(direct["start"], change=True, detach=True)
        else:
            raise StackbootError("service %s: the profile gives no direct %s command" % (step.args["name"], verb),
                                 "add it to the step's \"direct\" commands")
        self.forget(run, step)

    def forget(self, run, step):
        run.host.forget((step.args.get("direct") or {}).get("pidfile") or "")


class LinuxMounts:
    """Mounts from /proc/self/mountinfo: FUSE and subvolume mounts included, unlike os.path.ismount."""

    def table(self, run):
        data = read_bytes("/proc/self/mountinfo")
        if data is None:
            raise StackbootError("cannot read /proc/self/mountinfo", "mount /proc (mount -t proc proc /proc) and run again")
        mounts = {}
        for line in as_text(data).splitlines():
            fields = line.split(" - ")
            left, right = fields[0].split(), fields[1].split() if len(fields) > 1 else []
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), left[4])
            mounts[point] = {"fstype": right[0] if right else "", "source": right[1] if len(right) > 1 else ""}
        return mounts


class FreeBSDMounts:
    """FreeBSD has no mountinfo; `mount -p` prints the table in fstab form."""

    def table(self, run):
        mounts = {}
        for line in run.runner.run(["mount", "-p"]).out.splitlines():
            fields = line.split()
            if len(fields) >= 3:
                mounts[fields[1]] = {"fstype": fields[2], "source": fields[0]}
        return mounts


MOUNT_TABLES = {"freebsd": FreeBSDMounts}


def pid_alive(pid, names=()):
    """True for a live process; a zombie (exited, not yet reaped by its parent) counts as gone.
    With names, a process whose command line shows none of them is somebody else who got a
    dead daemon's pid (pids are reused); where /proc cannot tell, the pid alone decides."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            return False
    stat = read_bytes("/proc/%d/stat" % pid)
    if stat and stat.rsplit(b")", 1)[-1].split()[:1] == [b"Z"]:
        return False
    cmdline = read_bytes("/proc/%d/cmdline" % pid)
    words = [os.path.basename(word) for word in as_text(cmdline or b"").split("\0")[:2]]
    return not (names and cmdline and not set(names) & set(words))


SERVICE_MANAGERS = {"systemd": Systemd, "rc": RcD, "none": DirectServices}


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------

class Field:
    """One key of a step kind's schema (like an Ansible argument_spec entry)."""

    CHECKS = {
        "str": (lambda v: isinstance(v, str), "text"),
        "path": (lambda v: isinstance(v, str) and v.startswith("/"), "an absolute path"),
        "text": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(
            isinstance(i, str) or (isinstance(i, dict) and "text" in i) for i in v)), "text or a list of lines"),
        "list": (lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "a list of strings"),
        "argv": (lambda v: isinstance(v, list) and v and all(isinstance(i, str) for i in v), "a command as a list of words"),
        "dict": (lambda v: isinstance(v, dict), "an object"),
        "bool": (lambda v: isinstance(v, bool), "true or false"),
        "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
        "mode": (lambda v: isinstance(v, str) and re.match(r"^0?[0-7]{3,4}$", v) is not None, "an octal mode like \"0644\""),
    }

    def __init__(self, kind, required=False, default=None, help="", literal=False, choices=None):
        self.kind, self.required, self.default = kind, required, default
        self.help, self.literal, self.choices = help, literal, choices

    def problem(self, value):
        """What is wrong with a literal value, or None."""
        if value is None and not self.required:
            return None
        test, what = self.CHECKS[self.kind]
        if isinstance(value, str) and TEMPLATE_REF.search(value) and self.kind in ("str", "path", "text", "mode"):
            return None
        if not test(value):
            return "expected %s, got %s" % (what, json.dumps(value))
        if self.choices and value not in self.choices:
            return "must be one of: %s" % ", ".join(self.choices)
        return None


class Change:
    """One thing a step would do: '+' create, '~' change, '-' remove, '!' refused."""

    def __init__(self, symbol, summary, diff=None, action=None):
        self.symbol, self.summary, self.diff, self.action = symbol, summary, diff, action

    def as_json(self):
        return {"action": {"+": "create", "~": "change", "-": "remove", "!": "conflict"}[self.symbol],
                "summary": self.summary, "diff": self.diff}


class Step:
    """A step kind: schema, a read-only `check`, `act`, and `verify` (check again).

    `check` returns the Changes still needed; an empty list means already right.
    """

    kind = ""
    schema = {}

    def __init__(self, profile, where, spec, args):
        self.profile = profile
        self.where = where
        self.args = args
        self.data = spec.get("data", False)   # holds the user's data: uninstall keeps it unless --purge-data
        self.id = spec.get("id") or "%s:%s" % (self.kind, self.target())
        self.validate()

    merge_lists = ()   # list fields two roles' copies of this step may each add to

    @classmethod
    def spec_problem(cls, spec):
        return None

    def merged_args(self, other):
        """Arguments of one step that does what both copies ask; None when they conflict."""
        merged = dict(self.args)
        for key in set(self.args) | set(other.args):
            mine, theirs = self.args.get(key), other.args.get(key)
            if key in self.merge_lists:
                merged[key] = list(mine or []) + [item for item in theirs or [] if item not in (mine or [])]
            elif mine != theirs:
                return None
        return merged

    def offline_problems(self, run, changes):
        """What this step would need from the network; --offline stops before any change if not empty."""
        return []

    def validate(self):
        """Checks on the rendered arguments (after {{parameters}} are filled in)."""
        for key, field in self.schema.items():
            problem = field.problem(self.args.get(key))
            if problem:
                raise ProfileError(self.profile.origin, "%s.%s" % (self.where, key), problem)

    def target(self):
        return str(self.args.get("path") or self.args.get("name") or "")

    def describe(self):
        return "%s %s" % (self.kind, self.target())

    def wants(self, run):
        """Register batch probes before any check runs."""

    def triggers(self, run, key):
        """The steps named in KEY_on (restart_on, reload_on, run_on) that changed in this run,
        or while planning would change, plus those a killed run left pending in the state."""
        pending = set(run.state.data["pending"].get(self.id, {}).get(key, []))
        if run.planning:   # a for_each step's copies ("id#2") answer to the step's id
            pending |= set(self.args.get(key + "_on") or []) & (run.changed | set(i.split("#")[0] for i in run.changed))
        return sorted(pending)

    def report(self, run):
        """Lines printed once after an install (what a user needs next); none by default."""
        return []

    kept_by_uninstall = None   # why uninstall leaves this kind's target alone, said out loud

    # Changes what the whole machine shares (software, users), maybe over the network: a lab
    # runs these once on the host itself, never inside a node (whose namespace has no way out).
    machine_wide = False

    def stopping(self, run):
        """What `lab down` undoes so nothing of this step keeps running: [Change('-')...]; reads
        only. Applied with `remove`. Most kinds run nothing."""
        return []

    def liveness(self, run):
        """What of this step runs, for `lab status` ("moosefs-master running"); None: nothing does."""
        return None

    def removal(self, run, purge):
        """What uninstall would undo here: ([Change('-')...], [why something stays]); reads only.
        By default nothing: packages, users and commands stay, others may need them."""
        if self.kept_by_uninstall:
            return [], ["%s: %s" % (self.target(), self.kept_by_uninstall)]
        return [], []

    def remove(self, run, changes):
        raise NotImplementedError

    def check(self, run):
        raise NotImplementedError

    def act(self, run, changes):
        raise NotImplementedError

    def verify(self, run):
        left = self.check(run)
        if left:
            raise StackbootError("%s: still not right after applying: %s" % (self.describe(), left[0].summary))

    # Helpers shared by kinds that own a file.
    def owner_ids(self, run):
        uid, gid = run.host.uid(self.args.get("owner")), run.host.gid(self.args.get("group"))
        return uid, gid

    def ownership_changes(self, run, st):
        changes = []
        uid, gid = self.owner_ids(run)
        owner, group, mode = self.args.get("owner"), self.args.get("group"), self.args.get("mode")
        if owner is not None and (uid is None or st.st_uid != uid):
            changes.append(Change("~", "owner -> %s" % owner))
        if group is not None and (gid is None or st.st_gid != gid):
            changes.append(Change("~", "group -> %s" % group))
        if mode is not None and (st.st_mode & 0o7777) != parse_mode(mode):
            changes.append(Change("~", "mode %04o -> %s" % (st.st_mode & 0o7777, mode)))
        return changes

    def resolved_ids(self, run):
        uid, gid = self.owner_ids(run)
        for name, value in (("user", uid), ("group", gid)):
            if value is None:
                raise StackbootError("%s: %s %s does not exist" % (self.describe(), name, self.args.get("owner" if name == "user" else "group")),
                                     "add a user/group step before this one in the profile")
        return uid, gid


OWNERSHIP = {"owner": Field("str"), "group": Field("str"), "mode": Field("mode")}


class PackagesStep(Step):
    machine_wide = True
    kind = "packages"
    schema = {"names": Field("list", required=True, help="packages to install (one batch query for all)"),
              "files": Field("list", help="local package files that provide `names` (a release package, say)")}
    merge_lists = ("names",)

    def missing(self, run):
        versions = run.package_versions(self.args["names"])
        return [name for name in self.args["names"] if not versions.get(name)]

    def offline_problems(self, run, changes):
        return ["package %s (not installed)" % name for name in self.missing(run)]

    def target(self):
        return " ".join(self.args["names"])

    def wants(self, run):
        run.wanted_packages.update(self.args["names"])

    def check(self, run):
        missing = self.missing(run)
        return [Change("+", "install " + " ".join(missing))] if missing else []

    def act(self, run, changes):
        if self.args.get("files"):   # a release package adds a repository: refresh before the next install
            run.packages.install(run, self.args["files"])
            run.refresh_packages = True
        else:
            run.packages.install(run, self.missing(run))
        run.probed.pop("packages", None)


class GroupStep(Step):
    machine_wide = True
    kind = "group"
    schema = {"name": Field("str", required=True), "gid": Field("int"), "system": Field("bool", default=True)}

    def check(self, run):
        row = run.host.table("group").get(self.args["name"])
        if row is None:
            return [Change("+", "create group %s" % self.args["name"])]
        if self.args.get("gid") is not None and row[2] != str(self.args["gid"]):
            return [Change("!", "group exists with gid %s, not %s; stackboot never renumbers groups" % (row[2], self.args["gid"]))]
        return []

    def act(self, run, changes):
        run.runner.run(run.users.add_group(self.args["name"], self.args.get("gid"), self.args.get("system", True)), change=True)
        run.host.forget("/etc/group")


class UserStep(Step):
    machine_wide = True
    kind = "user"
    schema = {"name": Field("str", required=True), "uid": Field("int"), "group": Field("str"),
              "home": Field("path"), "shell": Field("path"), "comment": Field("str"),
              "system": Field("bool", default=True)}

    def wanted(self, run):
        wanted = {}
        for key in ("uid", "home", "shell", "comment"):
            if self.args.get(key) is not None:
                wanted[key] = str(self.args[key])
        if self.args.get("group") is not None:
            wanted["group"] = self.args["group"]
        return wanted

    def check(self, run):
        row = run.host.table("passwd").get(self.args["name"])
        if row is None:
            return [Change("+", "create user %s" % self.args["name"])]
        current = {"uid": row[2], "comment": row[4] if len(row) > 4 else "",
                   "home": row[5] if len(row) > 5 else "", "shell": row[6] if len(row) > 6 else ""}
        group = self.args.get("group")
        differ = [key for key, value in self.wanted(run).items() if key not in ("group", "uid") and current.get(key) != value]
        if group is not None and run.host.gid(group) != int(row[3]):
            differ.append("group")
        if self.args.get("uid") is not None and current["uid"] != str(self.args["uid"]):
            return [Change("!", "user exists with uid %s, not %s; stackboot never renumbers users" % (current["uid"], self.args["uid"]))]
        return [Change("~", "%s -> %s" % (key, self.wanted(run)[key])) for key in differ]

    def act(self, run, changes):
        fields = self.wanted(run)
        if changes[0].symbol == "+":
            argv = run.users.add_user(self.args["name"], fields, self.args.get("system", True))
        else:
            fields.pop("uid", None)
            argv = run.users.modify_user(self.args["name"], fields)
        run.runner.run(argv, change=True)
        run.host.forget("/etc/passwd")


class DirectoryStep(Step):
    kind = "directory"
    schema = dict(OWNERSHIP, path=Field("path", required=True))

    def check(self, run):
        st = run.host.stat(self.args["path"])
        if st is None:
            return [Change("+", "create" + describe_ownership(self.args))]
        import stat as stat_module
        if not stat_module.S_ISDIR(st.st_mode):
            return [Change("!", "exists and is not a directory")]
        return self.ownership_changes(run, st)

    def act(self, run, changes):
        uid, gid = self.resolved_ids(run)
        full = run.host.path(self.args["path"])
        if not os.path.isdir(full):
            os.makedirs(full, 0o755)
        os.chown(full, uid, gid)
        if self.args.get("mode"):
            os.chmod(full, parse_mode(self.args["mode"]))

    def removal(self, run, purge):
        if not self.data or not run.host.exists(self.args["path"]):
            return [], []
        if purge:
            return [Change("-", "remove %s and everything in it (--purge-data)" % self.args["path"], action="purge")], []
        return [], ["%s: data (--purge-data removes it)" % self.args["path"]]

    def remove(self, run, changes):
        import shutil
        shutil.rmtree(run.host.path(self.args["path"]))


def describe_ownership(args):
    parts = [args[key] for key in ("owner", "group", "mode") if args.get(key)]
    return " (%s)" % " ".join(parts) if parts else ""


class ManagedFileStep(Step):
    """Shared by kinds that write whole files: hand-edit detection, diffs, atomic writes."""

    def desired(self, run):
        """{path: (bytes, mode, secret)} this step wants on disk."""
        raise NotImplementedError

    def check(self, run):
        changes = []
        desired = self.desired(run)
        for path, (data, mode, secret) in desired.items():
            changes += self.file_changes(run, path, data, secret, named=len(desired) > 1)
        return changes

    def file_changes(self, run, path, data, secret, named=False):
        current = run.host.read(path)
        if current is None:
            return [Change("+", "create" + (" " + path if named else "") + describe_ownership(self.args),
                           None if secret else unified_diff("", as_text(data), path))]
        changes = []
        if current != data:
            diff = "(secret content not shown)" if secret else unified_diff(as_text(current), as_text(data), path)
            if run.state.edited_by_hand(path, current) and not run.force:
                changes.append(Change("!", "%s was edited by hand since stackboot wrote it; --force replaces it (a backup is kept)" % path, diff))
            else:
                changes.append(Change("~", "update %s" % path, diff))
        st = run.host.stat(path)
        return changes + self.ownership_changes(run, st)

    def removal(self, run, purge):
        try:
            paths = sorted(self.desired(run))
        except StackbootError:   # a copy whose source is gone
            paths = [self.args["path"]]
        changes, kept = [], []
        for path in paths:
            current = run.host.read(path)
            if current is None or path not in run.state.data["files"]:
                continue
            if run.state.wrote(path, current):
                changes.append(Change("-", "remove %s" % path, action=path))
            else:
                kept.append("%s: edited by hand since stackboot wrote it" % path)
        return changes, kept

    def remove(self, run, changes):
        for change in changes:
            os.unlink(run.host.path(change.action))
            run.state.data["files"].pop(change.action, None)

    def act(self, run, changes):
        uid, gid = self.resolved_ids(run)
        for path, (data, mode, secret) in self.desired(run).items():
            current = run.host.read(path)
            if current is not None and current != data and not run.state.wrote(path, current):
                backup = "%s.stackboot-backup-%s" % (path, time.strftime("%Y%m%d%H%M%S"))
                st = run.host.stat(path)
                run.host.write_file(backup, current, st.st_mode & 0o7777, st.st_uid, st.st_gid)
                run.out.info("  backup of the old %s kept as %s" % (path, backup))
            run.host.write_file(path, data, mode, uid, gid)
            run.state.record_file(path, data)
            if "/systemd/system/" in path:
                run.unit_files_changed = True


class FileStep(ManagedFileStep):
    kind = "file"
    schema = dict(OWNERSHIP, path=Field("path", required=True),
                  content=Field("text", literal=True, help="the file, as is"),
                  template=Field("text", help="the file, with {{parameters}} filled in"),
                  settings=Field("dict", help="KEY = VALUE lines in the order given; null values are left out"),
                  source=Field("path", help="a copy of this file on the host (made by an earlier step, say)"),
                  separator=Field("str", default=" = "), header=Field("text", literal=True),
                  quote=Field("bool", default=False, help="settings values quoted for a shell (files a shell sources)"),
                  secret=Field("bool", default=False))

    @classmethod
    def spec_problem(cls, spec):
        given = [key for key in ("content", "template", "settings", "source") if key in spec]
        if len(given) != 1:
            return "a file step needs exactly one of content, template, settings or source"
        if spec.get("secret") and spec.get("mode") not in ("0600", "0400", "600", "400"):
            return "a secret file needs mode \"0600\" or \"0400\""
        return None

    def text(self):
        args = self.args
        header = args.get("header")
        lines = ([header] if isinstance(header, str) else list(header or []))
        if args.get("settings") is not None:
            show = shell_value if args.get("quote") else render_scalar
            pairs = []
            for key, value in args["settings"].items():   # an extra-settings parameter (a dict) is spliced in
                pairs += list(value.items()) if isinstance(value, dict) else [(key, value)]
            lines += ["%s%s%s" % (key, args.get("separator", " = "), show(value)) for key, value in pairs if value is not None]
            return "\n".join(lines) + "\n"
        body = args.get("content") if args.get("content") is not None else args.get("template")
        if isinstance(body, list):
            body = "".join(render_scalar(line) + "\n" for line in body)
        return "\n".join(lines + [body]) if lines else body

    def desired(self, run):
        mode = parse_mode(self.args.get("mode") or "0644")
        if self.args.get("source"):
            data = run.host.read(self.args["source"])
            if data is None:
                raise StackbootError("%s: %s does not exist" % (self.describe(), self.args["source"]),
                                     "the step that makes it must come first")
            return {self.args["path"]: (data, mode, self.args.get("secret", False))}
        return {self.args["path"]: (self.text().encode("utf-8"), mode, self.args.get("secret", False))}

    def check(self, run):
        source = self.args.get("source")
        if source and not run.host.exists(source):
            if not run.planning:
                self.desired(run)   # raises: nothing to copy
            return [Change("+", "copy of %s (made by an earlier step)" % source)]
        return ManagedFileStep.check(self, run)


class LineStep(Step):
    kind = "line"
    schema = dict(OWNERSHIP, path=Field("path", required=True), line=Field("str", required=True),
                  match=Field("str", help="a regular expression; the first matching line is replaced"),
                  state=Field("str", default="present", choices=["present", "absent"]))

    def new_text(self, run):
        current = as_text(run.host.read(self.args["path"]) or b"")
        lines = current.splitlines()
        line, pattern = self.args["line"], self.args.get("match")
        matcher = re.compile(pattern) if pattern else None
        if self.args.get("state", "present") == "absent":
            kept = [item for item in lines if item != line and not (matcher and matcher.search(item))]
            return current, "\n".join(kept) + ("\n" if kept else "")
        if line in lines:
            return current, current
        for index, item in enumerate(lines):
            if matcher and matcher.search(item):
                lines[index] = line
                return current, "\n".join(lines) + "\n"
        return current, "\n".join(lines + [line]) + "\n"

    def check(self, run):
        if run.host.read(self.args["path"]) is None and self.args.get("state") == "absent":
            return []
        current, new = self.new_text(run)
        if current == new:
            return []
        symbol = "-" if self.args.get("state") == "absent" else ("~" if current else "+")
        return [Change(symbol, "%s line %s" % ("remove" if symbol == "-" else "set", json.dumps(self.args["line"])),
                       unified_diff(current, new, self.args["path"]))]

    def act(self, run, changes):
        current, new = self.new_text(run)
        st = run.host.stat(self.args["path"])
        if st is not None:
            mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
        else:
            uid, gid = self.resolved_ids(run)
            mode = parse_mode(self.args.get("mode") or "0644")
        run.host.write_file(self.args["path"], new.encode("utf-8"), mode, uid, gid)


class RepositoryFormat:
    """How one package manager wants a signed third-party repository on disk."""

    def files(self, args):
        raise NotImplementedError


class AptRepository(RepositoryFormat):
    def files(self, args):
        key = "/etc/apt/keyrings/%s.asc" % args["name"]
        line = "deb [signed-by=%s] %s %s %s\n" % (key, args["url"], args.get("suite") or "./",
                                                 " ".join(args.get("components") or []))
        return {key: args["key"], "/etc/apt/sources.list.d/%s.list" % args["name"]: line.replace("  ", " ")}


class RpmRepository(RepositoryFormat):
    def files(self, args):
        key = "/etc/pki/rpm-gpg/RPM-GPG-KEY-%s" % args["name"]
        repo = "[{0}]\nname={0}\nbaseurl={1}\nenabled=1\ngpgcheck=1\ngpgkey=file://{2}\n".format(args["name"], args["url"], key)
        return {key: args["key"], "/etc/yum.repos.d/%s.repo" % args["name"]: repo}


class PkgRepository(RepositoryFormat):
    def files(self, args):
        key = "/usr/local/etc/pkg/keys/%s.pub" % args["name"]
        conf = ('%s: {\n  url: "%s",\n  signature_type: "pubkey",\n  pubkey: "%s",\n  enabled: yes\n}\n'
                % (args["name"], args["url"], key))
        return {key: args["key"], "/usr/local/etc/pkg/repos/%s.conf" % args["name"]: conf}


REPOSITORY_FORMATS = {"apt": AptRepository, "dnf": RpmRepository, "yum": RpmRepository, "pkg": PkgRepository}


class RepositoryStep(ManagedFileStep):
    machine_wide = True
    kind = "repository"
    schema = {"name": Field("str", required=True), "url": Field("str", required=True),
              "key": Field("text", literal=True, help="the repository's public signing key, inline"),
              "key_file": Field("path", help="or a file holding it (say, from a download step with its sha256)"),
              "suite": Field("str"), "components": Field("list")}

    @classmethod
    def spec_problem(cls, spec):
        if ("key" in spec) == ("key_file" in spec):
            return "a repository step needs exactly one of key or key_file"
        return None

    def desired(self, run):
        fmt = REPOSITORY_FORMATS.get(run.facts["package_manager"])
        if fmt is None:
            raise StackbootError("repository %s: no repository format for package manager %s"
                                 % (self.args["name"], run.facts["package_manager"]))
        args = dict(self.args)
        if args.get("key_file"):
            args["key"] = as_text(run.host.read(args["key_file"]) or b"(the key from %s, once downloaded)\n" % args["key_file"].encode())
        elif isinstance(args["key"], list):
            args["key"] = "\n".join(args["key"]) + "\n"
        return dict((path, (text.encode("utf-8"), 0o644, False)) for path, text in fmt().files(args).items())

    def act(self, run, changes):
        ManagedFileStep.act(self, run, changes)
        run.refresh_packages = True


class Bundle:
    """The zipapp stackboot runs from, when `stackboot bundle` made it: verified artifacts by
    sha256 (artifacts/SHA256) and the parameter values it was made with (bundle.json)."""

    def __init__(self, path, names):
        self.path = path
        self.names = names

    @classmethod
    def here(cls):
        """The bundle this copy of stackboot runs from, or None."""
        path = globals().get("__file__") or ""
        archive, sep, _ = path.rpartition(".pyz" + os.sep)
        if not sep or not os.path.isfile(archive + ".pyz"):
            return None
        import zipfile
        with zipfile.ZipFile(archive + ".pyz") as zipped:
            names = set(zipped.namelist())
            if "bundle.json" not in names:
                return None
            bundle = cls(archive + ".pyz", names)
            bundle.manifest = json.loads(as_text(zipped.read("bundle.json")))
        return bundle

    def has(self, sha256):
        return "artifacts/" + sha256 in self.names

    def extract(self, sha256, dest):
        import shutil
        import zipfile
        with zipfile.ZipFile(self.path) as zipped, zipped.open("artifacts/" + sha256) as source, open(dest, "wb") as target:
            shutil.copyfileobj(source, target)


class DownloadStep(Step):
    machine_wide = True
    kind = "download"
    schema = {"url": Field("str", required=True), "sha256": Field("str", required=True),
              "dest": Field("path", help="where the verified file goes (default: the download cache)"),
              "mode": Field("mode")}

    def target(self):
        return self.args["url"]

    def dest(self):
        return self.args.get("dest") or "%s/downloads/%s" % (CACHE_DIR, self.args["url"].rstrip("/").rsplit("/", 1)[-1])

    def validate(self):
        Step.validate(self)
        try:
            type_sha256(self.args["sha256"], {})
        except ValueError as exc:
            raise ProfileError(self.profile.origin, self.where + ".sha256", str(exc))

    def offline_problems(self, run, changes):
        if self.args["url"].startswith("file://") or (run.bundle and run.bundle.has(self.args["sha256"].lower())):
            return []
        return ["%s (sha256 %s…, not in the cache%s)" % (self.args["url"], self.args["sha256"][:12],
                                                         " or in this bundle" if run.bundle else "")]

    def check(self, run):
        dest = self.dest()
        if run.host.exists(dest):
            if run.state.file_digest(run.host, dest) == self.args["sha256"].lower():
                return []
            return [Change("~", "download again: %s does not match its sha256" % dest)]
        if run.bundle and run.bundle.has(self.args["sha256"].lower()):
            return [Change("+", "copy to %s from the bundle (sha256 %s…)" % (dest, self.args["sha256"][:12]))]
        return [Change("+", "download to %s (sha256 %s…)" % (dest, self.args["sha256"][:12]))]

    def act(self, run, changes):
        dest = self.dest()
        full = run.host.path(dest)
        if not os.path.isdir(os.path.dirname(full)):
            os.makedirs(os.path.dirname(full), 0o755)
        part = full + ".part"
        if run.bundle and run.bundle.has(self.args["sha256"].lower()):
            run.bundle.extract(self.args["sha256"].lower(), part)
        else:
            fetch(run, self.args["url"], part)
        digest = sha256_file(part)
        if digest != self.args["sha256"].lower():
            os.unlink(part)
            raise StackbootError("%s: sha256 is %s, expected %s; nothing was installed"
                                 % (self.args["url"], digest, self.args["sha256"].lower()),
                                 "check the URL and the sha256 you gave")
        os.chmod(part, parse_mode(self.args.get("mode") or "0644"))
        os.rename(part, full)
        run.state.forget_digest(dest)


def show_download(run, url, done, total):
    share = " %3d%%" % (done * 100 // total) if total else ""
    run.out.progress("  downloading %s%s (%d KiB)" % (url.rsplit("/", 1)[-1], share, done // 1024))


def fetch(run, url, part):
    """Download `url` into `part`, resuming what an interrupted run left there."""
    if url.startswith("file://"):
        import shutil
        shutil.copyfile(url[7:], part)
        return
    if run.offline:
        raise StackbootError("%s is not in the cache and --offline forbids downloading" % url,
                             "bring the file into the cache or run without --offline")
    import urllib.request
    import urllib.error
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "stackboot/" + __version__})
    if have:
        request.add_header("Range", "bytes=%d-" % have)
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:   # the part file is already complete
            return
        raise StackbootError("download %s failed: HTTP %d %s" % (url, exc.code, exc.reason), "check the URL")
    except (urllib.error.URLError, OSError) as exc:
        raise StackbootError("download %s failed: %s" % (url, getattr(exc, "reason", exc)),
                             "check the network, or use --offline with a bundle")
    resumed = have and response.status == 206
    total = response.headers.get("Content-Length")
    total = int(total) + (have if resumed else 0) if total and total.isdigit() else None
    done = have if resumed else 0
    last = 0.0
    with response, open(part, "ab" if resumed else "wb") as handle:
        while True:
            block = response.read(1 << 16)
            if not block:
                break
            handle.write(block)
            done += len(block)
            if time.time() - last > (0.2 if run.out.tty else 5):
                last = time.time()
                show_download(run, url, done, total)
    show_download(run, url, done, total)
    run.out.progress_done()
    if total is not None and done < total:
        raise StackbootError("download %s stopped at %d of %d bytes" % (url, done, total), "run again to resume")


class BuildStep(Step):
    """An autotools source build, installed through a staging tree so every file is recorded."""

    machine_wide = True
    kind = "build"
    merge_lists = ("configure", "make")   # roles sharing one build each add their modules
    schema = {"name": Field("str", required=True), "archive": Field("path", required=True),
              "sha256": Field("str", help="the archive's sha256 (saves hashing it on every run)"),
              "version": Field("str"), "autoreconf": Field("bool", default=False),
              "configure": Field("list", default=[]), "env": Field("dict", default={}),
              "make": Field("list", default=[], help="extra make arguments"), "jobs": Field("int")}

    def inputs(self, run):
        """What the build depends on; the same digest means nothing to do."""
        archive_sha = self.args.get("sha256")
        if not archive_sha:
            if not run.host.exists(self.args["archive"]):
                return None
            archive_sha = run.state.file_digest(run.host, self.args["archive"])
        keys = ("version", "autoreconf", "configure", "env", "make")
        return sha256_bytes(json.dumps([archive_sha] + [self.args.get(key) for key in keys], sort_keys=True).encode())

    def recipe(self):
        """What the plan shows under a build line: the exact configure command and its environment."""
        env = " ".join("%s=%s" % item for item in sorted(self.args.get("env", {}).items()))
        return "%s./configure %s\n" % (env + " " if env else "", " ".join(self.args.get("configure", [])))

    def check(self, run):
        record = run.state.data["builds"].get(self.args["name"])
        digest = self.inputs(run)
        version = self.args.get("version") or ""
        if record is None:
            return [Change("+", "build and install %s %s" % (self.args["name"], version), self.recipe())]
        if record["inputs"] == digest:
            missing = [path for path in record["files"] if not run.host.exists(path)]
            if not missing:
                return []
            return [Change("~", "reinstall: %d installed files are missing (%s…)" % (len(missing), missing[0]), self.recipe())]
        if record.get("version") != version:
            return [Change("~", "upgrade %s %s -> %s: rebuild and reinstall" % (self.args["name"], record.get("version"), version),
                           self.recipe())]
        return [Change("~", "rebuild %s: the build inputs changed" % self.args["name"], self.recipe())]

    def removal(self, run, purge):
        record = run.state.data["builds"].get(self.args["name"])
        if not record:
            return [], []
        return [Change("-", "remove the %d files %s %s installed" % (len(record["files"]), self.args["name"],
                                                                     record.get("version") or ""), action="files")], []

    def remove(self, run, changes):
        for path in run.state.data["builds"][self.args["name"]]["files"]:
            if run.host.stat(path) is not None:
                os.unlink(run.host.path(path))
        del run.state.data["builds"][self.args["name"]]

    def act(self, run, changes):
        import shutil
        name = self.args["name"]
        work = "%s/build/%s" % (CACHE_DIR, name)
        stage = "%s/stage/%s" % (CACHE_DIR, name)
        for path in (work, stage):
            shutil.rmtree(run.host.path(path), ignore_errors=True)
        os.makedirs(run.host.path(work), 0o755)
        source = extract_archive(run.host.path(self.args["archive"]), run.host.path(work))
        source = work + "/" + source if source else work
        env = dict((key, str(value)) for key, value in self.args.get("env", {}).items())
        jobs = self.args.get("jobs") or run.facts["cores"]
        stages = []
        if self.args.get("autoreconf"):
            stages.append(("autoreconf", ["autoreconf", "-f", "-i"]))
        stages += [("configure", ["./configure"] + self.args.get("configure", [])),
                   ("make", ["make", "-j%d" % jobs] + self.args.get("make", [])),
                   ("install", ["make", "install", "DESTDIR=" + stage] + self.args.get("make", []))]
        for label, argv in stages:
            started = time.time()
            lines = []

            def show(line, label=label, started=started):
                lines.append(line)
                if run.out.tty:   # a live status line; logs and cloud-init get the stage lines only
                    run.out.progress("  %s %s: %s (%ds)" % (name, label, line[:60], time.time() - started))

            if not run.out.tty:
                run.out.info("  %s: %s" % (name, label))
            result = run.runner.run(argv, change=True, cwd=source, env=env, check=False, stream=show)
            run.out.progress_done()
            if result.rc != 0:
                tail = "\n".join(lines[-15:])
                run.out.say(tail)
                raise StackbootError("%s: %s failed (exit %d) in %s" % (name, label, result.rc, source),
                                     "read the output above; missing build dependencies are the usual cause")
            run.out.info("  %s: %s done in %.1fs" % (name, label, time.time() - started))
        files = install_tree(run.host, stage)
        old = run.state.data["builds"].get(name) or {}
        run.state.data["builds"][name] = {"inputs": self.inputs(run), "version": self.args.get("version") or "",
                                           "files": files, "previous_version": old.get("version")}
        shutil.rmtree(run.host.path(stage), ignore_errors=True)


def extract_archive(archive, into):
    """Unpack a tarball refusing members that would land outside `into`; returns its top directory."""
    import tarfile
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            name = member.name
            if name.startswith("/") or ".." in name.split("/") or (member.islnk() and ".." in member.linkname.split("/")):
                raise StackbootError("%s: refusing archive member %s (it points outside the build directory)" % (archive, name))
            if member.isdev():
                raise StackbootError("%s: refusing device file %s in an archive" % (archive, name))
        tar.extractall(into, members)
    tops = set(member.name.split("/")[0] for member in members if member.name not in (".", "./"))
    return tops.pop() if len(tops) == 1 and os.path.isdir(os.path.join(into, list(tops)[0])) else ""


def install_tree(host, stage):
    """Copy a `make install DESTDIR=` tree into place, file by file atomically; return the file list.

    Renaming over a running daemon's binary is safe where writing into it is not.
    """
    installed = []
    base = host.path(stage)
    for directory, subdirs, files in os.walk(base):
        relative = directory[len(base):] or "/"
        target_dir = host.path(relative)
        if not os.path.isdir(target_dir):
            st = os.lstat(directory)
            os.makedirs(target_dir, 0o755)
            os.chown(target_dir, st.st_uid, st.st_gid)
            os.chmod(target_dir, st.st_mode & 0o7777)
        for name in sorted(files) + sorted(d for d in subdirs if os.path.islink(os.path.join(directory, d))):
            source = os.path.join(directory, name)
            path = os.path.join(relative, name)
            st = os.lstat(source)
            if os.path.islink(source):
                temp = host.path(path) + TEMP_MARK + "link"
                if os.path.lexists(temp):
                    os.unlink(temp)
                os.symlink(os.readlink(source), temp)
                os.rename(temp, host.path(path))
            else:
                with open(source, "rb") as handle:
                    atomic_write(host.path(path), handle.read(), st.st_mode & 0o7777, st.st_uid, st.st_gid)
            installed.append(path)
    return installed


class ServiceStep(Step):
    kind = "service"
    schema = {"name": Field("str", required=True), "enabled": Field("bool", default=True),
              "running": Field("bool", default=True, help="false stops it; null leaves it as it is (oneshot units)"),
              "restart_on": Field("list", default=[], help="ids of steps whose change restarts the service"),
              "reload_on": Field("list", default=[], help="ids of steps whose change reloads the service"),
              "direct": Field("dict", help="start/stop/status/reload commands and pidfile, used when no init system runs")}

    def wants(self, run):
        run.wanted_services.append(self)

    def check(self, run):
        state = run.services.state(run, self)
        changes = []
        want_enabled, want_running = self.args.get("enabled", True), self.args.get("running", True)
        if run.services.persistent and want_enabled and not state.enabled:
            changes.append(Change("+", "enable at boot", action="enable"))
        if run.services.persistent and not want_enabled and state.enabled:
            changes.append(Change("-", "disable at boot", action="disable"))
        if want_running is None:
            return changes
        if want_running and not state.running:
            changes.append(Change("+", "start", action="start"))
        elif not want_running and state.running:
            changes.append(Change("-", "stop", action="stop"))
        elif want_running:
            restart, reload = self.triggers(run, "restart"), self.triggers(run, "reload")
            if restart:
                changes.append(Change("~", "restart (%s changed)" % ", ".join(restart), action="restart"))
            elif reload:
                changes.append(Change("~", "reload (%s changed)" % ", ".join(reload), action="reload"))
        return changes

    def act(self, run, changes):
        for change in changes:
            run.services.do(run, self, change.action)
        run.state.data["pending"].pop(self.id, None)

    def stopping(self, run):
        return [Change("-", "stop", action="stop")] if run.services.state(run, self).running else []

    def liveness(self, run):
        return "%s %s" % (self.args["name"], "running" if run.services.state(run, self).running else "STOPPED")

    def removal(self, run, purge):
        state = run.services.state(run, self)
        changes = self.stopping(run)
        if run.services.persistent and state.enabled:
            changes.append(Change("-", "disable at boot", action="disable"))
        return changes, []

    def remove(self, run, changes):
        self.act(run, changes)

    def verify(self, run):
        """Daemons take a moment to write their pid file or settle: poll briefly."""
        deadline = time.time() + 15
        while True:
            run.services.forget(run, self)
            left = self.check(run)
            if not left or time.time() > deadline:
                break
            time.sleep(0.2)
        if left:
            raise StackbootError("service %s: still not right after applying: %s" % (self.args["name"], left[0].summary),
                                 "look at the daemon's log")


class MountStep(Step):
    """A filesystem mounted now (seen in the kernel's mount table) and kept in fstab."""

    kind = "mount"
    schema = {"path": Field("path", required=True, help="the mount point"),
              "device": Field("str", required=True), "fstype": Field("str", required=True),
              "options": Field("list", default=["defaults"]), "fstab": Field("bool", default=True),
              "mount": Field("argv", help="how to mount it now (default: mount PATH, which reads fstab; "
                                          "without fstab, mount -t FSTYPE -o OPTIONS DEVICE PATH)")}

    def mount_spec(self):
        """(device, fstype, options) as fstab wants them."""
        return self.args["device"], self.args["fstype"], self.args.get("options") or ["defaults"]

    def fstab_line(self):
        device, fstype, options = self.mount_spec()
        return "%s %s %s %s 0 0" % (device, self.args["path"], fstype, ",".join(options))

    def fstab_text(self, run):
        """fstab with our line in place of any other line for the same mount point."""
        current = as_text(run.host.read("/etc/fstab") or b"")
        lines, placed = [], False
        for line in current.splitlines():
            fields = line.split()
            if len(fields) >= 2 and not line.lstrip().startswith("#") and fields[1] == self.args["path"]:
                if not placed:
                    lines.append(self.fstab_line())
                    placed = True
                continue
            lines.append(line)
        if not placed:
            lines.append(self.fstab_line())
        return current, "\n".join(lines) + "\n"

    def mounted(self, run):
        """The mount table's entry for our mount point, or None."""
        return mount_table(run).get(run.host.path(self.args["path"]))

    def check(self, run):
        return self.fstab_changes(run) + ([] if self.mounted(run) else [Change("+", "mount now", action="mount")])

    def mount_argv(self):
        if self.args.get("mount"):
            return self.args["mount"]
        if self.args.get("fstab", True):
            return ["mount", self.args["path"]]
        device, fstype, options = self.mount_spec()
        return ["mount", "-t", fstype, "-o", ",".join(options), device, self.args["path"]]

    def stopping(self, run):
        """A network filesystem's client mount goes down with its node; a store stays."""
        if self.kept_by_uninstall or self.data or not self.mounted(run):
            return []
        return [Change("-", "unmount", action="unmount")]

    def liveness(self, run):
        if self.kept_by_uninstall or self.data:
            return None
        return "%s %s" % (self.args["path"], "mounted" if self.mounted(run) else "NOT MOUNTED")

    def unmount_changes(self, run):
        """Unmount now and drop our fstab line, as far as either is there."""
        changes = [Change("-", "unmount", action="unmount")] if self.mounted(run) else []
        current, _ = self.fstab_text(run)
        if self.args.get("fstab", True) and self.fstab_line() in current.splitlines():
            changes.append(Change("-", "fstab: remove " + self.fstab_line(), action="fstab"))
        return changes

    def removal(self, run, purge):
        """A mount that holds no data (a network filesystem's client) goes; a store stays."""
        if self.kept_by_uninstall or self.data:
            return [], ["%s: %s" % (self.args["path"], self.kept_by_uninstall or "data; uninstall keeps it mounted")]
        return self.unmount_changes(run), []

    def remove(self, run, changes):
        for change in changes:
            if change.action == "unmount":
                run.runner.run(["umount", self.args["path"]], change=True)
                run.probed.pop("mounts", None)
            else:
                current, _ = self.fstab_text(run)
                st = run.host.stat("/etc/fstab")
                kept = [line for line in current.splitlines() if line != self.fstab_line()]
                run.host.write_file("/etc/fstab", ("\n".join(kept) + "\n").encode(), st.st_mode & 0o7777)

    def fstab_changes(self, run):
        changes = []
        if self.args.get("fstab", True):
            current, new = self.fstab_text(run)
            if current != new:
                changes.append(Change("~" if current else "+", "fstab: " + self.fstab_line(),
                                      unified_diff(current, new, "/etc/fstab"), action="fstab"))
        return changes

    def act(self, run, changes):
        for change in changes:
            if change.action == "fstab":
                st = run.host.stat("/etc/fstab")
                mode = st.st_mode & 0o7777 if st else 0o644
                run.host.write_file("/etc/fstab", self.fstab_text(run)[1].encode(), mode)
            elif change.action == "mount":
                full = run.host.path(self.args["path"])
                if not os.path.isdir(full):
                    os.makedirs(full, 0o755)
                run.runner.run(self.mount_argv(), change=True)
                run.probed.pop("mounts", None)


def mount_table(run):
    if "mounts" not in run.probed:
        run.probed["mounts"] = MOUNT_TABLES.get(run.facts["platform"], LinuxMounts)().table(run)
    return run.probed["mounts"]


def size_bytes(text):
    """'10GiB' or '10G' -> binary bytes, '10GB' -> decimal; as btrfs and ZFS read sizes."""
    match = re.match(r"^([0-9]+(?:\.[0-9]+)?)([kKMGTPE]?)(i?)(B?)$", text)
    if not match:
        raise ValueError("not a size: %s" % text)
    number, unit, binary, byte = match.groups()
    if not unit:
        return int(float(number))
    base = 1000 if byte and not binary else 1024
    return int(float(number) * base ** ("KMGTPE".index(unit.upper()) + 1))


def probe_target(run, path):
    """What a block device or image holds (blkid's TYPE, LABEL...), and every other reason
    it is not proven blank: missing, a partition table, signatures, a mount, a loop device.

    Blank means TYPE is absent and the list is empty. Nothing here is ever wiped.
    """
    if not os.path.exists(run.host.path("/proc/self/mountinfo")) and run.facts["platform"] == "linux":
        raise StackbootError("%s is not mounted, and blkid, mkfs and losetup need it" % run.host.path("/proc"),
                             "mount -t proc proc %s (and bind /dev) before using --root for stores" % run.host.path("/proc"))
    if not run.host.exists(path):
        return {}, ["%s does not exist" % path]
    result = run.runner.run(["blkid", "-p", "-o", "export", path], check=False)
    info = dict(line.partition("=")[::2] for line in result.out.splitlines() if "=" in line)
    problems = []
    if result.rc not in (0, 2):
        problems.append("blkid could not read it (%s)" % (result.err.strip() or "exit %d" % result.rc))
    if info.get("PTTYPE"):
        problems.append("it has a %s partition table" % info["PTTYPE"])
    signatures = run.runner.run(["wipefs", "-n", path], check=False).out.splitlines()[1:]
    if signatures and not info:
        problems.append("wipefs finds signatures: %s" % ", ".join(line.split()[2] for line in signatures if len(line.split()) > 2))
    real = os.path.realpath(run.host.path(path))
    for point, entry in mount_table(run).items():
        if entry["source"] in (path, real):
            problems.append("it is mounted on %s" % point)
    import stat as stat_module
    st = run.host.stat(path)
    if st is not None and stat_module.S_ISREG(st.st_mode):
        loops = run.runner.run(["losetup", "-j", path], check=False).out.split(":")[0].strip()
        if loops:
            problems.append("loop device %s holds it" % loops)
    return info, problems


class StoreStep(Step):
    """A store (filesystem, pool, subvolume, dataset). Uninstall keeps it; --purge-data destroys
    it only when stackboot made it (recorded in the state as it was made), never an adopted one."""

    kept_by_uninstall = "a store; uninstall keeps it (--purge-data destroys it, as stackboot made it)"

    def made(self, run):
        return run.state.data["made"].get(self.id)

    def remember_made(self, run, **facts):
        run.state.data["made"][self.id] = dict(facts, kind=self.kind, target=self.target())
        run.state.save()

    def removal(self, run, purge):
        if not self.made(run) or not self.exists(run):
            reason = "not made by stackboot; never destroyed by it" if self.exists(run) else "gone already"
            return [], ["%s: %s" % (self.target(), reason)]
        if not purge:
            return [], ["%s: %s" % (self.target(), self.kept_by_uninstall)]
        refusal = self.purge_refusal(run)
        if refusal:
            return [], ["%s: %s" % (self.target(), refusal)]
        return self.purge_changes(run), []

    def purge_refusal(self, run):
        """Why --purge-data must keep this store after all (something in it is not stackboot's)."""
        return None

    def remove(self, run, changes):
        self.purge(run, changes)
        run.state.data["made"].pop(self.id, None)
        run.host.forget()


class BtrfsFilesystemStep(StoreStep, MountStep):
    """A btrfs filesystem on a device or an image file, created only on a target proven blank.

    Never `mkfs -f`: an existing btrfs is adopted, anything else is refused with what
    was found. Mounted with its options and kept in fstab (image files through `loop`).
    """

    kind = "btrfs-filesystem"
    schema = dict(OWNERSHIP, path=Field("path", required=True, help="the mount point"),
                  device=Field("path", help="a block device"),
                  image=Field("path", help="or an image file, created at `size` when missing"),
                  size=Field("str"), label=Field("str", default="stackboot"),
                  options=Field("list", default=["noatime"]), fstab=Field("bool", default=True))

    @classmethod
    def spec_problem(cls, spec):
        if ("device" in spec) == ("image" in spec):
            return "a btrfs-filesystem step needs exactly one of device or image"
        if "image" in spec and "size" not in spec:
            return "an image needs a size"
        return None

    def target_path(self):
        return self.args.get("image") or self.args["device"]

    def exists(self, run):
        return bool(self.mounted(run)) or run.host.exists(self.target_path())

    def foreign_entries(self, run):
        """What the mounted filesystem holds besides the subvolumes stackboot made in it."""
        ours = set(record["target"] for record in run.state.data["made"].values() if record["kind"] == "btrfs-subvolume")
        path = self.args["path"]
        return sorted(path + "/" + name for name in os.listdir(run.host.path(path)) if path + "/" + name not in ours)

    def purge_refusal(self, run):
        if not self.mounted(run):
            return "kept: not mounted, so what it holds cannot be seen; mount it to purge it"
        foreign = self.foreign_entries(run)
        if foreign:
            return "kept: it also holds %s, which stackboot did not make" % ", ".join(foreign[:5])
        return None

    def purge_changes(self, run):
        changes = self.unmount_changes(run)
        if self.made(run).get("image"):
            changes.append(Change("-", "remove the image %s (with all its data)" % self.target_path(), action="purge"))
        else:   # a device keeps its filesystem: wiping a disk is not uninstall's job
            changes.append(Change("-", "leave the btrfs on %s as it is (wipefs -a destroys it)" % self.target_path(),
                                  action="leave"))
        return changes

    def purge(self, run, changes):
        foreign = self.foreign_entries(run)   # again, right before: its subvolumes are gone by now
        if foreign:
            raise StackbootError("not destroying the btrfs on %s: it now holds %s, which stackboot did not make"
                                 % (self.target_path(), ", ".join(foreign[:5])), "remove them first if you mean it")
        MountStep.remove(self, run, [change for change in changes if change.action in ("unmount", "fstab")])
        if any(change.action == "purge" for change in changes):
            os.unlink(run.host.path(self.target_path()))

    def mount_spec(self):
        options = list(self.args.get("options") or [])
        if self.args.get("image"):   # a loop mount that waits for the file's own filesystem
            options = ["loop"] + options + ["nofail", "x-systemd.requires-mounts-for=%s" % os.path.dirname(self.args["image"])]
        return self.target_path(), "btrfs", options or ["defaults"]

    def check(self, run):
        target = self.target_path()
        mounted = self.mounted(run)
        if mounted:
            if mounted["fstype"] != "btrfs":
                return [Change("!", "%s is mounted with %s, not btrfs" % (self.args["path"], mounted["fstype"]))]
            return self.fstab_changes(run) + self.ownership_changes(run, run.host.stat(self.args["path"]))
        changes = []
        if self.args.get("image") and not run.host.exists(target):
            changes += [Change("+", "create image %s (%s, sparse)" % (target, self.args["size"]), action="image"),
                        Change("+", "mkfs.btrfs -L %s %s" % (self.args.get("label"), target), action="mkfs")]
        else:
            info, problems = probe_target(run, target)
            if info.get("TYPE") not in (None, "btrfs"):
                problems.insert(0, "it holds a %s filesystem" % info["TYPE"])
            if info.get("TYPE") == "btrfs" and not problems:
                changes.append(Change("~", "adopt the existing btrfs on %s (never reformatted)" % target, action="adopt"))
            elif problems:
                return [Change("!", "refusing to create a filesystem on %s: %s" % (target, "; ".join(problems)))]
            else:
                changes.append(Change("+", "mkfs.btrfs -L %s %s (blank: no signature, partition table, mount or loop)"
                                      % (self.args.get("label"), target), action="mkfs"))
        return changes + self.fstab_changes(run) + [Change("+", "mount now", action="mount")]

    def act(self, run, changes):
        target = self.target_path()
        for change in changes:
            if change.action == "image":
                full = run.host.path(target)
                if not os.path.isdir(os.path.dirname(full)):
                    os.makedirs(os.path.dirname(full), 0o755)
                fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.ftruncate(fd, size_bytes(self.args["size"]))
                finally:
                    os.close(fd)
            elif change.action == "mkfs":
                info, problems = probe_target(run, target)   # proven blank again, right before mkfs
                if problems or info.get("TYPE"):
                    raise StackbootError("refusing to create a filesystem on %s: %s" % (target, "; ".join(problems)))
                run.runner.run(["mkfs.btrfs", "-L", self.args.get("label") or "stackboot", target], change=True)
                self.remember_made(run, image=any(c.action == "image" for c in changes))
        MountStep.act(self, run, [change for change in changes if change.action in ("fstab", "mount")])
        run.host.forget()
        st = run.host.stat(self.args["path"])
        if self.ownership_changes(run, st):
            uid, gid = self.resolved_ids(run)
            os.chown(run.host.path(self.args["path"]), uid, gid)
            if self.args.get("mode"):
                os.chmod(run.host.path(self.args["path"]), parse_mode(self.args["mode"]))


class BtrfsSubvolumeStep(StoreStep):
    """A btrfs subvolume (inode 256 on btrfs), with an optional qgroup limit, owner and mode."""

    kind = "btrfs-subvolume"

    def exists(self, run):
        return run.host.exists(self.args["path"])

    def purge_changes(self, run):
        return [Change("-", "btrfs subvolume delete %s (with its data)" % self.args["path"], action="purge")]

    def purge(self, run, changes):
        run.runner.run(["btrfs", "subvolume", "delete", self.args["path"]], change=True)
    schema = dict(OWNERSHIP, path=Field("path", required=True),
                  limit=Field("str", help="qgroup limit (referenced bytes); quotas are enabled when one is asked"))

    def current_limit(self, run):
        result = run.runner.run(["btrfs", "qgroup", "show", "-re", "--raw", "-f", self.args["path"]], check=False)
        for line in result.out.splitlines():
            fields = line.split()
            if result.rc == 0 and fields and fields[0].startswith("0/") and len(fields) >= 4:
                return None if fields[3] == "none" else int(fields[3])
        return None

    def check(self, run):
        st = run.host.stat(self.args["path"])
        limit = self.args.get("limit")
        if st is None:
            return [Change("+", "create subvolume" + (" limited to %s" % limit if limit else "") + describe_ownership(self.args),
                           action="create")]
        if st.st_ino != 256:
            return [Change("!", "%s exists and is not a btrfs subvolume" % self.args["path"])]
        changes = self.ownership_changes(run, st)
        if limit and self.current_limit(run) != size_bytes(limit):
            changes.append(Change("~", "qgroup limit -> %s" % limit, action="limit"))
        return changes

    def act(self, run, changes):
        path = self.args["path"]
        if changes[0].action == "create":
            run.runner.run(["btrfs", "subvolume", "create", path], change=True)
            self.remember_made(run)
            run.host.forget()
        if self.args.get("limit") and (changes[0].action == "create" or any(c.action == "limit" for c in changes)):
            run.runner.run(["btrfs", "quota", "enable", path], change=True)
            run.runner.run(["btrfs", "qgroup", "limit", str(size_bytes(self.args["limit"])), path], change=True)
        uid, gid = self.resolved_ids(run)
        os.chown(run.host.path(path), uid, gid)
        if self.args.get("mode"):
            os.chmod(run.host.path(path), parse_mode(self.args["mode"]))
        run.host.forget()


class ZfsPoolStep(StoreStep):
    """A ZFS pool by name: used when it exists; created only from the vdevs the user listed,
    each proven blank. stackboot never picks "the first pool" or a disk of its own choosing."""

    kind = "zfs-pool"

    def exists(self, run):
        return self.args["name"] in self.pools(run)

    def purge_changes(self, run):
        files = self.made(run).get("files", [])
        return [Change("-", "zpool destroy %s (with all its data)%s" % (
            self.args["name"], "; remove " + " ".join(files) if files else ""), action="purge")]

    def foreign_datasets(self, run):
        """Datasets in the pool that stackboot did not make (no stackboot:profile property)."""
        result = run.runner.run(["zfs", "list", "-H", "-r", "-o", "name,stackboot:profile", self.args["name"]], check=False)
        return [line.split("\t")[0] for line in result.out.splitlines()
                if line.split("\t")[0] != self.args["name"] and line.split("\t")[-1] == "-"]

    def purge_refusal(self, run):
        foreign = self.foreign_datasets(run)
        if foreign:
            return "kept: it also holds %s, which stackboot did not make (zpool destroy would take it)" % ", ".join(foreign)
        return None

    def purge(self, run, changes):
        foreign = self.foreign_datasets(run)   # again, right before: somebody may have added one since
        if foreign:
            raise StackbootError("not destroying pool %s: it now holds %s, which stackboot did not make"
                                 % (self.args["name"], ", ".join(foreign)), "destroy the pool by hand if you mean it")
        run.runner.run(["zpool", "destroy", self.args["name"]], change=True)
        for vdev in self.made(run).get("files", []):   # the file vdevs it made itself
            os.unlink(run.host.path(vdev))
        run.probed.pop("pools", None)
        run.probed.pop("mounts", None)
    schema = {"name": Field("str", required=True), "vdevs": Field("list", default=[]),
              "vdev_size": Field("str", help="size of a file vdev created when it does not exist yet"),
              "mountpoint": Field("path", help="mount point of the pool's root dataset")}

    def pools(self, run):
        if "pools" not in run.probed:
            result = run.runner.run(["zpool", "list", "-H", "-o", "name,health"], check=False)
            run.probed["pools"] = dict(line.split("\t")[:2] for line in result.out.splitlines() if "\t" in line)
        return run.probed["pools"]

    def creatable(self, run, vdev):
        return bool(self.args.get("vdev_size")) and not vdev.startswith("/dev/") and not run.host.exists(vdev)

    def check(self, run):
        name = self.args["name"]
        if name in self.pools(run):
            return []
        if not self.args.get("vdevs"):
            return [Change("!", "pool %s does not exist and no vdevs are listed to create it "
                                "(stackboot never chooses a disk or a pool for you)" % name)]
        problems = []
        for vdev in self.args["vdevs"]:
            if self.creatable(run, vdev):
                continue
            info, found = probe_target(run, vdev)
            if info.get("TYPE"):
                found.insert(0, "it holds a %s filesystem" % info["TYPE"])
            problems += ["%s: %s" % (vdev, problem) for problem in found]
        if problems:
            return [Change("!", "refusing to create pool %s: %s" % (name, "; ".join(problems)))]
        return [Change("+", "zpool create %s %s" % (name, " ".join(self.args["vdevs"])), action="create")]

    def act(self, run, changes):
        files = [vdev for vdev in self.args["vdevs"] if self.creatable(run, vdev)]
        for vdev in self.args["vdevs"]:
            if self.creatable(run, vdev):
                fd = os.open(run.host.path(vdev), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.ftruncate(fd, size_bytes(self.args["vdev_size"]))
                finally:
                    os.close(fd)
        for vdev in self.args["vdevs"]:   # proven blank again, right before zpool create
            info, problems = probe_target(run, vdev)
            if problems or info.get("TYPE"):
                raise StackbootError("refusing to create pool %s on %s: %s" % (
                    self.args["name"], vdev, "; ".join(problems) or "it holds " + info["TYPE"]))
        mountpoint = ["-m", self.args["mountpoint"]] if self.args.get("mountpoint") else []
        run.runner.run(["zpool", "create"] + mountpoint + [self.args["name"]] + self.args["vdevs"], change=True)
        self.remember_made(run, files=files)
        run.probed.pop("pools", None)
        run.probed.pop("mounts", None)


class ZfsDatasetStep(StoreStep):
    """A dataset with its properties. `zfs create -p` ignores -o on an existing dataset, so
    properties are compared and set one by one; new datasets are marked stackboot:profile."""

    kind = "zfs-dataset"

    def exists(self, run):
        return self.current(run) is not None

    def purge_changes(self, run):
        return [Change("-", "zfs destroy %s (with its data)" % self.args["name"], action="purge")]

    def purge(self, run, changes):   # never -r: a child somebody else made stops it, in zfs's words
        for attempt in range(4):   # the unmount zfs destroy starts may finish after it answered "busy"
            result = run.runner.run(["zfs", "destroy", self.args["name"]], change=True, check=False)
            if result.rc == 0 or "busy" not in result.err or attempt == 3:
                break
            time.sleep(1)
        if result.rc != 0:
            raise CommandFailed(result, "end what still uses %s, then run the uninstall again" % self.args["name"])
        run.probed.pop("mounts", None)
    schema = {"name": Field("str", required=True), "properties": Field("dict", default={}),
              "user_properties": Field("dict", default={}, help="module:name properties to keep set")}
    SIZES = ("quota", "refquota", "reservation", "refreservation", "recordsize", "volsize")

    def wanted(self):
        """Properties to enforce; a null value (an optional parameter left unset) is left alone."""
        props = dict(self.args.get("properties") or {}, **(self.args.get("user_properties") or {}))
        return dict((key, render_scalar(value)) for key, value in props.items() if value is not None)

    def comparable(self, key, value):
        """How `zfs get -p` prints a value we asked for: sizes in bytes, none as 0."""
        if key in self.SIZES:
            return "0" if value in ("none", "0") else str(size_bytes(value))
        return value

    def current(self, run):
        names = sorted(self.wanted()) or ["type"]
        result = run.runner.run(["zfs", "get", "-H", "-p", "-o", "property,value", ",".join(names), self.args["name"]],
                                check=False)
        if result.rc != 0:
            return None
        return dict(line.split("\t", 1) for line in result.out.splitlines() if "\t" in line)

    def check(self, run):
        current = self.current(run)
        wanted = self.wanted()
        if current is None:
            shown = " ".join("%s=%s" % item for item in sorted(wanted.items()))
            return [Change("+", "zfs create %s%s" % (self.args["name"], " (%s)" % shown if shown else ""), action="create")]
        return [Change("~", "set %s=%s (now %s)" % (key, value, current.get(key, "-")), action=key)
                for key, value in sorted(wanted.items()) if current.get(key) != self.comparable(key, value)]

    def zfs(self, run, argv):
        result = run.runner.run(argv, change=True, check=False)
        if result.rc != 0:
            raise CommandFailed(result, "this ZFS does not take that property or value; choose one it lists "
                                        "(zfs-fuse has no lz4: use compression=on, lzjb or gzip)")

    def act(self, run, changes):
        name = self.args["name"]
        if changes[0].action == "create":
            options = []
            for key, value in sorted(self.wanted().items()):
                options += ["-o", "%s=%s" % (key, value)]
            options += ["-o", "stackboot:profile=%s" % self.profile.name]
            self.zfs(run, ["zfs", "create", "-p"] + options + [name])
            self.remember_made(run)
            run.probed.pop("mounts", None)
            return
        for change in changes:   # one property at a time, only the ones that differ
            self.zfs(run, ["zfs", "set", "%s=%s" % (change.action, self.wanted()[change.action]), name])


class MooseFSMetadataStep(Step):
    """Guards MooseFS metadata: a new cluster starts only in a data directory with no history.

    metadata.mfs present: never touched. Backups, changelogs or metalogger
    files without metadata.mfs: refused, because an empty metadata file there
    would orphan every chunkserver (they keep the old cluster's id).
    """

    kind = "moosefs-metadata"
    kept_by_uninstall = "MooseFS metadata; a re-install finds it"
    schema = dict(OWNERSHIP, data_path=Field("path", required=True),
                  empty=Field("path", help="the empty-metadata template (default DATA_PATH/metadata.mfs.empty)"),
                  restore=Field("argv", help="the master's own recovery command (mfsmaster -c CFG restore)"))
    HISTORY = re.compile(r"^(metadata\.mfs\.back.*|metadata_ml\.mfs\.back.*|changelog(_ml)?(_back)?\.[0-9]+\.mfs"
                         r"|metadata\.mfs\.emergency|metadata\.mfs\.tmp)$")

    def target(self):
        return self.args["data_path"] + "/metadata.mfs"

    def history(self, run):
        try:
            entries = os.listdir(run.host.path(self.args["data_path"]))
        except OSError:
            return []
        return sorted(entry for entry in entries if self.HISTORY.match(entry))

    def master_running(self, run):
        """A running master keeps its metadata as metadata.mfs.back; its lock file holds its pid."""
        text = as_text(run.host.read(self.args["data_path"] + "/.mfsmaster.lock") or b"").split()
        return bool(text) and text[0].isdigit() and pid_alive(int(text[0]))

    def check(self, run):
        if run.host.exists(self.target()) or self.master_running(run):
            return []
        history = self.history(run)
        if history and self.args.get("restore"):
            return [Change("~", "recover metadata.mfs from the cluster's history (%s) with `%s`"
                           % (", ".join(history[:6]), " ".join(self.args["restore"])), action="restore")]
        if history:
            return [Change("!", "no metadata.mfs but the cluster's history is here (%s); refusing to start an empty "
                                "cluster over it: recover with `mfsmaster -a`" % ", ".join(history[:4]))]
        return [Change("+", "new cluster: metadata.mfs from %s" % self.empty(), action="create")]

    def empty(self):
        return self.args.get("empty") or self.args["data_path"] + "/metadata.mfs.empty"

    def act(self, run, changes):
        if changes[0].action == "restore":
            result = run.runner.run(self.args["restore"], change=True, check=False)
            run.host.forget(self.target())
            if result.rc != 0 or not run.host.exists(self.target()):
                raise CommandFailed(result, "the history could not be replayed; see `mfsmaster -x restore`, never "
                                            "start the master on an empty metadata file here")
            used = [line for line in (result.out + result.err).splitlines() if "metadata" in line or "changelog" in line]
            run.out.info("  recovered metadata.mfs" + (": " + "; ".join(used[:5]) if used else ""))
            return
        template = run.host.read(self.empty())
        if template is None:
            raise StackbootError("%s is missing" % self.empty(), "install the MooseFS master first")
        uid, gid = self.resolved_ids(run)
        run.host.write_file(self.target(), template, parse_mode(self.args.get("mode") or "0640"), uid, gid)


class CvmfsRepositoryStep(Step):
    """Guards a CernVM-FS repository: `cvmfs_server mkfs` runs only where no trace of it exists.

    mkfs's only "exists" test is its config directory, which a failed mkfs leaves
    behind, and other leftovers (a partial key set, a stale spool, fstab lines)
    make the next mkfs fail. So every trace is looked for; a half-made repository
    is listed and refused, and --repair clears it only when nothing was ever
    published. Keys are never touched: a full set is reused by mkfs.
    """

    kind = "cvmfs-repository"
    kept_by_uninstall = "a CVMFS repository; remove one only with cvmfs_server rmfs"
    schema = {"name": Field("str", required=True), "owner": Field("str", required=True),
              "stratum0": Field("str", required=True, help="the repository's URL for mkfs -w; @fqrn@ becomes its name"),
              "s3_config": Field("path", help="S3 backend: the config file (mkfs -s); local backend when absent"),
              "garbage_collection": Field("bool", default=False, help="mkfs -z"),
              "settings": Field("dict", default={}, help="server.conf keys kept at these values"),
              "mounts": Field("list", default=[], help="paths that must be mounts (a store) before mkfs or a repair"),
              "client_url": Field("str", help="CVMFS_SERVER_URL for clients, printed at the end"),
              "key_url": Field("str", help="where clients fetch the public key, printed at the end")}
    CONFIG, KEYS, STORAGE, SPOOL = "/etc/cvmfs/repositories.d", "/etc/cvmfs/keys", "/srv/cvmfs", "/var/spool/cvmfs"
    KEY_SUFFIXES = (".masterkey", ".key", ".pub", ".crt")
    TRANSACTION_MARKS = ("in_transaction.lock", "in_transaction")

    def url(self, key):
        return (self.args.get(key) or "").replace("@fqrn@", self.args["name"])

    def repository_url(self):
        """Where the manifest is: for S3, mkfs puts the repository under its name in the bucket URL."""
        url = self.url("stratum0").rstrip("/")
        return url if self.local() or url.endswith("/" + self.args["name"]) else url + "/" + self.args["name"]

    def local(self):
        return not self.args.get("s3_config")

    def traces(self, run):
        """Everything of this repository on the host, read only."""
        name, host = self.args["name"], run.host
        spool = "%s/%s" % (self.SPOOL, name)
        fstab = [line for line in as_text(host.read("/etc/fstab") or b"").splitlines()
                 if line.rstrip().endswith("added by CernVM-FS for " + name)]
        inside = len(host.root.rstrip("/"))   # mount points as the host under --root sees them
        mounts = sorted(point[inside:] for point in mount_table(run)
                        if any(point == host.path(base) or point.startswith(host.path(base) + "/")
                               for base in ("/cvmfs/" + name, spool)))
        return {"config": host.exists("%s/%s" % (self.CONFIG, name)),
                "server_conf": host.exists("%s/%s/server.conf" % (self.CONFIG, name)),
                "keys": [suffix for suffix in self.KEY_SUFFIXES if host.exists("%s/%s%s" % (self.KEYS, name, suffix))],
                "storage": self.local() and host.exists("%s/%s" % (self.STORAGE, name)),
                "manifest": self.local() and host.exists("%s/%s/.cvmfspublished" % (self.STORAGE, name)),
                "spool": host.exists(spool),
                "transaction": [mark for mark in self.TRANSACTION_MARKS if host.exists(spool + "/" + mark)],
                "fstab": fstab, "mounts": mounts}

    def complete(self, found):
        return (found["server_conf"] and len(found["keys"]) == len(self.KEY_SUFFIXES) and found["spool"]
                and (found["manifest"] or not self.local()))

    def leftovers(self, found):
        name, items = self.args["name"], []
        if found["config"]:
            items.append("config directory %s/%s%s%s" % (
                self.CONFIG, name, "" if found["server_conf"] else " without server.conf",
                " but no storage %s/%s" % (self.STORAGE, name) if self.local() and not found["storage"] else ""))
        if found["keys"] and len(found["keys"]) < len(self.KEY_SUFFIXES):
            items.append("partial key set in %s: %s (no %s)" % (
                self.KEYS, ", ".join(name + suffix for suffix in found["keys"]),
                ", ".join(name + suffix for suffix in self.KEY_SUFFIXES if suffix not in found["keys"])))
        if found["storage"]:
            items.append("storage %s/%s%s" % (self.STORAGE, name, " with a published manifest" if found["manifest"] else ""))
        if found["spool"]:
            items.append("%sspool %s/%s" % ("" if found["config"] else "stale ", self.SPOOL, name))
        if found["transaction"]:
            items.append("an open transaction (%s/%s/%s)" % (self.SPOOL, name, found["transaction"][0]))
        if found["fstab"]:
            items.append("%d fstab line(s) added by CernVM-FS for %s" % (len(found["fstab"]), name))
        return items + ["mounted: %s" % point for point in found["mounts"]]

    def cleanup_commands(self, found):
        """What removes these leftovers by hand: rmfs needs the config directory to work from."""
        name = self.args["name"]
        if found["config"]:
            return ["cvmfs_server rmfs -f %s" % name]
        commands = ["umount %s" % point for point in sorted(found["mounts"], key=len, reverse=True)]
        if found["fstab"]:
            commands.append("sed -i '/# added by CernVM-FS for %s$/d' /etc/fstab" % name.replace(".", "\\."))
        if found["spool"]:
            commands.append("rm -rf %s/%s" % (self.SPOOL, name))
        if found["manifest"]:   # a published repository that lost its config: bring the config back
            commands.insert(0, "cvmfs_server import -o %s %s" % (self.args["owner"], name))
        elif found["storage"]:
            commands.append("rm -rf %s/%s" % (self.STORAGE, name))
        return commands

    def published(self, run, found):
        """True when clients may have seen a revision; None when that cannot be told from here."""
        if self.local():
            return found["manifest"]
        import urllib.request
        import urllib.error
        try:
            urllib.request.urlopen(self.repository_url() + "/.cvmfspublished", timeout=10).close()
            return True
        except urllib.error.HTTPError as exc:   # only "not found" proves it: 403 may hide a manifest
            return False if exc.code == 404 else None
        except (urllib.error.URLError, OSError):
            return None

    def mkfs_argv(self):
        argv = ["cvmfs_server", "mkfs", "-o", self.args["owner"], "-w", self.url("stratum0")]
        if not self.local():
            argv += ["-s", self.args["s3_config"]]
        return argv + (["-z"] if self.args.get("garbage_collection") else []) + [self.args["name"]]

    def check(self, run):
        name = self.args["name"]
        found = self.traces(run)
        if self.complete(found):
            if found["transaction"]:
                return [Change("!", "%s is in an open transaction; publish it (`cvmfs_server publish %s`) or drop it "
                                    "(`cvmfs_server abort -f %s`), then run again" % (name, name, name))]
            return self.identity_changes(run) or self.settings_changes(run)
        if run.host.uid(self.args["owner"]) is None:
            return [Change("!", "the owner %s does not exist: create that user first (mkfs would stop)" % self.args["owner"])]
        create = "`%s`" % " ".join(self.mkfs_argv())
        if len(found["keys"]) == len(self.KEY_SUFFIXES):
            create += " (reusing the keys in %s)" % self.KEYS
        leftovers = self.leftovers(found)
        if not leftovers:
            return [Change("+", "create repository: " + create, action="create")]
        commands = self.cleanup_commands(found)
        cleanup = "clean it up with " + "; ".join("`%s`" % command for command in commands) + "; " if commands else ""
        partial_keys = 0 < len(found["keys"]) < len(self.KEY_SUFFIXES)
        if partial_keys:
            why = "stackboot never touches keys: move the partial key set away (keep it if it is the only copy)"
        elif found["manifest"]:
            why = "it has published (clients may hold it), so --repair leaves it alone"
        elif not run.repair:
            why = "or run install again with --repair if it never published anything"
        else:
            published = self.published(run, found)
            if published is False:
                return [Change("~", "repair half-made repository (remove %s), then %s" % ("; ".join(leftovers), create),
                               action="repair")]
            why = ("--repair refused: it has published (clients may hold it), so only you can decide to remove it"
                   if published else "--repair refused: cannot tell whether it ever published (%s unreachable)"
                   % self.repository_url())
        return [Change("!", "half-made repository %s: %s; %s%s" % (name, "; ".join(leftovers), cleanup, why))]

    def server_conf(self):
        return "%s/%s/server.conf" % (self.CONFIG, self.args["name"])

    def current_settings(self, run):
        current = {}
        for line in as_text(run.host.read(self.server_conf()) or b"").splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                current[key.strip()] = value.strip().strip("'\"")
        return current

    def identity_changes(self, run):
        """What mkfs fixed for good (owner, backend, URL): a difference is refused, never re-created."""
        current, name = self.current_settings(run), self.args["name"]
        made = {"owner": current.get("CVMFS_USER"), "backend": "s3" if current.get("CVMFS_UPSTREAM_STORAGE", "").startswith("S3,") else "local",
                "stratum0": current.get("CVMFS_STRATUM0", "").rstrip("/")}
        wanted = {"owner": self.args["owner"], "backend": "local" if self.local() else "s3", "stratum0": self.repository_url()}
        if made["stratum0"] in (self.url("stratum0").rstrip("/"), self.repository_url()):
            made["stratum0"] = wanted["stratum0"]
        differ = ["%s %s (asked: %s)" % (key, made[key], wanted[key]) for key in ("owner", "backend", "stratum0")
                  if made[key] != wanted[key]]
        if not differ:
            return []
        return [Change("!", "%s was made with %s; stackboot never re-creates a repository: change it with cvmfs_server "
                            "(or give the values it was made with)" % (name, ", ".join(differ)))]

    def wanted_settings(self):
        """The settings, with an extra-settings parameter (a dict) spliced in; unset ones left out."""
        wanted = {}
        for key, value in self.args.get("settings", {}).items():
            wanted.update(value if isinstance(value, dict) else {key: value})
        return dict((key, value) for key, value in wanted.items() if value is not None)

    def settings_changes(self, run):
        current = self.current_settings(run)
        return [Change("~", "server.conf: %s=%s (was %s)" % (key, shell_value(value), current.get(key, "unset")), action="settings")
                for key, value in sorted(self.wanted_settings().items()) if current.get(key) != render_scalar(value)]

    def act(self, run, changes):
        if changes[0].action in ("repair", "create"):
            missing = [path for path in self.args.get("mounts", []) if run.host.path(path) not in mount_table(run)]
            if missing:   # else mkfs would write into the empty directory under the store
                raise StackbootError("%s is not mounted, and the repository belongs on it" % ", ".join(missing),
                                     "mount the store (see /etc/fstab), then run again")
            if changes[0].action == "repair":
                self.repair(run, self.traces(run))
            result = run.runner.run(self.mkfs_argv(), change=True, check=False, timeout=600)
            run.host.cache.clear()
            if result.rc != 0:
                raise CommandFailed(result, "mkfs left the repository half-made; `stackboot plan` lists what is there "
                                            "and how to clean it up")
            changes = self.settings_changes(run)
        if changes and changes[0].action == "settings":
            self.write_settings(run)

    def write_settings(self, run):
        path = self.server_conf()
        lines = as_text(run.host.read(path) or b"").splitlines()
        for key, value in sorted(self.wanted_settings().items()):
            line = "%s=%s" % (key, shell_value(value))
            places = [i for i, text in enumerate(lines) if text.partition("=")[0].strip() == key]
            if places:
                lines[places[0]] = line
            else:
                lines.append(line)
        st = run.host.stat(path)
        run.host.write_file(path, ("\n".join(lines) + "\n").encode(), st.st_mode & 0o7777, st.st_uid, st.st_gid)

    def repair(self, run, found):
        """Remove what a failed mkfs left; only called when nothing was published and no key is partial."""
        import shutil
        name = self.args["name"]
        for point in sorted(found["mounts"], key=len, reverse=True):
            run.runner.run(["umount", point], change=True)
        if found["fstab"]:
            text = as_text(run.host.read("/etc/fstab") or b"")
            kept = [line for line in text.splitlines() if line not in found["fstab"]]
            st = run.host.stat("/etc/fstab")
            run.host.write_file("/etc/fstab", ("\n".join(kept) + "\n").encode(), st.st_mode & 0o7777)
        for path in ("%s/%s" % (self.CONFIG, name), "%s/%s" % (self.SPOOL, name), "%s/%s" % (self.STORAGE, name)):
            if run.host.exists(path):
                run.out.info("  removing %s" % path)
                shutil.rmtree(run.host.path(path))
        run.probed.pop("mounts", None)

    def report(self, run):
        name = self.args["name"]
        key = run.host.read("%s/%s.pub" % (self.KEYS, name))
        if key is None or not self.args.get("client_url"):
            return []
        digest = sha256_bytes(key)
        return ["CVMFS repository %s: clients need" % name,
                "  CVMFS_SERVER_URL=%s" % self.args["client_url"],
                "  CVMFS_PUBLIC_KEY=%s/%s.pub, from %s (sha256 %s)" % (self.KEYS, name, self.url("key_url"), digest),
                "  stackboot install cvmfs-client --set server_host=HOST --set client_repositories=\"%s %s\"" % (name, digest)]


class CommandStep(Step):
    """The rare rest: a command guarded so a converged host never runs it again."""

    kind = "command"
    schema = {"argv": Field("argv", required=True), "creates": Field("path", help="skip when this path exists"),
              "unless": Field("argv", help="skip when this command exits 0"),
              "run_on": Field("list", help="run only after one of these step ids changed (a probe after its config)"),
              "fails": Field("str", help="what a failure means, for the error line"),
              "cwd": Field("path"), "env": Field("dict", default={})}

    @classmethod
    def spec_problem(cls, spec):
        if not set(spec) & {"creates", "unless", "run_on"}:
            return "a command step needs a guard: \"creates\", \"unless\" or \"run_on\""
        return None

    def target(self):
        return " ".join(self.args["argv"])

    def check(self, run):
        if self.args.get("creates") and run.host.exists(self.args["creates"]):
            return []
        if self.args.get("run_on") is not None:
            changed = self.triggers(run, "run")
            return [Change("+", "run %s (%s changed)" % (" ".join(self.args["argv"]), ", ".join(changed)))] if changed else []
        if self.args.get("unless") and run.runner.run(self.args["unless"], check=False).rc == 0:
            return []
        return [Change("+", "run " + " ".join(self.args["argv"]))]

    def act(self, run, changes):
        env = dict((key, str(value)) for key, value in self.args.get("env", {}).items())
        result = run.runner.run(self.args["argv"], change=True, cwd=self.args.get("cwd"), env=env, check=False)
        if result.rc != 0:   # a pending run_on stays pending: the next run tries again
            raise CommandFailed(result, self.args.get("fails") or "see the command's message above")
        run.state.data["pending"].pop(self.id, None)
        run.host.forget(self.args.get("creates") or "")


STEP_KINDS = dict((cls.kind, cls) for cls in (
    PackagesStep, RepositoryStep, GroupStep, UserStep, DirectoryStep, FileStep, LineStep,
    DownloadStep, BuildStep, ServiceStep, MountStep, BtrfsFilesystemStep, BtrfsSubvolumeStep, ZfsPoolStep,
    ZfsDatasetStep, MooseFSMetadataStep, CvmfsRepositoryStep, CommandStep))


# ---------------------------------------------------------------------------
# State: what stackboot remembers on the host
# ---------------------------------------------------------------------------

class State:
    """ROOT/var/lib/stackboot/state.json (0600): files written, builds, inputs, pending restarts.

    Saved after every step, so a run killed at any point resumes from the truth.
    """

    EMPTY = {"version": 1, "roles": {}, "files": {}, "builds": {}, "digests": {}, "pending": {}, "made": {}}

    def __init__(self, host):
        self.host = host
        self.path = host.path(host.state_dir + "/state.json")
        data = read_bytes(self.path)
        try:
            self.data = json.loads(as_text(data)) if data else {}
        except ValueError:
            raise StackbootError("%s is not valid JSON" % self.path, "move it aside; the next install rebuilds it")
        for key, value in self.EMPTY.items():
            self.data.setdefault(key, json.loads(json.dumps(value)))

    def save(self):
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode(), 0o600)

    def record_file(self, path, data):
        self.data["files"][path] = {"sha256": sha256_bytes(data)}

    def wrote(self, path, data):
        return self.data["files"].get(path, {}).get("sha256") == sha256_bytes(data)

    def edited_by_hand(self, path, current):
        return path in self.data["files"] and not self.wrote(path, current)

    def file_digest(self, host, path):
        """sha256 of a large file, remembered by size and mtime so converged runs skip hashing."""
        st = host.stat(path)
        if st is None:
            return None
        stamp = [st.st_size, int(st.st_mtime)]
        cached = self.data["digests"].get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        digest = sha256_file(host.path(path))
        self.data["digests"][path] = [stamp, digest]
        return digest

    def forget_digest(self, path):
        self.data["digests"].pop(path, None)


# ---------------------------------------------------------------------------
# Plan: profiles + values -> ordered steps -> what each would change
# ---------------------------------------------------------------------------

class Run:
    """One command's view of the host: facts, platform tools, state, probe caches."""

    def __init__(self, host, facts, values, out, force=False, offline=False, state=None):
        self.host, self.runner, self.facts, self.values, self.out = host, host.runner, facts, values, out
        self.force, self.offline = force, offline
        self.repair = False
        self.bundle = None
        self.started = False
        self.state = state or State(host)
        self.packages = PACKAGE_MANAGERS[facts["package_manager"]]()
        self.services = SERVICE_MANAGERS[facts["init"]]()
        self.users = USER_TOOLS.get(facts["platform"], ShadowUsers)()
        self.planning = True
        self.changed = set()          # step ids that changed (or, while planning, would)
        self.probed = {}              # batch probe results, dropped when a step changes them
        self.wanted_packages = set()
        self.wanted_services = []
        self.refresh_packages = False
        self.unit_files_changed = False

    def package_versions(self, names):
        cache = self.probed.get("packages")
        if cache is None or any(name not in cache for name in names):
            cache = self.packages.query(self, sorted(self.wanted_packages | set(names)))
            self.probed["packages"] = cache
        return cache


def check_platforms(profiles, facts):
    for profile in reversed(profiles):   # name the role asked for before what it requires
        if profile.platforms and not any(os_matches(facts, name) for name in profile.platforms):
            raise BadInput("role %s supports only %s%s; this host is %s" % (
                profile.name, ", ".join(profile.platforms), " (%s)" % profile.platforms_why if profile.platforms_why else "",
                facts["pretty_name"]), "run it on a %s host" % " or ".join(profile.platforms))


def build_steps(library, roles, values, facts):
    """The ordered steps of `roles` (requirements first), rendered with the values."""
    profiles = library.closure(roles)
    check_platforms(profiles, facts)
    context = dict(values.values, **facts_context(facts))
    steps, by_id, explicit_ids = [], {}, set()
    for profile in profiles:
        explicit_ids |= set(spec["id"] for spec in profile.steps if "id" in spec)
        for index, spec in enumerate(profile.steps):
            if "when" in spec and "for_each" not in spec and not condition_holds(spec["when"], values, facts):
                continue
            for step in render_step(profile, index, spec, context, values, facts):
                if step.id in by_id:   # the same step from two roles runs once, merged where its kind allows
                    merged = by_id[step.id].merged_args(step)
                    if merged is None:
                        raise ProfileError(profile.origin, step.where, "step %s is also defined differently by %s"
                                           % (step.id, by_id[step.id].profile.name))
                    by_id[step.id].args = merged
                    continue
                by_id[step.id] = step
                steps.append(step)
    for step in steps:
        for key in ("restart_on", "reload_on", "run_on"):
            for ref in step.args.get(key) or []:
                if ref not in by_id and ref not in explicit_ids:
                    raise ProfileError(step.profile.origin, "%s.%s" % (step.where, key), "no step has the id %s" % json.dumps(ref))
    return steps


def render_step(profile, index, spec, context, values, facts):
    """The step with {{values}} filled in; a `for_each` step once per item of its list
    whose `when` holds (it may test the item's fields, like "repo.key_file")."""
    cls = STEP_KINDS[spec["kind"]]
    where = "$.steps[%d]" % index
    items = [None]
    if "for_each" in spec:
        items = substitute(spec["for_each"], context)
        if not isinstance(items, list):
            raise ProfileError(profile.origin, where + ".for_each", "expected a list parameter, got %s" % json.dumps(items))
    for name in spec.get("needs", []):
        if context.get(name) in (None, "", []):
            raise BadInput("parameter %s has no value, and the %s step of %s needs one" % (name, cls.kind, profile.name),
                           "pass --set %s=VALUE" % name)
    steps = []
    for number, item in enumerate(items):
        scope = context
        if "for_each" in spec:
            name = spec.get("as", "item")
            scope = dict(context, **{name: item})
            scope.update((name + "." + key, value) for key, value in (item.items() if isinstance(item, dict) else []))
            if "when" in spec and not condition_holds(spec["when"], values, facts, scope):
                continue
        args = {}
        for key, field in cls.schema.items():
            if key in spec:
                args[key] = spec[key] if field.literal else substitute(spec[key], scope)
                if args[key] is None and field.required:
                    name = TEMPLATE_REF.fullmatch(spec[key].strip()).group(1)
                    raise BadInput("parameter %s has no value, and the %s step of %s needs one" % (name, cls.kind, profile.name),
                                   "pass --set %s=VALUE" % name)
            elif field.default is not None:
                args[key] = json.loads(json.dumps(field.default))
        spec_for_item = dict(spec, id=spec["id"] + "#%d" % number) if "for_each" in spec and "id" in spec else spec
        steps.append(cls(profile, where if item is None else "%s(%s)" % (where, render_scalar(item)), spec_for_item, args))
    return steps


def plan_steps(run, steps):
    """[(step, changes)] for every step; reads only."""
    for step in steps:
        step.wants(run)
    run.services.prefetch(run, run.wanted_services)
    planned = []
    for step in steps:
        changes = step.check(run)
        if changes:
            run.changed.add(step.id)
        planned.append((step, changes))
    return planned


# ---------------------------------------------------------------------------
# Apply
# ---------------------------------------------------------------------------

def acquire_lock(host):
    """flock on the state directory: cloud-init and a person must not interleave."""
    import fcntl
    directory = host.path(host.state_dir)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    path = os.path.join(directory, "lock")
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError):
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StackbootError("another stackboot run (pid %s) holds %s" % (holder, path),
                             "wait for it to finish, then run again")
    handle.seek(0)
    handle.truncate()
    handle.write("%d\n" % os.getpid())
    handle.flush()
    return handle


def open_log(host):
    path = host.path(host.log_file)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path), 0o755)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    return os.fdopen(fd, "a")


class Changing:
    """`with Changing(host, "install", roles=...)`: what every command that changes the host holds
    while it does: the lock, and the log with one line saying what this run is."""

    def __init__(self, host, event, **details):
        self.host, self.event, self.details = host, event, details

    def __enter__(self):
        self.lock = acquire_lock(self.host)
        self.host.runner.log = open_log(self.host)
        line = dict(self.details, time=round(time.time(), 3), event=self.event, version=__version__)
        self.host.runner.log.write(json.dumps(line) + "\n")
        return self

    def __exit__(self, *exc):
        self.host.runner.log.close()
        self.host.runner.log = None
        self.lock.close()
        return False


def apply_steps(run, steps):
    """Converge: plan everything first (refusing conflicts), then act step by step."""
    planned = plan_steps(run, steps)
    conflicts = [(step, change) for step, changes in planned for change in changes if change.symbol == "!"]
    if conflicts:
        for step, change in conflicts:
            report_change(run.out, step, change)
        raise StackbootError("%d step(s) refused, nothing was changed: %s" % (len(conflicts), conflicts[0][1].summary),
                             "resolve what it says, then run again (--force only replaces files edited by hand)")
    if run.offline:
        missing = [problem for step, changes in planned if changes for problem in step.offline_problems(run, changes)]
        if missing:
            raise StackbootError("--offline, and %d thing(s) are missing: %s" % (len(missing), "; ".join(missing)),
                                 "bring them with a bundle (or install them), then run again")
    run.planning = False
    run.runner.allow_changes = True
    run.started = True   # past every refusal: from here on the inputs are this host's
    run.changed = set()
    watchers = {}
    for step in steps:
        for key in ("restart", "reload", "run"):
            for ref in step.args.get(key + "_on") or []:
                watchers.setdefault(ref, []).append((step.id, key))
    changed = right = 0
    for step, changes in planned:
        if run.changed:   # something changed since planning: look again just before acting
            changes = step.check(run)
        if not changes:
            right += 1
            continue
        report_step(run.out, step, changes)
        try:
            step.act(run, changes)
            run.host.cache.clear()   # commands change files behind the cache's back
            step.verify(run)
        except StackbootError as exc:
            run.state.save()
            exc.message = "%s: %s" % (step.describe(), exc.message)
            raise
        run.changed.add(step.id)
        for service_id, key in watchers.get(step.id, []) + watchers.get(step.id.split("#")[0], []) * ("#" in step.id):
            pending = run.state.data["pending"].setdefault(service_id, {})
            pending[key] = sorted(set(pending.get(key, [])) | {step.id})
        run.state.save()
        changed += 1
    return changed, right


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def report_change(out, step, change):
    out.say("%s %s: %s" % (out.paint(change.symbol, change.symbol), step.describe(), change.summary))
    if change.diff and not out.quiet:
        for line in change.diff.rstrip("\n").splitlines():
            key = line[:1] if line[:1] in "+-" and not line.startswith(("+++", "---")) else None
            out.say("    " + (out.paint(line, key) if key else line))


def report_step(out, step, changes):
    for change in changes:
        report_change(out, step, change)


def report_lines(run, profiles, steps):
    """What a user needs after an install: each step's report, then each role's summary lines."""
    lines = [line for step in steps for line in step.report(run)]
    context = dict(run.values.values, **facts_context(run.facts))
    return lines + [render_scalar(substitute(line, context)) for profile in profiles for line in profile.summary]


def planned_json(planned):
    return [{"id": step.id, "kind": step.kind, "target": step.target(), "profile": step.profile.name,
             "changes": [change.as_json() for change in changes]} for step, changes in planned]


def summary_counts(planned):
    pending = sum(1 for _, changes in planned if changes)
    return pending, len(planned) - pending


def show_value(values, name):
    if name in values.secrets and values.values.get(name) not in (None, ""):
        return "***"
    value = values.values.get(name)
    return json.dumps(value) if isinstance(value, (list, dict)) else render_scalar(value) if value is not None else "(unset)"


# ---------------------------------------------------------------------------
# Clusters: several hosts, their roles and parameters, in one JSON file
# ---------------------------------------------------------------------------

CLUSTER_KEYS = {"description", "subnet", "parameters", "nodes"}
NODE_KEYS = {"address", "roles", "parameters"}
NODE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")   # short: it names network namespaces and veths
IPV4_RE = re.compile(r"^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}$")


class Cluster:
    """Nodes with addresses, roles and parameters; `parameters` at the top apply to every node,
    a node's own override them. The roles and parameters are checked against the profiles."""

    def __init__(self, origin, data):
        self.origin, self.data = origin, data
        self.description = data.get("description", "")
        self.subnet = data.get("subnet")
        self.nodes = data["nodes"]

    def node_sets(self, library, name):
        """The node's parameters as --set items: the cluster's that its roles know, then its own."""
        known = set(declared_parameters(library.closure(self.nodes[name]["roles"]))[0])
        merged = dict((key, value) for key, value in self.data.get("parameters", {}).items() if key in known)
        merged.update(self.nodes[name].get("parameters", {}))
        return ["%s=%s" % (key, ",".join(str(v) for v in value) if isinstance(value, list) else render_scalar(value))
                for key, value in sorted(merged.items())]


def load_cluster(library, facts, where):
    """A cluster file, or the name of a built-in one (`seed`)."""
    if where in EMBEDDED_CLUSTERS and not os.path.exists(where):
        origin, text = "built-in cluster %s" % where, EMBEDDED_CLUSTERS[where]
    else:
        origin, text = where, as_text(read_bytes(where) or b"") if os.path.isfile(where) else None
        if text is None:
            raise BadInput("cluster %s: no such file or built-in cluster" % where,
                           "give a cluster JSON file (built in: %s)" % ", ".join(sorted(EMBEDDED_CLUSTERS)))
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadInput("%s: invalid JSON: %s" % (origin, exc), "fix the cluster file")

    def bad(path, message):
        return BadInput("%s: %s: %s" % (origin, path, message), "fix the cluster file")
    if not isinstance(data, dict) or set(data) - CLUSTER_KEYS:
        raise bad("$", "expected an object with %s" % ", ".join(sorted(CLUSTER_KEYS)))
    nodes = data.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise bad("$.nodes", "expected an object of node name -> {address, roles, parameters}")
    if not isinstance(data.get("parameters", {}), dict):
        raise bad("$.parameters", "expected an object of parameter -> value")
    addresses = {}
    for name, node in nodes.items():
        where_node = "$.nodes." + name
        if not NODE_NAME_RE.match(name):
            raise bad(where_node, "node names are 1-12 lower-case letters, digits and -, starting with a letter")
        if not isinstance(node, dict) or set(node) - NODE_KEYS:
            raise bad(where_node, "expected an object with %s" % ", ".join(sorted(NODE_KEYS)))
        if not isinstance(node.get("address"), str) or not IPV4_RE.match(node["address"]):
            raise bad(where_node + ".address", "expected an IPv4 address")
        if node["address"] in addresses:
            raise bad(where_node + ".address", "%s is also %s's address" % (node["address"], addresses[node["address"]]))
        addresses[node["address"]] = name
        roles = node.get("roles")
        if not isinstance(roles, list) or not roles or not all(isinstance(role, str) for role in roles):
            raise bad(where_node + ".roles", "expected a list of roles")
        for role in roles:
            if role not in library.profiles:
                raise bad(where_node + ".roles", "unknown role %s (known: %s)" % (json.dumps(role), ", ".join(sorted(library.profiles))))
        if not isinstance(node.get("parameters", {}), dict):
            raise bad(where_node + ".parameters", "expected an object of parameter -> value")
    cluster = Cluster(origin, data)
    for name in nodes:   # every value is checked by the roles that will use it, as --set would be
        profiles = library.closure(nodes[name]["roles"])
        try:
            resolve_parameters(library, profiles, facts, cluster.node_sets(library, name), env={})
        except BadInput as exc:
            raise bad("$.nodes." + name, exc.message)
    return cluster


# ---------------------------------------------------------------------------
# Lab: a cluster on this one Linux host, each node in its own network namespace
# ---------------------------------------------------------------------------

LAB_BASE = "/var/lib/stackboot-lab"   # not under STATE_DIR (0700): the daemons' users must reach their dirs


class LabNode:
    """One node of a lab: a network namespace on the lab's bridge, and a directory of its own.

    The profiles' `lab` overlay moves the node's config, data and mount point into that
    directory; its state and log live there too. Every command of the node runs inside its
    namespace, so daemons listen on the node's address and clients connect from it, while
    mounts stay visible on the host (nsenter --net leaves the mount namespace alone).
    """

    def __init__(self, lab, name, spec, number):
        self.lab, self.name = lab, name
        self.address, self.roles = spec["address"], spec["roles"]
        self.netns = "%s-%s" % (lab.prefix, name)
        self.port = "n%d" % number   # its end of the veth pair, on the bridge
        self.dir = os.path.join(lab.dir, "nodes", name)
        self.host = Host("/", Runner("/", prefix=["nsenter", "--net=/run/netns/" + self.netns]))
        self.host.state_dir = os.path.join(self.dir, "state")
        self.host.log_file = os.path.join(self.dir, "stackboot.log")
        # No init system of its own: services run in direct mode, as in a container.
        self.host.facts = self.facts = dict(lab.session.facts, init="none", lab=self.dir, address=self.address)

    def steps(self):
        """(profiles, values, steps) of the node's roles; the cluster file is their only input."""
        library = self.lab.session.library
        profiles = library.closure(self.roles)
        check_platforms(profiles, self.facts)
        values = resolve_parameters(library, profiles, self.facts, self.lab.cluster.node_sets(library, self.name), env={})
        self.host.runner.secrets = self.lab.session.out.secrets = values.secret_texts()
        return profiles, values, build_steps(library, self.roles, values, self.facts)

    def run(self, values, state=None):
        return Run(self.host, self.facts, values, self.lab.session.out, state=state)


class Lab:
    """A cluster file brought up on this host: `up`, `status`, `down` (data stays), `destroy`.

    The nodes hang off a bridge in a namespace of the lab's own, so the host's network is
    untouched but for one veth (`sb-NAME`) that gives the host an address in the lab's
    subnet: the GUI and every daemon are reachable from here. Software (packages, builds)
    is installed once on the host, since the namespaces have no route out; each node is
    then installed by the same steps as a real host, in file order, and stopped in reverse.
    """

    def __init__(self, session, name, directory, cluster):
        self.session, self.name, self.dir, self.cluster = session, name, os.path.abspath(directory), cluster
        self.prefix = "sb-" + self.name
        self.interface = self.prefix[:15]
        self.switch = self.prefix + "-switch"
        self.nodes = [LabNode(self, name, spec, number + 1) for number, (name, spec) in enumerate(cluster.nodes.items())]
        self.network, self.host_address = lab_network(cluster)

    @staticmethod
    def open(session, where):
        """The lab in `where` (a directory with lab.json), or the only one under LAB_BASE."""
        if where is None:
            names = sorted(name for name in (os.listdir(LAB_BASE) if os.path.isdir(LAB_BASE) else [])
                           if os.path.exists(os.path.join(LAB_BASE, name, "lab.json")))
            if len(names) != 1:
                raise BadInput("%s under %s" % ("several labs (%s)" % ", ".join(names) if names else "no lab", LAB_BASE),
                               "name one: stackboot lab status NAME" if names else "start one with `stackboot lab up`")
            where = os.path.join(LAB_BASE, names[0])
        elif os.sep not in where:   # a lab's name, or the cluster file it was brought up from
            where = os.path.join(LAB_BASE, where[:-5] if where.endswith(".json") else where)
        data = read_bytes(os.path.join(where, "lab.json"))
        if data is None:
            raise BadInput("%s: no lab there (no lab.json)" % where, "start one with `stackboot lab up`")
        record = json.loads(as_text(data))
        lab = Lab(session, record["name"], where, Cluster(record["origin"], record["cluster"]))
        lab.recorded_status = record["status"]
        return lab

    def save(self, status):
        record = {"name": self.name, "origin": self.cluster.origin, "cluster": self.cluster.data, "status": status,
                  "network": str(self.network), "host_address": self.host_address}
        atomic_write(os.path.join(self.dir, "lab.json"), (json.dumps(record, indent=1) + "\n").encode(), 0o644)

    def up(self):
        out, host = self.session.out, self.session.host
        check_lab_dir(self.dir)
        clash = routes_overlapping(self.network, self.interface)
        if clash:
            raise BadInput("this host already has a route into the lab's subnet %s: %s" % (self.network, ", ".join(clash)),
                           "give the cluster file another subnet and node addresses")
        record = json.loads(as_text(read_bytes(os.path.join(self.dir, "lab.json")) or b"{}"))
        if record and record["cluster"] != self.cluster.data and record["status"] == "up":
            raise BadInput("lab %s is up with another cluster definition" % self.name,
                           "`stackboot lab down %s` first, then up with the new one" % self.name)
        host_state = State(host)
        with Changing(host, "lab up", lab=self.name):
            host.runner.allow_changes = True
            if not os.path.isdir(self.dir):
                os.makedirs(self.dir, 0o755)
            self.save("up")
            self.connect()
            total = 0
            for node in self.nodes:
                out.say("%s (%s): %s" % (node.name, node.address, " ".join(node.roles)))
                profiles, values, steps = node.steps()
                software = Run(host, node.facts, values, out, offline=self.session.args.offline, state=host_state)
                software.bundle = self.session.bundle
                changed, _ = apply_steps(software, [step for step in steps if step.machine_wide])
                host_state.save()
                run = node.run(values, State(node.host))
                run.changed |= software.changed   # a new build restarts the node's daemons
                own = [step for step in steps if not step.machine_wide]
                with Changing(node.host, "install", roles=node.roles, lab=self.name):
                    node_changed, right = apply_steps(run, own)
                    run.state.save()
                for line in report_lines(run, profiles, own):
                    out.say("  " + line)
                total += changed + node_changed
            out.say("Lab %s is up: %d nodes on %s, this host is %s (%s); %d changed."
                    % (self.name, len(self.nodes), self.network, self.host_address, self.interface, total))
        return EXIT_OK

    def connect(self):
        """The bridge, the host's veth and each node's namespace: whatever is missing of them."""
        ip = lambda *argv: self.session.host.runner.run(["ip"] + list(argv), change=True)
        plen = self.network.prefixlen
        if not os.path.exists("/run/netns/" + self.switch):
            ip("netns", "add", self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
        if not os.path.exists("/sys/class/net/" + self.interface):
            ip("link", "add", self.interface, "type", "veth", "peer", "name", "uplink", "netns", self.switch)
            ip("-n", self.switch, "link", "set", "uplink", "master", "br0", "up")
            ip("addr", "add", "%s/%d" % (self.host_address, plen), "dev", self.interface)
            ip("link", "set", self.interface, "up")
        for node in self.nodes:
            if os.path.exists("/run/netns/" + node.netns):
                continue
            ip("netns", "add", node.netns)
            ip("link", "add", "eth0", "netns", node.netns, "type", "veth", "peer", "name", node.port, "netns", self.switch)
            ip("-n", self.switch, "link", "set", node.port, "master", "br0", "up")
            ip("-n", node.netns, "addr", "add", "%s/%d" % (node.address, plen), "dev", "eth0")
            ip("-n", node.netns, "link", "set", "eth0", "up")
            ip("-n", node.netns, "link", "set", "lo", "up")

    def down(self, then_destroy=False):
        out, host = self.session.out, self.session.host
        with Changing(host, "lab destroy" if then_destroy else "lab down", lab=self.name):
            host.runner.allow_changes = True
            stopped = ended = 0
            for node in reversed(self.nodes):
                if os.path.exists("/run/netns/" + node.netns):
                    _, values, steps = node.steps()
                    run = node.run(values, State(node.host))
                    run.planning, run.runner.allow_changes = False, True
                    out.say("%s (%s): %s" % (node.name, node.address, " ".join(node.roles)))
                    for step in reversed(steps):
                        changes = [] if step.machine_wide else step.stopping(run)
                        if changes:
                            report_step(out, step, changes)
                            step.remove(run, changes)
                            stopped += 1
                    ended += self.end_leftovers(node)
                    host.runner.run(["ip", "netns", "del", node.netns], change=True)
            if os.path.exists("/sys/class/net/" + self.interface):
                host.runner.run(["ip", "link", "del", self.interface], change=True)
            if os.path.exists("/run/netns/" + self.switch):
                host.runner.run(["ip", "netns", "del", self.switch], change=True)
            if then_destroy:
                import shutil
                shutil.rmtree(self.dir)
                if os.path.dirname(self.dir) == LAB_BASE and not os.listdir(LAB_BASE):
                    os.rmdir(LAB_BASE)
                out.say("Lab %s destroyed: %d stopped, %d leftover process(es) ended; %s removed." % (
                    self.name, stopped, ended, self.dir))
                out.say("  kept on this host: the software its nodes used (packages, builds), as `stackboot install` keeps it")
            else:
                self.save("down")
                out.say("Lab %s is down: %d stopped, %d leftover process(es) ended; data kept in %s."
                        % (self.name, stopped, ended, self.dir))
        return EXIT_OK

    def end_leftovers(self, node):
        """Processes still in the node's namespace once its services stopped are the lab's own:
        a FUSE client exits by itself soon after its unmount; what is left gets TERM, then KILL."""
        import signal
        runner = self.session.host.runner
        left, ended = [], 0
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                self.session.out.say("- %s: end leftover process %d (%s)" % (node.name, pid, process_name(pid)))
                try:
                    os.kill(pid, sig)
                    ended += sig == signal.SIGTERM
                except OSError:
                    pass
            deadline = time.time() + 10
            while True:
                left = [int(pid) for pid in runner.run(["ip", "netns", "pids", node.netns], check=False).out.split()]
                if not left or time.time() > deadline:
                    break
                time.sleep(0.2)
            if not left:
                break
        if left:
            raise StackbootError("%s: processes %s do not end" % (node.name, " ".join(map(str, left))),
                                 "end them by hand, then run `stackboot lab down %s` again" % self.name)
        return ended

    def status(self):
        """Every node, what runs on it, and what the cluster itself says about the node's address."""
        out = self.session.out
        out.say("Lab %s: %s, %d nodes on %s, this host is %s (%s)" % (
            self.name, self.recorded_status, len(self.nodes), self.network, self.host_address, self.interface))
        views = []
        rows = []
        for node in self.nodes:
            present = os.path.exists("/run/netns/" + node.netns)
            profiles, values, steps = node.steps()
            run = node.run(values, State(node.host))
            things = [thing for thing in (step.liveness(run) for step in steps) if thing] if present else []
            rows.append((node, things if present else ["no namespace (lab down)"]))
            if present:
                context = dict(values.values, **facts_context(node.facts))
                views += [(node, substitute(profile.status, context)) for profile in profiles if profile.status]
        width = max(len(node.name) for node in self.nodes)
        reported = {}
        for node, argv in views:   # a role's own account of the cluster (MooseFS: mfscli)
            result = node.host.runner.run(argv, check=False)
            for line in result.out.splitlines():
                for other in self.nodes:
                    if re.search(r"(^|[^0-9.])%s([^0-9.]|$)" % re.escape(other.address), line):
                        reported.setdefault(other.name, []).append("%s says: %s" % (node.name, " ".join(line.split())))
        for node, things in rows:
            out.say("  %-*s  %-15s %-22s %s" % (width, node.name, node.address, " ".join(node.roles), "; ".join(things)))
            for line in reported.get(node.name, []):
                out.say("  %-*s    %s" % (width, "", line))
        return EXIT_OK


def lab_network(cluster):
    """(the lab's subnet, the host's address in it): the cluster's `subnet`, or the first
    node's /24; the host takes the first address no node has."""
    import ipaddress
    addresses = [spec["address"] for spec in cluster.nodes.values()]
    try:
        network = ipaddress.ip_network(cluster.subnet or addresses[0] + "/24", strict=False)
    except ValueError as exc:
        raise BadInput("%s: subnet: %s" % (cluster.origin, exc), "give an IPv4 subnet like 10.42.0.0/24")
    for name, spec in cluster.nodes.items():
        if ipaddress.ip_address(spec["address"]) not in network:
            raise BadInput("%s: node %s: %s is outside the subnet %s" % (cluster.origin, name, spec["address"], network),
                           "give it an address in the subnet, or change the subnet")
    free = [str(address) for address in network.hosts() if str(address) not in addresses]
    if not free:
        raise BadInput("%s: subnet %s has no address left for this host" % (cluster.origin, network), "use a larger subnet")
    return network, free[0]


def routes_overlapping(network, own_interface):
    """Routes of this host (read from /proc, no `ip`) that already reach into `network`."""
    import ipaddress
    import socket
    import struct
    found = []
    for line in (as_text(read_bytes("/proc/net/route") or b"").splitlines())[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[0] == own_interface or int(fields[7], 16) == 0:
            continue
        destination, mask = (socket.inet_ntoa(struct.pack("<L", int(fields[index], 16))) for index in (1, 7))
        route = ipaddress.ip_network("%s/%s" % (destination, mask), strict=False)
        if route.overlaps(network):
            found.append("%s via %s" % (route, fields[0]))
    return found


def check_lab_dir(directory):
    """MooseFS daemons drop to their own user: every directory above the lab must let them through."""
    path = os.path.dirname(os.path.abspath(directory))
    while True:
        st = os.stat(path) if os.path.exists(path) else None
        if st is not None and not st.st_mode & 0o001:
            raise BadInput("%s is mode %04o: the nodes' daemons, which run as their own user, cannot reach %s"
                           % (path, st.st_mode & 0o7777, directory), "put the lab elsewhere (--dir) or chmod o+x %s" % path)
        if path == os.path.dirname(path):
            return
        path = os.path.dirname(path)


def process_name(pid):
    return as_text(read_bytes("/proc/%d/comm" % pid) or b"?").strip()


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

class Session:
    """What every command needs: output, the host under --root, its facts, the profiles."""

    def __init__(self, args, runner=None, uname=None):
        self.args = args
        self.out = Output(quiet=args.quiet, verbose=args.verbose)
        root = os.path.abspath(args.root or "/")
        if not os.path.isdir(root):
            raise BadInput("--root %s: no such directory" % root)
        self.host = Host(root, runner or Runner(root))
        self.host.facts = self.facts = detect_facts(self.host, uname)
        self.library = load_library(args.profiles or [], self.host)
        self.bundle = Bundle.here()
        if self.bundle:   # a bundle is for hosts without network: it never reaches for one
            args.offline = True

    def site(self):
        path = self.args.site or SITE_FILE
        data = self.host.read(path) if not self.args.site else read_bytes(path)
        if data is None:
            if self.args.site:
                raise BadInput("--site %s: no such file" % path)
            return None
        try:
            parsed = json.loads(as_text(data))
        except ValueError as exc:
            raise BadInput("%s: invalid JSON: %s" % (path, exc), "fix the site file")
        if not isinstance(parsed, dict) or set(parsed) - {"parameters"} or not isinstance(parsed.get("parameters", {}), dict):
            raise BadInput("%s: expected {\"parameters\": {NAME: VALUE, ...}}" % path, "fix the site file")
        return path, parsed.get("parameters", {})

    def resolve(self, roles, remembered=None):
        profiles = self.library.closure(roles)
        check_platforms(profiles, self.facts)   # before any parameter: a Linux-only role fails at once
        values = resolve_parameters(self.library, profiles, self.facts, self.args.set or [], self.site(),
                                    remembered=remembered, bundled=self.bundle.manifest["parameters"] if self.bundle else None)
        self.host.runner.secrets = self.out.secrets = values.secret_texts()
        return profiles, values

    def remembered_inputs(self, state, roles):
        inputs = {}
        for role in roles:
            inputs.update(state.data["roles"].get(role, {}).get("inputs", {}))
        return inputs

    def prepare(self, roles, remembered_from=(), state=None):
        """Steps and a Run for `roles`, with the inputs an earlier install of them (or of the
        roles in remembered_from, first) remembered."""
        for role in roles:
            self.library.get(role)
        state = state or State(self.host)
        profiles, values = self.resolve(roles, self.remembered_inputs(state, list(remembered_from) + list(roles)))
        steps = build_steps(self.library, roles, values, self.facts)
        run = Run(self.host, self.facts, values, self.out, force=getattr(self.args, "force", False),
                  offline=self.args.offline, state=state)
        run.repair = getattr(self.args, "repair", False)
        run.bundle = self.bundle
        return profiles, values, steps, run


def cmd_facts(session):
    if session.args.json:
        session.out.say(json.dumps(session.facts, indent=2, sort_keys=True))
        return EXIT_OK
    for key in ("platform", "distro", "id_like", "version", "codename", "pretty_name", "init", "package_manager",
                "arch", "cores", "python"):
        value = session.facts[key]
        session.out.say("%-16s %s" % (key, " ".join(value) if isinstance(value, list) else value))
    return EXIT_OK


def cmd_list(session):
    profiles = sorted(session.library.profiles.values(), key=lambda profile: profile.name)
    if session.args.json:
        session.out.say(json.dumps([{"name": p.name, "description": p.description, "origin": p.origin}
                                    for p in profiles], indent=2))
        return EXIT_OK
    width = max([len(p.name) for p in profiles] + [4])
    for profile in profiles:
        session.out.say("%-*s  %s" % (width, profile.name, profile.description))
    return EXIT_OK


def cmd_show(session):
    profiles, values = session.resolve([session.args.role], session.remembered_inputs(State(session.host), [session.args.role]))
    if session.args.json:
        session.out.say(json.dumps({"role": session.args.role, "requires": [p.name for p in profiles[:-1]],
                                    "parameters": dict((name, {
                                        "value": "***" if name in values.secrets and values.values[name] else values.values[name],
                                        "source": values.sources[name], "type": values.decls[name].get("type", "string"),
                                        "help": values.decls[name].get("help", "")}) for name in sorted(values.values))},
                                   indent=2, sort_keys=True))
        return EXIT_OK
    role = profiles[-1]
    session.out.say("%s: %s" % (role.name, role.description))
    if role.requires:
        session.out.say("requires: %s" % ", ".join(role.requires))
    session.out.say("")
    width = max([len(name) for name in values.values] + [4])
    for name in sorted(values.values):
        decl = values.decls[name]
        session.out.say("%-*s = %s  [%s]" % (width, name, show_value(values, name), values.sources[name]))
        if decl.get("help") and not session.out.quiet:
            session.out.say("%-*s   %s" % (width, "", decl["help"]))
    return EXIT_OK


def print_plan(session, planned, verb):
    pending, right = summary_counts(planned)
    if session.args.json:
        session.out.say(json.dumps({"steps": planned_json(planned), "to_change": pending, "already_right": right},
                                   indent=2))
        return pending
    for step, changes in planned:
        if changes:
            report_step(session.out, step, changes)
        elif session.out.verbose:
            session.out.say("  %s: already right" % step.describe())
    session.out.say("%s: %d to change, %d already right." % (verb, pending, right))
    return pending


def cmd_plan(session):
    profiles, values, steps, run = session.prepare(session.args.roles)
    pending = print_plan(session, plan_steps(run, steps), "Plan")
    return EXIT_PENDING if pending and session.args.detailed_exitcode else EXIT_OK


def cmd_install(session):
    roles = session.args.roles
    profiles, values, steps, run = session.prepare(roles)
    with Changing(session.host, "install", roles=roles):
        try:
            changed, right = apply_steps(run, steps)
        finally:
            if run.started:   # a refused run (conflict, --offline) leaves the host as it was, state too
                remember_inputs(run.state, session.library, roles, values)
                run.state.save()
        for line in report_lines(run, profiles, steps):
            session.out.say(line)
        session.out.say("Install: %d changed, %d already right." % (changed, right))
        return EXIT_OK


def cmd_lab(session):
    args, host = session.args, session.host
    if host.root != "/":
        raise BadInput("lab works on this host itself, not under --root", "drop --root")
    if session.facts["platform"] != "linux":
        raise BadInput("lab needs Linux network namespaces; this host is %s" % session.facts["pretty_name"], "run it on Linux")
    if os.geteuid() != 0:
        raise BadInput("lab needs root: it makes network namespaces and mounts", "run it as root")
    for tool, package in (("ip", "iproute2"), ("nsenter", "util-linux")):
        if not host.which(tool):
            raise BadInput("lab needs %s, which is not installed" % tool, "install %s" % package)
    if args.action != "up":
        lab = Lab.open(session, args.dir or args.cluster)
        return lab.status() if args.action == "status" else lab.down(then_destroy=args.action == "destroy")
    where = args.cluster or "seed"
    cluster = load_cluster(session.library, session.facts, where)
    name = os.path.basename(where)
    name = name[:-5] if name.endswith(".json") else name
    if not NODE_NAME_RE.match(name):
        raise BadInput("lab name %s (from %s) is not 1-12 lower-case letters, digits and -" % (json.dumps(name), where),
                       "name the cluster file like mylab.json: the name prefixes network namespaces and a veth")
    return Lab(session, name, args.dir or os.path.join(LAB_BASE, name), cluster).up()


USER_SOURCES = ("--set", "environment", "site file", "remembered", "bundle")


def cmd_recover(session):
    """Rescue a role on this host (or under --root), the way its profile's `recover` says: stop what
    it replaces (a metalogger being promoted), give its data back to its user, then install it with
    the remembered inputs; the role's own steps do the rest (MooseFS metadata is restored by
    mfsmaster's own restore, never replaced). Nothing is removed."""
    role = session.args.role
    profile = session.library.get(role)
    if not profile.recover:
        raise BadInput("role %s has no recovery" % role, "roles that have one: %s" % ", ".join(
            sorted(name for name, p in session.library.profiles.items() if p.recover)))
    out, host = session.out, session.host
    state = State(host)
    replaced = [name for name in profile.recover.get("replaces", []) if name in state.data["roles"]]
    with Changing(host, "recover", role=role, replaces=replaced):
        profiles, values, steps, run = session.prepare([role], remembered_from=replaced, state=state)
        context = dict(values.values)
        import glob
        evidence = []
        for pattern in profile.recover.get("evidence", []):
            evidence += glob.glob(host.path(render_scalar(substitute(pattern, context))))
        if profile.recover.get("evidence") and not evidence:
            raise StackbootError("nothing to recover %s from: no %s" % (role, ", ".join(
                render_scalar(substitute(pattern, context)) for pattern in profile.recover["evidence"])),
                "look for backups elsewhere (another metalogger?) and copy them here; never start empty over a lost cluster")
        inside = len(host.root.rstrip("/"))
        for path in sorted(evidence, key=lambda p: os.stat(p).st_mtime, reverse=True):
            st = os.stat(path)
            out.say("  found %s (%d bytes, %s)" % (path[inside:], st.st_size, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))))
        run.runner.allow_changes = True
        for name in replaced:   # promotion: the replaced role's daemons stop writing into the data first
            _, _, old_steps, old_run = session.prepare([name], state=state)
            old_run.planning = False
            for step in old_steps:
                if step.kind == "service":   # what uninstall would do to it: stop, disable
                    changes, _ = step.removal(old_run, False)
                    for change in changes:
                        out.say("- service %s: %s (%s becomes %s)" % (step.args["name"], change.summary, name, role))
                    step.remove(old_run, changes)
            del state.data["roles"][name]
            state.save()
        for item in profile.recover.get("own", []):
            path, owner, group = (render_scalar(substitute(item[key], context)) for key in ("path", "owner", "group"))
            uid, gid = host.uid(owner), host.gid(group)
            for name in sorted(os.listdir(host.path(path))) if uid is not None and os.path.isdir(host.path(path)) else []:
                full = os.path.join(host.path(path), name)
                st = os.lstat(full)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.lchown(full, uid, gid)
                    out.say("~ owner of %s/%s -> %s:%s" % (path, name, owner, group))
        run.runner.allow_changes = False
        try:
            changed, right = apply_steps(run, steps)
        finally:
            if run.started:
                remember_inputs(state, session.library, [role], values)
                state.save()
        out.say("Recover: %d changed, %d already right." % (changed, right))
        return EXIT_OK


def with_sets(library, items):
    """--with NAME=VERSION: the parameter that the version of the build named NAME comes from."""
    sets = []
    for item in items or []:
        name, sep, version = item.partition("=")
        params = set()
        for profile in library.profiles.values():
            for spec in profile.steps:
                if spec.get("kind") == "build" and spec.get("name") == name and is_whole_ref(spec.get("version", "")):
                    params.add(TEMPLATE_REF.fullmatch(spec["version"].strip()).group(1))
        if not sep or len(params) != 1:
            raise BadInput("--with %s: expected NAME=VERSION for a build the roles know" % item,
                           "known builds: %s" % ", ".join(sorted(set(spec.get("name") for p in library.profiles.values()
                                                                     for spec in p.steps if spec.get("kind") == "build"))))
        sets.append("%s=%s" % (params.pop(), version))
    return sets


def cmd_bundle(session):
    """A zipapp of this stackboot plus every file the roles download, each verified by its sha256,
    and the values it was made with; inside it, stackboot runs offline."""
    args, out, library = session.args, session.out, session.library
    sets = (args.set or []) + with_sets(library, args.with_)
    roles = args.roles or sorted(name for name, profile in library.profiles.items()
                                 if any(spec.get("kind") in ("download", "build") for spec in profile.steps))
    artifacts = {}   # sha256 -> (url, roles)
    for role in roles:
        profiles = library.closure([role])
        known = set(declared_parameters(profiles)[0])
        mine = [item for item in sets if item.partition("=")[0] in known]
        try:
            check_platforms(profiles, session.facts)
            values = resolve_parameters(library, profiles, session.facts, mine, env={})
            steps = build_steps(library, [role], values, session.facts)
        except BadInput as exc:
            if args.roles:
                raise
            out.info("  skipped %s: %s" % (role, exc.message))
            continue
        for step in steps:
            if step.kind == "download":
                sha = step.args["sha256"].lower()
                artifacts.setdefault(sha, (step.args["url"], step.dest(), []))[2].append(role)
    if not artifacts:
        raise BadInput("the roles %s download nothing: there is nothing to bundle" % ", ".join(roles),
                       "name roles that build from source or fetch files")
    import shutil
    import tempfile
    import zipapp
    work = tempfile.mkdtemp(prefix="stackboot-bundle-")
    try:
        os.makedirs(os.path.join(work, "artifacts"))
        run = Run(session.host, session.facts, Values(), out)
        for sha, (url, dest, users) in sorted(artifacts.items()):
            part = os.path.join(work, "artifacts", sha)
            cached = session.host.path(dest)
            if os.path.isfile(cached) and sha256_file(cached) == sha:
                shutil.copyfile(cached, part)
            else:
                fetch(run, url, part)
            digest = sha256_file(part)
            if digest != sha:
                raise StackbootError("%s: sha256 is %s, expected %s; no bundle was written" % (url, digest, sha),
                                     "check the URL and the sha256 you gave")
            out.say("+ %s (sha256 %s…, %d KiB) for %s" % (url, sha[:12], os.path.getsize(part) // 1024, ", ".join(users)))
        with open(os.path.join(work, "__main__.py"), "wb") as handle:
            handle.write(own_source())
        manifest = {"stackboot": __version__, "parameters": dict(item.partition("=")[::2] for item in sets),
                    "artifacts": dict((sha, url) for sha, (url, _, _) in artifacts.items())}
        with open(os.path.join(work, "bundle.json"), "w") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
        temp = args.output + TEMP_MARK + "pyz"
        zipapp.create_archive(work, temp, interpreter="/usr/bin/env python3")
        os.rename(temp, args.output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.say("Bundle: %s, %d file(s), %d KiB; it runs offline: python3 %s install ROLE" % (
        args.output, len(artifacts), os.path.getsize(args.output) // 1024, os.path.basename(args.output)))
    return EXIT_OK


def cmd_uninstall(session):
    """Undo what stackboot did for these roles, and only that: services stopped and disabled,
    files it wrote that nobody edited since, the files a build installed, client mounts.
    Packages, users, stores and data stay (--purge-data, after a yes, deletes the data and the
    stores stackboot made, where they hold nothing else)."""
    roles, out, host = session.args.roles, session.out, session.host
    state = State(host)
    missing = [role for role in roles if role not in state.data["roles"]]
    if missing:
        raise BadInput("%s not installed here (installed: %s)" % (", ".join(missing), ", ".join(sorted(state.data["roles"])) or "none"),
                       "uninstall only what `stackboot install` put here")
    profiles, values, steps, run = session.prepare(roles, state=state)
    remaining = sorted(set(state.data["roles"]) - set(roles))
    shared = set()
    if remaining:   # what the other installed roles still use stays (the shared build, the user...)
        shared = set(step.id for step in session.prepare(remaining, state=state)[2])
    purge = session.args.purge_data
    planned, kept = [], []
    for step in reversed(steps):
        if step.id in shared:
            continue
        changes, notes = step.removal(run, purge)
        kept += notes
        if changes:
            planned.append((step, changes))
    if purge and any(change.action == "purge" for _, changes in planned for change in changes) and not session.args.yes:
        if not sys.stdin.isatty():
            raise BadInput("--purge-data deletes data and nobody is here to confirm it", "add --yes")
        for step, changes in planned:
            report_step(out, step, changes)
        if input("Delete this data for good? [y/N] ").strip().lower() not in ("y", "yes"):
            raise StackbootError("not confirmed; nothing was changed")
    with Changing(host, "uninstall", roles=roles, purge=purge):
        run.planning = False
        run.runner.allow_changes = True
        for step, changes in planned:
            report_step(out, step, changes)
            step.remove(run, changes)
            state.save()
        for role in roles:
            del state.data["roles"][role]
        state.save()
        for note in kept:
            out.say("  kept %s" % note)
        if shared:
            out.say("  kept what %s still use" % ", ".join(remaining))
        out.say("Uninstall: %d removed, %d kept." % (len(planned), len(kept)))
        return EXIT_OK


def remember_inputs(state, library, roles, values):
    """Keep what the user chose (not defaults), so a repair run needs no flags."""
    for role in roles:
        names = set()
        for profile in library.closure([role]):
            names |= set(profile.parameters)
        inputs = dict((name, values.values[name]) for name in sorted(names)
                      if values.sources.get(name, "").startswith(USER_SOURCES))
        state.data["roles"][role] = {"inputs": inputs, "installed": time.strftime("%Y-%m-%dT%H:%M:%S")}


def cmd_check(session):
    state = State(session.host)
    roles = session.args.roles or sorted(state.data["roles"])
    if not roles:
        raise BadInput("nothing has been installed on this host yet", "run `stackboot install ROLE` first")
    profiles, values, steps, run = session.prepare(roles)
    planned = plan_steps(run, steps)
    pending = print_plan(session, planned, "Check")
    return EXIT_PENDING if pending else EXIT_OK


def sync_tree(source, dest):
    """Make dest hold exactly what source holds (deletions included); counts of new, changed, removed.
    Files count as the same when size and mtime match, as rsync's quick check does."""
    import shutil
    counts = {"new": 0, "changed": 0, "removed": 0}
    wanted = set(os.listdir(source))
    for name in sorted(set(os.listdir(dest)) - wanted):
        target = os.path.join(dest, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)
        counts["removed"] += 1
    for name in sorted(wanted):
        src, target = os.path.join(source, name), os.path.join(dest, name)
        st = os.lstat(src)
        have = os.lstat(target) if os.path.lexists(target) else None
        import stat as stat_module
        same_kind = have is not None and stat_module.S_IFMT(have.st_mode) == stat_module.S_IFMT(st.st_mode)
        if have is not None and not same_kind:
            shutil.rmtree(target) if stat_module.S_ISDIR(have.st_mode) else os.unlink(target)
        if stat_module.S_ISDIR(st.st_mode):
            if not same_kind:
                os.mkdir(target)
                counts["new" if have is None else "changed"] += 1
            os.chmod(target, st.st_mode & 0o7777)
            for key, value in sync_tree(src, target).items():
                counts[key] += value
        elif stat_module.S_ISLNK(st.st_mode):
            if not same_kind or os.readlink(target) != os.readlink(src):
                if same_kind:
                    os.unlink(target)
                os.symlink(os.readlink(src), target)
                counts["new" if have is None else "changed"] += 1
        elif not same_kind or (have.st_size, int(have.st_mtime)) != (st.st_size, int(st.st_mtime)):
            shutil.copy2(src, target)
            counts["new" if have is None else "changed"] += 1
        elif (have.st_mode & 0o7777) != (st.st_mode & 0o7777):
            os.chmod(target, st.st_mode & 0o7777)
            counts["changed"] += 1
    return counts


def cmd_cvmfs(session):
    """cvmfs publish REPO DIR: one transaction, never left open: open, sync, publish, or abort."""
    args, host, out = session.args, session.host, session.out
    try:
        name = type_fqrn(args.repository, {})
    except ValueError as exc:
        raise BadInput("cvmfs publish: %s" % exc, "give the repository's FQRN")
    source = os.path.abspath(args.directory)
    if not os.path.isdir(source):
        raise BadInput("%s: no such directory" % args.directory, "give the directory whose content the repository should hold")
    if not host.exists("%s/%s/server.conf" % (CvmfsRepositoryStep.CONFIG, name)):
        raise BadInput("no CVMFS repository %s on this host" % name, "install the cvmfs-server role with it first")
    spool = "%s/%s" % (CvmfsRepositoryStep.SPOOL, name)
    busy = [mark for mark in CvmfsRepositoryStep.TRANSACTION_MARKS if host.exists(spool + "/" + mark)]
    busy_fix = "wait for the other publish to finish; if it is dead, `cvmfs_server abort -f %s`" % name
    if busy:
        raise StackbootError("%s already has an open transaction (%s/%s); nothing was changed" % (name, spool, busy[0]), busy_fix)
    with Changing(host, "cvmfs publish", repository=name, source=source):
        return publish_transaction(host, out, args, name, source, spool, busy_fix)


def publish_transaction(host, out, args, name, source, spool, busy_fix):
    """Open, sync, publish; whatever fails (an interrupt too) aborts the transaction it opened."""
    runner = host.runner
    runner.allow_changes = True
    # ours: the transaction is open and ours. maybe: an interrupt hit while it was being opened.
    ours = maybe = False
    try:
        maybe = True
        result = runner.run(["cvmfs_server", "transaction", "-t", str(args.timeout), name], change=True, check=False)
        maybe = False
        if result.rc != 0:   # 17 is somebody else's transaction: never abort that
            if result.rc == 17:
                raise StackbootError("%s already has an open transaction; nothing was changed" % name, busy_fix)
            raise CommandFailed(result, "see cvmfs_server's message")
        ours = True
        out.say("+ transaction opened on %s" % name)
        counts = sync_tree(source, host.path("/cvmfs/" + name))
        out.say("~ synced %s into /cvmfs/%s: %d new, %d changed, %d removed" % (
            source, name, counts["new"], counts["changed"], counts["removed"]))
        argv = ["cvmfs_server", "publish"] + (["-a", args.tag] if args.tag else []) + \
               (["-m", args.message] if args.message else []) + [name]
        runner.run(argv, change=True)
        ours = False
        out.say("+ published %s%s" % (name, " as tag " + args.tag if args.tag else ""))
        return EXIT_OK
    finally:
        if ours or maybe and any(host.exists(spool + "/" + mark) for mark in CvmfsRepositoryStep.TRANSACTION_MARKS):
            # anything went wrong, even an interrupt: drop the transaction, never leave it open
            aborted = runner.run(["cvmfs_server", "abort", "-f", name], change=True, check=False)
            out.say("- transaction on %s aborted%s" % (name, "" if aborted.rc == 0 else
                                                         " FAILED (exit %d): run `cvmfs_server abort -f %s`" % (aborted.rc, name)))


def own_source():
    """stackboot's own text, to carry it to another host: from its file, or from inside its zipapp."""
    path = globals().get("__file__") or ""
    if os.path.isfile(path):
        return read_bytes(path)
    archive, sep, member = path.rpartition(".pyz" + os.sep)
    if sep and os.path.isfile(archive + ".pyz"):
        import zipfile
        with zipfile.ZipFile(archive + ".pyz") as bundle:
            return bundle.read(member)
    raise BadInput("stackboot's own file is not at hand here (it was piped in)",
                   "run cloud-init from stackboot.py or the pyz")


CLOUD_INIT_LIMIT = 16384   # EC2's user-data limit, the smallest of the common clouds
STACKBOOT_BIN = "/usr/local/sbin/stackboot"
# Runs on the new host when the user-data fetches stackboot instead of carrying it: nothing is
# installed unless the sha256 matches, and the file appears whole (rename) or not at all.
FETCH_PROGRAM = (
    "import hashlib,os,sys,urllib.request\n"
    "url,digest,dest=sys.argv[1:4]\n"
    "data=urllib.request.urlopen(url,timeout=60).read()\n"
    "if hashlib.sha256(data).hexdigest()!=digest: sys.exit('stackboot from %s: sha256 mismatch, nothing installed' % url)\n"
    "os.makedirs(os.path.dirname(dest),exist_ok=True); tmp=dest+'.part'\n"
    "with open(tmp,'wb') as f: f.write(data)\n"
    "os.chmod(tmp,0o755); os.rename(tmp,dest)\n")


def gzip_bytes(data):
    """gzip with a zero timestamp, so the same input gives the same user-data."""
    import zlib
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def cloud_config(roles, sets, source=None, url=None, digest=None):
    """#cloud-config user-data (JSON is YAML) that puts stackboot on the host and installs the roles.

    Parameters go into the site file (0600: they may hold secrets), not into a command line that
    `ps` shows; a later `stackboot install ROLE` by hand sees the same values. runcmd runs once
    per instance, and running it again is a converged install that changes nothing."""
    import base64
    parameters = dict(item.partition("=")[::2] for item in sets)
    files = [{"path": SITE_FILE, "owner": "root:root", "permissions": "0600",
              "content": json.dumps({"parameters": parameters}, indent=2, sort_keys=True) + "\n"}]
    commands = []
    if url:
        commands.append(["python3", "-c", FETCH_PROGRAM, url, digest, STACKBOOT_BIN])
    else:
        files.append({"path": STACKBOOT_BIN, "owner": "root:root", "permissions": "0755", "encoding": "gz+b64",
                      "content": base64.b64encode(gzip_bytes(source)).decode("ascii")})
    commands.append(["python3", STACKBOOT_BIN, "install"] + list(roles))
    body = {"write_files": files, "runcmd": commands}
    return "#cloud-config\n# stackboot %s: install %s\n%s\n" % (__version__, " ".join(roles), json.dumps(body, indent=2))


def cmd_cloud_init(session):
    args, out = session.args, session.out
    if bool(args.cluster) != bool(args.out):
        raise BadInput("--cluster and --out go together", "give both (one user-data file per node), or neither and roles")
    if bool(args.roles) == bool(args.cluster):
        raise BadInput("give roles, or --cluster FILE --out DIR", "see `stackboot cloud-init --help`")
    if bool(args.from_url) != bool(args.sha256):
        raise BadInput("--from-url needs --sha256 (and the other way round)", "give the URL and the sha256 of stackboot.py there")
    digest = type_sha256(args.sha256, {}) if args.sha256 else None
    if args.from_url:
        type_url(args.from_url, {})
    source = None if args.from_url else own_source()
    targets = []   # (name, roles, sets)
    if args.cluster:
        cluster = load_cluster(session.library, session.facts, args.cluster)
        targets = [(name, node["roles"], cluster.node_sets(session.library, name) + (args.set or []))
                   for name, node in sorted(cluster.nodes.items())]
    else:
        targets = [(None, args.roles, args.set or [])]
    for name, roles, sets in targets:   # every value checked now, not on the new host
        resolve_parameters(session.library, session.library.closure(roles), session.facts, sets, env={})
    for name, roles, sets in targets:
        text = cloud_config(roles, sets, source, args.from_url, digest)
        size = len(text.encode())
        over = " (over the %d bytes EC2 allows: use --from-url there)" % CLOUD_INIT_LIMIT if size > CLOUD_INIT_LIMIT else ""
        if name is None:
            out.say(text.rstrip("\n"))
            sys.stderr.write("user-data: %d bytes%s\n" % (size, over))
            continue
        if not os.path.isdir(args.out):
            os.makedirs(args.out)
        path = os.path.join(args.out, name + ".yaml")
        atomic_write(path, text.encode(), 0o600)
        out.say("%s: %s (%s), %d bytes%s" % (path, " ".join(roles), cluster.nodes[name]["address"], size, over))
    return EXIT_OK


COMMANDS = [
    ("facts", cmd_facts, "what stackboot detected about this host"),
    ("list", cmd_list, "the available roles, one line each"),
    ("show", cmd_show, "a role's parameters, their values and where each came from"),
    ("plan", cmd_plan, "what install would change, with file diffs; changes nothing"),
    ("install", cmd_install, "converge the host to the roles, then print a summary"),
    ("check", cmd_check, "compare the host with what was installed; report drift"),
    ("cvmfs", cmd_cvmfs, "cvmfs publish REPO DIR: one safe transaction (open, sync, publish; abort on any failure)"),
    ("cloud-init", cmd_cloud_init, "print #cloud-config user-data that installs these roles on a new host"),
    ("bundle", cmd_bundle, "an offline zipapp: stackboot plus the verified files the roles download"),
    ("uninstall", cmd_uninstall, "stop and remove what stackboot installed for these roles; data stays unless --purge-data"),
    ("recover", cmd_recover, "rescue a role: stop what it replaces, fix its data's ownership, install it (master: restore)"),
    ("lab", cmd_lab, "lab up [CLUSTER] | status | down | destroy: a whole cluster on this host, one network namespace per node"),
]

EXIT_HELP = """exit codes:
  %d  success (plan: nothing to change)
  %d  failure
  %d  changes pending (plan --detailed-exitcode, check)
  %d  bad usage or bad input; nothing was changed
""" % (EXIT_OK, EXIT_FAILED, EXIT_PENDING, EXIT_BAD_INPUT)


def build_parser(argv=None):
    """The command line. Only the commands named in argv get their options (start-up time):
    the others are there for the top-level --help and the "invalid choice" message."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise BadInput(message, "see `stackboot --help`")

    def tag(text):   # argparse names the function in its error: "invalid tag value"
        return plain(text)

    def message(text):
        return type_text(text, {})

    def add_globals(parser, prefix):
        """Global options work before and after the command; the command's copies land in sub_*."""
        group = parser.add_argument_group("global options")
        for flags, options, help_text in GLOBAL_OPTIONS:
            group.add_argument(*flags, dest=prefix + flags[-1].lstrip("-"), default=None, help=help_text, **options)

    parser = Parser(prog="stackboot", description="Turn a bare Linux or FreeBSD host into a working storage node.",
                    epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="stackboot " + __version__)
    add_globals(parser, "")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, _, help_text in COMMANDS:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EXIT_HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        if argv is not None and name not in argv:
            continue
        add_globals(sub, "sub_")
        if name in ("show", "recover"):
            sub.add_argument("role")
        elif name in ("plan", "install", "uninstall"):
            sub.add_argument("roles", nargs="+", metavar="ROLE")
        elif name == "check":
            sub.add_argument("roles", nargs="*", metavar="ROLE")
        if name == "lab":
            sub.add_argument("action", choices=["up", "status", "down", "destroy"])
            sub.add_argument("cluster", nargs="?", metavar="CLUSTER",
                             help="up: a cluster file or a built-in one (default: seed); others: the lab's name")
            sub.add_argument("--dir", metavar="DIR", help="the lab's directory (default: %s/NAME)" % LAB_BASE)
        if name == "plan":
            sub.add_argument("--detailed-exitcode", action="store_true", help="exit %d when changes are pending" % EXIT_PENDING)
        if name == "bundle":
            sub.add_argument("roles", nargs="*", metavar="ROLE", help="default: every role that downloads something")
            sub.add_argument("--with", dest="with_", action="append", metavar="NAME=VERSION",
                             help="the version of a build to carry (moosefs=4.59.1)")
            sub.add_argument("-o", "--output", required=True, metavar="FILE.pyz")
        if name == "uninstall":
            sub.add_argument("--purge-data", action="store_true", help="also delete the roles' data directories (asks, or --yes)")
        if name == "cloud-init":
            sub.add_argument("roles", nargs="*", metavar="ROLE")
            sub.add_argument("--cluster", metavar="FILE", help="a cluster file (or a built-in cluster's name): one user-data per node")
            sub.add_argument("--out", metavar="DIR", help="where the per-node files go (NODE.yaml)")
            sub.add_argument("--from-url", metavar="URL", help="fetch stackboot.py from URL on the host instead of carrying it "
                                                               "(small user-data, for EC2's 16 KiB)")
            sub.add_argument("--sha256", metavar="HEX", help="the sha256 of stackboot.py at --from-url")
        if name == "cvmfs":
            sub.add_argument("action", choices=["publish"])
            sub.add_argument("repository", metavar="REPO")
            sub.add_argument("directory", metavar="DIR")
            sub.add_argument("--tag", type=tag, help="tag the new revision (cvmfs_server publish -a)")
            sub.add_argument("--message", type=message, help="the revision's message (-m)")
            sub.add_argument("--timeout", type=int, default=300, help="seconds to wait for the repository lock (transaction -t)")
        if name == "install":
            sub.add_argument("--force", action="store_true", help="replace files edited by hand (a backup is kept)")
            sub.add_argument("--repair", action="store_true",
                             help="clean up what a failed earlier attempt left half-made, where that is safe "
                                  "(a CVMFS repository that never published), then make it again")
    return parser


GLOBAL_OPTIONS = [
    (("--root",), {"metavar": "DIR"}, "act on the system under DIR (paths prefixed, commands through chroot)"),
    (("--set",), {"metavar": "NAME=VALUE", "action": "append"}, "set a parameter (repeatable)"),
    (("--site",), {"metavar": "FILE"}, "site parameter file (default %s)" % SITE_FILE),
    (("--profiles",), {"metavar": "DIR", "action": "append"}, "extra profile directory (repeatable)"),
    (("--json",), {"action": "store_true"}, "machine-readable output"),
    (("--yes",), {"action": "store_true"}, "answer yes to questions"),
    (("--offline",), {"action": "store_true"}, "never use the network"),
    (("-v", "--verbose"), {"action": "store_true"}, "more detail; tracebacks on errors"),
    (("-q", "--quiet"), {"action": "store_true"}, "less output"),
]


def merge_global_options(args):
    """Fold the options given after the command into the ones given before it."""
    for flags, options, _ in GLOBAL_OPTIONS:
        name = flags[-1].lstrip("-")
        late = getattr(args, "sub_" + name, None)
        if options.get("action") == "append":
            setattr(args, name, (getattr(args, name) or []) + (late or []))
        elif late:
            setattr(args, name, late)
    return args


def main(argv=None, runner=None, uname=None):
    """Run one command; returns the exit code. `runner` and `uname` let tests fake the host."""
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv or "--verbose" in argv
    code = EXIT_FAILED
    session = None
    try:
        try:
            args = merge_global_options(build_parser(argv).parse_args(argv))
        except SystemExit as exc:   # --help and --version
            return exc.code or EXIT_OK
        if not args.command:
            raise BadInput("no command given", "see `stackboot --help`")
        session = Session(args, runner=runner, uname=uname)
        code = dict((name, func) for name, func, _ in COMMANDS)[args.command](session)
    except StackbootError as exc:
        if verbose:
            import traceback
            traceback.print_exc()
        sys.stderr.write(redact(exc.line(), session.out.secrets if session else []) + "\n")
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; run the same command again to finish the job\n")
        code = EXIT_FAILED
    except (IOError, OSError) as exc:
        if verbose:
            import traceback
            traceback.print_exc()
        sys.stderr.write("error: %s: %s; check permissions (install needs root) and free space\n"
                         % (getattr(exc, "filename", None) or "system call", exc.strerror or exc))
        code = EXIT_FAILED
    # A last line, so a truncated or empty download (curl | python3 -) is noticed.
    sys.stderr.write("stackboot: %s (exit %d)\n" % ("done" if code in (EXIT_OK, EXIT_PENDING) else "failed", code))
    return code


# ---------------------------------------------------------------------------
# Built-in profiles: generated from profiles/*.json by `make embed`; edit those.
# ---------------------------------------------------------------------------

EMBEDDED_PROFILES = {
    "btrfs-store": r"""{
  "description": "btrfs store: a filesystem on a device or an image file, mounted, kept in fstab, with subvolumes",
  "parameters": {
    "store_target": {
      "type": "string",
      "default": "image",
      "choices": [
        "image",
        "device"
      ],
      "help": "image: a file created at store_size and loop-mounted; device: store_device"
    },
    "store_image": {
      "type": "path",
      "default": "/srv/stackboot-store.img",
      "help": "the image file (store_target=image)"
    },
    "store_size": {
      "type": "size",
      "default": "10GiB",
      "help": "size of a new image file (sparse)"
    },
    "store_device": {
      "type": "path",
      "default": null,
      "help": "the block device (store_target=device); must be blank or btrfs"
    },
    "store_mount": {
      "type": "path",
      "default": "/srv/store",
      "help": "where the store is mounted"
    },
    "store_label": {
      "type": "string",
      "default": "stackboot",
      "help": "filesystem label of a new store"
    },
    "store_options": {
      "type": "list",
      "default": [
        "noatime"
      ],
      "help": "mount options (noatime, compress=zstd:3, user_subvol_rm_allowed...)"
    },
    "store_subvolumes": {
      "type": "list",
      "items": "hdd",
      "default": [],
      "help": "subvolumes to create: PATH [LIMIT] (a size LIMIT becomes a qgroup limit)"
    },
    "store_owner": {
      "type": "string",
      "default": "root",
      "help": "owner of the subvolumes"
    },
    "store_group": {
      "type": "string",
      "default": "root",
      "help": "group of the subvolumes"
    },
    "store_mode": {
      "type": "string",
      "default": "0755",
      "pattern": "0?[0-7]{3,4}",
      "help": "mode of the subvolumes"
    }
  },
  "platforms": [
    "linux"
  ],
  "steps": [
    {
      "kind": "packages",
      "names": [
        "btrfs-progs"
      ]
    },
    {
      "kind": "btrfs-filesystem",
      "id": "btrfs-store",
      "when": {
        "store_target": "image"
      },
      "path": "{{store_mount}}",
      "image": "{{store_image}}",
      "size": "{{store_size}}",
      "label": "{{store_label}}",
      "options": "{{store_options}}"
    },
    {
      "kind": "btrfs-filesystem",
      "id": "btrfs-store",
      "when": {
        "store_target": "device"
      },
      "path": "{{store_mount}}",
      "device": "{{store_device}}",
      "label": "{{store_label}}",
      "options": "{{store_options}}"
    },
    {
      "kind": "btrfs-subvolume",
      "for_each": "{{store_subvolumes}}",
      "as": "sub",
      "path": "{{sub.path}}",
      "limit": "{{sub.quota}}",
      "owner": "{{store_owner}}",
      "group": "{{store_group}}",
      "mode": "{{store_mode}}"
    }
  ]
}
""",
    "chunkserver": r"""{
  "description": "MooseFS chunkserver: stores the data chunks on local disks",
  "requires": [
    "moosefs-common"
  ],
  "parameters": {
    "labels": {
      "type": "labels",
      "default": [],
      "help": "chunkserver labels (single letters), e.g. M,B"
    },
    "disks": {
      "type": "list",
      "items": "hdd",
      "default": [
        "{{data_path}}/hdd1"
      ],
      "help": "mfshdd.cfg lines: [*|<|>|~]PATH [LIMIT] (each directory is created, owned by the working user)"
    },
    "chunkserver_listen_host": {
      "type": "host",
      "default": "*",
      "help": "address chunkserver listens on for clients"
    },
    "chunkserver_listen_port": {
      "type": "port",
      "default": 9422,
      "help": "port for clients (CSSERV_LISTEN_PORT)"
    },
    "leave_space": {
      "type": "size",
      "default": "256MiB",
      "help": "free space kept on every disk (HDD_LEAVE_SPACE_DEFAULT)"
    },
    "chunkserver_service": {
      "type": "string",
      "default": "moosefs-chunkserver",
      "help": "the chunkserver's service name"
    },
    "chunkserver_packages": {
      "type": "list",
      "default": [
        "moosefs-chunkserver"
      ],
      "help": "packages for method=packages"
    },
    "chunkserver_extra": {
      "type": "settings",
      "default": {},
      "help": "more mfschunkserver.cfg settings"
    },
    "disk_store": {
      "type": "string",
      "default": "directory",
      "choices": [
        "directory",
        "btrfs-subvolume",
        "zfs-dataset"
      ],
      "help": "what each disk is: a plain directory, a btrfs subvolume (install btrfs-store first), or a ZFS dataset under disk_dataset_root mounted at the disk's path; a size limit becomes the qgroup or quota"
    },
    "disk_dataset_root": {
      "type": "string",
      "default": null,
      "pattern": "[A-Za-z][A-Za-z0-9_.:/-]*",
      "help": "disk_store=zfs-dataset: the dataset the disks go under (POOL/...); its pool must exist"
    }
  },
  "overlays": {
    "freebsd": {
      "chunkserver_service": "mfschunkserver"
    }
  },
  "steps": [
    {
      "kind": "packages",
      "names": "{{chunkserver_packages}}",
      "when": {
        "method": "packages"
      }
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "when": {
        "method": [
          "source",
          "git"
        ]
      },
      "archive": "{{source_archive}}",
      "version": "{{version}}",
      "autoreconf": "{{source_autoreconf}}",
      "configure": [
        "{{configure_flags}}",
        "--enable-mfschunkserver"
      ],
      "env": {
        "PYTHON": "{{python}}"
      }
    },
    {
      "kind": "directory",
      "for_each": "{{disks}}",
      "as": "disk",
      "path": "{{disk.path}}",
      "owner": "{{working_user}}",
      "group": "{{working_group}}",
      "mode": "0750",
      "when": {
        "disk_store": "directory"
      },
      "data": true
    },
    {
      "kind": "btrfs-subvolume",
      "for_each": "{{disks}}",
      "as": "disk",
      "path": "{{disk.path}}",
      "limit": "{{disk.quota}}",
      "owner": "{{working_user}}",
      "group": "{{working_group}}",
      "mode": "0750",
      "when": {
        "disk_store": "btrfs-subvolume"
      }
    },
    {
      "kind": "zfs-dataset",
      "for_each": "{{disks}}",
      "as": "disk",
      "name": "{{disk_dataset_root}}/{{disk.name}}",
      "properties": {
        "mountpoint": "{{disk.path}}",
        "quota": "{{disk.quota}}",
        "atime": "off"
      },
      "when": {
        "disk_store": "zfs-dataset"
      }
    },
    {
      "kind": "directory",
      "for_each": "{{disks}}",
      "as": "disk",
      "path": "{{disk.path}}",
      "owner": "{{working_user}}",
      "group": "{{working_group}}",
      "mode": "0750",
      "when": {
        "disk_store": "zfs-dataset"
      },
      "data": true
    },
    {
      "kind": "file",
      "id": "mfshdd.cfg",
      "path": "{{config_dir}}/mfshdd.cfg",
      "mode": "0644",
      "header": "# mfshdd.cfg: written by stackboot",
      "template": "{{disks}}"
    },
    {
      "kind": "file",
      "id": "mfschunkserver.cfg",
      "path": "{{config_dir}}/mfschunkserver.cfg",
      "mode": "0644",
      "header": "# mfschunkserver.cfg: written by stackboot",
      "settings": {
        "WORKING_USER": "{{working_user}}",
        "WORKING_GROUP": "{{working_group}}",
        "DATA_PATH": "{{data_path}}",
        "MASTER_HOST": "{{master_host}}",
        "MASTER_PORT": "{{chunkserver_port}}",
        "LABELS": "{{labels}}",
        "HDD_CONF_FILENAME": "{{config_dir}}/mfshdd.cfg",
        "HDD_LEAVE_SPACE_DEFAULT": "{{leave_space}}",
        "CSSERV_LISTEN_HOST": "{{chunkserver_listen_host}}",
        "CSSERV_LISTEN_PORT": "{{chunkserver_listen_port}}",
        "extra": "{{chunkserver_extra}}"
      }
    },
    {
      "kind": "file",
      "id": "mfschunkserver-unit",
      "path": "/etc/systemd/system/{{chunkserver_service}}.service",
      "template": [
        "[Unit]",
        "Description=MooseFS chunkserver (built by stackboot)",
        "Wants=network-online.target",
        "After=network.target network-online.target",
        "",
        "[Service]",
        "Type=forking",
        "ExecStart={{sbin_dir}}/mfschunkserver -c {{config_dir}}/mfschunkserver.cfg start",
        "ExecStop={{sbin_dir}}/mfschunkserver -c {{config_dir}}/mfschunkserver.cfg stop",
        "ExecReload={{sbin_dir}}/mfschunkserver -c {{config_dir}}/mfschunkserver.cfg reload",
        "PIDFile={{data_path}}/.mfschunkserver.lock",
        "Restart=on-abnormal",
        "",
        "[Install]",
        "WantedBy=multi-user.target"
      ],
      "when": {
        "method": [
          "source",
          "git"
        ],
        "facts.init": "systemd"
      }
    },
    {
      "kind": "file",
      "id": "mfschunkserver-rcd",
      "path": "/usr/local/etc/rc.d/{{chunkserver_service}}",
      "mode": "0755",
      "template": [
        "#!/bin/sh",
        "#",
        "# PROVIDE: mfschunkserver",
        "# REQUIRE: NETWORKING",
        "# KEYWORD: shutdown",
        "#",
        "# Written by stackboot for a MooseFS source build.",
        "",
        ". /etc/rc.subr",
        "",
        "name=\"mfschunkserver\"",
        "rcvar=\"mfschunkserver_enable\"",
        "",
        "load_rc_config $name",
        "",
        ": ${mfschunkserver_enable:=\"NO\"}",
        ": ${mfschunkserver_config:=\"{{config_dir}}/mfschunkserver.cfg\"}",
        "",
        "command=\"{{sbin_dir}}/mfschunkserver\"",
        "command_args=\"-c ${mfschunkserver_config} start\"",
        "pidfile=\"{{data_path}}/.mfschunkserver.lock\"",
        "stop_cmd=\"${command} -c ${mfschunkserver_config} stop\"",
        "reload_cmd=\"${command} -c ${mfschunkserver_config} reload\"",
        "extra_commands=\"reload\"",
        "",
        "run_rc_command \"$1\""
      ],
      "when": {
        "method": [
          "source",
          "git"
        ],
        "os": "freebsd"
      }
    },
    {
      "kind": "service",
      "name": "{{chunkserver_service}}",
      "restart_on": [
        "mfschunkserver.cfg",
        "moosefs-build",
        "mfschunkserver-unit",
        "mfschunkserver-rcd"
      ],
      "reload_on": [
        "mfshdd.cfg"
      ],
      "direct": {
        "start": [
          "{{sbin_dir}}/mfschunkserver",
          "-c",
          "{{config_dir}}/mfschunkserver.cfg",
          "start"
        ],
        "stop": [
          "{{sbin_dir}}/mfschunkserver",
          "-c",
          "{{config_dir}}/mfschunkserver.cfg",
          "stop"
        ],
        "reload": [
          "{{sbin_dir}}/mfschunkserver",
          "-c",
          "{{config_dir}}/mfschunkserver.cfg",
          "reload"
        ],
        "pidfile": "{{data_path}}/.mfschunkserver.lock"
      }
    }
  ]
}
""",
    "cli": r"""{
  "description": "MooseFS command-line tools: mfscli, to query and administer the cluster",
  "requires": [
    "moosefs-common"
  ],
  "parameters": {
    "cli_packages": {
      "type": "list",
      "default": [
        "moosefs-cli"
      ],
      "help": "packages for method=packages"
    }
  },
  "status": [
    "{{bin_dir}}/mfscli",
    "-H",
    "{{master_host}}",
    "-P",
    "{{client_port}}",
    "-SIG",
    "-SCS",
    "-SMB",
    "-SMS"
  ],
  "steps": [
    {
      "kind": "packages",
      "names": "{{cli_packages}}",
      "when": {
        "method": "packages"
      }
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "when": {
        "method": [
          "source",
          "git"
        ]
      },
      "archive": "{{source_archive}}",
      "version": "{{version}}",
      "autoreconf": "{{source_autoreconf}}",
      "configure": [
        "{{configure_flags}}",
        "--enable-mfscli"
      ],
      "env": {
        "PYTHON": "{{python}}"
      }
    }
  ]
}
""",
    "client": r"""{
  "description": "MooseFS client: mfsmount, mounted now and at boot",
  "requires": [
    "moosefs-common"
  ],
  "parameters": {
    "mount_point": {
      "type": "path",
      "default": "/mnt/mfs",
      "help": "where the file system is mounted"
    },
    "subfolder": {
      "type": "path",
      "default": "/",
      "help": "which exported directory to mount"
    },
    "mount_options": {
      "type": "list",
      "default": [
        "mfsdelayedinit"
      ],
      "help": "extra mount options (mfsmount -o)"
    },
    "mount_at_boot": {
      "type": "bool",
      "default": true,
      "help": "record the mount in fstab (false: mount now only)"
    },
    "client_packages": {
      "type": "list",
      "default": [
        "moosefs-client"
      ],
      "help": "packages for method=packages"
    },
    "fuse_packages": {
      "type": "list",
      "default": [
        "fuse3"
      ],
      "help": "the FUSE runtime the client needs"
    }
  },
  "overlays": {
    "freebsd": {
      "fuse_packages": [
        "fusefs-libs3"
      ]
    },
    "lab": {
      "mount_point": "{{facts.lab}}/mnt/mfs",
      "mount_at_boot": false
    }
  },
  "summary": [
    "MooseFS from {{master_host}}:{{client_port}} is mounted on {{mount_point}}"
  ],
  "steps": [
    {
      "kind": "packages",
      "names": "{{fuse_packages}}"
    },
    {
      "kind": "packages",
      "names": "{{client_packages}}",
      "when": {
        "method": "packages"
      }
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "when": {
        "method": [
          "source",
          "git"
        ]
      },
      "archive": "{{source_archive}}",
      "version": "{{version}}",
      "autoreconf": "{{source_autoreconf}}",
      "configure": [
        "{{configure_flags}}",
        "--enable-mfsmount"
      ],
      "env": {
        "PYTHON": "{{python}}"
      }
    },
    {
      "kind": "file",
      "id": "mfsmount.cfg",
      "path": "{{config_dir}}/mfsmount.cfg",
      "mode": "0644",
      "template": [
        "# mfsmount.cfg: defaults for mfsmount, written by stackboot",
        "mfsmaster={{master_host}}",
        "mfsport={{client_port}}"
      ]
    },
    {
      "kind": "command",
      "id": "fusefs-loaded",
      "when": {
        "os": "freebsd"
      },
      "argv": [
        "kldload",
        "fusefs"
      ],
      "unless": [
        "kldstat",
        "-q",
        "-m",
        "fusefs"
      ]
    },
    {
      "kind": "command",
      "id": "fusefs-at-boot",
      "when": {
        "os": "freebsd"
      },
      "argv": [
        "sysrc",
        "kld_list+=fusefs"
      ],
      "unless": [
        "sysrc",
        "-c",
        "kld_list+=fusefs"
      ]
    },
    {
      "kind": "mount",
      "path": "{{mount_point}}",
      "when": {
        "os": "linux"
      },
      "device": "{{master_host}}:{{client_port}}:{{subfolder}}",
      "fstype": "moosefs",
      "options": [
        "defaults",
        "_netdev",
        "{{mount_options}}"
      ],
      "fstab": "{{mount_at_boot}}"
    },
    {
      "kind": "mount",
      "path": "{{mount_point}}",
      "when": {
        "os": "freebsd"
      },
      "device": "{{master_host}}:{{client_port}}:{{subfolder}}",
      "fstype": "fusefs",
      "options": [
        "rw",
        "mountprog={{bin_dir}}/mfsmount",
        "late",
        "{{mount_options}}"
      ]
    }
  ]
}
""",
    "cvmfs-client": r"""{
  "description": "CernVM-FS client (Linux only): repositories from a stratum-0 server, keys pinned, probed",
  "requires": ["cvmfs-common"],
  "platforms": ["linux"],
  "platforms_why": "CernVM-FS runs only on Linux",
  "parameters": {
    "client_repositories": {
      "type": "list",
      "items": "cvmfs_repository",
      "help": "FQRN SHA256 (the key fetched from key_base_url, pinned) or FQRN /path/to/FQRN.pub (a key file on this host)"
    },
    "server_url": {
      "type": "string",
      "allow": ";",
      "default": "http://{{server_host}}/cvmfs/@fqrn@",
      "help": "CVMFS_SERVER_URL (several separated by ;); the client puts each repository's name in place of @fqrn@"
    },
    "http_proxy": {
      "type": "string",
      "allow": ";|",
      "lookup": {"key": "small_setup", "table": {"true": "DIRECT"}},
      "help": "CVMFS_HTTP_PROXY: your site's squid(s) like http://squid1:3128|http://squid2:3128;DIRECT, or DIRECT"
    },
    "small_setup": {
      "type": "bool",
      "default": false,
      "help": "a few clients and no proxy: talk to the server directly (http_proxy=DIRECT)"
    },
    "cache_quota": {
      "type": "int",
      "default": 4000,
      "min": 1000,
      "help": "local cache size in MB (CVMFS_QUOTA_LIMIT)"
    },
    "client_extra": {
      "type": "settings",
      "default": {},
      "help": "more default.local settings"
    },
    "client_packages": {
      "type": "list",
      "default": ["cvmfs", "cvmfs-config-default"],
      "help": "the client packages"
    }
  },
  "steps": [
    {"kind": "packages", "id": "cvmfs-client-packages", "names": "{{client_packages}}"},
    {"kind": "directory", "path": "/etc/cvmfs/keys", "mode": "0755"},
    {"kind": "download", "id": "cvmfs-client-key", "for_each": "{{client_repositories}}", "as": "repo",
     "when": {"repo.key_file": null}, "url": "{{key_base_url}}/{{repo.name}}.pub", "sha256": "{{repo.key_sha256}}",
     "dest": "/etc/cvmfs/keys/{{repo.name}}.pub", "mode": "0444"},
    {"kind": "file", "id": "cvmfs-client-key", "for_each": "{{client_repositories}}", "as": "repo",
     "when": {"repo.key_sha256": null}, "path": "/etc/cvmfs/keys/{{repo.name}}.pub", "source": "{{repo.key_file}}",
     "mode": "0444"},
    {"kind": "file", "id": "default.local", "path": "/etc/cvmfs/default.local", "mode": "0644", "separator": "=", "quote": true,
     "header": "# CernVM-FS client settings: written by stackboot",
     "settings": {"CVMFS_REPOSITORIES": "{{client_repositories.name}}", "CVMFS_HTTP_PROXY": "{{http_proxy}}",
                  "CVMFS_QUOTA_LIMIT": "{{cache_quota}}", "extra": "{{client_extra}}"}},
    {"kind": "file", "id": "cvmfs-client-repository", "for_each": "{{client_repositories}}", "as": "repo",
     "path": "/etc/cvmfs/config.d/{{repo.name}}.conf", "mode": "0644", "separator": "=", "quote": true,
     "header": "# written by stackboot",
     "settings": {"CVMFS_SERVER_URL": "{{server_url}}", "CVMFS_PUBLIC_KEY": "/etc/cvmfs/keys/{{repo.name}}.pub"}},
    {"kind": "command", "id": "cvmfs-setup", "argv": ["cvmfs_config", "setup"], "unless": ["cvmfs_config", "chksetup"]},
    {"kind": "command", "id": "cvmfs-probe", "argv": ["cvmfs_config", "probe", "{{client_repositories.name}}"],
     "run_on": ["default.local", "cvmfs-client-repository", "cvmfs-client-key", "cvmfs-setup"],
     "fails": "the client cannot mount the repository: check the server URL, the proxy and the key"}
  ]
}
""",
    "cvmfs-common": r"""{
  "description": "CernVM-FS: what the server and client roles share (CERN's release package)",
  "platforms": ["linux"],
  "platforms_why": "CernVM-FS runs only on Linux",
  "parameters": {
    "cvmfs_release": {
      "type": "bool",
      "default": true,
      "help": "install CERN's release package first; false when the cvmfs packages come from a mirror the host already uses"
    },
    "cvmfs_release_url": {
      "type": "url",
      "default": "https://ecsft.cern.ch/dist/cvmfs/cvmfs-release/cvmfs-release-latest_all.deb",
      "help": "CERN's release package for this platform"
    },
    "cvmfs_release_sha256": {
      "type": "sha256",
      "default": null,
      "help": "sha256 of the release package; CERN publishes none for \"latest\", so check the file you trust and give it"
    },
    "cvmfs_release_file": {
      "type": "path",
      "default": "/var/cache/stackboot/downloads/cvmfs-release-latest_all.deb",
      "help": "where the verified release package is kept"
    },
    "cvmfs_release_package": {
      "type": "string",
      "default": "cvmfs-release",
      "help": "the package the release file installs"
    },
    "server_host": {
      "type": "host",
      "default": "localhost",
      "help": "the stratum-0 server's name as clients reach it"
    },
    "key_base_url": {
      "type": "url",
      "default": "http://{{server_host}}/cvmfs-meta",
      "help": "where the server publishes each repository's public key (FQRN.pub)"
    }
  },
  "overlays": {
    "fedora": {
      "cvmfs_release_url": "https://ecsft.cern.ch/dist/cvmfs/cvmfs-release/cvmfs-release-latest.noarch.rpm",
      "cvmfs_release_file": "/var/cache/stackboot/downloads/cvmfs-release-latest.noarch.rpm"
    }
  },
  "steps": [
    {
      "kind": "download",
      "id": "cvmfs-release-download",
      "when": {"cvmfs_release": true},
      "needs": ["cvmfs_release_sha256"],
      "url": "{{cvmfs_release_url}}",
      "sha256": "{{cvmfs_release_sha256}}",
      "dest": "{{cvmfs_release_file}}"
    },
    {
      "kind": "packages",
      "id": "cvmfs-release",
      "when": {"cvmfs_release": true},
      "names": ["{{cvmfs_release_package}}"],
      "files": ["{{cvmfs_release_file}}"]
    }
  ]
}
""",
    "cvmfs-server": r"""{
  "description": "CernVM-FS stratum 0 (Linux only): repositories made safely, served by Apache or kept in S3, resigned on a schedule",
  "requires": ["cvmfs-common"],
  "platforms": ["linux"],
  "platforms_why": "CernVM-FS runs only on Linux",
  "parameters": {
    "repositories": {
      "type": "list",
      "items": "fqrn",
      "help": "the repositories this server holds, by FQRN (software.example.org,data.example.org)"
    },
    "repository_owner": {
      "type": "string",
      "default": "root",
      "help": "the user who owns every repository and publishes to it (mkfs -o)"
    },
    "backend": {
      "type": "string",
      "default": "local",
      "choices": ["local", "s3"],
      "help": "local: storage in /srv/cvmfs served by Apache; s3: storage in an S3 bucket (s3_*)"
    },
    "garbage_collection": {
      "type": "bool",
      "default": true,
      "help": "let old revisions be collected (mkfs -z, CVMFS_GARBAGE_COLLECTION, CVMFS_AUTO_GC) and run gc weekly"
    },
    "auto_tag": {
      "type": "bool",
      "default": true,
      "help": "tag every publish automatically (CVMFS_AUTO_TAG)"
    },
    "auto_tag_timespan": {
      "type": "string",
      "default": "4 weeks ago",
      "allow": "",
      "pattern": "[0-9]+ (days|weeks|months) ago",
      "help": "automatic tags older than this are removed (CVMFS_AUTO_TAG_TIMESPAN)"
    },
    "server_extra": {
      "type": "settings",
      "default": {},
      "help": "more server.conf keys kept at these values"
    },
    "resign_schedule": {
      "type": "string",
      "default": "weekly",
      "choices": ["daily", "weekly"],
      "help": "how often the whitelist is resigned; it expires after 30 days"
    },
    "stratum0_url": {
      "type": "url",
      "default": null,
      "lookup": {"key": "backend", "table": {
        "local": "http://localhost/cvmfs/@fqrn@",
        "s3": "{{s3_bucket_url}}"}},
      "help": "each repository's stratum-0 URL for mkfs -w (@fqrn@ becomes its name); S3: the bucket URL, to which mkfs adds the name"
    },
    "public_url": {
      "type": "url",
      "default": null,
      "lookup": {"key": "backend", "table": {
        "local": "http://{{server_host}}/cvmfs/@fqrn@",
        "s3": "{{s3_bucket_url}}/@fqrn@"}},
      "help": "CVMFS_SERVER_URL as clients use it, printed at the end"
    },
    "s3_host": {
      "type": "host",
      "default": null,
      "help": "backend=s3: the S3 server's host name, without scheme"
    },
    "s3_port": {
      "type": "port",
      "default": 443,
      "help": "backend=s3: its port (MinIO: 9000)"
    },
    "s3_https": {
      "type": "bool",
      "default": true,
      "help": "backend=s3: talk HTTPS to it (CVMFS_S3_USE_HTTPS)"
    },
    "s3_bucket": {
      "type": "string",
      "default": null,
      "pattern": "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
      "help": "backend=s3: the bucket, which must be publicly readable"
    },
    "s3_access_key": {
      "type": "string",
      "default": null,
      "secret": true,
      "help": "backend=s3: the access key (never printed or logged)"
    },
    "s3_secret_key": {
      "type": "string",
      "default": null,
      "secret": true,
      "help": "backend=s3: the secret key (never printed or logged)"
    },
    "s3_dns_buckets": {
      "type": "bool",
      "default": false,
      "help": "backend=s3: bucket in the host name (AWS); false puts it in the path (MinIO and most self-hosted servers)"
    },
    "s3_region": {
      "type": "string",
      "default": null,
      "help": "backend=s3: the region, when the server wants one"
    },
    "s3_scheme": {
      "type": "string",
      "default": null,
      "lookup": {"key": "s3_https", "table": {"true": "https", "false": "http"}},
      "help": "derived from s3_https"
    },
    "s3_bucket_url": {
      "type": "url",
      "default": null,
      "lookup": {"key": "s3_dns_buckets", "table": {
        "false": "{{s3_scheme}}://{{s3_host}}:{{s3_port}}/{{s3_bucket}}",
        "true": "{{s3_scheme}}://{{s3_bucket}}.{{s3_host}}:{{s3_port}}"}},
      "help": "the bucket's URL (path-style unless s3_dns_buckets)"
    },
    "s3_config": {
      "type": "path",
      "default": "/etc/cvmfs/stackboot-s3.conf",
      "help": "backend=s3: the S3 config file mkfs and every publish read (mode 0600)"
    },
    "cvmfs_store": {
      "type": "string",
      "default": "directory",
      "choices": ["directory", "btrfs-subvolume", "zfs-dataset"],
      "help": "where /srv/cvmfs (storage) and /var/spool/cvmfs (spool) live: plain directories, btrfs subvolumes under cvmfs_store_root bind-mounted there (install btrfs-store first), or ZFS datasets under cvmfs_store_root mounted there (the spool needs OpenZFS 2.2 for overlayfs)"
    },
    "cvmfs_store_mounts": {
      "type": "list",
      "default": null,
      "lookup": {"key": "cvmfs_store", "table": {
        "directory": [],
        "btrfs-subvolume": ["/srv/cvmfs", "/var/spool/cvmfs"],
        "zfs-dataset": ["/srv/cvmfs", "/var/spool/cvmfs"]}},
      "help": "derived from cvmfs_store: what must be mounted before a repository is made"
    },
    "cvmfs_store_root": {
      "type": "string",
      "default": null,
      "pattern": "[A-Za-z0-9/][A-Za-z0-9_.:/-]*",
      "help": "cvmfs_store=btrfs-subvolume: a directory on a mounted btrfs (/srv/store); zfs-dataset: a dataset (tank/cvmfs)"
    },
    "server_packages": {
      "type": "list",
      "default": ["cvmfs", "cvmfs-server", "cvmfs-config-default"],
      "help": "the CernVM-FS packages"
    },
    "apache_package": {
      "type": "string",
      "default": "apache2",
      "help": "the web server package (cvmfs-server only recommends it, mkfs needs it)"
    },
    "apache_service": {
      "type": "string",
      "default": "apache2",
      "help": "its service"
    },
    "apache_ctl": {
      "type": "path",
      "default": "/usr/sbin/apache2ctl",
      "help": "its control program, used where no init system runs"
    },
    "apache_pidfile": {
      "type": "path",
      "default": "/run/apache2/apache2.pid",
      "help": "its pid file"
    },
    "apache_modules": {
      "type": "list",
      "default": ["headers", "expires", "proxy", "proxy_http"],
      "help": "modules mkfs wants enabled (a2enmod; built in on the RHEL family)"
    },
    "web_root": {
      "type": "path",
      "default": "/var/www/html",
      "help": "the web server's document root; public keys go to WEB_ROOT/cvmfs-meta"
    },
    "cron_package": {
      "type": "string",
      "default": "cron",
      "help": "cron, for the schedules where no systemd runs"
    },
    "cron_daemon": {
      "type": "path",
      "default": "/usr/sbin/cron",
      "help": "the cron daemon, started directly where no init system runs"
    },
    "cron_pidfile": {
      "type": "path",
      "default": "/run/crond.pid",
      "help": "its pid file"
    }
  },
  "overlays": {
    "fedora": {
      "apache_package": "httpd",
      "apache_service": "httpd",
      "apache_ctl": "/usr/sbin/apachectl",
      "apache_pidfile": "/run/httpd/httpd.pid",
      "apache_modules": [],
      "cron_package": "cronie",
      "cron_daemon": "/usr/sbin/crond"
    }
  },
  "steps": [
    {"kind": "packages", "id": "cvmfs-server-packages", "names": ["{{server_packages}}", "{{apache_package}}"]},
    {"kind": "command", "id": "apache-modules", "for_each": "{{apache_modules}}", "as": "module",
     "argv": ["a2enmod", "-q", "{{module}}"], "creates": "/etc/apache2/mods-enabled/{{module}}.load"},
    {"kind": "service", "name": "{{apache_service}}", "restart_on": ["apache-modules"],
     "direct": {"start": ["{{apache_ctl}}", "start"], "stop": ["{{apache_ctl}}", "stop"],
                "reload": ["{{apache_ctl}}", "graceful"], "pidfile": "{{apache_pidfile}}"}},

    {"kind": "btrfs-subvolume", "id": "cvmfs-storage-subvolume", "when": {"cvmfs_store": "btrfs-subvolume"},
     "needs": ["cvmfs_store_root"], "path": "{{cvmfs_store_root}}/cvmfs-storage", "mode": "0755"},
    {"kind": "btrfs-subvolume", "id": "cvmfs-spool-subvolume", "when": {"cvmfs_store": "btrfs-subvolume"},
     "path": "{{cvmfs_store_root}}/cvmfs-spool", "mode": "0755"},
    {"kind": "mount", "when": {"cvmfs_store": "btrfs-subvolume"}, "path": "/srv/cvmfs",
     "device": "{{cvmfs_store_root}}/cvmfs-storage", "fstype": "none",
     "options": ["bind", "x-systemd.requires-mounts-for={{cvmfs_store_root}}"]},
    {"kind": "mount", "when": {"cvmfs_store": "btrfs-subvolume"}, "path": "/var/spool/cvmfs",
     "device": "{{cvmfs_store_root}}/cvmfs-spool", "fstype": "none",
     "options": ["bind", "x-systemd.requires-mounts-for={{cvmfs_store_root}}"]},
    {"kind": "zfs-dataset", "when": {"cvmfs_store": "zfs-dataset"}, "needs": ["cvmfs_store_root"],
     "name": "{{cvmfs_store_root}}/storage", "properties": {"mountpoint": "/srv/cvmfs", "atime": "off"}},
    {"kind": "zfs-dataset", "when": {"cvmfs_store": "zfs-dataset"},
     "name": "{{cvmfs_store_root}}/spool", "properties": {"mountpoint": "/var/spool/cvmfs", "atime": "off"}},

    {"kind": "file", "id": "cvmfs-s3-config", "when": {"backend": "s3"},
     "needs": ["s3_host", "s3_bucket", "s3_access_key", "s3_secret_key"],
     "path": "{{s3_config}}", "mode": "0600", "secret": true, "separator": "=", "quote": true,
     "header": "# CernVM-FS S3 backend: written by stackboot, read by mkfs and every publish",
     "settings": {"CVMFS_S3_HOST": "{{s3_host}}", "CVMFS_S3_PORT": "{{s3_port}}", "CVMFS_S3_BUCKET": "{{s3_bucket}}",
                  "CVMFS_S3_ACCESS_KEY": "{{s3_access_key}}", "CVMFS_S3_SECRET_KEY": "{{s3_secret_key}}",
                  "CVMFS_S3_DNS_BUCKETS": "{{s3_dns_buckets}}", "CVMFS_S3_USE_HTTPS": "{{s3_https}}",
                  "CVMFS_S3_REGION": "{{s3_region}}"}},
    {"kind": "cvmfs-repository", "when": {"backend": "local"}, "for_each": "{{repositories}}", "as": "repo",
     "name": "{{repo}}", "owner": "{{repository_owner}}", "stratum0": "{{stratum0_url}}", "mounts": "{{cvmfs_store_mounts}}",
     "garbage_collection": "{{garbage_collection}}", "client_url": "{{public_url}}",
     "key_url": "{{key_base_url}}/@fqrn@.pub",
     "settings": {"CVMFS_GARBAGE_COLLECTION": "{{garbage_collection}}", "CVMFS_AUTO_GC": "{{garbage_collection}}",
                  "CVMFS_AUTO_TAG": "{{auto_tag}}", "CVMFS_AUTO_TAG_TIMESPAN": "{{auto_tag_timespan}}",
                  "extra": "{{server_extra}}"}},
    {"kind": "cvmfs-repository", "when": {"backend": "s3"}, "for_each": "{{repositories}}", "as": "repo",
     "name": "{{repo}}", "owner": "{{repository_owner}}", "stratum0": "{{stratum0_url}}", "mounts": "{{cvmfs_store_mounts}}", "s3_config": "{{s3_config}}",
     "garbage_collection": "{{garbage_collection}}", "client_url": "{{public_url}}",
     "key_url": "{{key_base_url}}/@fqrn@.pub",
     "settings": {"CVMFS_GARBAGE_COLLECTION": "{{garbage_collection}}", "CVMFS_AUTO_GC": "{{garbage_collection}}",
                  "CVMFS_AUTO_TAG": "{{auto_tag}}", "CVMFS_AUTO_TAG_TIMESPAN": "{{auto_tag_timespan}}",
                  "extra": "{{server_extra}}"}},

    {"kind": "directory", "path": "{{web_root}}/cvmfs-meta", "mode": "0755"},
    {"kind": "file", "id": "cvmfs-public-key", "for_each": "{{repositories}}", "as": "repo",
     "path": "{{web_root}}/cvmfs-meta/{{repo}}.pub", "source": "/etc/cvmfs/keys/{{repo}}.pub", "mode": "0644"},

    {"kind": "file", "id": "cvmfs-resign-unit", "when": {"facts.init": "systemd"},
     "path": "/etc/systemd/system/stackboot-cvmfs-resign@.service",
     "template": ["[Unit]", "Description=Resign the CernVM-FS whitelist of %i (written by stackboot)", "",
                  "[Service]", "Type=oneshot", "ExecStart=/usr/bin/cvmfs_server resign %i"]},
    {"kind": "file", "id": "cvmfs-resign-timer", "when": {"facts.init": "systemd"},
     "path": "/etc/systemd/system/stackboot-cvmfs-resign@.timer",
     "template": ["[Unit]", "Description=Resign the CernVM-FS whitelist of %i {{resign_schedule}} (it expires after 30 days)", "",
                  "[Timer]", "OnCalendar={{resign_schedule}}", "Persistent=true", "RandomizedDelaySec=1h", "",
                  "[Install]", "WantedBy=timers.target"]},
    {"kind": "service", "for_each": "{{repositories}}", "as": "repo", "when": {"facts.init": "systemd"},
     "name": "stackboot-cvmfs-resign@{{repo}}.timer", "restart_on": ["cvmfs-resign-timer"]},
    {"kind": "file", "id": "cvmfs-gc-unit", "when": {"facts.init": "systemd", "garbage_collection": true},
     "path": "/etc/systemd/system/stackboot-cvmfs-gc.service",
     "template": ["[Unit]", "Description=Collect old CernVM-FS revisions (written by stackboot)", "",
                  "[Service]", "Type=oneshot", "ExecStart=/usr/bin/cvmfs_server gc -a -f"]},
    {"kind": "file", "id": "cvmfs-gc-timer", "when": {"facts.init": "systemd", "garbage_collection": true},
     "path": "/etc/systemd/system/stackboot-cvmfs-gc.timer",
     "template": ["[Unit]", "Description=Collect old CernVM-FS revisions weekly", "",
                  "[Timer]", "OnCalendar=weekly", "Persistent=true", "RandomizedDelaySec=1h", "",
                  "[Install]", "WantedBy=timers.target"]},
    {"kind": "service", "when": {"facts.init": "systemd", "garbage_collection": true},
     "name": "stackboot-cvmfs-gc.timer", "restart_on": ["cvmfs-gc-timer"]},
    {"kind": "file", "id": "cvmfs-mount-unit", "when": {"facts.init": "systemd"},
     "path": "/etc/systemd/system/stackboot-cvmfs-mount.service",
     "template": ["[Unit]", "Description=Mount the CernVM-FS repositories after boot (written by stackboot)",
                  "After=network-online.target local-fs.target {{apache_service}}.service", "Wants=network-online.target", "",
                  "[Service]", "Type=oneshot", "RemainAfterExit=yes", "ExecStart=/usr/bin/cvmfs_server mount -a", "",
                  "[Install]", "WantedBy=multi-user.target"]},
    {"kind": "service", "when": {"facts.init": "systemd"}, "name": "stackboot-cvmfs-mount", "running": null},

    {"kind": "packages", "id": "cron", "when": {"facts.init": "none"}, "names": ["{{cron_package}}"]},
    {"kind": "line", "id": "cvmfs-cron-resign", "for_each": "{{repositories}}", "as": "repo", "when": {"facts.init": "none"},
     "path": "/etc/cron.d/stackboot-cvmfs", "mode": "0644",
     "line": "@{{resign_schedule}} root /usr/bin/cvmfs_server resign {{repo}}"},
    {"kind": "line", "id": "cvmfs-cron-gc", "when": {"facts.init": "none", "garbage_collection": true}, "path": "/etc/cron.d/stackboot-cvmfs",
     "line": "@weekly root /usr/bin/cvmfs_server gc -a -f"},
    {"kind": "line", "id": "cvmfs-cron-mount", "when": {"facts.init": "none"}, "path": "/etc/cron.d/stackboot-cvmfs",
     "line": "@reboot root /usr/bin/cvmfs_server mount -a"},
    {"kind": "service", "when": {"facts.init": "none"}, "name": "cron",
     "direct": {"start": ["{{cron_daemon}}"], "pidfile": "{{cron_pidfile}}"}}
  ]
}
""",
    "gui": r"""{
  "description": "MooseFS web GUI: mfsgui (4.x) or mfscgiserv (3.x packages)",
  "requires": [
    "moosefs-common"
  ],
  "parameters": {
    "gui_listen_host": {
      "type": "host",
      "default": "0.0.0.0",
      "help": "address the GUI listens on (0.0.0.0 = all; mfscgiserv does not take *)"
    },
    "gui_port": {
      "type": "port",
      "default": 9425,
      "help": "port of the GUI"
    },
    "gui_service": {
      "type": "string",
      "default": "moosefs-gui",
      "help": "the GUI's service name (4.x)"
    },
    "gui_packages": {
      "type": "list",
      "default": [
        "moosefs-gui"
      ],
      "help": "packages for method=packages (4.x)"
    },
    "cgi_packages": {
      "type": "list",
      "default": [
        "moosefs-cgi",
        "moosefs-cgiserv"
      ],
      "help": "packages for method=packages (3.x)"
    },
    "cgi_root": {
      "type": "path",
      "default": "/usr/share/mfscgi",
      "help": "the 3.x CGI files"
    },
    "gui_extra": {
      "type": "settings",
      "default": {},
      "help": "more mfsgui.cfg settings"
    }
  },
  "overlays": {
    "freebsd": {
      "gui_service": "mfsgui"
    },
    "debian": {
      "cgi_root": "/usr/share/moosefs-cgi"
    }
  },
  "summary": [
    "MooseFS GUI: http://{{facts.address}}:{{gui_port}}/mfs.cgi?masterhost={{master_host}}"
  ],
  "steps": [
    {
      "kind": "packages",
      "names": "{{gui_packages}}",
      "when": {
        "method": "packages",
        "series": "4"
      }
    },
    {
      "kind": "packages",
      "names": "{{cgi_packages}}",
      "when": {
        "method": "packages",
        "series": "3"
      }
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "when": {
        "method": [
          "source",
          "git"
        ]
      },
      "archive": "{{source_archive}}",
      "version": "{{version}}",
      "autoreconf": "{{source_autoreconf}}",
      "configure": [
        "{{configure_flags}}",
        "--enable-mfsgui"
      ],
      "env": {
        "PYTHON": "{{python}}"
      }
    },
    {
      "kind": "file",
      "id": "mfsgui.cfg",
      "path": "{{config_dir}}/mfsgui.cfg",
      "mode": "0644",
      "when": {
        "series": "4"
      },
      "header": "# mfsgui.cfg: written by stackboot (the master comes from ?masterhost= or DNS mfsmaster)",
      "settings": {
        "WORKING_USER": "{{working_user}}",
        "WORKING_GROUP": "{{working_group}}",
        "DATA_PATH": "{{data_path}}",
        "GUISERV_LISTEN_HOST": "{{gui_listen_host}}",
        "GUISERV_LISTEN_PORT": "{{gui_port}}",
        "extra": "{{gui_extra}}"
      }
    },
    {
      "kind": "file",
      "id": "mfsgui-unit",
      "path": "/etc/systemd/system/{{gui_service}}.service",
      "when": {
        "method": [
          "source",
          "git"
        ],
        "facts.init": "systemd"
      },
      "template": [
        "[Unit]",
        "Description=MooseFS GUI (built by stackboot)",
        "After=network.target",
        "",
        "[Service]",
        "Type=forking",
        "ExecStart={{sbin_dir}}/mfsgui -c {{config_dir}}/mfsgui.cfg start",
        "ExecStop={{sbin_dir}}/mfsgui -c {{config_dir}}/mfsgui.cfg stop",
        "PIDFile={{data_path}}/.mfsgui.lock",
        "Restart=on-abnormal",
        "",
        "[Install]",
        "WantedBy=multi-user.target"
      ]
    },
    {
      "kind": "file",
      "id": "mfsgui-rcd",
      "path": "/usr/local/etc/rc.d/{{gui_service}}",
      "mode": "0755",
      "when": {
        "method": [
          "source",
          "git"
        ],
        "os": "freebsd"
      },
      "template": [
        "#!/bin/sh",
        "#",
        "# PROVIDE: mfsgui",
        "# REQUIRE: NETWORKING",
        "# KEYWORD: shutdown",
        "",
        ". /etc/rc.subr",
        "",
        "name=\"mfsgui\"",
        "rcvar=\"mfsgui_enable\"",
        "load_rc_config $name",
        ": ${mfsgui_enable:=\"NO\"}",
        "command=\"{{sbin_dir}}/mfsgui\"",
        "command_args=\"-c {{config_dir}}/mfsgui.cfg start\"",
        "pidfile=\"{{data_path}}/.mfsgui.lock\"",
        "stop_cmd=\"${command} -c {{config_dir}}/mfsgui.cfg stop\"",
        "",
        "run_rc_command \"$1\""
      ]
    },
    {
      "kind": "service",
      "name": "{{gui_service}}",
      "when": {
        "series": "4"
      },
      "restart_on": [
        "mfsgui.cfg",
        "moosefs-build",
        "mfsgui-unit",
        "mfsgui-rcd"
      ],
      "direct": {
        "start": [
          "{{sbin_dir}}/mfsgui",
          "-c",
          "{{config_dir}}/mfsgui.cfg",
          "start"
        ],
        "stop": [
          "{{sbin_dir}}/mfsgui",
          "-c",
          "{{config_dir}}/mfsgui.cfg",
          "stop"
        ],
        "pidfile": "{{data_path}}/.mfsgui.lock"
      }
    },
    {
      "kind": "file",
      "id": "cgiserv-defaults",
      "path": "/etc/default/moosefs-cgiserv",
      "mode": "0644",
      "when": {
        "series": "3",
        "os": [
          "debian",
          "ubuntu"
        ],
        "facts.init": "systemd"
      },
      "header": "# /etc/default/moosefs-cgiserv: written by stackboot",
      "separator": "=",
      "settings": {
        "BIND_HOST": "{{gui_listen_host}}",
        "BIND_PORT": "{{gui_port}}",
        "ROOT_PATH": "{{cgi_root}}"
      }
    },
    {
      "kind": "service",
      "name": "moosefs-cgiserv",
      "when": {
        "series": "3"
      },
      "restart_on": [
        "cgiserv-defaults"
      ],
      "direct": {
        "start": [
          "{{sbin_dir}}/mfscgiserv",
          "-H",
          "{{gui_listen_host}}",
          "-P",
          "{{gui_port}}",
          "-R",
          "{{cgi_root}}",
          "start"
        ],
        "stop": [
          "{{sbin_dir}}/mfscgiserv",
          "stop"
        ],
        "pidfile": "{{localstate_dir}}/mfs/.mfscgiserv.lock"
      }
    }
  ]
}
""",
    "master": r"""{
  "description": "MooseFS master: the metadata server every other node talks to",
  "requires": [
    "moosefs-common"
  ],
  "recover": {
    "evidence": [
      "{{data_path}}/metadata.mfs",
      "{{data_path}}/metadata.mfs.back*",
      "{{data_path}}/metadata_ml.mfs.back*",
      "{{data_path}}/changelog*.mfs"
    ],
    "replaces": [
      "metalogger"
    ],
    "own": [
      {
        "path": "{{data_path}}",
        "owner": "{{working_user}}",
        "group": "{{working_group}}"
      }
    ]
  },
  "parameters": {
    "master_listen_host": {
      "type": "host",
      "default": "*",
      "help": "address the master listens on (* = all)"
    },
    "exports": {
      "type": "list",
      "items": "string",
      "allow": "*",
      "default": [
        "* / rw,alldirs,admin,maproot=0:0",
        "* . rw"
      ],
      "help": "mfsexports.cfg lines: IPRANGE PATH OPTIONS"
    },
    "master_service": {
      "type": "string",
      "default": "moosefs-master",
      "help": "the master's service name"
    },
    "master_packages": {
      "type": "list",
      "default": [
        "moosefs-master"
      ],
      "help": "packages for method=packages"
    },
    "master_extra": {
      "type": "settings",
      "default": {},
      "help": "more mfsmaster.cfg settings, KEY=VALUE,..."
    }
  },
  "overlays": {
    "freebsd": {
      "master_service": "mfsmaster"
    }
  },
  "steps": [
    {
      "kind": "packages",
      "names": "{{master_packages}}",
      "when": {
        "method": "packages"
      }
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "when": {
        "method": [
          "source",
          "git"
        ]
      },
      "archive": "{{source_archive}}",
      "version": "{{version}}",
      "autoreconf": "{{source_autoreconf}}",
      "configure": [
        "{{configure_flags}}",
        "--enable-mfsmaster"
      ],
      "env": {
        "PYTHON": "{{python}}"
      }
    },
    {
      "kind": "file",
      "id": "mfsmaster.cfg",
      "path": "{{config_dir}}/mfsmaster.cfg",
      "mode": "0644",
      "header": "# mfsmaster.cfg: written by stackboot; change it with `stackboot install master --set ...`",
      "settings": {
        "WORKING_USER": "{{working_user}}",
        "WORKING_GROUP": "{{working_group}}",
        "DATA_PATH": "{{data_path}}",
        "EXPORTS_FILENAME": "{{config_dir}}/mfsexports.cfg",
        "MATOML_LISTEN_HOST": "{{master_listen_host}}",
        "MATOML_LISTEN_PORT": "{{metalogger_port}}",
        "MATOCS_LISTEN_HOST": "{{master_listen_host}}",
        "MATOCS_LISTEN_PORT": "{{chunkserver_port}}",
        "MATOCL_LISTEN_HOST": "{{master_listen_host}}",
        "MATOCL_LISTEN_PORT": "{{client_port}}",
        "extra": "{{master_extra}}"
      }
    },
    {
      "kind": "file",
      "id": "mfsexports.cfg",
      "path": "{{config_dir}}/mfsexports.cfg",
      "mode": "0644",
      "header": "# mfsexports.cfg: written by stackboot",
      "template": "{{exports}}"
    },
    {
      "kind": "moosefs-metadata",
      "data_path": "{{data_path}}",
      "empty": "{{localstate_dir}}/mfs/metadata.mfs.empty",
      "owner": "{{working_user}}",
      "group": "{{working_group}}",
      "restore": [
        "{{sbin_dir}}/mfsmaster",
        "-c",
        "{{config_dir}}/mfsmaster.cfg",
        "restore"
      ]
    },
    {
      "kind": "file",
      "id": "mfsmaster-unit",
      "path": "/etc/systemd/system/{{master_service}}.service",
      "template": [
        "[Unit]",
        "Description=MooseFS master (built by stackboot)",
        "Wants=network-online.target",
        "After=network.target network-online.target",
        "",
        "[Service]",
        "Type=forking",
        "ExecStart={{sbin_dir}}/mfsmaster -c {{config_dir}}/mfsmaster.cfg start",
        "ExecStop={{sbin_dir}}/mfsmaster -c {{config_dir}}/mfsmaster.cfg stop",
        "ExecReload={{sbin_dir}}/mfsmaster -c {{config_dir}}/mfsmaster.cfg reload",
        "PIDFile={{data_path}}/.mfsmaster.lock",
        "TimeoutStartSec=1800",
        "TimeoutStopSec=1800",
        "Restart=no",
        "",
        "[Install]",
        "WantedBy=multi-user.target"
      ],
      "when": {
        "method": [
          "source",
          "git"
        ],
        "facts.init": "systemd"
      }
    },
    {
      "kind": "file",
      "id": "mfsmaster-rcd",
      "path": "/usr/local/etc/rc.d/{{master_service}}",
      "mode": "0755",
      "template": [
        "#!/bin/sh",
        "#",
        "# PROVIDE: mfsmaster",
        "# REQUIRE: NETWORKING",
        "# KEYWORD: shutdown",
        "#",
        "# Written by stackboot for a MooseFS source build.",
        "",
        ". /etc/rc.subr",
        "",
        "name=\"mfsmaster\"",
        "rcvar=\"mfsmaster_enable\"",
        "",
        "load_rc_config $name",
        "",
        ": ${mfsmaster_enable:=\"NO\"}",
        ": ${mfsmaster_config:=\"{{config_dir}}/mfsmaster.cfg\"}",
        "",
        "command=\"{{sbin_dir}}/mfsmaster\"",
        "command_args=\"-c ${mfsmaster_config} start\"",
        "pidfile=\"{{data_path}}/.mfsmaster.lock\"",
        "stop_cmd=\"${command} -c ${mfsmaster_config} stop\"",
        "reload_cmd=\"${command} -c ${mfsmaster_config} reload\"",
        "extra_commands=\"reload\"",
        "",
        "run_rc_command \"$1\""
      ],
      "when": {
        "method": [
          "source",
          "git"
        ],
        "os": "freebsd"
      }
    },
    {
      "kind": "service",
      "name": "{{master_service}}",
      "restart_on": [
        "mfsmaster.cfg",
        "moosefs-build",
        "mfsmaster-unit",
        "mfsmaster-rcd"
      ],
      "reload_on": [
        "mfsexports.cfg"
      ],
      "direct": {
        "start": [
          "{{sbin_dir}}/mfsmaster",
          "-c",
          "{{config_dir}}/mfsmaster.cfg",
          "start"
        ],
        "stop": [
          "{{sbin_dir}}/mfsmaster",
          "-c",
          "{{config_dir}}/mfsmaster.cfg",
          "stop"
        ],
        "reload": [
          "{{sbin_dir}}/mfsmaster",
          "-c",
          "{{config_dir}}/mfsmaster.cfg",
          "reload"
        ],
        "pidfile": "{{data_path}}/.mfsmaster.lock"
      }
    }
  ]
}
""",
    "metalogger": r"""{
  "description": "MooseFS metalogger: keeps a copy of the master's metadata for recovery",
  "requires": [
    "moosefs-common"
  ],
  "parameters": {
    "back_logs": {
      "type": "int",
      "default": 50,
      "min": 1,
      "max": 10000,
      "help": "changelog files kept (BACK_LOGS)"
    },
    "meta_download_freq": {
      "type": "int",
      "default": 24,
      "min": 1,
      "max": 1000,
      "help": "hours between metadata downloads"
    },
    "metalogger_service": {
      "type": "string",
      "default": "moosefs-metalogger",
      "help": "the metalogger's service name"
    },
    "metalogger_packages": {
      "type": "list",
      "default": [
        "moosefs-metalogger"
      ],
      "help": "packages for method=packages"
    },
    "metalogger_extra": {
      "type": "settings",
      "default": {},
      "help": "more mfsmetalogger.cfg settings"
    }
  },
  "overlays": {
    "freebsd": {
      "metalogger_service": "mfsmetalogger"
    }
  },
  "steps": [
    {
      "kind": "packages",
      "names": "{{metalogger_packages}}",
      "when": {
        "method": "packages"
      }
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "when": {
        "method": [
          "source",
          "git"
        ]
      },
      "archive": "{{source_archive}}",
      "version": "{{version}}",
      "autoreconf": "{{source_autoreconf}}",
      "configure": [
        "{{configure_flags}}",
        "--enable-mfsmetalogger"
      ],
      "env": {
        "PYTHON": "{{python}}"
      }
    },
    {
      "kind": "file",
      "id": "mfsmetalogger.cfg",
      "path": "{{config_dir}}/mfsmetalogger.cfg",
      "mode": "0644",
      "header": "# mfsmetalogger.cfg: written by stackboot",
      "settings": {
        "WORKING_USER": "{{working_user}}",
        "WORKING_GROUP": "{{working_group}}",
        "DATA_PATH": "{{data_path}}",
        "MASTER_HOST": "{{master_host}}",
        "MASTER_PORT": "{{metalogger_port}}",
        "BACK_LOGS": "{{back_logs}}",
        "META_DOWNLOAD_FREQ": "{{meta_download_freq}}",
        "extra": "{{metalogger_extra}}"
      }
    },
    {
      "kind": "file",
      "id": "mfsmetalogger-unit",
      "path": "/etc/systemd/system/{{metalogger_service}}.service",
      "template": [
        "[Unit]",
        "Description=MooseFS metalogger (built by stackboot)",
        "Wants=network-online.target",
        "After=network.target network-online.target",
        "",
        "[Service]",
        "Type=forking",
        "ExecStart={{sbin_dir}}/mfsmetalogger -c {{config_dir}}/mfsmetalogger.cfg start",
        "ExecStop={{sbin_dir}}/mfsmetalogger -c {{config_dir}}/mfsmetalogger.cfg stop",
        "ExecReload={{sbin_dir}}/mfsmetalogger -c {{config_dir}}/mfsmetalogger.cfg reload",
        "PIDFile={{data_path}}/.mfsmetalogger.lock",
        "Restart=on-abnormal",
        "",
        "[Install]",
        "WantedBy=multi-user.target"
      ],
      "when": {
        "method": [
          "source",
          "git"
        ],
        "facts.init": "systemd"
      }
    },
    {
      "kind": "file",
      "id": "mfsmetalogger-rcd",
      "path": "/usr/local/etc/rc.d/{{metalogger_service}}",
      "mode": "0755",
      "template": [
        "#!/bin/sh",
        "#",
        "# PROVIDE: mfsmetalogger",
        "# REQUIRE: NETWORKING",
        "# KEYWORD: shutdown",
        "#",
        "# Written by stackboot for a MooseFS source build.",
        "",
        ". /etc/rc.subr",
        "",
        "name=\"mfsmetalogger\"",
        "rcvar=\"mfsmetalogger_enable\"",
        "",
        "load_rc_config $name",
        "",
        ": ${mfsmetalogger_enable:=\"NO\"}",
        ": ${mfsmetalogger_config:=\"{{config_dir}}/mfsmetalogger.cfg\"}",
        "",
        "command=\"{{sbin_dir}}/mfsmetalogger\"",
        "command_args=\"-c ${mfsmetalogger_config} start\"",
        "pidfile=\"{{data_path}}/.mfsmetalogger.lock\"",
        "stop_cmd=\"${command} -c ${mfsmetalogger_config} stop\"",
        "reload_cmd=\"${command} -c ${mfsmetalogger_config} reload\"",
        "extra_commands=\"reload\"",
        "",
        "run_rc_command \"$1\""
      ],
      "when": {
        "method": [
          "source",
          "git"
        ],
        "os": "freebsd"
      }
    },
    {
      "kind": "service",
      "name": "{{metalogger_service}}",
      "restart_on": [
        "mfsmetalogger.cfg",
        "moosefs-build",
        "mfsmetalogger-unit",
        "mfsmetalogger-rcd"
      ],
      "reload_on": [],
      "direct": {
        "start": [
          "{{sbin_dir}}/mfsmetalogger",
          "-c",
          "{{config_dir}}/mfsmetalogger.cfg",
          "start"
        ],
        "stop": [
          "{{sbin_dir}}/mfsmetalogger",
          "-c",
          "{{config_dir}}/mfsmetalogger.cfg",
          "stop"
        ],
        "reload": [
          "{{sbin_dir}}/mfsmetalogger",
          "-c",
          "{{config_dir}}/mfsmetalogger.cfg",
          "reload"
        ],
        "pidfile": "{{data_path}}/.mfsmetalogger.lock"
      }
    }
  ]
}
""",
    "moosefs-common": r"""{
  "description": "MooseFS groundwork shared by every MooseFS role: user, paths, ports, and how the binaries get here (source build, git, or packages)",
  "parameters": {
    "method": {
      "type": "string",
      "default": "source",
      "choices": [
        "source",
        "git",
        "packages"
      ],
      "help": "source: build the release tarball; git: build a pinned commit; packages: the distribution's moosefs-* packages"
    },
    "version": {
      "type": "string",
      "default": "4.59.1",
      "pattern": "[0-9A-Za-z][0-9A-Za-z.+-]*",
      "help": "MooseFS version to build (a label for method=git)"
    },
    "source_url": {
      "type": "url",
      "default": "https://repository.moosefs.com/src/moosefs-{{version}}-1.tar.gz",
      "help": "release tarball (or a GitHub tag archive) for method=source"
    },
    "source_sha256": {
      "type": "sha256",
      "default": null,
      "lookup": {
        "key": "version",
        "table": {
          "4.59.1": "58e67f654a109b9ff2b9356e25a8c54ae743f2a74d29f09b052fefb99be6bc5d"
        }
      },
      "help": "sha256 of source_url; known for the default version, required for any other"
    },
    "git_url": {
      "type": "url",
      "default": "https://github.com/moosefs/moosefs.git",
      "help": "repository for method=git"
    },
    "git_commit": {
      "type": "string",
      "default": null,
      "pattern": "[0-9a-f]{7,40}",
      "help": "commit to build for method=git"
    },
    "source_autoreconf": {
      "type": "bool",
      "default": null,
      "lookup": {
        "key": "method",
        "table": {
          "git": true,
          "source": false,
          "packages": false
        }
      },
      "help": "regenerate the build system first (needed for git checkouts)"
    },
    "download_dir": {
      "type": "path",
      "default": "/var/cache/stackboot/downloads",
      "help": "where source tarballs are kept"
    },
    "source_archive": {
      "type": "path",
      "default": "{{download_dir}}/moosefs-{{version}}.tar.gz",
      "help": "the tarball the build uses"
    },
    "prefix": {
      "type": "path",
      "default": "/usr",
      "help": "install prefix of a source build"
    },
    "sysconf_dir": {
      "type": "path",
      "default": "/etc",
      "help": "configure --sysconfdir"
    },
    "localstate_dir": {
      "type": "path",
      "default": "/var/lib",
      "help": "configure --localstatedir"
    },
    "man_dir": {
      "type": "path",
      "default": "/usr/share/man",
      "help": "configure --mandir"
    },
    "python": {
      "type": "path",
      "default": "/usr/bin/python3",
      "help": "the system Python written into the CLI and GUI scripts"
    },
    "configure_flags": {
      "type": "list",
      "allow": "",
      "default": [
        "--prefix={{prefix}}",
        "--mandir={{man_dir}}",
        "--sysconfdir={{sysconf_dir}}",
        "--localstatedir={{localstate_dir}}",
        "--with-default-user={{working_user}}",
        "--with-default-group={{working_group}}",
        "--enable-option-checking=fatal",
        "--disable-all"
      ],
      "help": "configure flags every role shares; each role adds its module's --enable flag"
    },
    "build_packages": {
      "type": "list",
      "default": [
        "build-essential",
        "libpcap-dev",
        "zlib1g-dev",
        "libfuse3-dev",
        "pkg-config",
        "python3"
      ],
      "help": "build dependencies for a source build"
    },
    "git_packages": {
      "type": "list",
      "default": [
        "git",
        "autoconf",
        "automake",
        "libtool"
      ],
      "help": "extra build dependencies for method=git"
    },
    "working_user": {
      "type": "string",
      "default": "mfs",
      "pattern": "[a-z_][a-z0-9_-]{0,31}",
      "help": "user the MooseFS daemons run as"
    },
    "working_group": {
      "type": "string",
      "default": "mfs",
      "pattern": "[a-z_][a-z0-9_-]{0,31}",
      "help": "group the MooseFS daemons run as"
    },
    "working_home": {
      "type": "path",
      "default": "{{data_path}}",
      "help": "the working user's home (a lab keeps the host's own)"
    },
    "config_dir": {
      "type": "path",
      "default": "{{sysconf_dir}}/mfs",
      "help": "where the mfs*.cfg files live"
    },
    "data_path": {
      "type": "path",
      "default": "{{localstate_dir}}/mfs",
      "help": "the daemons' data directory (metadata, changelogs, locks)"
    },
    "sbin_dir": {
      "type": "path",
      "default": "{{prefix}}/sbin",
      "help": "where the daemons are installed"
    },
    "bin_dir": {
      "type": "path",
      "default": "{{prefix}}/bin",
      "help": "where mfsmount and the tools are installed"
    },
    "nologin_shell": {
      "type": "path",
      "default": "/usr/sbin/nologin",
      "help": "login shell of the working user"
    },
    "master_host": {
      "type": "host",
      "default": "mfsmaster",
      "help": "name or address of the master, for every other role"
    },
    "metalogger_port": {
      "type": "port",
      "default": 9419,
      "help": "master port for metaloggers (MATOML)"
    },
    "chunkserver_port": {
      "type": "port",
      "default": 9420,
      "help": "master port for chunkservers (MATOCS)"
    },
    "client_port": {
      "type": "port",
      "default": 9421,
      "help": "master port for clients and tools (MATOCL)"
    },
    "moosefs_repository": {
      "type": "bool",
      "default": false,
      "help": "method=packages: use the official MooseFS repository (4.x) instead of the distribution's packages"
    },
    "repo_url": {
      "type": "url",
      "default": "https://repository.moosefs.com/moosefs-4/yum/el{{facts.major}}",
      "help": "the official MooseFS repository for this platform"
    },
    "repo_suite": {
      "type": "string",
      "default": null,
      "help": "apt suite of the repository (the release codename)"
    },
    "repo_key_url": {
      "type": "url",
      "default": "https://repository.moosefs.com/moosefs.key",
      "help": "the repository's signing key"
    },
    "repo_key_sha256": {
      "type": "sha256",
      "default": null,
      "help": "sha256 of the signing key: required with moosefs_repository (upstream publishes none; pin the one you checked)"
    },
    "distro_package_series": {
      "type": "string",
      "default": "4",
      "choices": [
        "3",
        "4"
      ],
      "help": "major version of the distribution's own MooseFS packages"
    },
    "package_series": {
      "type": "string",
      "default": null,
      "choices": [
        "3",
        "4"
      ],
      "lookup": {
        "key": "moosefs_repository",
        "table": {
          "true": "4",
          "false": "{{distro_package_series}}"
        }
      },
      "help": "major version of the packages method=packages installs"
    },
    "series": {
      "type": "string",
      "default": null,
      "choices": [
        "3",
        "4"
      ],
      "lookup": {
        "key": "method",
        "table": {
          "source": "4",
          "git": "4",
          "packages": "{{package_series}}"
        }
      },
      "help": "MooseFS major version on this host (3.x and 4.x differ in the GUI and some keys)"
    }
  },
  "overlays": {
    "debian": {
      "distro_package_series": "3",
      "repo_url": "https://repository.moosefs.com/moosefs-4/apt/debian/{{facts.codename}}",
      "repo_suite": "{{facts.codename}}"
    },
    "ubuntu": {
      "distro_package_series": "3",
      "repo_url": "https://repository.moosefs.com/moosefs-4/apt/ubuntu/{{facts.codename}}",
      "repo_suite": "{{facts.codename}}"
    },
    "fedora": {
      "build_packages": [
        "gcc",
        "make",
        "libpcap-devel",
        "zlib-devel",
        "fuse3-devel",
        "pkgconfig",
        "python3"
      ],
      "moosefs_repository": true
    },
    "freebsd": {
      "prefix": "/usr/local",
      "sysconf_dir": "/usr/local/etc",
      "localstate_dir": "/var",
      "man_dir": "/usr/local/man",
      "python": "/usr/local/bin/python3",
      "build_packages": [
        "python3",
        "pkgconf",
        "fusefs-libs3"
      ],
      "repo_url": "https://repository.moosefs.com/moosefs-4/freebsd/{{facts.major}}"
    },
    "lab": {
      "config_dir": "{{facts.lab}}/etc/mfs",
      "data_path": "{{facts.lab}}/var/lib/mfs",
      "working_home": "{{localstate_dir}}/mfs"
    }
  },
  "steps": [
    {
      "kind": "group",
      "name": "{{working_group}}"
    },
    {
      "kind": "user",
      "name": "{{working_user}}",
      "group": "{{working_group}}",
      "home": "{{working_home}}",
      "shell": "{{nologin_shell}}"
    },
    {
      "kind": "directory",
      "path": "{{config_dir}}",
      "mode": "0755"
    },
    {
      "kind": "directory",
      "path": "{{data_path}}",
      "owner": "{{working_user}}",
      "group": "{{working_group}}",
      "mode": "0755",
      "data": true
    },
    {
      "kind": "download",
      "id": "moosefs-repo-key",
      "url": "{{repo_key_url}}",
      "sha256": "{{repo_key_sha256}}",
      "dest": "{{download_dir}}/moosefs-repository.key",
      "when": {
        "method": "packages",
        "moosefs_repository": true
      }
    },
    {
      "kind": "repository",
      "id": "moosefs-repository",
      "name": "moosefs",
      "url": "{{repo_url}}",
      "suite": "{{repo_suite}}",
      "components": [
        "main"
      ],
      "key_file": "{{download_dir}}/moosefs-repository.key",
      "when": {
        "method": "packages",
        "moosefs_repository": true
      }
    },
    {
      "kind": "packages",
      "names": "{{build_packages}}",
      "when": {
        "method": [
          "source",
          "git"
        ]
      }
    },
    {
      "kind": "packages",
      "names": "{{git_packages}}",
      "when": {
        "method": "git"
      }
    },
    {
      "kind": "download",
      "id": "moosefs-source",
      "url": "{{source_url}}",
      "sha256": "{{source_sha256}}",
      "dest": "{{source_archive}}",
      "when": {
        "method": "source"
      }
    },
    {
      "kind": "command",
      "id": "moosefs-clone",
      "when": {
        "method": "git"
      },
      "argv": [
        "git",
        "clone",
        "--quiet",
        "--no-checkout",
        "{{git_url}}",
        "{{download_dir}}/moosefs.git"
      ],
      "creates": "{{download_dir}}/moosefs.git/.git"
    },
    {
      "kind": "command",
      "id": "moosefs-fetch",
      "when": {
        "method": "git"
      },
      "argv": [
        "git",
        "-C",
        "{{download_dir}}/moosefs.git",
        "fetch",
        "--quiet",
        "origin"
      ],
      "unless": [
        "git",
        "-C",
        "{{download_dir}}/moosefs.git",
        "cat-file",
        "-e",
        "{{git_commit}}^{commit}"
      ]
    },
    {
      "kind": "command",
      "id": "moosefs-archive",
      "when": {
        "method": "git"
      },
      "argv": [
        "git",
        "-C",
        "{{download_dir}}/moosefs.git",
        "archive",
        "--format=tar.gz",
        "--prefix=moosefs-{{version}}/",
        "-o",
        "{{source_archive}}",
        "{{git_commit}}"
      ],
      "creates": "{{source_archive}}"
    }
  ]
}
""",
    "zfs-store": r"""{
  "description": "ZFS store: an existing pool (or one made from vdevs you list, each proven blank) and datasets with properties",
  "parameters": {
    "zfs_pool": {
      "type": "string",
      "pattern": "[A-Za-z][A-Za-z0-9_.:-]*",
      "help": "the pool to use (never guessed)"
    },
    "zfs_vdevs": {
      "type": "list",
      "items": "path",
      "default": [],
      "help": "vdevs to create the pool from when it does not exist"
    },
    "zfs_vdev_size": {
      "type": "size",
      "default": null,
      "help": "size of file vdevs created when missing"
    },
    "zfs_pool_mountpoint": {
      "type": "path",
      "default": null,
      "help": "mount point of a new pool's root dataset"
    },
    "zfs_root": {
      "type": "string",
      "default": "stackboot",
      "pattern": "[A-Za-z0-9_.:/-]+",
      "help": "anchor dataset under the pool (canmount=off) holding the store's datasets"
    },
    "zfs_mount": {
      "type": "path",
      "default": "/srv/zfs",
      "help": "where the anchor's children mount"
    },
    "zfs_datasets": {
      "type": "list",
      "default": [],
      "pattern": "[A-Za-z0-9_.:-]+",
      "help": "datasets to create under the anchor (each mounts at zfs_mount/NAME)"
    },
    "zfs_properties": {
      "type": "settings",
      "default": {
        "compression": "on",
        "atime": "off"
      },
      "help": "properties for every dataset (compression, atime, recordsize, quota, refquota, reservation...)"
    },
    "zfs_packages": {
      "type": "list",
      "default": [
        "zfsutils-linux"
      ],
      "help": "packages that bring zpool and zfs"
    },
    "zfs_services": {
      "type": "list",
      "default": [
        "zfs-import-cache",
        "zfs-mount"
      ],
      "help": "services that bring pools back at boot (enabled, not restarted)"
    }
  },
  "overlays": {
    "freebsd": {
      "zfs_packages": [],
      "zfs_services": [
        "zfs"
      ]
    },
    "fedora": {
      "zfs_packages": [
        "zfs"
      ]
    }
  },
  "steps": [
    {
      "kind": "packages",
      "names": "{{zfs_packages}}"
    },
    {
      "kind": "zfs-pool",
      "name": "{{zfs_pool}}",
      "vdevs": "{{zfs_vdevs}}",
      "vdev_size": "{{zfs_vdev_size}}",
      "mountpoint": "{{zfs_pool_mountpoint}}"
    },
    {
      "kind": "zfs-dataset",
      "name": "{{zfs_pool}}/{{zfs_root}}",
      "properties": {
        "canmount": "off",
        "mountpoint": "{{zfs_mount}}"
      }
    },
    {
      "kind": "zfs-dataset",
      "for_each": "{{zfs_datasets}}",
      "as": "dataset",
      "name": "{{zfs_pool}}/{{zfs_root}}/{{dataset}}",
      "properties": "{{zfs_properties}}"
    },
    {
      "kind": "service",
      "for_each": "{{zfs_services}}",
      "as": "unit",
      "name": "{{unit}}",
      "running": null,
      "when": {
        "facts.init": [
          "systemd",
          "rc"
        ]
      }
    }
  ]
}
""",
}  # end of EMBEDDED_PROFILES

# Built-in clusters (profiles/clusters/*.json): `lab up` and `cloud-init --cluster` know them by name.
EMBEDDED_CLUSTERS = {
    "seed": r"""{
  "description": "The MooseFS docker-compose seed's topology: master, GUI, metalogger, four labelled chunkservers, two clients (Debian's packages)",
  "subnet": "10.42.0.0/24",
  "parameters": {
    "method": "packages",
    "master_host": "10.42.0.10"
  },
  "nodes": {
    "master": {"address": "10.42.0.10", "roles": ["master", "cli"]},
    "gui": {"address": "10.42.0.11", "roles": ["gui"]},
    "metalogger": {"address": "10.42.0.12", "roles": ["metalogger"]},
    "cs1": {"address": "10.42.0.21", "roles": ["chunkserver"], "parameters": {"labels": "M"}},
    "cs2": {"address": "10.42.0.22", "roles": ["chunkserver"], "parameters": {"labels": "M,B"}},
    "cs3": {"address": "10.42.0.23", "roles": ["chunkserver"], "parameters": {"labels": "M,B"}},
    "cs4": {"address": "10.42.0.24", "roles": ["chunkserver"], "parameters": {"labels": "B"}},
    "client1": {"address": "10.42.0.31", "roles": ["client"]},
    "client2": {"address": "10.42.0.32", "roles": ["client"]}
  }
}
""",
}  # end of EMBEDDED_CLUSTERS


if __name__ == "__main__":
    sys.exit(main())
