#!/usr/bin/python3
"""stackboot: turn a bare Linux or FreeBSD host into a working storage node.

One file, standard library only, Python 3.6 or newer. Plain JSON profiles say
what a role needs (packages, users, directories, config files, builds,
services); the engine turns them into ordered steps, shows what would change
(`plan`) and converges the host (`install`). Every run is idempotent.

    python3 stackboot.py list
    python3 stackboot.py plan master
    python3 stackboot.py install master --set method=packages

Every command follows one recipe: roles + inputs + facts -> `make_plan` -> a Plan
(the resolved values and the ordered steps, each aimed at a goal: present, stopped,
absent or purged) -> `converge`, the one loop that changes a host -> a report.
Every change to the host goes through `Host` (files) or its `Runner` (commands),
which refuse it while planning and log it.

The file reads top to bottom, general to specific: errors, utilities, the runner,
the host, platform facts, value types, profiles and parameters, platform tables,
state, step kinds (generic, then stores, then MooseFS and CernVM-FS), the plan,
the converge loop, reporting, clusters, commands, the lab, and `main()` last.
"""

import sys


def interrupted_while_starting(signum, frame):
    """Ctrl-C before main's own handler is in place: one line, not a traceback."""
    sys.stderr.write("error: interrupted while starting; nothing was changed\nstackboot: failed (exit 130)\n")
    raise SystemExit(130)


if __name__ == "__main__":
    try:   # the built-in half of `signal`: set at once (the module itself takes a while to import)
        import _signal
    except ImportError:
        import signal as _signal
    _signal.signal(_signal.SIGINT, interrupted_while_starting)

import errno  # noqa: E402 (the handler first: reading the rest of this file takes a while)
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

__version__ = "0.2.0"

EXIT_OK = 0          # success, or nothing to change
EXIT_FAILED = 1      # a step or a command failed
EXIT_PENDING = 2     # plan --detailed-exitcode / check: changes are pending
EXIT_BAD_INPUT = 64  # bad usage or bad input (sysexits EX_USAGE); nothing changed
EXIT_INTERRUPTED = 130   # interrupted (128 + SIGINT, as shells report it); what was open was closed
EXIT_TERMINATED = 143    # stopped by SIGTERM (128 + 15): a service manager, a timeout, kill
EXIT_BROKEN_PIPE = 141   # whoever read the output stopped reading (128 + SIGPIPE); quietly

STATE_DIR = "/var/lib/stackboot"
LOG_FILE = "/var/log/stackboot.log"
CACHE_DIR = "/var/cache/stackboot"
SYSTEM_PROFILE_DIR = "/etc/stackboot/profiles"
SITE_FILE = "/etc/stackboot/site.json"
# An installed copy: the program as a module (Python caches its bytecode beside it) and a
# launcher that imports it. `self-install` and cloud-init's user-data put it there.
INSTALL_DIR = "/usr/local/lib/stackboot"
LAUNCHER = "/usr/local/sbin/stackboot"
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


class Stopped(StackbootError):
    """SIGINT or SIGTERM: the run stopped between two steps, or at once on a second signal
    (the step's intent is recorded: the next run finishes it)."""

    def __init__(self, signum, where=""):
        what = {2: "interrupted (SIGINT, Ctrl-C)", 15: "stopped (SIGTERM)"}.get(signum, "stopped by signal %d" % signum)
        StackbootError.__init__(self, what + where, "run the same command again to finish the job")
        self.exit_code = 128 + signum


class BadReference(BadInput):
    """A profile's {{list.field}} that its list cannot give."""


class CommandFailed(StackbootError):
    """A command the runner ran exited non-zero."""

    def __init__(self, result, fix=None):
        detail = (result.err or result.out).strip().splitlines()
        full = [line for line in (result.err + "\n" + result.out).splitlines() if "No space left on device" in line]
        if full:   # whatever else it says, this is the cause, and it names the file it could not write
            detail, fix = full[-1:], "free some space there, then run again (the next run finishes the job)"
        message = "%s exited %d" % (" ".join(result.argv), result.rc)
        if detail:
            message += ": " + detail[-1][:300]
        StackbootError.__init__(self, message, fix)
        self.result = result


class Signals:
    """SIGINT and SIGTERM while `main` runs. While nothing changes the host, the run stops at
    once. While a step changes it, the first signal lets the step end (its command, its state
    record) and the run stops right after it; a second one stops at once, ending the commands
    stackboot started (each runs in its own process group, so a terminal's Ctrl-C reaches
    stackboot alone and stackboot decides)."""

    def __init__(self):
        self.received = None    # the signal that asked to stop while a step was changing the host
        self.in_step = False
        self.previous = {}

    def install(self):
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.handle)
        except ValueError:   # not the main thread (an embedding program): its signals, its rules
            self.previous = {}

    def restore(self):
        for signum, handler in self.previous.items():
            if getattr(handler, "__name__", None) == "interrupted_while_starting":
                handler = signal.SIG_IGN   # the run is over, only Python's exit is left: nothing to stop
            signal.signal(signum, handler)
        self.previous, self.received, self.in_step = {}, None, False

    def handle(self, signum, frame):
        if self.in_step and self.received is None:
            self.received = signum
            sys.stderr.write("stackboot: %s: stopping once this step is done (again to stop now)\n"
                             % ("SIGINT" if signum == 2 else "SIGTERM" if signum == 15 else "signal %d" % signum))
            return
        Runner.end_children()
        raise Stopped(signum)

    def step(self, name):
        """Around one step's changes: a signal then waits for the step's end."""
        import contextlib

        @contextlib.contextmanager
        def deferring():
            self.in_step = True
            try:
                yield
            finally:
                self.in_step = False
            if self.received is not None:
                raise Stopped(self.received, " after %s" % name)
        return deferring()


SIGNALS = Signals()


# ---------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------
# Plain functions. The few that write (atomic_write, fetch, extract_archive) are called
# by the Host, which guards and logs every change; write_zipapp and write_output make an
# output file the user asked for (a bundle, the dist zipapp, cloud-init user-data) on
# this machine. Nothing else writes: steps and commands change a host through the Host.

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


def read_bytes(path, limit=None):
    """The file's bytes, or None when it does not exist. Only a plain file: a FIFO or a device
    would block or never end. With `limit`, a larger file is an error too."""
    import stat as stat_module
    try:
        st = os.stat(path)
        if not stat_module.S_ISREG(st.st_mode):
            raise IOError(errno.EINVAL, "not a plain file", path)
        if limit is not None and st.st_size > limit:
            raise IOError(errno.EFBIG, "larger than %d MiB" % (limit >> 20), path)
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def process_name(pid):
    """What a process calls itself (/proc/PID/comm); "?" once it is gone (ESRCH while reading, too)."""
    try:
        return as_text(read_bytes("/proc/%s/comm" % pid) or b"?").strip()
    except OSError:
        return "?"


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
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if (uid, gid) != (-1, -1):
            os.chown(temp, uid, gid, follow_symlinks=False)   # our own new file: O_EXCL made it
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
    for secret in sorted(secrets, key=len, reverse=True):   # a secret inside a longer one: the longer first
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
    return text if re.match(r"^[A-Za-z0-9_./:@,+-]*\Z", text) else '"%s"' % text


def parse_mode(text):
    """'0644' -> 0o644; anything else is a ValueError for the caller to locate."""
    if isinstance(text, str) and re.match(r"^0?[0-7]{3,4}\Z", text):
        return int(text, 8)
    raise ValueError("expected an octal mode like \"0644\", got %s" % json.dumps(text))


def render_scalar(value):
    """A value as one config word or line: lists comma-joined, a structured value as its text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(render_scalar(item) for item in value)
    if isinstance(value, dict) and "text" in value:   # a structured value (like a disk) renders as its text
        return value["text"]
    return str(value)


def fetch(url, part, out=None, offline=False):
    """Download `url` into the file `part`, resuming what an interrupted run left there."""
    if url.startswith("file://"):
        import shutil
        shutil.copyfile(url[7:], part)
        return
    if offline:
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
    last, shown = 0.0, [None]

    def show():
        share = " %3d%%" % (done * 100 // total) if total else ""
        line = "  downloading %s%s (%d KiB)" % (url.rsplit("/", 1)[-1], share, done // 1024)
        if out is not None and line != shown[0]:   # a small file is done at its first block: one line, not two
            shown[0] = line
            out.progress(line)

    with response, open(part, "ab" if resumed else "wb") as handle:
        while True:
            block = response.read(1 << 16)
            if not block:
                break
            handle.write(block)
            done += len(block)
            if out is not None and time.time() - last > (0.2 if out.tty else 5):
                last = time.time()
                show()
    show()
    if out is not None:
        out.progress_done()
    if total is not None and done < total:
        raise StackbootError("download %s stopped at %d of %d bytes" % (url, done, total), "run again to resume")


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


JSON_DEPTH = 32   # deeper than any file stackboot reads needs; a guard against RecursionError


class DuplicateKey(ValueError):
    pass


def load_json(data, origin, fix, error=None):
    """A JSON file someone gave or left: UTF-8 (a BOM is fine), nested at most JSON_DEPTH
    levels, no key twice in one object. Anything else is one `error` (BadInput) naming origin."""
    error = error or BadInput
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error("%s: not UTF-8 text (byte %d is %s)" % (origin, exc.start, hex(data[exc.start])), fix)
    data = data[1:] if data.startswith("\ufeff") else data

    def unique(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
        return dict(pairs)
    def no_constant(name):
        raise ValueError("%s is not JSON" % name)
    try:
        value = json.loads(data, object_pairs_hook=unique, parse_constant=no_constant)
    except DuplicateKey as exc:
        raise error("%s: the key %s appears twice in one object" % (origin, json.dumps(str(exc))), fix)
    except RecursionError:
        raise error("%s: nested deeper than %d levels" % (origin, JSON_DEPTH), fix)
    except ValueError as exc:
        where = "line %d column %d: " % (exc.lineno, exc.colno) if hasattr(exc, "lineno") else ""
        raise error("%s: %sinvalid JSON: %s" % (origin, where, getattr(exc, "msg", exc)), fix)
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > JSON_DEPTH:
            raise error("%s: nested deeper than %d levels" % (origin, JSON_DEPTH), fix)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return value


INPUT_LIMIT = 64 << 20   # a profile, site, cluster or state file: larger is a mistake


def read_input(path, what, fix):
    """The bytes of a file the user named; BadInput (not a permissions hint) when it cannot be read."""
    try:
        data = read_bytes(path, INPUT_LIMIT)
    except (IOError, OSError) as exc:
        raise BadInput("%s %s: cannot read it (%s)" % (what, path, exc.strerror or exc), fix)
    if data is None:
        raise BadInput("%s %s: no such file" % (what, path), fix)
    return data



def compiled(source):
    """Bytecode of stackboot for this Python, as a .pyc that needs no source to check against
    (unchecked hash, PEP 552); None where Python predates it (3.6: the source is used)."""
    if sys.version_info < (3, 7):
        return None
    import importlib.util
    import marshal
    header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + importlib.util.source_hash(source)  # novermin
    return header + marshal.dumps(compile(source, "stackboot.py", "exec", dont_inherit=True))


def write_zipapp(path, source, members=(), mode=0o755):
    """A zipapp at `path`, whole or not at all: a launcher as __main__.py, stackboot as a module
    with its bytecode beside it (Python takes that where its version matches, the source
    elsewhere), then `members` ((name, a file's path or bytes), ...)."""
    import zipfile
    temp = path + TEMP_MARK + "pyz"
    with open(temp, "wb") as handle:
        handle.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.writestr("__main__.py", MODULE_MAIN % "")
            zipped.writestr("stackboot.py", source)
            bytecode = compiled(source)
            if bytecode:
                zipped.writestr("stackboot.pyc", bytecode)
            for name, data in members:
                if isinstance(data, bytes):
                    info = zipfile.ZipInfo(name, time.localtime()[:6])
                    info.external_attr = (mode & 0o666) << 16   # as private as the bundle itself
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zipped.writestr(info, data)
                else:
                    zipped.write(data, name)
    os.chmod(temp, mode)
    os.rename(temp, path)


def write_output(path, data, mode=0o600):
    """A file the user asked for (cloud-init user-data), whole or not at all."""
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        os.makedirs(os.path.dirname(os.path.abspath(path)))
    atomic_write(path, data, mode)


class Output:
    """Terminal output: colour only on a terminal and never with NO_COLOR. `secrets` is the
    session's one set of values never to be printed (the runner's log shares it).

    With --json, `document` is the one JSON document the command prints on stdout at the end
    (JSON_FORMAT): the text a command says goes to stderr, as progress."""

    COLORS = {"+": "32", "~": "33", "-": "31", "!": "31", "error": "31"}

    def __init__(self, stream=None, quiet=False, verbose=False, secrets=None, document=None):
        self.document = document
        if document is not None and stream is None:
            stream = sys.stderr
        self.stream = stream or sys.stdout or open(os.devnull, "w")   # started with stdout closed: say nothing
        self.quiet = quiet
        self.verbose = verbose
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.color = self.tty and "NO_COLOR" not in os.environ
        self.secrets = set() if secrets is None else secrets

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
            sys.stderr.write(redact(text, self.secrets) + "\n")

    def progress(self, text):
        """One progress line; rewritten in place on a terminal, plain lines elsewhere."""
        if self.quiet:
            return
        text = redact(text, self.secrets)
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def progress_done(self):
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()

    # -- the --json document: what a command did, as data ----------------------------
    def put(self, key, value):
        if self.document is not None:
            self.document[key] = value

    def add(self, key, items):
        """Append to a list of the document (several converges in one command: a lab's nodes)."""
        if self.document is not None:
            self.document.setdefault(key, []).extend(items)

    def tally(self, **counts):
        if self.document is not None:
            summary = self.document.setdefault("summary", {})
            for key, number in counts.items():
                summary[key] = summary.get(key, 0) + number


# The --json document, format 1: {"format_version": 1, "command": NAME, "exit_code": N, then what
# the command gives: "steps" (each {"id", "kind", "target", "profile", "node"?, "changes": [{"action",
# "summary", "diff"}]}: plan and check list every step, the changing commands the steps they
# changed), "summary" (counts), "report" (lines for the user), "error" and "fix" when it failed,
# or the command's own keys (facts, roles, parameters, nodes, bundle, user_data).
JSON_FORMAT = 1


def redact_data(value, secrets):
    """A JSON value with every secret replaced in each of its strings (not in the dumped text,
    where a secret's escaped form would slip past)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [redact_data(item, secrets) for item in value]
    if isinstance(value, dict):
        return dict((redact_data(key, secrets), redact_data(item, secrets)) for key, item in value.items())
    return value


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
    mistake; the Host asks the same question (`permit`) before each change it
    makes to a file. Each command and change is appended to the JSON-lines log
    when one is open. Tests replace this class with a recording or faking subclass.
    """

    def __init__(self, root="/", prefix=(), secrets=None):
        self.root = root
        self.prefix = list(prefix)   # what every command runs under (a lab node: nsenter into its network)
        self.allow_changes = False
        self.log = None
        self.lock_fd = None   # the lock's descriptor while it is held (see run's hold_lock)
        self.counts = {"probe": 0, "change": 0}
        self.secrets = set() if secrets is None else secrets   # values never to be written to the log or an error

    def with_prefix(self, prefix):
        """A runner like this one whose commands all run under `prefix` (nsenter into a lab
        node's network), sharing its secrets; its own log and counts."""
        import copy
        other = copy.copy(self)
        other.prefix, other.log, other.counts = self.prefix + list(prefix), None, {"probe": 0, "change": 0}
        return other

    def display(self, argv):
        return (["chroot", self.root] if self.root != "/" else []) + [redact(part, self.secrets) for part in argv]

    def permit(self, op, path, **detail):
        """The guard every change passes: refused while planning, counted and logged otherwise."""
        if not self.allow_changes:
            raise StackbootError("internal: refused to %s %s while only reading" % (op, path))
        self.counts["change"] += 1
        self.write_record(dict(detail, time=round(time.time(), 3), op=op, path=path, kind="change"))

    def run(self, argv, change=False, check=True, cwd=None, env=None, input=None,
            timeout=None, stream=None, detach=False, hold_lock=False):
        """`detach`: the command starts a daemon, which may keep stdout open forever; read
        its output from a file once the command itself has exited, not from a pipe.
        `hold_lock`: the command inherits the run's lock (apt-get): if this run is killed, the
        next one finds the lock still held by it and says so, instead of failing on the package
        manager's own lock. Never for a command whose children may outlive it (a daemon)."""
        argv = self.prefix + [str(part) for part in argv]
        kind = "change" if change else "probe"
        if change and not self.allow_changes:
            raise StackbootError("internal: refused to run %s while only reading" % argv)
        self.counts[kind] += 1
        started = time.time()
        inherit = [self.lock_fd] if hold_lock and self.lock_fd is not None else []
        result = self.spawn(argv, cwd, env, input, timeout, stream, detach, kind, inherit)
        result.out, result.err = redact(result.out, self.secrets), redact(result.err, self.secrets)
        result.seconds = time.time() - started
        self.write_record({"time": round(time.time(), 3), "argv": result.argv, "rc": result.rc,
                           "seconds": round(result.seconds, 3), "kind": kind})
        if check and result.rc != 0:
            raise CommandFailed(result)
        return result

    # How long a command may take when its caller names no time: a probe answers in seconds, a
    # change (a package install, a daemon's stop) may take many minutes, a build hours; never forever.
    # A daemon's start or stop: a master saves or loads all its metadata (upstream's unit allows 30 minutes).
    TIMEOUTS = {"probe": 300, "change": 3600, "daemon": 1800, "stream": 4 * 3600}

    running = set()   # the commands being waited for (every runner's): what a second signal ends

    @classmethod
    def end_children(cls):
        """End the commands stackboot is waiting for, each with its process group (its own: only
        what it started)."""
        for proc in list(cls.running):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except OSError:   # it ended meanwhile
                pass

    @staticmethod
    def kill_group(proc):
        """A command past its time, with what it started (a make's compilers hold its output open)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:   # it ended meanwhile
            pass

    def spawn(self, argv, cwd, env, input, timeout, stream, detach=False, kind="probe", inherit=()):
        """The process, in the root, with only the file descriptors in `inherit` beyond its
        standard ones."""
        import subprocess
        timeout = timeout or self.TIMEOUTS["stream" if stream is not None else "daemon" if detach else kind]
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
                universal_newlines=True, pass_fds=list(inherit), start_new_session=True)
        except OSError as exc:
            return Result(self.display(argv), 127, "", "%s: %s" % (argv[0], exc.strerror))
        Runner.running.add(proc)
        try:
            return self.wait(proc, argv, input, timeout, stream, capture)
        finally:
            Runner.running.discard(proc)

    def wait(self, proc, argv, input, timeout, stream, capture):
        import subprocess
        if capture is not None:
            with capture:
                try:
                    rc = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill_group(proc)
                    rc = 124
                capture.seek(0)
                return Result(self.display(argv), rc, "", capture.read().decode("utf-8", "replace"))
        if stream is not None:
            import threading
            fired = []

            def expire():   # the lines stop coming when it is killed
                fired.append(timeout)
                self.kill_group(proc)
            watchdog = threading.Timer(timeout, expire)
            watchdog.start()
            lines = []
            try:
                for line in proc.stdout:
                    lines.append(line)
                    stream(line.rstrip("\n"))
                proc.wait()
            finally:
                watchdog.cancel()
            if fired:
                return Result(self.display(argv), 124, "".join(lines[-200:]), "timed out after %ss" % timeout)
            return Result(self.display(argv), proc.returncode, "".join(lines[-200:]), "")
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group(proc)
            out, err = proc.communicate()
            return Result(self.display(argv), 124, out, err + "\ntimed out after %ss" % timeout)
        return Result(self.display(argv), proc.returncode, out, err)

    def write_record(self, record):
        if self.log is None:
            return
        try:
            self.log.write(redact(json.dumps(record), self.secrets) + "\n")
            self.log.flush()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(LOG_FILE, "log")
            raise


# ---------------------------------------------------------------------------
# Host: the machine being converged, its files read once, every change guarded
# ---------------------------------------------------------------------------

class DiskFull(StackbootError):
    """No space (or quota) left where stackboot writes: named, with what was not written."""

    def __init__(self, path, op="write"):
        StackbootError.__init__(self, "no space left on the filesystem holding %s (%s)" % (path, op),
                                "free some space there, then run again: nothing was half-written, "
                                "the next run finishes the job")


def names_a_full_disk(method):
    """A Host write that finds its filesystem full says which path, as one line (the OSError
    itself names no file: `write: No space left on device`)."""
    import functools

    @functools.wraps(method)
    def checked(host, *args, **kwargs):
        try:
            return method(host, *args, **kwargs)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(*host.changing)   # the change the guard let through last
            raise
    return checked


# Directories the system itself owns: a value that names one (disks=/etc, data_path=/, a mount on
# /srv) is refused before stackboot would change its owner or mode, mount over it or remove it.
SYSTEM_DIRECTORIES = frozenset([
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/usr/bin", "/usr/include", "/usr/lib", "/usr/lib64",
    "/usr/libexec", "/usr/local", "/usr/sbin", "/usr/share", "/usr/src", "/usr/local/bin", "/usr/local/etc", "/usr/local/lib",
    "/usr/local/sbin", "/usr/local/share", "/var/cache", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/tmp", "/var/db",
    "/var/mail", "/var/www", "/etc/systemd", "/etc/systemd/system", "/etc/default", "/etc/cron.d", "/compat", "/net"])


def system_directory(path):
    return os.path.normpath(path) in SYSTEM_DIRECTORIES


class Host:
    """The machine being converged, seen through `root`.

    Reads go straight to the filesystem (under root) and are cached for the run.
    Every change (a file, a directory, an owner, a mode, a link, a removal, a
    download, a signal) is a method here: each asks the runner's guard first, so
    it is refused while planning and logged like a command. Commands go through
    `runner`. The lock and the log themselves are the only writes outside the guard:
    they are how the guarded changes are serialized and recorded.
    """

    def __init__(self, root="/", runner=None, facts=None, state_dir=None, log_file=None):
        self.root = os.path.abspath(root)
        self.runner = runner or Runner(self.root)
        self.facts = facts
        self.cache = {}
        self.changing = ("/", "write")
        self.state_dir, self.log_file = state_dir or STATE_DIR, log_file or LOG_FILE   # a lab node keeps its own

    # -- reading ----------------------------------------------------------------
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
        """Drop cached reads: the named files, or everything when none is named."""
        if not paths:
            self.cache.clear()
            return
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

    def isdir(self, path):
        return os.path.isdir(self.path(path))

    def listdir(self, path):
        """The names in a directory; [] when it is missing or not a directory."""
        try:
            return sorted(os.listdir(self.path(path)))
        except OSError:
            return []

    def readlink(self, path):
        try:
            return os.readlink(self.path(path))
        except OSError:
            return None

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

    # -- changing (each guarded and logged) ---------------------------------------
    def permit(self, op, path, follows=False, **detail):
        """The runner's guard, and, under --root, the change must stay inside the root: a
        symbolic link on the way (an absolute one, /var/run -> /run) would lead to this
        machine's own files. `follows`: the operation follows a link at `path` itself."""
        self.confine(path, follows)
        self.changing = (path, op)   # what a full disk names (names_a_full_disk)
        self.runner.permit(op, path, **detail)

    def confine(self, path, follows=False):
        if self.root == "/":
            return
        real_root = os.path.realpath(self.root)
        full = self.path(path)
        for where in [os.path.dirname(full)] + ([full] if follows else []):
            real = os.path.realpath(where)
            if real != real_root and not real.startswith(real_root + os.sep):
                raise StackbootError("%s leads outside %s (to %s): a symbolic link on the way" % (path, self.root, real),
                                     "make the link relative to the root, or act on the host itself")

    @names_a_full_disk
    def write_file(self, path, data, mode=0o644, uid=-1, gid=-1):
        """The whole file, atomically, owner and mode set before it appears."""
        self.permit("write", path, mode="%04o" % mode, bytes=len(data))
        full = self.path(path)
        if not os.path.isdir(os.path.dirname(full)):
            self.make_dirs(os.path.dirname(path))
        atomic_write(full, data, mode, uid, gid)
        self.cache[("file", path)] = data

    @names_a_full_disk
    def make_dirs(self, path, mode=0o755):
        if os.path.isdir(self.path(path)):
            return
        missing = path
        while not os.path.isdir(self.path(os.path.dirname(missing))) and os.path.dirname(missing) != missing:
            missing = os.path.dirname(missing)
        self.permit("mkdir", path, mode="%04o" % mode)
        self.confine(missing)   # the first missing one: its parent exists, and must be inside the root
        os.makedirs(self.path(path), mode)

    def protect(self, op, path):
        if system_directory(path):
            raise StackbootError("refusing to %s %s: the system itself owns it" % (op, path), "choose a directory of its own")

    def set_owner(self, path, uid, gid, made=False):
        """chown, never following a symbolic link (lchown). `made`: a directory this run just made."""
        if not made:
            self.protect("change the owner of", path)
        self.permit("chown", path, uid=uid, gid=gid)
        os.chown(self.path(path), uid, gid, follow_symlinks=False)

    def set_mode(self, path, mode, made=False):
        if not made:
            self.protect("change the mode of", path)
        self.permit("chmod", path, follows=True, mode="%04o" % mode)
        os.chmod(self.path(path), mode)

    def remove(self, path):
        self.permit("remove", path)
        os.unlink(self.path(path))
        self.cache.pop(("file", path), None)

    def remove_dir(self, path):
        """An empty directory; rmdir never takes anything with it."""
        self.protect("remove", path)
        self.permit("rmdir", path)
        os.rmdir(self.path(path))

    def remove_tree(self, path):
        import shutil
        if not self.exists(path):
            return
        self.protect("remove", path)
        self.permit("remove tree", path, follows=True)

        def gone(function, name, error):   # removed meanwhile (a FUSE daemon exiting takes its running.* file): done
            error = error[1] if isinstance(error, tuple) else error
            if not isinstance(error, FileNotFoundError):
                raise error
        # (3.12 renamed the hook and warns about the old name)
        shutil.rmtree(self.path(path), **{"onexc" if sys.version_info >= (3, 12) else "onerror": gone})
        self.forget()

    def rename(self, source, dest):
        self.permit("rename", dest, source=source)
        os.rename(self.path(source), self.path(dest))
        self.forget(source, dest)

    @names_a_full_disk
    def symlink(self, target, path):
        """A symbolic link at `path`, replacing whatever is there atomically (rename over it)."""
        self.permit("symlink", path, target=target)
        temp = self.path(path) + TEMP_MARK + "link"
        if os.path.lexists(temp):
            os.unlink(temp)
        os.symlink(target, temp)
        os.rename(temp, self.path(path))

    @names_a_full_disk
    def create_file(self, path, size, mode=0o600):
        """A new sparse file of `size` bytes (an image, a vdev), sized before it appears (a 0-byte
        image would stop every later mkfs); never over an existing one."""
        self.permit("create", path, size=size)
        self.make_dirs(os.path.dirname(path))
        full = self.path(path)
        directory, name = os.path.split(full)
        remove_stale_temps(directory, name)
        temp = os.path.join(directory, "." + name + TEMP_MARK + str(os.getpid()))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        if os.path.lexists(full):
            os.unlink(temp)
            raise StackbootError("%s appeared while stackboot was making it" % path, "run again")
        os.rename(temp, full)

    @names_a_full_disk
    def download(self, url, path, out=None, offline=False):
        """`url` into the file `path` (a part file: resumed, never renamed here)."""
        self.permit("download", path, follows=True, url=url)
        self.make_dirs(os.path.dirname(path))
        fetch(url, self.path(path), out, offline)

    @names_a_full_disk
    def save_stream(self, path, stream):
        """Everything `stream` reads, into the file `path` (a part file)."""
        import shutil
        self.permit("write", path, follows=True)
        self.make_dirs(os.path.dirname(path))
        with open(self.path(path), "wb") as target:
            shutil.copyfileobj(stream, target)

    @names_a_full_disk
    def copy_in(self, source, path):
        """A file of this machine (outside --root) copied to `path`, with its mode and times."""
        import shutil
        self.permit("copy", path, follows=True, source=source)
        shutil.copy2(source, self.path(path))

    @names_a_full_disk
    def extract(self, archive, into):
        """Unpack the tarball `archive` into the directory `into`; its top directory's name."""
        self.permit("extract", into, follows=True, archive=archive)
        return extract_archive(self.path(archive), self.path(into))

    @names_a_full_disk
    def tree_files(self, stage):
        """The paths a `make install DESTDIR=` tree would install (what install_tree copies)."""
        base, found = self.path(stage), []
        for directory, subdirs, files in os.walk(base):
            relative = directory[len(base):] or "/"
            found += [os.path.join(relative, name) for name in files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]]
        return sorted(found)

    def install_tree(self, stage):
        """Copy a `make install DESTDIR=` tree into place, file by file atomically; the file list.

        Renaming over a running daemon's binary is safe where writing into it is not.
        """
        installed = []
        base = self.path(stage)
        for directory, subdirs, files in os.walk(base):
            relative = directory[len(base):] or "/"
            if not os.path.isdir(self.path(relative)):
                st = os.lstat(directory)
                self.make_dirs(relative)
                self.set_owner(relative, st.st_uid, st.st_gid, made=True)
                self.set_mode(relative, st.st_mode & 0o7777, made=True)
            for name in sorted(files) + sorted(d for d in subdirs if os.path.islink(os.path.join(directory, d))):
                source = os.path.join(directory, name)
                path = os.path.join(relative, name)
                st = os.lstat(source)
                if os.path.islink(source):
                    self.symlink(os.readlink(source), path)
                else:
                    with open(source, "rb") as handle:
                        self.write_file(path, handle.read(), st.st_mode & 0o7777, st.st_uid, st.st_gid)
                installed.append(path)
        return installed

    def kill(self, pid, sig):
        """A signal to a process stackboot made (a lab's leftover); gone already is fine."""
        self.permit("signal", "pid %d" % pid, signal=int(sig))
        try:
            os.kill(pid, sig)
            return True
        except OSError:
            return False

    # -- the mode and the record -------------------------------------------------
    def changes_allowed(self):
        """`with host.changes_allowed():` the converge loop's acting phase; planning is the default."""
        import contextlib

        @contextlib.contextmanager
        def allowed():
            before, self.runner.allow_changes = self.runner.allow_changes, True
            try:
                yield
            finally:
                self.runner.allow_changes = before
        return allowed()

    def holding_lock(self, event, **details):
        """`with host.holding_lock("install", roles=...)`: the flock on the state directory (cloud-init
        and a person must not interleave), and the log, opened with one line saying what this run is."""
        import contextlib

        @contextlib.contextmanager
        def held():
            lock = acquire_lock(self, event)
            self.runner.lock_fd = lock.fileno()
            self.runner.log = open_log(self)
            line = dict(details, time=round(time.time(), 3), event=event, version=__version__)
            self.runner.log.write(redact(json.dumps(line), self.runner.secrets) + "\n")
            try:
                yield
            finally:
                self.runner.log.close()
                self.runner.log = None
                self.runner.lock_fd = None
                lock.close()
        return held()


def processes_holding(path):
    """'NAME (pid N)' for each process with `path` open (read from /proc; only asked when a
    lock is held by someone unexpected)."""
    found = []
    try:   # the file itself, not its name: from another mount namespace or root the name reads differently
        wanted = os.stat(path)
        pids = sorted((entry for entry in os.listdir("/proc") if entry.isdigit()), key=int)
    except OSError:   # no /proc here (a chroot without it)
        return found
    for pid in pids:
        try:
            if any(os.path.samestat(os.stat("/proc/%s/fd/%s" % (pid, fd)), wanted) for fd in os.listdir("/proc/%s/fd" % pid)):
                with open("/proc/%s/comm" % pid) as handle:
                    found.append("%s (pid %s)" % (handle.read().strip(), pid))
        except OSError:   # it ended while we looked, or is not ours to see
            continue
    return found


def acquire_lock(host, event="run"):
    """flock on the state directory; a second run fails at once, naming the holder: its pid and
    what it does, or, when that run was killed, the command it started that still holds the lock
    (its package install). Like the log, never through a symbolic link, never outside --root."""
    import fcntl
    host.confine(host.state_dir + "/lock")
    directory = host.path(host.state_dir)
    os.makedirs(directory, 0o700, exist_ok=True)   # two first runs at once: both find it
    path = os.path.join(directory, "lock")
    handle = os.fdopen(open_no_follow(path, os.O_RDWR | os.O_CREAT, 0o600), "a+")
    for attempt in (1, 2):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except (IOError, OSError):
            handle.seek(0)
            holder = handle.read().strip().split(None, 1) or ["unknown"]
            who = "pid " + ", ".join(holder)   # "pid 4242, install"
            if holder[0].isdigit() and not pid_alive(int(holder[0])):
                left = processes_holding(path)
                if not left and attempt == 1:   # what held it ended while we looked: once more
                    continue
                handle.close()
                raise StackbootError("stackboot run (%s) was stopped, and %s still holds %s" % (
                    who, ", ".join(left or ["a command it started"]), path), "wait for it to end, then run again")
            handle.close()
            raise StackbootError("another stackboot run (%s) holds %s" % (who, path), "wait for it to finish, then run again")
    handle.seek(0)
    handle.truncate()
    try:   # unbuffered: a full disk fails here, not again when the handle closes
        os.write(handle.fileno(), ("%d %s\n" % (os.getpid(), event)).encode())
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(host.state_dir + "/lock", "lock")
        raise
    return handle


def open_log(host):
    host.confine(host.log_file)
    path = host.path(host.log_file)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path), 0o755)
    return os.fdopen(open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640), "a")


def open_no_follow(path, flags, mode):
    """os.open that refuses a symbolic link (an old root's lock -> /etc/passwd) and anything but a file."""
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StackbootError("%s is a symbolic link; stackboot writes its lock and log only as plain files" % path,
                                 "remove the link")
        raise
    import stat as stat_module
    if not stat_module.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StackbootError("%s is not a plain file" % path, "remove it")
    return fd


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
        "selinux": selinux_mode(host),
        "lab": "",   # a lab node's own directory (see `lab`); empty on a real host
        "address": as_text(host.read("/etc/hostname") or b"").strip() or socket_hostname(),   # how others reach it
    }


def selinux_mode(host):
    """enforcing, permissive or off: the running kernel's (/sys/fs/selinux/enforce, as getenforce
    reads it); under --root the target's own config, for the system that will boot from it."""
    if host.root == "/":
        return {b"1": "enforcing", b"0": "permissive"}.get((read_bytes("/sys/fs/selinux/enforce") or b"").strip(), "off")
    settings = dict(line.strip().partition("=")[::2] for line in as_text(host.read("/etc/selinux/config") or b"").splitlines())
    return {"enforcing": "enforcing", "permissive": "permissive"}.get(settings.get("SELINUX", "").strip().lower(), "off")


FACT_NAMES = ("platform", "distro", "version", "major", "codename", "init", "package_manager", "arch", "cores", "python",
              "selinux", "lab", "address")


def facts_context(facts):
    """The facts as profiles' templates see them: {{facts.NAME}}."""
    return dict(("facts." + key, facts.get(key, "")) for key in FACT_NAMES)


def socket_hostname():
    import socket
    return socket.gethostname()


def os_matches(facts, selector):
    """True when an OS selector ("freebsd", "debian", "rhel", "ubuntu-24.04", "rhel-9") names this
    host. A versioned one names the family too: rhel-9 is Rocky 9 and AlmaLinux 9, which follow
    RHEL 9 release for release."""
    names = [facts["platform"], facts["distro"]] + facts["id_like"]
    if selector in names:
        return True
    distro, _, version = selector.partition("-")
    return bool(version) and distro in [facts["distro"]] + facts["id_like"] and (
        facts["version"] == version or facts["version"].startswith(version + "."))



# ---------------------------------------------------------------------------
# Value types: one table for profile parameters and step fields
# ---------------------------------------------------------------------------
# A type is a parse function: (value, declaration) -> the value, converted, or a
# ValueError saying what is wrong. Parameters name a type ("type": "path"); step
# kinds declare their fields with the same names (Field("path")), so a path is the
# same thing wherever it appears. The MooseFS and CVMFS sections add their own.

TEMPLATE_REF = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*\}\}")
SHELL_META = set("`$;&|<>\\\"'(){}*?!#~")
SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?([kMGTPE]|[KMGTPE]i)?B?\Z")
HOST_RE = re.compile(r"^(\*|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
                     r"|[0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)\Z")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")   # a parameter's name
ROLE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")   # a profile's, from its file's name
# A system name: a user, group, package, service or build. Never a path: no / and no "..".
SYSTEM_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+:@-]{0,254}\Z")
PACKAGE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+:@=~-]{0,254}\Z")   # apt's name=version, a ~ in versions
WORD_RE = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_.:=/@+~%-]*\Z")


class ValueType:
    def __init__(self, name, help, parse):
        self.name, self.help, self.parse = name, help, parse


TYPES = {}


def value_type(name, help):
    """Decorator: the parse function becomes the value type `name`."""
    def register(parse):
        TYPES[name] = ValueType(name, help, parse)
        return parse
    return register


CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")   # surrogates: undecodable bytes of argv, \\udcff in JSON
BEYOND_LATIN1_RE = re.compile("[^\x00-\xff]")


def control_characters(text, allowed=""):
    """The control and invisible format characters in text (a newline, NUL, a bidi override that
    makes a line read otherwise than it is), except `allowed`."""
    found = [ch for ch in CONTROL_RE.findall(text) if ch not in allowed]
    if BEYOND_LATIN1_RE.search(text):
        import unicodedata
        found += [ch for ch in text if ord(ch) > 255 and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")]
    return found


def plain(text, extra=""):
    """Reject what could break out of a config line or a shell word."""
    if not isinstance(text, str):
        raise ValueError("expected text, got %s" % json.dumps(text))
    if control_characters(text):
        raise ValueError("must be one line without control characters")
    bad = sorted(set(text) & (SHELL_META - set(extra)))
    if bad:
        raise ValueError("must not contain %s" % " ".join(repr(ch) for ch in bad))
    return text


def split_list(value):
    """A list as given: a JSON list, or text: a JSON list (when an item has a comma in it) or
    comma-separated items."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("expected a JSON list like [\"a\", \"b\"], got %s" % json.dumps(value))
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    raise ValueError("expected a list or comma-separated text, got %s" % json.dumps(value))


@value_type("string", "plain text: one line, no shell or config metacharacters")
def type_string(value, decl):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return plain(value, extra=decl.get("allow", ""))


@value_type("text", "any one line of text")
def type_text(value, decl):
    if not isinstance(value, str) or control_characters(value, "\t"):
        raise ValueError("must be one line of text")
    return value


@value_type("name", "a system name (user, group, service, build): letters, digits and . _ - + : @")
def type_name(value, decl):
    if not isinstance(value, str) or not SYSTEM_NAME_RE.match(value) or ".." in value:
        raise ValueError("expected a name (letters, digits and . _ - + : @, not a path), got %s" % json.dumps(value))
    return value


@value_type("package", "a package name, or name=version")
def type_package(value, decl):
    if not isinstance(value, str) or not PACKAGE_RE.match(value) or ".." in value:
        raise ValueError("expected a package name (letters, digits and . _ - + : @, =VERSION), got %s" % json.dumps(value))
    return value


@value_type("word", "one word of a config line or a command: letters, digits and . _ / : = @ + ~ % -")
def type_word(value, decl):
    """One word of a config line or a command: never an option (a leading -), never quoting or
    shell syntax, never a second word."""
    if not isinstance(value, str) or not WORD_RE.match(value) or ".." in re.split("[/:]", value):
        raise ValueError("expected one word (letters, digits and . _ / : = @ + ~ %% -, not starting with -, no ..), got %s"
                         % json.dumps(value))
    return value


@value_type("lines", "text, or a list of lines")
def type_lines(value, decl):
    """A file's text: one string (its newlines and tabs kept) or a list of lines (or of values
    with a text, like disks); no other control character."""
    if isinstance(value, str):
        lines = [value]
        allowed = "\n\t"
    elif isinstance(value, list):
        lines = [item["text"] if isinstance(item, dict) else item for item in value]
        allowed = "\t"
    else:
        lines = [None]
    if not all(isinstance(line, str) for line in lines):
        raise ValueError("expected text or a list of lines, got %s" % json.dumps(value))
    if any(control_characters(line, allowed) for line in lines):
        raise ValueError("a line holds a control character (%s)" % json.dumps(lines[0])[:80])
    return value


@value_type("int", "a whole number")
def type_int(value, decl):
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and re.match(r"^-?[0-9]+\Z", value))):
        raise ValueError("expected a whole number, got %s" % json.dumps(value))
    number = int(value)
    if "min" in decl and number < decl["min"] or "max" in decl and number > decl["max"]:
        raise ValueError("must be between %s and %s" % (decl.get("min", "-inf"), decl.get("max", "inf")))
    return number


@value_type("port", "a TCP port 1-65535")
def type_port(value, decl):
    return type_int(value, dict(decl, min=1, max=65535))


@value_type("bool", "true or false")
def type_bool(value, decl):
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    raise ValueError("expected true or false, got %s" % json.dumps(value))


@value_type("size", "a size like 100GiB")
def type_size(value, decl):
    if not isinstance(value, str) or not SIZE_RE.match(value):
        raise ValueError("expected a size like 100GiB, 1.5TiB or 512M, got %s" % json.dumps(value))
    return value


@value_type("host", "a host name or IP address")
def type_host(value, decl):
    if not isinstance(value, str) or len(value) > 253 or not HOST_RE.match(value):
        raise ValueError("expected a host name or address, got %s" % json.dumps(value))
    return value


@value_type("path", "an absolute path")
def type_path(value, decl):
    """An absolute path: no space of any kind, no .., and no % (systemd would expand %h in a unit)."""
    plain(value, extra="~")
    if not value.startswith("/") or any(ch.isspace() for ch in value) or "/../" in value + "/" or "%" in value:
        raise ValueError("expected an absolute path without spaces, '..' or '%%', got %s" % json.dumps(value))
    return os.path.normpath(value) if value != "/" else value


@value_type("url", "an http(s):// or file:// URL")
def type_url(value, decl):
    plain(value, extra="~&?#")
    if not re.match(r"^(https?|file|git\+https?)://[^\s]+\Z", value):
        raise ValueError("expected an http(s):// or file:// URL, got %s" % json.dumps(value))
    return value


@value_type("sha256", "a sha256 digest")
def type_sha256(value, decl):
    if not isinstance(value, str) or not re.match(r"^[0-9a-f]{64}\Z", value.lower()):
        raise ValueError("expected 64 hexadecimal digits, got %s" % json.dumps(value))
    return value.lower()


@value_type("mode", "an octal mode like \"0644\"")
def type_mode(value, decl):
    parse_mode(value)
    return value


@value_type("regex", "a regular expression")
def type_regex(value, decl):
    if not isinstance(value, str):
        raise ValueError("expected a regular expression, got %s" % json.dumps(value))
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError("bad regular expression: %s" % exc)
    if re.search(r"\([^()]*[+*][^()]*\)[+*{]", value):   # (a+)+: a long enough value would take forever
        raise ValueError("a repeated group of repeats, like (a+)+, can take forever to match: write it without")
    return value


@value_type("list", "a list (comma-separated on the command line)")
def type_list(value, decl):
    item = TYPES[decl.get("items") or "string"].parse
    return [item(entry, {"allow": decl.get("allow", "")}) for entry in split_list(value)]


@value_type("argv", "a command as a list of words")
def type_argv(value, decl):
    if not isinstance(value, list) or not value or not all(isinstance(word, str) and "\0" not in word for word in value):
        raise ValueError("expected a command as a list of words, got %s" % json.dumps(value))
    return value


@value_type("object", "an object")
def type_object(value, decl):
    if not isinstance(value, dict):
        raise ValueError("expected an object, got %s" % json.dumps(value))
    return value


@value_type("environment", "environment variables: NAME -> one line of text")
def type_environment(value, decl):
    if not isinstance(value, dict):
        raise ValueError("expected an object of NAME: VALUE, got %s" % json.dumps(value))
    for key, item in value.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", key):
            raise ValueError("environment variable name %s must be letters, digits and _" % json.dumps(key))
        if isinstance(item, (list, dict, bool)) or item is None or control_characters(render_scalar(item)):
            raise ValueError("%s: expected one line of text, got %s" % (key, json.dumps(item)))
    return value


@value_type("settings", "KEY=VALUE pairs (comma-separated, or a JSON object)")
def type_settings(value, decl):
    """KEY=VALUE pairs for config keys a profile does not model. Each value is of the declared
    `items` type, or plain one-line text; null leaves a key out; an object is spliced in."""
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
    checked = {}
    for key, val in value.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", key):
            raise ValueError("setting name %s must be letters, digits and _" % json.dumps(key))
        if isinstance(val, dict) and decl.get("splice"):   # a settings parameter spliced into a file's settings
            checked[key] = type_settings(val, dict(decl, splice=False))
        elif val is None:
            checked[key] = None
        elif isinstance(val, dict) or (isinstance(val, list) and any(isinstance(item, (list, dict)) for item in val)):
            raise ValueError("setting %s: expected a value or a list of values, got %s" % (key, json.dumps(val)))
        elif isinstance(val, float) and val != val or val in (float("inf"), float("-inf")):
            raise ValueError("setting %s: %s is not a number a config file can hold" % (key, val))
        elif decl.get("items"):
            checked[key] = TYPES[decl["items"]].parse(render_scalar(val), {})
        else:
            plain(render_scalar(val), extra="*:/,;~")
            checked[key] = val
    return checked


def check_value(name, decl, value, source=None):
    """A parameter value, converted to its type; BadInput when it is not one (a secret one's
    value is never part of the message)."""
    kind = TYPES[decl.get("type", "string")]
    where = "parameter %s" % name + (" (from %s)" % source if source else "")
    if value is None:
        return None
    try:
        value = kind.parse(value, decl)
        if "choices" in decl and value not in decl["choices"]:
            raise ValueError("must be one of: %s" % ", ".join(str(choice) for choice in decl["choices"]))
        if "pattern" in decl:
            for item in (value if isinstance(value, list) else [value]):
                if not re.fullmatch(decl["pattern"], str(item)):
                    raise ValueError("%s does not match the pattern %s" % (json.dumps(item), decl["pattern"]))
    except ValueError as exc:
        if decl.get("secret"):
            raise BadInput("%s: expected %s (the value is secret: not shown)" % (where, kind.help))
        raise BadInput("%s: %s" % (where, exc))
    return value


# ---------------------------------------------------------------------------
# Profiles and parameters
# ---------------------------------------------------------------------------



class ProfileError(BadInput):
    def __init__(self, origin, path, message):
        BadInput.__init__(self, "%s: %s: %s" % (origin, path, message),
                          "fix the profile and run again")


class Profile:
    built_in = False

    def __init__(self, name, origin, data):
        self.name = name
        self.origin = origin
        self.description = data.get("description", "")
        self.requires = data.get("requires", [])
        self.platforms = data.get("platforms")
        self.platforms_why = data.get("platforms_why")
        self.refused_on = data.get("refused_on", {})   # {OS selector: why this role cannot run there}
        self.recover = data.get("recover")
        self.summary = data.get("summary", [])   # lines printed after an install: where to find what it made
        self.status = data.get("status")          # argv whose output tells how the cluster sees each address (lab status)
        self.aliases = data.get("aliases", [])    # names the other nodes reach its host by (cloud-init --cluster: /etc/hosts)
        self.parameters = data.get("parameters", {})
        self.overlays = data.get("overlays", {})
        self.steps = data.get("steps", [])

    def all_steps(self):
        """(where, spec) of every step: its own, then the ones it runs first when recovering."""
        return [("$.steps[%d]" % index, spec) for index, spec in enumerate(self.steps)] + \
               [("$.recover.steps[%d]" % index, spec) for index, spec in enumerate((self.recover or {}).get("steps", []))]


def parse_profile_text(name, origin, text, built_in=False):
    """A profile from its JSON text, checked; a built-in one is part of this program, checked by
    its tests (tests/test_delivery.py), not again at every start."""
    if built_in:
        profile = Profile(name, origin, json.loads(text))
        profile.built_in = True
        return profile
    data = load_json(text, origin, "fix the profile and run again")
    validate_profile(origin, data)
    return Profile(name, origin, data)


# The shape of a profile, checked before anything reads it: a type of the one table, a JSON
# list of a shape ([shape]), an object of these keys ({key: shape}; "*" for any key), or None
# for any value. "bool" and "int" mean JSON's own true/false and whole numbers.
STEP_COMMON_SHAPE = {"kind": "text", "id": "word", "when": {"*": None}, "comment": "text", "for_each": "text",
                     "as": "name", "needs": ["name"], "data": "bool"}
PARAMETER_SHAPE = {"type": "word", "default": None, "help": "text", "choices": [None], "pattern": "regex", "secret": "bool",
                   "items": "word", "min": "int", "max": "int", "allow": "text", "lookup": {"key": "name", "table": {"*": None}},
                   "from_packages": {"names": ["name"], "value": "text", "release": "name", "version": "name",
                                     "when": {"*": None}}}
PROFILE_SHAPE = {"description": "text", "requires": ["name"], "platforms": ["word"], "platforms_why": "text",
                 "refused_on": {"*": "text"}, "aliases": ["text"],
                 "summary": ["text"], "status": "argv", "parameters": {"*": PARAMETER_SHAPE}, "overlays": {"*": {"*": None}},
                 "recover": {"evidence": ["text"], "replaces": ["name"], "steps": [None]}, "steps": [None]}
PARAM_KEYS = set(PARAMETER_SHAPE)
PROFILE_KEYS = set(PROFILE_SHAPE)
STEP_COMMON_KEYS = set(STEP_COMMON_SHAPE)
SHAPE_WORDS = {"bool": "true or false", "int": "a whole number", "text": "text", "name": "a name", "word": "a word",
               "argv": "an argv list", "regex": "a regular expression"}


def check_shape(origin, where, value, shape):
    """ProfileError at the first place where `value` does not have `shape`."""
    def wrong(what):
        return ProfileError(origin, where, "expected %s, got %s" % (what, json.dumps(value)))
    if shape is None:
        return
    if isinstance(shape, list):
        if not isinstance(value, list):
            raise wrong("a list")
        for index, item in enumerate(value):
            check_shape(origin, "%s[%d]" % (where, index), item, shape[0])
    elif isinstance(shape, dict):
        if not isinstance(value, dict):
            raise wrong("an object")
        for key, item in value.items():
            if key not in shape and "*" not in shape:
                raise ProfileError(origin, "%s.%s" % (where, key), "unknown key (known: %s)" % ", ".join(sorted(shape)))
            check_shape(origin, "%s.%s" % (where, key), item, shape.get(key, shape.get("*")))
    elif shape == "bool":
        if not isinstance(value, bool):
            raise wrong(SHAPE_WORDS[shape])
    elif shape == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong(SHAPE_WORDS[shape])
    else:
        if not isinstance(value, str) and shape != "argv":
            raise wrong(SHAPE_WORDS.get(shape, TYPES[shape].help))
        try:
            TYPES[shape].parse(value, {})
        except ValueError as exc:
            raise ProfileError(origin, where, str(exc))


def validate_profile(origin, data):
    """Shape checks that need no other profile: keys, types, kinds, references."""
    check_shape(origin, "$", data, PROFILE_SHAPE)
    params = data.get("parameters", {})
    for pname, decl in params.items():
        where = "$.parameters." + pname
        if not NAME_RE.match(pname):
            raise ProfileError(origin, where, "parameter names are lower_case_words")
        for key in ("type", "items"):
            if key in decl and decl[key] not in TYPES:
                raise ProfileError(origin, "%s.%s" % (where, key), "unknown type %s (known: %s)" % (
                    json.dumps(decl[key]), ", ".join(sorted(TYPES))))
        for index, choice in enumerate(decl.get("choices", [])):
            if isinstance(choice, (list, dict)):
                raise ProfileError(origin, "%s.choices[%d]" % (where, index), "expected a plain value, got %s" % json.dumps(choice))
        if "from_packages" in decl and not decl["from_packages"].get("names"):
            raise ProfileError(origin, where + ".from_packages.names", "name the packages to ask the package manager about")
        lookup = decl.get("lookup")
        if lookup is not None and (set(lookup) != {"key", "table"} or not isinstance(lookup["key"], str)
                                   or not NAME_RE.match(lookup["key"]) or not isinstance(lookup["table"], dict)):
            raise ProfileError(origin, where + ".lookup", "expected {\"key\": PARAMETER, \"table\": {VALUE: DEFAULT}}")
        if decl.get("default") is not None and not template_refs(decl["default"]):
            try:
                check_value(pname, decl, decl["default"])
            except BadInput as exc:
                raise ProfileError(origin, where + ".default", exc.message)
    for where, step in Profile("", origin, data).all_steps():
        validate_step(origin, where, step)


def validate_step(origin, where, step):
    if not isinstance(step, dict):
        raise ProfileError(origin, where, "expected an object, got %s" % json.dumps(step))
    kind = step.get("kind")
    if not isinstance(kind, str) or kind not in STEP_KINDS:
        raise ProfileError(origin, where + ".kind", "unknown step kind %s (known: %s)" % (
            json.dumps(kind), ", ".join(sorted(STEP_KINDS))))
    cls = STEP_KINDS[kind]
    for key, value in step.items():
        if key in STEP_COMMON_KEYS:
            check_shape(origin, "%s.%s" % (where, key), value, STEP_COMMON_SHAPE[key])
            continue
        field = cls.schema.get(key)
        if field is None:
            raise ProfileError(origin, "%s.%s" % (where, key), "unknown key for a %s step (known: %s)" % (
                kind, ", ".join(sorted(set(cls.schema) | STEP_COMMON_KEYS))))
        problem = field.problem(value)
        if problem:
            raise ProfileError(origin, "%s.%s" % (where, key), problem)
    for key, field in cls.schema.items():
        if field.required and key not in step:
            raise ProfileError(origin, where, "a %s step needs %s" % (kind, json.dumps(key)))
    for rule in cls.rules:
        problem = rule.problem(cls.kind, step)
        if problem:
            raise ProfileError(origin, where, problem)
    for key, wanted in step.get("when", {}).items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if any(isinstance(option, (list, dict)) for option in options) or (key == "os" and not all(isinstance(o, str) for o in options)):
            raise ProfileError(origin, "%s.when.%s" % (where, key), "expected a value or a list of values%s, got %s" % (
                " (OS selectors: text)" if key == "os" else "", json.dumps(wanted)))
    if "for_each" in step and not is_whole_ref(step["for_each"]):
        raise ProfileError(origin, where + ".for_each", "expected one {{list parameter}}, got %s" % json.dumps(step["for_each"]))


def is_whole_ref(value):
    return isinstance(value, str) and TEMPLATE_REF.fullmatch(value) is not None


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


class Library:
    """Every profile stackboot can see; the first source to define a name wins."""

    def __init__(self):
        self.profiles = {}

    def add(self, profile):
        self.profiles.setdefault(profile.name, profile)

    def secret(self, parameter):
        """Whether any profile keeps this parameter secret (a site file holds other roles' too)."""
        return any(profile.parameters.get(parameter, {}).get("secret") for profile in self.profiles.values())

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
                raise ProfileError(self.profiles[name].origin, "$.requires", "profile %s requires itself through %s"
                                   % (name, " -> ".join(chain + [name])))
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

    def validate(self, everything=False):
        """Cross-profile checks: every {{ref}} is a declared parameter or a fact (the built-in
        profiles only when asked: their tests do it)."""
        for profile in self.profiles.values():
            if profile.built_in and not everything:
                continue
            known = set()
            for member in self.closure([profile.name]):
                known |= set(member.parameters)
            for where, value in [("$.overlays", profile.overlays), ("$.summary", profile.summary), ("$.status", profile.status),
                                 ("$.aliases", profile.aliases),
                                 ("$.recover.evidence", (profile.recover or {}).get("evidence", [])),
                                 ("$.parameters", {k: v.get("default") for k, v in profile.parameters.items()})]:
                for ref in template_refs(value):
                    if ref.split(".")[0] not in known and not (ref.startswith("facts.") and ref[6:] in FACT_NAMES):
                        raise ProfileError(profile.origin, where, "unknown parameter {{%s}}" % ref)
            for pname, decl in profile.parameters.items():   # a lookup may key on a required profile's parameter
                lookup, probe = decl.get("lookup") or {}, decl.get("from_packages") or {}
                refs = ([lookup["key"]] if lookup else []) + sorted(template_refs(lookup.get("table")))
                refs += [probe[key] for key in ("release", "version") if probe.get(key)] + sorted(set(probe.get("when", {})) - {"os"})
                for ref in refs:
                    if ref.split(".")[0] not in known and not (ref.startswith("facts.") and ref[6:] in FACT_NAMES):
                        raise ProfileError(profile.origin, "$.parameters.%s" % pname, "unknown parameter %s" % ref)
            for selector, values in profile.overlays.items():
                for pname in values:
                    if pname not in known:
                        raise ProfileError(profile.origin, "$.overlays.%s.%s" % (selector, pname), "unknown parameter")
            for where, step in profile.all_steps():
                local = step.get("as", "item") if "for_each" in step else None
                schema = STEP_KINDS[step["kind"]].schema
                refs = template_refs(dict((key, value) for key, value in step.items() if not (key in schema and schema[key].literal)))
                mine = set(ref for ref in refs if local and (ref == local or ref.startswith(local + ".")))
                unknown = set(ref for ref in refs - mine if ref.split(".")[0] not in known
                              and not (ref.startswith("facts.") and ref[6:] in FACT_NAMES))
                if unknown:
                    raise ProfileError(profile.origin, where if local else where.split("[")[0], "unknown parameter {{%s}}" % sorted(unknown)[0])
                for pname in step.get("needs", []):
                    if pname not in known:
                        raise ProfileError(profile.origin, where + ".needs", "unknown parameter %s" % json.dumps(pname))
                for pname in step.get("when", {}):
                    if pname.split(".")[0] == local:
                        continue
                    if pname not in known and pname != "os" and not (pname.startswith("facts.") and pname[6:] in FACT_NAMES):
                        raise ProfileError(profile.origin, "%s.when.%s" % (where, pname), "unknown parameter")


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
            if entry.endswith(".json") and entry[:-5] not in library.profiles:
                origin = os.path.join(directory, entry)
                if not ROLE_NAME_RE.match(entry[:-5]):
                    raise BadInput("%s: a profile's file name is its role's name: lower-case letters, digits, - and _"
                                   % json.dumps(origin), "rename the file")
                text = read_input(origin, "profile", "fix the profile and run again")
                library.add(parse_profile_text(entry[:-5], origin, text))
    for name, text in sorted(EMBEDDED_PROFILES.items()):
        if name not in library.profiles:   # a profile of the same name seen first wins
            library.add(parse_profile_text(name, "embedded profile %s.json" % name, text, built_in=True))
    library.validate()
    return library


class Values:
    """Resolved parameter values, where each came from, and which are secret."""

    def __init__(self, decls=None):
        self.values, self.sources, self.decls, self.secrets = {}, {}, dict(decls or {}), set()

    def set(self, name, value, source):
        self.values[name] = value
        self.sources[name] = source

    def secret_texts(self):
        return [render_scalar(self.values[name]) for name in self.secrets if self.values.get(name) not in (None, "")]


def secret_texts(values):
    """Every text a secret value could be printed as: itself, and each item of a list."""
    texts = set()
    for value in values:
        for item in (value if isinstance(value, list) else [value]):
            if item not in (None, "", [], {}) and not isinstance(item, bool):
                texts.add(item if isinstance(item, str) else json.dumps(item) if isinstance(item, (list, dict)) else str(item))
        if isinstance(value, (list, dict)):
            texts.add(json.dumps(value))
    return texts


def declared_parameters(profiles):
    decls, owner = {}, {}
    for profile in profiles:
        for name, decl in profile.parameters.items():
            if name in decls and decls[name] != decl:
                raise ProfileError(profile.origin, "$.parameters." + name,
                                   "also declared differently by profile %s; declare it once in a shared profile" % owner[name])
            decls[name], owner[name] = decl, profile.name
    return decls, owner


class Inputs:
    """Parameter values from outside the profiles: layers of (source, {name: value}, scope),
    lowest precedence first. The scope says what a layer may hold:
    - quiet: anything; only what the roles declare is used (a bundle's values, remembered ones);
    - shared: other roles' parameters too, but nothing no role knows (a site file, a cluster's
      common parameters);
    - strict: only the roles' own (--set, a cluster node's own parameters);
    - env: the environment, whose STACKBOOT_<NAME> variables name the roles' parameters."""

    def __init__(self, layers=()):
        self.layers = list(layers)

    def add(self, source, given, scope):
        if given:
            self.layers.append((source, given, scope))
        return self


def parse_sets(items, source="--set"):
    """NAME=VALUE items (the command line's --set) as {name: value}; a later one wins."""
    given = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not NAME_RE.match(name.strip()):
            raise BadInput("%s %s: expected NAME=VALUE" % (source, json.dumps(item)))
        given[name.strip()] = value
    return given


def ask_package_manager(decls, values, facts, packages):
    """A parameter whose right value is what the host's package manager has (the major version
    the distribution ships, whether it has a package at all): asked only where its `when`
    holds, and only for a value nobody gave (a profile's default or overlay)."""
    for name, decl in sorted(decls.items()):
        probe = decl.get("from_packages")
        source = values.sources[name]
        if not probe or not (source == "default" or source.startswith("os overlay")):
            continue
        when = probe.get("when", {})
        keys = [key for key in when if key != "os" and not key.startswith("facts.")]
        if any(template_refs(values.values.get(key)) for key in keys):
            continue   # a condition on a value not worked out yet: the profile's value stands
        scope = dict((key, check_value(key, decls[key], values.values.get(key), values.sources[key])) for key in keys)
        if not condition_holds(when, values, facts, scope):   # on checked values: --set flag=false is False
            continue
        release, wanted = [check_value(probe[key], decls[probe[key]], values.values.get(probe[key]), values.sources[probe[key]])
                           if probe.get(key) else None for key in ("release", "version")]
        found = packages.available(probe["names"], release, wanted)
        if found is None:
            continue
        package, version = found
        value = probe["value"] if "value" in probe else str((version_key(version) or [""])[0])
        values.set(name, value, "the package manager (%s %s)" % (package, version))


def lookup_entry(table, key):
    """A lookup table's entry for `key`: its own, else the first shell pattern that matches it
    ("3.*": every 3.x version), else None."""
    if key in table:
        return table[key]
    import fnmatch
    for pattern, entry in table.items():
        if any(char in pattern for char in "*?[") and key is not None and fnmatch.fnmatchcase(key, pattern):
            return entry
    return None


def resolve_parameters(library, profiles, facts, inputs, secrets=None, complete=True, packages=None):
    """Values in rising precedence: default, OS overlay, the lab overlay, what the host's package
    manager says (`packages`, for a parameter declared `from_packages`), then the inputs' layers.
    Every value given for a secret parameter joins `secrets` before anything is checked, so that
    no error can show it."""
    decls, owner = declared_parameters(profiles)
    values = Values(decls)
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

    def unknown(name, source, scope):
        """A shared layer may hold other roles' parameters; a strict one may not; nobody a typo."""
        others = [p.name for p in library.profiles.values() if name in p.parameters]
        if others and scope == "shared":
            return
        hint = "it belongs to %s" % ", ".join(others) if others else "`stackboot show ROLE` lists the parameters"
        raise BadInput("%s: unknown parameter %s for %s" % (source, json.dumps(name), ", ".join(p.name for p in profiles)), hint)

    for source, given, scope in inputs.layers:
        if scope == "env":
            for name in decls:
                key = "STACKBOOT_" + name.upper()
                if key in given:
                    values.set(name, given[key], "%s %s" % (source, key))
            continue
        for name, value in given.items():
            if name in decls:
                values.set(name, value, source)
            elif scope != "quiet":
                unknown(name, source, scope)
            if secrets is not None and name not in decls and library.secret(name):
                secrets.update(secret_texts([value]))
    if secrets is not None:
        secrets.update(secret_texts(values.values[name] for name in values.secrets))
    if packages is not None:
        ask_package_manager(decls, values, facts, packages)
    # What the user gave is checked first, so that an error names it. Profile-written defaults
    # may use facts and other parameters ("{{localstate_dir}}/mfs"): they are filled in, in
    # dependency order, with checked values, then checked themselves. A user's value is never expanded.
    derived = {}
    for name, value in list(values.values.items()):
        written_by_profile = values.sources[name] in ("default", "lab overlay") or values.sources[name].startswith("os overlay")
        if written_by_profile and template_refs(value):
            derived[name] = value
        else:
            values.values[name] = check_value(name, decls[name], value, values.sources[name])
    context = facts_context(facts)
    context.update((name, value) for name, value in values.values.items() if name not in derived)
    pending = dict(derived)
    while pending:
        ready = [name for name, value in pending.items() if template_refs(value) <= set(context)]
        if not ready:
            name = sorted(pending)[0]
            raise BadInput("%s: parameter %s: its default refers to {{%s}}, which never gets a plain value"
                           % (origin_of(profiles, name), name, sorted(template_refs(pending[name]) - set(context))[0]),
                           "give %s a value with --set" % name)
        for name in ready:
            filled = substitute(pending.pop(name), context)
            context[name] = values.values[name] = None if filled == "" else filled   # made of empty facts (no codename): no value
    for name, template in derived.items():
        try:
            values.values[name] = context[name] = check_value(name, decls[name], values.values[name], values.sources[name])
        except BadInput as exc:   # the user's value that went into it is the one to fix
            given = ["%s from %s" % (ref, values.sources[ref]) for ref in sorted(template_refs(template))
                     if ref in decls and values.sources[ref] not in ("default", "lab overlay")]
            raise BadInput("%s (%s is %s%s)" % (exc.message, name, json.dumps(template), ", with " + ", ".join(given) if given else ""),
                           "give %s a value that fits" % (given[0].split()[0] if given else name))
    # Lookups, each after the lookups its key or its table entry refers to.
    pending = [name for name, decl in decls.items()
               if decl.get("lookup") and values.values[name] is None and values.sources[name] == "default"]
    while pending:
        for name in list(pending):
            lookup = decls[name]["lookup"]
            key = render_scalar(values.values.get(lookup["key"]))
            entry = lookup_entry(lookup["table"], key)
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
            raise BadInput("%s: parameters %s look each other up in a circle" % (origin_of(profiles, pending[0]), ", ".join(sorted(pending))),
                           "fix the profile")
    for name, decl in decls.items():
        if values.values[name] is None and "default" not in decl:
            if not complete:   # show lists it as what it is
                values.sources[name] = "required: no value yet"
                continue
            raise BadInput("parameter %s (role %s) needs a value%s" % (
                name, owner[name], ": " + decl["help"] if decl.get("help") else ""),
                "pass --set %s=VALUE or put it in the site file" % name)
    return values


def origin_of(profiles, name):
    """The file of the profile that declares parameter `name`."""
    return next((profile.origin for profile in profiles if name in profile.parameters), "a profile")


def substitute(value, context):
    """Fill {{name}} references. A field that is only a reference keeps the value's type."""
    if isinstance(value, str):
        whole = TEMPLATE_REF.fullmatch(value)
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
        raise BadReference("{{%s}}: %s is not a list of values with a %s field" % (name, base, field),
                           "fix the profile: only structured list items (like disks) have fields")
    return [item[field] for item in items]


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
# Platform tables: package managers, user tools, service managers, mount tables
# ---------------------------------------------------------------------------
# Each is chosen once from the facts when a Run starts; step kinds call them and
# never test the platform themselves. Each keeps its own batch probe and knows
# what makes that probe stale.

class PackageManager:
    """One batch query answers for every package of the run. `interrupted`: the package
    database says a run was stopped half-way; `repair` finishes it (before anything else)."""

    name = ""
    install_env = {}
    holds_lock = False   # its command inherits stackboot's lock (see Runner.run)

    def __init__(self, host):
        self.host = host
        self.wanted = set()     # every package of the run, queried together
        self.versions = None    # name -> version (None: not installed), from the last query
        self.stale = False      # a repository was added: refresh the index before installing
        self.offers = {}        # release -> name -> what the sources offer (see offered)

    def want(self, names):
        self.wanted.update(names)

    def query_argv(self, names):
        raise NotImplementedError

    def parse(self, line):
        """(name, version) from one line of the query's output; version None when not installed."""
        fields = line.split("\t")
        return (fields[0], fields[1]) if len(fields) == 2 else (None, None)

    def installed(self, names):
        """{name: version or None} for names, from one query for every package the run wants."""
        if self.versions is None or any(name not in self.versions for name in names):
            query = sorted(self.wanted | set(names))
            result = self.host.runner.run(self.query_argv(query), check=False)
            self.versions = dict.fromkeys(query)
            for line in result.out.splitlines():
                name, version = self.parse(line)
                if name in self.versions and version:
                    self.versions[name] = version
        return self.versions

    def missing(self, names):
        versions = self.installed(names)
        return [name for name in names if not versions.get(name)]

    candidate_argv = None   # what tells the versions the package sources have, as "NAME\tVERSION" lines

    def offered(self, names, release=None):
        """{name: {"candidate": VERSION, "versions": {VERSION: the release it comes from, or None}}}
        for what the package sources have: one query for every package the run wants, kept."""
        cache = self.offers.setdefault(release, {})
        asked = sorted((set(names) | self.wanted) - set(cache))
        if asked and self.candidate_argv and set(names) - set(cache):
            found = self.candidates(self.host.runner.run(self.candidate_argv(asked, release), check=False).out)
            for name in asked:
                cache[name] = found.get(name)
        return dict((name, cache.get(name)) for name in names)

    def candidates(self, out):
        """The candidate query's "NAME\tVERSION" lines (every version): the highest is the candidate."""
        found = {}
        for line in out.splitlines():
            name, version = self.parse(line)
            if name and version:
                offer = found.setdefault(name, {"candidate": version, "versions": {}})
                offer["versions"][version] = None
                if version_key(version) > version_key(offer["candidate"]):
                    offer["candidate"] = version
        return found

    def goal_versions(self, names, release=None, wanted=None):
        """{name: version} each package has once a packages step is done: the installed one, unless
        `wanted` (an upstream version like 4.58.1, or "latest") asks for another; else the one the
        sources give (None: they have none). The sources are asked only when an installed one will not do."""
        installed = self.installed(names)
        goal = dict((name, installed.get(name)) for name in names)
        if all(version and (not wanted or (wanted != "latest" and upstream_version(version) == wanted)) for version in goal.values()):
            return goal
        if wanted and not self.candidate_argv:
            raise BadInput("%s cannot tell which versions its repositories have, so stackboot cannot install version %s"
                           % (self.name, wanted), "leave the version out (packages_version), or install that version by hand")
        for name, offer in self.offered(names, release).items():
            if offer is None:
                goal[name] = goal[name] if not wanted else None
            elif wanted == "latest":
                goal[name] = offer["candidate"]
            elif wanted:
                matching = [version for version in offer["versions"] if wanted in (version, upstream_version(version))]
                goal[name] = max(matching, key=version_key) if matching else None
            elif not goal[name]:
                goal[name] = offer["candidate"]
        return goal

    def available(self, names, release=None, wanted=None):
        """(name, version) of the first of `names` that is installed (as `wanted` leaves it), else of
        the first an install would bring, else None. A converged host's query answers it."""
        goal = self.goal_versions(names, release, wanted)
        installed = self.installed(names)
        ranked = [name for name in names if goal.get(name) and goal[name] == installed.get(name)] + list(names)
        return next(((name, goal[name]) for name in ranked if goal.get(name)), None)

    def version(self, names, release=None, wanted=None):
        found = self.available(names, release, wanted)
        return found and found[1]

    def index_missing(self):
        """The package index was never fetched: the sources' versions are known only after it is."""
        return False

    def sources_changed(self):
        self.stale = True

    def interrupted(self):
        return False

    repair_argv = None   # what finishes what a stopped run of the package manager began

    def repair(self):
        self.host.runner.run(self.repair_argv, change=True, env=self.install_env)
        self.forget()

    def forget(self):
        """What the last queries said is stale: packages were installed or the index refreshed."""
        self.versions, self.offers = None, {}

    def install_argv(self, names):
        return [self.name, "install", "-y"] + names

    def remove_argv(self, names):
        return [self.name, "remove", "-y"] + names

    def reinstall_argv(self, names):
        return [self.name, "reinstall", "-y"] + names

    def reinstall(self, names):
        """Put back an installed package's own files (something overwrote them)."""
        self.host.runner.run(self.reinstall_argv(names), change=True, env=self.install_env, hold_lock=self.holds_lock)
        self.forget()

    def remove(self, names):
        """Remove packages, keeping their configuration (never a purge) and what their software
        wrote (data, metadata): a build of the same software takes their place."""
        self.host.runner.run(self.remove_argv(names), change=True, env=self.install_env, hold_lock=self.holds_lock)
        self.forget()

    def owners(self, paths):
        """{path: package} for the paths an installed package owns (where the package database
        can be read without a command; elsewhere none are known)."""
        return {}

    def pinned(self, goal, wanted):
        """The install's words for packages at the versions `goal` names ({name: version})."""
        missing = sorted(name for name, version in goal.items() if not version)
        if missing:
            raise BadInput("%s: the package sources have no version %s of it" % (missing[0], wanted),
                           "pick a version they have (`stackboot plan` lists the upgrade), or add the repository that has it")
        return [self.pin(name, version) for name, version in sorted(goal.items())]

    def pin(self, name, version):
        return "%s-%s" % (name, version)

    def install(self, names, release=None, wanted=None):
        """Install names (`wanted`: at that upstream version, or the newest: "latest"; an installed
        one is upgraded, or downgraded, to it)."""
        if release:
            raise BadInput("packages from release %s: only apt installs from a release it is told" % release,
                           "leave the release parameter out here, or configure %s's repositories" % self.name)
        if self.interrupted():
            self.repair()
        words = self.pinned(self.goal_versions(names, None, wanted), wanted) if wanted else names
        self.host.runner.run(self.install_argv(words), change=True, env=self.install_env)
        self.forget()


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

    # apt waits this long for another package manager's lock (a cloud-init's own, or a killed run's
    # apt-get), saying so, rather than failing at once. apt-get alone holds stackboot's lock
    # (hold_lock): apt closes its descriptors before it runs dpkg, so neither dpkg nor a daemon a
    # maintainer script starts can keep it (seen: only apt-get has it open during an install).
    APT = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]
    holds_lock = True

    def lists_empty(self):
        return not any("Packages" in entry for entry in self.host.listdir("/var/lib/apt/lists"))

    def interrupted(self):
        """dpkg was stopped half-way (killed during an install): what it left in its journal."""
        return bool(self.host.listdir("/var/lib/dpkg/updates"))

    def remove_argv(self, names):
        return self.APT + ["remove", "-y"] + names

    def candidate_argv(self, names, release=None):
        return ["apt-cache"] + (["-o", "APT::Default-Release=" + release] if release else []) + ["policy"] + names

    def candidates(self, out):
        """apt-cache policy: "NAME:", "  Candidate: VERSION" ((none): apt has no version of it), then
        its version table: "     VERSION PRIORITY" (*** marks the installed one), each followed by
        the sources that have it, "        500 URL SUITE/COMPONENT ARCH Packages"."""
        found, offer, version = {}, None, None
        for line in out.splitlines():
            words = line.split()
            if line and not line[0].isspace() and line.endswith(":"):
                offer = found.setdefault(line[:-1], {"candidate": None, "versions": {}})
            elif offer is None or not words:
                continue
            elif words[0] == "Candidate:":
                offer["candidate"] = words[1] if words[1] != "(none)" else None
            elif len(words) in (2, 3) and words[-1].lstrip("-").isdigit() and words[0] in ("***", words[-2]):
                version = words[-2]
                offer["versions"].setdefault(version, None)
            elif version and len(words) >= 3 and words[0].lstrip("-").isdigit() and "://" in words[1]:
                if offer["versions"][version] is None and "/" in words[2]:   # a flat repository ("./") has no suite
                    offer["versions"][version] = words[2].split("/")[0]
        return dict((name, offer) for name, offer in found.items() if offer["candidate"] or offer["versions"])

    def index_missing(self):
        return self.lists_empty()

    def pin(self, name, version):
        return "%s=%s" % (name, version)

    def reinstall_argv(self, names):
        return self.APT + ["install", "--reinstall", "-y", "--no-install-recommends"] + names

    def owners(self, paths):
        """dpkg's file lists, read directly (one file per package: no command, no lock)."""
        wanted, found = set(paths), {}
        for entry in self.host.listdir("/var/lib/dpkg/info"):
            if entry.endswith(".list"):
                for line in as_text(self.host.read("/var/lib/dpkg/info/" + entry) or b"").splitlines():
                    if line in wanted:
                        found[line] = entry[:-5].split(":")[0]
        return found

    repair_argv = ["dpkg", "--configure", "-a"]

    def install(self, names, release=None, wanted=None):
        """`release`: apt's target release (trixie-backports): its versions win over the default.
        A version pinned (`wanted`) comes with its own suite as the target release, so that its
        dependencies come from there too (apt would keep moosefs-common 4.57.5 from trixie under
        moosefs-master 4.58.1 from trixie-backports, and fail)."""
        runner = self.host.runner
        if self.interrupted():
            self.repair()
        if self.stale or self.lists_empty():
            runner.run(self.APT + ["update"], change=True, env=self.install_env, hold_lock=True)
            self.stale = False
            self.forget()
        words, options = names, []
        if wanted:
            goal = self.goal_versions(names, release, wanted)
            words = self.pinned(goal, wanted)
            offers = self.offered(names, release)
            suites = [offers[name]["versions"].get(version) for name, version in goal.items() if offers.get(name)]
            release = release or next((suite for suite in suites if suite), None)
            installed = self.installed(names)
            if any(installed.get(name) and version_key(version) < version_key(installed[name]) for name, version in goal.items()):
                options = ["--allow-downgrades"]
        argv = self.APT + ["install", "-y", "--no-install-recommends"] + options + (["-t", release] if release else []) + words
        result = runner.run(argv, change=True, env=self.install_env, check=False, hold_lock=True)
        if result.rc != 0 and "Unable to locate package" in result.err:
            runner.run(self.APT + ["update"], change=True, env=self.install_env, hold_lock=True)
            result = runner.run(argv, change=True, env=self.install_env, check=False, hold_lock=True)
        self.forget()
        if result.rc != 0:
            if "lock" in result.err.lower() and ("could not get" in result.err.lower() or "unable to acquire" in result.err.lower()):
                raise CommandFailed(result, "another package manager kept its lock for 5 minutes (a killed run's apt-get?): "
                                            "wait for it to end, then run again")
            raise CommandFailed(result, "check the package names and the host's package sources")


class Dnf(PackageManager):
    """dnf waits for another's lock by itself; rpm installs each package whole, so an install a
    killed run left half-done is finished by installing again (stackboot never upgrades, the
    case that leaves duplicates)."""
    name = "dnf"

    def query_argv(self, names):
        return ["rpm", "-q", "--qf", "%{NAME}\\t%{VERSION}-%{RELEASE}\\n"] + names

    def candidate_argv(self, names, release=None):
        return ["dnf", "repoquery", "-q", "--qf", "%{name}\\t%{version}-%{release}"] + names


class Yum(Dnf):
    """yum keeps a journal of a transaction until it ends; yum-utils finishes one left behind."""
    name = "yum"
    candidate_argv = None
    repair_argv = ["yum-complete-transaction", "-y"]

    def interrupted(self):
        return any(entry.startswith("transaction-all") for entry in self.host.listdir("/var/lib/yum"))


class Pkg(PackageManager):
    """pkg removes a dead run's lock on its database itself; it waits for a live one's
    LOCK_RETRIES times LOCK_WAIT seconds (pkg.conf(5), settable from the environment)."""
    name = "pkg"
    install_env = {"ASSUME_ALWAYS_YES": "yes", "LOCK_WAIT": "1", "LOCK_RETRIES": "300"}

    def query_argv(self, names):
        return ["pkg", "query", "%n\\t%v"] + names

    def remove_argv(self, names):
        return ["pkg", "delete", "-y"] + names

    def candidate_argv(self, names, release=None):
        return ["pkg", "rquery", "%n\\t%v"] + names

    def reinstall_argv(self, names):
        return ["pkg", "install", "-f", "-y"] + names


class Apk(PackageManager):
    name = "apk"

    def query_argv(self, names):
        return ["apk", "info", "-e"] + names

    def parse(self, line):
        return line.strip(), "installed"

    def install_argv(self, names):
        return ["apk", "add"] + names


class NoPackageManager(PackageManager):
    def available(self, names, release=None):
        return None   # nobody to ask (show for another host): the profiles' values stand

    def installed(self, names):
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


class ServiceManager:
    """How services start, stop and stay enabled here; `persistent`: enabled survives a reboot."""

    persistent = True

    def __init__(self, host):
        self.host = host
        self.wanted = []   # service steps of the run, probed together where the platform can

    def want(self, step):
        self.wanted.append(step)

    def unit_files_written(self, path):
        """A file was written that the service manager reads only when told (systemd units)."""

    def forget(self, step):
        """The service changed: its cached state is stale."""


class Systemd(ServiceManager):
    """systemd: one `systemctl show` answers for every unit of the run."""

    def __init__(self, host):
        ServiceManager.__init__(self, host)
        self.states = {}
        self.reload_needed = False   # systemd reads unit files only when told to

    def unit(self, step):
        name = step.args["name"]
        return name if "." in name else name + ".service"

    def probe(self, steps):
        units = [self.unit(step) for step in steps]
        if not units:
            return
        result = self.host.runner.run(["systemctl", "show", "--no-pager", "-p", "Id,LoadState,ActiveState,UnitFileState"]
                                      + units, check=False)
        blocks = [block for block in result.out.strip().split("\n\n")]
        for unit, block in zip(units, blocks):
            props = dict(line.partition("=")[::2] for line in block.splitlines())
            self.states[unit] = ServiceState(
                loaded=props.get("LoadState") == "loaded",
                enabled=props.get("UnitFileState") in ("enabled", "enabled-runtime", "static", "alias"),
                running=props.get("ActiveState") in ("active", "reloading", "activating"))

    def state(self, step):
        unit = self.unit(step)
        if unit not in self.states:
            missing = {}
            for each in self.wanted + [step]:
                if self.unit(each) not in self.states:
                    missing.setdefault(self.unit(each), each)
            self.probe(list(missing.values()))
        return self.states[unit]

    def unit_files_written(self, path):
        if "/systemd/system/" in path:
            self.reload_needed = True

    def do(self, step, action):
        runner = self.host.runner
        if self.reload_needed:
            runner.run(["systemctl", "daemon-reload"], change=True)
            self.reload_needed = False
        runner.run(["systemctl", action, self.unit(step)], change=True)
        self.forget(step)

    def forget(self, step):
        self.states.pop(self.unit(step), None)


class RcD(ServiceManager):
    """FreeBSD rc.d: enabled means NAME_enable=YES in rc.conf (read directly); sysrc writes it."""

    def rc_conf(self):
        values = {}
        for path in ("/etc/defaults/rc.conf", "/etc/rc.conf", "/etc/rc.conf.local"):
            values.update(parse_os_release(as_text(self.host.read(path) or b"")))
        return values

    def state(self, step):
        name = step.args["name"]
        enabled = self.rc_conf().get(name + "_enable", "NO").upper() in ("YES", "TRUE", "ON", "1")
        running = self.host.runner.run(["service", name, "onestatus"], check=False).rc == 0
        return ServiceState(True, enabled, running)

    def do(self, step, action):
        name = step.args["name"]
        if action in ("enable", "disable"):
            self.host.runner.run(["sysrc", "%s_enable=%s" % (name, "YES" if action == "enable" else "NO")], change=True)
            self.forget(step)
            return
        # rc.d refuses plain verbs for a service not enabled in rc.conf; one* verbs act regardless
        prefix = "" if step.args.get("enabled", True) else "one"
        self.host.runner.run(["service", name, prefix + action], change=True)

    def forget(self, step):
        self.host.forget("/etc/rc.conf")


class DirectServices(ServiceManager):
    """No init system runs (chroot, container, rescue): the daemon's own start/stop commands."""

    persistent = False

    def commands(self, step):
        """start, stop, reload, status: argv lists; stop may instead name a signal for the process
        in the pidfile ("SIGTERM": a daemon whose own stop command is gone, replaced by a newer one)."""
        direct = step.args.get("direct") or {}
        if not direct.get("start"):
            raise StackbootError("service %s: no init system runs here and the profile gives no direct start command"
                                 % step.args["name"], "add \"direct\": {\"start\": [...]} to the service step")
        if isinstance(direct.get("stop"), str) and not (direct["stop"] in ("SIGTERM", "SIGINT", "SIGKILL") and direct.get("pidfile")):
            raise StackbootError("service %s: a direct stop that is not a command must be SIGTERM, SIGINT or SIGKILL, "
                                 "with a pidfile" % step.args["name"], "fix the profile")
        return direct

    def state(self, step):
        direct = self.commands(step)
        pidfile = direct.get("pidfile")
        if pidfile:
            text = as_text(self.host.read(pidfile) or b"").strip().split()
            names = (os.path.basename(direct["start"][0]), step.args["name"])
            running = bool(text) and text[0].isdigit() and pid_alive(int(text[0]), names)
        elif direct.get("status"):
            running = self.host.runner.run(direct["status"], check=False).rc == 0
        else:
            raise StackbootError("service %s: direct mode needs a pidfile or a status command" % step.args["name"])
        return ServiceState(True, True, running)

    def do(self, step, verb):
        direct, runner = self.commands(step), self.host.runner
        if verb == "stop" and isinstance(direct.get("stop"), str):   # "SIGTERM": its pidfile's process
            text = as_text(self.host.read(direct["pidfile"]) or b"").split()
            if text and text[0].isdigit():
                self.host.kill(int(text[0]), getattr(signal, direct["stop"]))
        elif verb in direct:
            runner.run(direct[verb], change=True, detach=True)
        elif verb in ("restart", "reload") and direct.get("stop"):
            runner.run(direct["stop"], change=True, detach=True)
            runner.run(direct["start"], change=True, detach=True)
        elif verb in ("enable", "disable"):
            pass   # nothing persists without an init system
        else:
            raise StackbootError("service %s: the profile gives no direct %s command" % (step.args["name"], verb),
                                 "add it to the step's \"direct\" commands")
        self.forget(step)

    def forget(self, step):
        self.host.forget((step.args.get("direct") or {}).get("pidfile") or "")


SERVICE_MANAGERS = {"systemd": Systemd, "rc": RcD, "none": DirectServices}


def version_key(version):
    """A version as comparable numbers: 4.58.1 > 3.0.117-1 > 3.0.117 (a Debian epoch first)."""
    return [int(number) for number in re.findall(r"[0-9]+", version)]


def upstream_version(version):
    """The software's own version in a package's: 4.58.1 in 1:4.58.1-1~bpo13+1 (Debian: epoch,
    revision), 4.58.1-1.el9 (rpm: release), 4.58.1_1,1 (FreeBSD: port revision, epoch)."""
    version = re.sub(r"^[0-9]+:", "", version)
    return re.split(r"[_,]", version.rsplit("-", 1)[0] if "-" in version else version)[0]


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


class LinuxMounts:
    """Mounts from /proc/self/mountinfo: FUSE and subvolume mounts included, unlike os.path.ismount."""

    def __init__(self, host):
        self.host = host
        self.mounts = None

    def forget(self):
        self.mounts = None

    def table(self):
        """{mount point: {"fstype", "source"}}, as this machine sees it (under --root: prefixed)."""
        if self.mounts is None:
            self.mounts = self.read()
        return self.mounts

    def read(self):
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


class FreeBSDMounts(LinuxMounts):
    """FreeBSD has no mountinfo; `mount -p` prints the table in fstab form."""

    def read(self):
        mounts = {}
        for line in self.host.runner.run(["mount", "-p"]).out.splitlines():
            fields = line.split()
            if len(fields) >= 3:
                mounts[fields[1]] = {"fstype": fields[2], "source": fields[0]}
        return mounts


MOUNT_TABLES = {"freebsd": FreeBSDMounts}



# ---------------------------------------------------------------------------
# State and Run: what stackboot remembers on a host, and one command's view of it
# ---------------------------------------------------------------------------

class State:
    """STATE_DIR/state.json (0600): the roles installed and their inputs, the files written,
    builds, the stores made, restarts pending, digests of large files.

    Saved after every step, so a run killed at any point resumes from the truth.
    Only these methods touch its data.
    """

    # What each part holds, as check_shape reads it ("*": any key).
    SHAPE = {"version": "int",
             "intents": {"*": {"actions": [None], "time": None}},
             "roles": {"*": {"inputs": {"*": None}, "installed": "text"}},
             "files": {"*": {"sha256": "sha256"}},
             "builds": {"*": {"inputs": None, "version": "text", "files": ["text"], "previous_version": None, "roles": ["text"]}},
             "data_versions": {"*": "text"},
             "digests": {"*": [None]},
             "pending": {"*": {"*": ["text"]}},
             "made": {"*": {"*": None}}}

    def __init__(self, host):
        self.host = host
        self.path = host.state_dir + "/state.json"
        self.reload()

    def reload(self):
        """The state as the file says now (under the lock: what another run saved is kept)."""
        host = self.host
        where = host.path(self.path)
        fix = ("it holds the inputs installs remembered and what builds installed: repair it by hand, or move it "
               "aside and install again with the same --set values")
        try:
            data = read_bytes(where, INPUT_LIMIT)
        except (IOError, OSError) as exc:
            raise StackbootError("%s: cannot read it (%s)" % (where, exc.strerror or exc), fix)
        self.data = load_json(data, where, fix, StackbootError) if data else {}
        try:
            check_shape(where, "$", self.data, self.SHAPE)
            for role in self.data.get("roles", {}):
                if not ROLE_NAME_RE.match(role):
                    raise ProfileError(where, "$.roles", "%s is not a role's name" % json.dumps(role))
        except ProfileError as exc:
            raise StackbootError("stackboot's state is damaged: " + exc.message, fix)
        self.data.setdefault("version", 1)
        for key, kind in self.SHAPE.items():
            self.data.setdefault(key, {})

    def save(self):
        self.host.make_dirs(self.host.state_dir, 0o700)
        self.host.write_file(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode(), 0o600)

    # -- roles, and the inputs they were installed with (a repair run needs no flags) --
    def roles(self):
        return sorted(self.data["roles"])

    def inputs(self, roles):
        inputs = {}
        for role in roles:
            inputs.update(self.data["roles"].get(role, {}).get("inputs", {}))
        return inputs

    def remember_role(self, role, inputs):
        self.data["roles"][role] = {"inputs": inputs, "installed": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def forget_role(self, role):
        self.data["roles"].pop(role, None)

    # -- files stackboot wrote (a hand edit since is never overwritten silently) ------
    def record_file(self, path, data):
        self.data["files"][path] = {"sha256": sha256_bytes(data)}

    def knows_file(self, path):
        return path in self.data["files"]

    def wrote(self, path, data):
        return self.data["files"].get(path, {}).get("sha256") == sha256_bytes(data)

    def edited_by_hand(self, path, current):
        return self.knows_file(path) and not self.wrote(path, current)

    def forget_file(self, path):
        self.data["files"].pop(path, None)

    def forget_files_under(self, directory):
        for path in [path for path in self.data["files"] if path.startswith(directory.rstrip("/") + "/")]:
            del self.data["files"][path]

    # -- source builds and the files they installed ------------------------------------
    def build(self, name):
        return self.data["builds"].get(name)

    def record_build(self, name, inputs, version, files, roles=()):
        """`roles`: those whose software the build is (one build serves every role of a run)."""
        old = self.build(name) or {}
        self.data["builds"][name] = {"inputs": inputs, "version": version, "files": files,
                                     "previous_version": old.get("version"), "roles": sorted(roles)}

    def forget_build(self, name):
        self.data["builds"].pop(name, None)

    # -- what version of a software last ran on its data (it may go up, never down) ------
    def data_version(self, path):
        return self.data["data_versions"].get(path)

    def record_data_version(self, path, version):
        self.data["data_versions"][path] = version

    # -- stores stackboot made (only these may be destroyed by --purge-data) -------------
    def made(self, step_id):
        return self.data["made"].get(step_id)

    def record_made(self, step_id, kind, target, **details):
        self.data["made"][step_id] = dict(details, kind=kind, target=target)

    def forget_made(self, step_id):
        self.data["made"].pop(step_id, None)

    def made_targets(self, kind):
        return set(record["target"] for record in self.data["made"].values() if record.get("kind") == kind)

    # -- write-ahead: what a step is about to do, until it is done ------------------
    def intent(self, step_id):
        """What an interrupted run was doing to this step ({"actions": [...]}), or None."""
        return self.data["intents"].get(step_id)

    def begin(self, step_id, actions):
        self.data["intents"][step_id] = {"actions": list(actions), "time": round(time.time(), 3)}

    def end(self, step_id):
        self.data["intents"].pop(step_id, None)

    # -- restarts, reloads and runs a change asked for, until they happened -----------
    def pending(self, step_id, key):
        return self.data["pending"].get(step_id, {}).get(key, [])

    def add_pending(self, step_id, key, source_id):
        pending = self.data["pending"].setdefault(step_id, {})
        pending[key] = sorted(set(pending.get(key, [])) | {source_id})

    def clear_pending(self, step_id):
        self.data["pending"].pop(step_id, None)

    # -- digests of large files, remembered by size and mtime ---------------------------
    def file_digest(self, path):
        """sha256 of a large file, remembered by size and mtime so converged runs skip hashing."""
        st = self.host.stat(path)
        if st is None:
            return None
        stamp = [st.st_size, int(st.st_mtime)]
        cached = self.data["digests"].get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        digest = sha256_file(self.host.path(path))
        self.data["digests"][path] = [stamp, digest]
        return digest

    def forget_digest(self, path):
        self.data["digests"].pop(path, None)


class Run:
    """One command's view of a host while it plans and converges: the facts, the platform's
    tools (chosen once), the state, probe caches, and which steps changed so far."""

    def __init__(self, host, facts, out, state=None, force=False, offline=False, repair=False, bundle=None, packages=None):
        self.host, self.runner, self.facts, self.out = host, host.runner, facts, out
        self.state = state or State(host)
        self.force = force        # replace files edited by hand (keeping a backup)
        self.offline = offline    # never use the network: stop before any change if something is missing
        self.repair = repair      # clean up what a failed attempt left half-made, where that is safe
        self.bundle = bundle      # the zipapp bundle this stackboot runs from, if any
        self.packages = packages or PACKAGE_MANAGERS[facts["package_manager"]](host)   # the plan's, its answers kept
        self.services = SERVICE_MANAGERS[facts["init"]](host)
        self.users = USER_TOOLS.get(facts["platform"], ShadowUsers)()
        self.mounts = MOUNT_TABLES.get(facts["platform"], LinuxMounts)(host)
        self.changed = set()      # ids of steps that changed in this run (while planning: would change)
        self.roles = None         # the roles this run installs or removes (set by assess)
        self.node = None          # the lab node this run is for (named in the --json document)
        self.started = time.time()
        self.probed = {}          # step kinds' own probe caches, dropped when a step changes what they saw

    @property
    def planning(self):
        return not self.runner.allow_changes

    def triggered(self, step, key):
        """The steps named in the step's KEY_on (restart_on, reload_on, run_on) that changed in this
        run (while planning: would change), plus those a killed run left pending in the state."""
        pending = set(self.state.pending(step.id, key))
        if self.planning:   # a for_each step's copies ("id#2") answer to the step's id
            changed = self.changed | set(done.split("#")[0] for done in self.changed)
            pending |= set(step.args.get(key + "_on") or []) & changed
        return sorted(pending)



# ---------------------------------------------------------------------------
# Steps: what a step kind is
# ---------------------------------------------------------------------------
# A step kind declares its fields (a schema of Fields, typed by the one type table),
# the rules between them, and what each goal wants of it. Its core is two methods:
# `check` (read only: the Changes still needed for what the goal wants) and `apply`
# (make those changes, through the Host and the Runner). The converge loop does the
# rest: the order, re-checking, verifying, triggers, state saves and the report.

GOALS = ("present", "stopped", "absent", "purged")
# What a step may ask for when another changes (its KEY_on: the ids it watches).
TRIGGERS = ("restart", "reload", "run", "remount")
# present: install. stopped: nothing of it runs now or at boot (lab down, a replaced role).
# absent: uninstall (what stackboot made goes; data, stores and metadata stay).
# purged: uninstall --purge-data (data directories and the stores stackboot made go too).


class Field:
    """One key of a step kind's schema (like an Ansible argument_spec entry), typed like a parameter."""

    def __init__(self, type, required=False, default=None, help="", literal=False, choices=None, items=None, **decl):
        self.type, self.required, self.default = type, required, default
        self.help, self.literal, self.choices, self.items = help, literal, choices, items
        self.decl = dict(decl, items=items) if items else decl   # what the type reads (items, splice)

    def parse(self, value):
        """The value converted to the field's type; ValueError when it is not one."""
        value = TYPES[self.type].parse(value, self.decl)
        if self.choices and value not in self.choices:
            raise ValueError("must be one of: %s" % ", ".join(self.choices))
        return value

    def problem(self, value):
        """What is wrong with a value as the profile gives it, or None. A value with
        {{references}} is checked once they are filled in."""
        if value is None and not self.required:
            return None
        if template_refs(value) and not self.literal:
            return None
        try:
            self.parse(value)
        except ValueError as exc:
            return str(exc)
        return None


class FieldError(ValueError):
    """A step's rendered field is not of its type (`part`: the key inside the field to blame)."""

    def __init__(self, key, message, part=None):
        ValueError.__init__(self, message)
        self.key, self.message, self.part = key, message, part


def flat_settings(settings):
    """A settings field's (KEY, VALUE) pairs in order, an extra-settings parameter (a dict)
    spliced in; a key set twice (an extra setting repeating one the role sets) is an error."""
    pairs, seen = [], set()
    for key, value in settings.items():
        for name, item in (value.items() if isinstance(value, dict) else [(key, value)]):
            if name in seen:
                raise FieldError("settings", "%s is set twice (the role sets it already)" % name,
                                 key if isinstance(value, dict) else None)
            seen.add(name)
            pairs.append((name, item))
    return pairs


class Rule:
    """A declared relation between a step's fields, checked when a profile loads."""

    def __init__(self, holds, message):
        self.holds, self.message = holds, message

    def problem(self, kind, spec):
        return None if self.holds(spec) else self.message % {"kind": kind}


def or_list(keys):
    return ", ".join(keys[:-1]) + " or " + keys[-1]


def exactly_one(*keys, message=None):
    return Rule(lambda spec: sum(key in spec for key in keys) == 1,
                message or "a %%(kind)s step needs exactly one of %s" % or_list(keys))


def at_least_one(*keys, message=None):
    return Rule(lambda spec: any(key in spec for key in keys),
                message or "a %%(kind)s step needs one of %s" % or_list(keys))


def required_with(key, other, message=None):
    return Rule(lambda spec: key not in spec or other in spec,
                message or "a %%(kind)s step with %s needs %s" % (key, other))


def one_of_when(key, value, other, allowed, message):
    """When `key` is `value`, `other` must be one of `allowed`."""
    return Rule(lambda spec: spec.get(key) != value or spec.get(other) in allowed, message)


class Change:
    """One thing a step would do: '+' create, '~' change, '-' remove, '!' refused; '=' is a
    note, not a change: what a removal keeps, and why. `fetches` names what the change needs
    from the network (--offline lists it before anything changes)."""

    ACTIONS = {"+": "create", "~": "change", "-": "remove", "!": "conflict", "=": "keep"}

    def __init__(self, symbol, summary, diff=None, action=None, fetches=()):
        self.symbol, self.summary, self.diff, self.action, self.fetches = symbol, summary, diff, action, list(fetches)

    def as_json(self):
        return {"action": self.ACTIONS[self.symbol], "summary": self.summary, "diff": self.diff}


def real_changes(changes):
    return [change for change in changes if change.symbol != "="]


STEP_KINDS = {}


def step_kind(cls):
    """Decorator: a Step subclass becomes a kind profiles can use."""
    STEP_KINDS[cls.kind] = cls
    return cls


class Step:
    kind = ""
    schema = {}
    rules = ()
    merge_lists = ()    # list fields two roles' copies of one step may each add to
    # Changes what the whole machine shares (software, users), maybe over the network: a lab
    # runs these once on the host itself, never inside a node (whose namespace has no way out).
    machine_wide = False
    # What each goal wants of this kind's target: "present", "absent", "stopped"... as its
    # `check` understands them; a goal not named leaves the target as it is.
    goals = {"present": "present"}
    # What a step marked "data": true (it holds the user's data) wants beyond present.
    data_goals = {}
    keeps = None        # why a removal leaves this kind's target, said out loud
    keeps_data = "data (--purge-data removes it)"
    # (the action that stops it, the word while it runs, the word once stopped): `lab status`
    liveness = None

    def __init__(self, profile, where, spec, args, goal="present"):
        self.profile = profile
        self.shared_by = [profile.name] if profile else []   # the profiles whose copies of it were merged into it
        self.where = where
        self.args = args
        self.data = spec.get("data", False)
        try:   # as given, before the types normalise it: state records are keyed by it
            self.id = spec.get("id") or "%s:%s" % (self.kind, self.target())
        except (TypeError, KeyError, AttributeError):   # not even a target: validate says why
            self.id = None
        self.validate()
        self.id = self.id or "%s:%s" % (self.kind, self.target())
        self.goal = goal
        self.wanted = self.wanted_for(goal)

    def wanted_for(self, goal):
        if self.data and goal != "present":   # the user's data: only what data_goals names touches it
            return self.data_goals.get(goal)
        return self.goals.get(goal)

    def validate(self):
        """The rendered arguments (after {{parameters}} are filled in), each converted to its
        type; a FieldError names the field, for render_step to say whose value it was."""
        for key, field in self.schema.items():
            value = self.args.get(key)
            if value is None:
                if field.required:
                    raise FieldError(key, "needs a value")
                continue
            try:
                self.args[key] = field.parse(value)
            except ValueError as exc:
                raise FieldError(key, str(exc))

    def target(self):
        return str(self.args.get("path") or self.args.get("name") or "")

    def describe(self):
        return "%s %s" % (self.kind, self.target())

    def wants(self, run):
        """Register batch probes (one query for every package, unit...) before any check runs."""

    def check(self, run):
        """The Changes still needed for `self.wanted`; [] means already right. Reads only."""
        raise NotImplementedError

    def kept(self, run):
        """Notes ('=') for a goal that leaves this step's target as it is."""
        reason = self.keeps_data if self.data else self.keeps
        return [Change("=", "%s: %s" % (self.target(), reason))] if reason and self.goal in ("absent", "purged") else []

    def apply(self, run, changes):
        """Make `changes` (from check) happen: every change through run.host or run.runner."""
        raise NotImplementedError

    def finish(self, run, actions):
        """Record what an apply did (maybe in an earlier, interrupted run, `actions` its intent)
        that check cannot see: a file right on disk but not recorded, a store it made. Most
        kinds record nothing beyond what they change."""

    def verify(self, run):
        left = real_changes(self.check(run))
        if left:
            raise StackbootError("still not right after applying: %s" % left[0].summary)

    def report(self, run):
        """Lines printed once after an install (what a user needs next); none by default."""
        return []

    # Helpers shared by kinds that own a path.
    def owner_ids(self, run):
        return run.host.uid(self.args.get("owner")), run.host.gid(self.args.get("group"))

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

    def set_ownership(self, run, path):
        """Owner, group and mode of `path` as the step's args say (those it gives)."""
        uid, gid = self.resolved_ids(run)
        if (uid, gid) != (-1, -1):
            run.host.set_owner(path, uid, gid)
        if self.args.get("mode"):
            run.host.set_mode(path, parse_mode(self.args["mode"]))


OWNERSHIP = {"owner": Field("name"), "group": Field("name"), "mode": Field("mode")}


def describe_ownership(args):
    parts = [args[key] for key in ("owner", "group", "mode") if args.get(key)]
    return " (%s)" % " ".join(parts) if parts else ""


# ---------------------------------------------------------------------------
# Generic step kinds
# ---------------------------------------------------------------------------

def remove_build(run, name):
    """The files build `name` installed removed, but for those a package owns now ({path:
    package}, returned), and its record forgotten."""
    files = run.state.build(name)["files"]
    owned = run.packages.owners(files)
    for path in files:
        if run.host.stat(path) is not None and path not in owned:
            run.host.remove(path)
    run.state.forget_build(name)
    return owned


@step_kind
class PackagesStep(Step):
    """Packages installed (one batch query answers for all). Where they take the place of a
    build stackboot installed (`replaces_build`), the build's recorded files go first: the
    package manager would overwrite them, and the build's record would then claim its files.

    An installed package stays as it is unless `version` asks for another: an upgrade is a
    decision (a storage cluster upgrades in an order, its master first), never a side effect
    of a re-run on a day the distribution published a new version."""

    machine_wide = True
    kind = "packages"
    schema = {"names": Field("list", required=True, items="package", help="packages to install (one batch query for all)"),
              "files": Field("list", items="path", help="local package files that provide `names` (a release package, say)"),
              "replaces_build": Field("name", help="a build of the same software these packages replace"),
              "release": Field("word", help="apt: the release to install from (its target release: trixie-backports)"),
              "version": Field("word", help="the upstream version to have (4.58.1: 4.58.1-1~bpo13+1 will do), or "
                                            "latest (the candidate: what an install would bring); an installed one is upgraded to it")}
    merge_lists = ("names",)

    def target(self):
        return " ".join(self.args["names"])

    def wants(self, run):
        run.packages.want(self.args["names"])

    def check(self, run):
        missing = run.packages.missing(self.args["names"])
        changes = [Change("~", "finish the package install an earlier run left half-done (%s)" % " ".join(
            run.packages.repair_argv), action="repair")] if run.packages.interrupted() else []
        changes += self.build_changes(run)
        if self.args.get("version") and not run.packages.index_missing():   # (a fresh host's index: the install fetches it, then pins)
            changes += self.version_changes(run)
            goal = run.packages.goal_versions(missing, self.args.get("release"), self.args["version"]) if missing else {}
            missing = ["%s=%s" % (name, goal[name]) for name in missing]
        if any(change.symbol == "!" for change in changes):
            return changes
        return changes + ([Change("+", "install " + " ".join(missing), action="install",
                                  fetches=["package %s (not installed)" % name for name in missing])] if missing else [])

    def build_changes(self, run):
        """The build these packages take the place of: it goes first, for every role it serves, or stays."""
        build = run.state.build(self.args.get("replaces_build") or "")
        if not build:
            return []
        staying = sorted(set(build.get("roles") or []) - run.roles) if run.roles is not None else []
        if staying:
            return [Change("!", "build %s also serves %s, which this run leaves on it (the packages would take its place "
                                "under %s too): switch them in one run (stackboot install %s with the same --set), or keep %s "
                                "built" % (self.args["replaces_build"], ", ".join(staying), staying[0],
                                           " ".join(sorted(run.roles | set(staying))), self.profile.name))]
        changes = [Change("-", "remove the %d files build %s %s installed: these packages replace it (the configuration "
                               "and the data stay)" % (len(build["files"]), self.args["replaces_build"], build.get("version") or ""),
                          action="unbuild")]
        overwritten = sorted(set(run.packages.owners(build["files"]).values()))
        if overwritten:   # an older stackboot built over them
            changes.append(Change("~", "reinstall %s: the build overwrote their files" % " ".join(overwritten), action="reinstall"))
        return changes

    def version_changes(self, run):
        """Installed packages moved to the version asked for; a version the sources lack refused."""
        names, wanted, release = self.args["names"], self.args["version"], self.args.get("release")
        goal, versions = run.packages.goal_versions(names, release, wanted), run.packages.installed(names)
        nowhere = [name for name in names if not goal.get(name)]
        if nowhere:
            offer = run.packages.offered(nowhere[:1], release)[nowhere[0]] or {"versions": {}}
            return [Change("!", "%s %s: the package sources have no such version (they have: %s)" % (
                nowhere[0], wanted, ", ".join(sorted(offer["versions"], key=version_key)) or "none"))]
        changes = []
        for name in names:
            if versions.get(name) and goal[name] != versions[name]:
                verb = "upgrade" if version_key(goal[name]) > version_key(versions[name]) else "downgrade"
                changes.append(Change("~", "%s %s %s -> %s" % (verb, name, versions[name], goal[name]), action="upgrade",
                                      fetches=["package %s %s" % (name, goal[name])]))
        return changes

    def apply(self, run, changes):
        if run.packages.interrupted():
            run.packages.repair()
        if any(change.action == "unbuild" for change in changes):
            owned = remove_build(run, self.args["replaces_build"])
            run.state.save()   # the packages may fail to install: the build is gone either way
            if owned:
                run.packages.reinstall(sorted(set(owned.values())))
        if not any(change.action in ("install", "upgrade") for change in changes):
            return
        if self.args.get("files"):   # a release package adds a repository: refresh before the next install
            run.packages.install(self.args["files"])
            run.packages.sources_changed()
        elif self.args.get("version"):   # pinned, those already right too: apt keeps them
            run.packages.install(self.args["names"], self.args.get("release"), self.args["version"])
        else:
            run.packages.install(run.packages.missing(self.args["names"]), self.args.get("release"))


@step_kind
class GroupStep(Step):
    machine_wide = True
    kind = "group"
    schema = {"name": Field("name", required=True), "gid": Field("int"), "system": Field("bool", default=True),
              "keep_existing_id": Field("bool", default=False, help="the gid is for creating the group: an existing one keeps its own")}

    def check(self, run):
        row = run.host.table("group").get(self.args["name"])
        if row is None:
            return [Change("+", "create group %s%s" % (self.args["name"], " (gid %s)" % self.args["gid"] if self.args.get("gid") else ""))]
        if self.args.get("gid") is not None and row[2] != str(self.args["gid"]) and not self.args.get("keep_existing_id"):
            return [Change("!", "group exists with gid %s, not %s; stackboot never renumbers groups" % (row[2], self.args["gid"]))]
        return []

    def apply(self, run, changes):
        run.runner.run(run.users.add_group(self.args["name"], self.args.get("gid"), self.args.get("system", True)), change=True)
        run.host.forget("/etc/group")


@step_kind
class UserStep(Step):
    machine_wide = True
    kind = "user"
    schema = {"name": Field("name", required=True), "uid": Field("int"), "group": Field("name"),
              "home": Field("path"), "shell": Field("path"), "comment": Field("text"),
              "system": Field("bool", default=True),
              "keep_existing_id": Field("bool", default=False, help="the uid is for creating the user: an existing one keeps its own")}

    def wanted_fields(self):
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
            return [Change("+", "create user %s%s" % (self.args["name"], " (uid %s)" % self.args["uid"] if self.args.get("uid") else ""),
                           action="create")]
        current = {"uid": row[2], "comment": row[4] if len(row) > 4 else "",
                   "home": row[5] if len(row) > 5 else "", "shell": row[6] if len(row) > 6 else ""}
        group = self.args.get("group")
        differ = [key for key, value in self.wanted_fields().items() if key not in ("group", "uid") and current.get(key) != value]
        if group is not None and run.host.gid(group) != int(row[3]):
            differ.append("group")
        if self.args.get("uid") is not None and current["uid"] != str(self.args["uid"]) and not self.args.get("keep_existing_id"):
            return [Change("!", "user exists with uid %s, not %s; stackboot never renumbers users" % (current["uid"], self.args["uid"]))]
        if differ and current["uid"] == "0":
            return [Change("!", "%s is the superuser (uid 0): stackboot never changes its %s" % (self.args["name"], ", ".join(differ)))]
        return [Change("~", "%s -> %s" % (key, self.wanted_fields()[key]), action="modify") for key in differ]

    def apply(self, run, changes):
        fields = self.wanted_fields()
        if changes[0].action == "create":
            argv = run.users.add_user(self.args["name"], fields, self.args.get("system", True))
        else:
            fields.pop("uid", None)
            argv = run.users.modify_user(self.args["name"], fields)
        run.runner.run(argv, change=True)
        run.host.forget("/etc/passwd")


@step_kind
class DirectoryStep(Step):
    kind = "directory"
    schema = dict(OWNERSHIP, path=Field("path", required=True),
                  prune=Field("bool", default=False, help="uninstall removes it once it is empty (never what is in it)"))
    data_goals = {"purged": "absent"}

    def wanted_for(self, goal):
        if self.args.get("prune") and goal in ("absent", "purged") and not self.data:
            return "pruned"
        return Step.wanted_for(self, goal)

    def check(self, run):
        path = self.args["path"]
        st = run.host.stat(path)
        if system_directory(path) and (self.wanted != "present" or (st and self.ownership_changes(run, st))):
            return [Change("!", "refusing to change or remove %s: the system itself owns it (give this step a directory "
                                "of its own)" % path)]
        if self.wanted == "absent":
            return [Change("-", "remove %s and everything in it (--purge-data)" % path, action="purge")] if st else []
        if self.wanted == "pruned":
            return [Change("-", "remove %s (empty)" % path, action="prune")] if st and not run.host.listdir(path) else []
        if st is None:
            return [Change("+", "create" + describe_ownership(self.args), action="create")]
        import stat as stat_module
        if not stat_module.S_ISDIR(st.st_mode):
            return [Change("!", "exists and is not a directory")]
        return self.ownership_changes(run, st)

    def kept(self, run):
        return Step.kept(self, run) if run.host.exists(self.args["path"]) else []

    def finish(self, run, actions):
        if self.wanted == "absent" and not run.host.exists(self.args["path"]):
            run.state.forget_files_under(self.args["path"])

    def apply(self, run, changes):
        path = self.args["path"]
        action = changes[0].action
        if action == "purge":
            run.host.remove_tree(path)
            run.state.forget_files_under(path)
        elif action == "prune":
            run.host.remove_dir(path)
        else:
            run.host.make_dirs(path)
            self.set_ownership(run, path)


@step_kind
class OwnershipStep(Step):
    """Every entry directly in a directory belongs to one owner and group: a daemon's data
    directory where a backup was copied in by hand (as root), or a metalogger's files that a
    master takes over."""

    kind = "ownership"
    schema = {"path": Field("path", required=True), "owner": Field("name", required=True),
              "group": Field("name", required=True)}

    def check(self, run):
        path, owner, group = self.args["path"], self.args["owner"], self.args["group"]
        if system_directory(path):
            return [Change("!", "refusing to give what %s holds to %s: the system itself owns it" % (path, owner))]
        entries = run.host.listdir(path)
        uid, gid = self.owner_ids(run)
        if uid is None or gid is None:   # the user comes from an earlier step of this run
            return [Change("~", "every entry -> %s:%s" % (owner, group), action="*")] if entries else []
        changes = []
        for name in entries:
            st = run.host.stat(path + "/" + name)
            if st is not None and (st.st_uid, st.st_gid) != (uid, gid):
                changes.append(Change("~", "%s -> %s:%s" % (name, owner, group), action=name))
        return changes

    def apply(self, run, changes):
        uid, gid = self.resolved_ids(run)
        names = run.host.listdir(self.args["path"]) if changes[0].action == "*" else [change.action for change in changes]
        for name in names:
            run.host.set_owner(self.args["path"] + "/" + name, uid, gid)


class ManagedFileStep(Step):
    """Kinds that write whole files: hand-edit detection, diffs, atomic writes, removal of
    what stackboot wrote (and nobody edited since)."""

    goals = {"present": "present", "absent": "absent", "purged": "absent"}

    def desired(self, run):
        """{path: (bytes, mode, hidden)} this step wants on disk; hidden: why its diff is not
        shown ("secret", "not shown"), or None."""
        raise NotImplementedError

    def check(self, run):
        if self.wanted == "absent":
            return self.removal_changes(run)
        changes = []
        desired = self.desired(run)
        for path, (data, mode, hidden) in desired.items():
            changes += self.file_changes(run, path, data, hidden, named=len(desired) > 1)
        return changes

    def file_changes(self, run, path, data, hidden, named=False):
        current = run.host.read(path)
        if current is None:
            return [Change("+", "create" + (" " + path if named else "") + describe_ownership(self.args),
                           None if hidden else unified_diff("", as_text(data), path), action="write")]
        changes = []
        if current != data:
            diff = "(%s content not shown)" % hidden if hidden == "secret" else "(content not shown)" if hidden \
                else unified_diff(as_text(current), as_text(data), path)
            if run.state.edited_by_hand(path, current) and not run.force:
                changes.append(Change("!", "%s was edited by hand since stackboot wrote it; --force replaces it (a backup is kept)" % path, diff))
            else:
                changes.append(Change("~", "update %s" % path, diff, action="write"))
        st = run.host.stat(path)
        return changes + [Change(c.symbol, c.summary, action="write") for c in self.ownership_changes(run, st)]

    def removal_changes(self, run):
        try:
            paths = sorted(self.desired(run))
        except StackbootError:   # a copy whose source is gone
            paths = [self.args["path"]]
        changes = []
        for path in paths:
            current = run.host.read(path)
            if current is None or not run.state.knows_file(path):
                continue
            if run.state.wrote(path, current):
                changes.append(Change("-", "remove %s" % path, action=path))
            else:
                changes.append(Change("=", "%s: edited by hand since stackboot wrote it" % path))
        return changes

    def finish(self, run, actions):
        """A file right on disk that the state does not know yet (the run that wrote it died before
        saying so) is recorded; a removed one is forgotten."""
        try:
            desired = self.desired(run)
        except StackbootError:   # a copy whose source is gone
            desired = {}
        for path in sorted(set(desired) | set([self.args["path"]] if self.args.get("path") else [])):
            current = run.host.read(path)
            if self.wanted == "absent" and current is None:
                run.state.forget_file(path)
            elif self.wanted == "present" and path in desired and current == desired[path][0] and not run.state.wrote(path, current):
                run.state.record_file(path, current)

    def apply(self, run, changes):
        if self.wanted == "absent":
            for change in changes:
                run.host.remove(change.action)
                run.state.forget_file(change.action)
            return
        uid, gid = self.resolved_ids(run)
        for path, (data, mode, _) in self.desired(run).items():
            current = run.host.read(path)
            if current is not None and current != data and not run.state.wrote(path, current):
                backup = "%s.stackboot-backup-%s" % (path, time.strftime("%Y%m%d%H%M%S"))
                st = run.host.stat(path)
                run.host.write_file(backup, current, st.st_mode & 0o7777, st.st_uid, st.st_gid)
                run.out.info("  backup of the old %s kept as %s" % (path, backup))
            run.host.write_file(path, data, mode, uid, gid)
            run.state.record_file(path, data)
            run.services.unit_files_written(path)


@step_kind
class FileStep(ManagedFileStep):
    kind = "file"
    schema = dict(OWNERSHIP, path=Field("path", required=True),
                  content=Field("lines", literal=True, help="the file, as is"),
                  template=Field("lines", help="the file, with {{parameters}} filled in"),
                  settings=Field("settings", items="text", splice=True,
                                 help="KEY = VALUE lines in the order given; null values are left out"),
                  source=Field("path", help="a copy of this file on the host (made by an earlier step, say)"),
                  separator=Field("text", default=" = "), header=Field("lines", literal=True),
                  quote=Field("bool", default=False, help="settings values quoted for a shell (files a shell sources)"),
                  secret=Field("bool", default=False),
                  diff=Field("bool", default=True, help="show the content's diff in plans (false: a large generated file)"))
    rules = (exactly_one("content", "template", "settings", "source"),
             one_of_when("secret", True, "mode", ("0600", "0400", "600", "400"), 'a secret file needs mode "0600" or "0400"'))

    def validate(self):
        Step.validate(self)
        flat_settings(self.args.get("settings") or {})

    def text(self):
        args = self.args
        header = args.get("header")
        lines = ([header] if isinstance(header, str) else list(header or []))
        if args.get("settings") is not None:
            show = shell_value if args.get("quote") else render_scalar
            lines += ["%s%s%s" % (key, args.get("separator", " = "), show(value))
                      for key, value in flat_settings(args["settings"]) if value is not None]
            return "\n".join(lines) + "\n"
        body = args.get("content") if args.get("content") is not None else args.get("template")
        if isinstance(body, list):
            body = "".join(render_scalar(line) + "\n" for line in body)
        return "\n".join(lines + [body]) if lines else body

    def desired(self, run):
        mode = parse_mode(self.args.get("mode") or "0644")
        hidden = "secret" if self.args.get("secret") else None if self.args.get("diff", True) else "not shown"
        if self.args.get("source"):   # what another file holds is never shown: it may be anything
            data = run.host.read(self.args["source"])
            if data is None:
                raise StackbootError("%s: %s does not exist" % (self.describe(), self.args["source"]),
                                     "the step that makes it must come first")
            return {self.args["path"]: (data, mode, hidden or "not shown")}
        return {self.args["path"]: (self.text().encode("utf-8"), mode, hidden)}

    def check(self, run):
        source = self.args.get("source")
        if self.wanted == "present" and source and run.host.isdir(source):
            return [Change("!", "%s is a directory, not a file to copy" % source)]
        if self.wanted == "present" and source and not run.host.exists(source):
            if not run.planning:
                self.desired(run)   # raises: nothing to copy
            return [Change("+", "copy of %s (made by an earlier step)" % source, action="write")]
        return ManagedFileStep.check(self, run)


@step_kind
class LineStep(Step):
    kind = "line"
    schema = dict(OWNERSHIP, path=Field("path", required=True), line=Field("text", required=True),
                  match=Field("regex", help="a regular expression; the first matching line is replaced"),
                  state=Field("name", default="present", choices=["present", "absent"]))

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

    def apply(self, run, changes):
        current, new = self.new_text(run)
        st = run.host.stat(self.args["path"])
        if st is not None:
            mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
        else:
            uid, gid = self.resolved_ids(run)
            mode = parse_mode(self.args.get("mode") or "0644")
        run.host.write_file(self.args["path"], new.encode("utf-8"), mode, uid, gid)


def own_address():
    """This host's own address (not loopback): the one its default route leaves from (a UDP
    connect sends nothing), else the first local one the kernel lists; None when it has none."""
    import socket
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))   # TEST-NET-1: never answered, only routed
            return probe.getsockname()[0]
    except OSError:
        pass
    try:
        with open("/proc/net/fib_trie") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for before, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL" and not before.split()[-1].startswith("127."):
            return before.split()[-1]
    return None


@step_kind
class HostNameStep(Step):
    """A name in /etc/hosts, for hosts without DNS: `address` (default: this host's own, never
    loopback: MooseFS chunkservers refuse a master on 127.x). `unless_resolves`: only where the
    name does not resolve already (the resolver is asked; under --root, the root's /etc/hosts)."""

    kind = "host-name"
    schema = {"name": Field("host", required=True), "address": Field("host", help="default: this host's own address"),
              "unless_resolves": Field("bool", default=False)}
    keeps = "a name other software may use by now"
    HOSTS = "/etc/hosts"

    def entries(self, run):
        """{name: address} as /etc/hosts says (the first line naming it wins, as for the resolver)."""
        found = {}
        for line in as_text(run.host.read(self.HOSTS) or b"").splitlines():
            words = line.split("#", 1)[0].split()
            for name in words[1:]:
                found.setdefault(name, words[0])
        return found

    def resolves(self, run):
        if run.host.root != "/":
            return False
        import socket
        try:
            return bool(socket.getaddrinfo(self.args["name"], None))
        except (OSError, UnicodeError):
            return False

    def check(self, run):
        name, entries = self.args["name"], self.entries(run)
        if IPV4_RE.match(name) or ":" in name:   # an address needs no name
            return []
        if self.args.get("unless_resolves") and (name in entries or self.resolves(run)):
            return []
        address = self.args.get("address") or own_address()
        if address is None or entries.get(name) == address:   # (only loopback here: no address would help)
            return []
        return [Change("+" if name not in entries else "~", "%s -> %s in %s%s" % (
            name, address, self.HOSTS, " (was %s)" % entries[name] if name in entries else ""), action="add")]

    def apply(self, run, changes):
        name, address = self.args["name"], self.args.get("address") or own_address()
        current = as_text(run.host.read(self.HOSTS) or b"")
        lines = []
        for line in current.splitlines():   # the name leaves any line that gave it another address
            words = line.split("#", 1)[0].split()
            if name in words[1:]:
                rest = [word for word in words[1:] if word != name]
                if not rest:
                    continue
                line = " ".join([words[0]] + rest)
            lines.append(line)
        lines.append("%s %s" % (address, name))
        st = run.host.stat(self.HOSTS)
        run.host.write_file(self.HOSTS, ("\n".join(lines) + "\n").encode(), st.st_mode & 0o7777 if st else 0o644)


PORTS_RE = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?/(tcp|udp)\Z")


@value_type("ports", "ports and a protocol, like 9422/tcp or 9419-9421/tcp")
def type_ports(value, decl):
    match = PORTS_RE.match(value) if isinstance(value, str) else None
    low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
    if not match or not 1 <= low <= high <= 65535:
        raise ValueError("expected PORT/tcp, PORT-PORT/tcp or the same with udp, got %s" % json.dumps(value))
    return value


def port_spans(items):
    """["9419/tcp", "9420/tcp", "9421/tcp"] -> [(9419, 9421, "tcp")]: what a firewall opens as one rule."""
    ports = set()
    for item in items:
        low, high, protocol = PORTS_RE.match(item).groups()
        ports.update((protocol, port) for port in range(int(low), int(high or low) + 1))
    spans = []
    for protocol, port in sorted(ports):
        if spans and spans[-1][2] == protocol and spans[-1][1] == port - 1:
            spans[-1] = (spans[-1][0], port, protocol)
        else:
            spans.append((port, port, protocol))
    return spans


def span_text(span, dash="-"):
    low, high, protocol = span
    return "%d%s%d/%s" % (low, dash, high, protocol) if low != high else "%d/%s" % (low, protocol)


def let_in(spans, rules):
    """The spans some port of which no rule (low, high, protocol or "any") lets in."""
    return [span for span in spans if not all(any(low <= port <= high and protocol in (span[2], "any")
                                                  for low, high, protocol in rules) for port in range(span[0], span[1] + 1))]


class Firewalld:
    """The RHEL family's firewall. Its permanent zones are XML files, read here; a running daemon
    also has a runtime set, asked once (`firewall-cmd --list-all`) and changed with the permanent
    one. Without a daemon (a chroot, a host being built), `firewall-offline-cmd` edits the files."""

    def __init__(self, run, running):
        self.run, self.running = run, running
        conf = as_text(run.host.read("/etc/firewalld/firewalld.conf") or b"")
        pairs = [line.strip().partition("=") for line in conf.splitlines() if not line.lstrip().startswith("#")]
        zones = [value.strip() for key, _, value in pairs if key.strip() == "DefaultZone" and value.strip()]
        self.zone = (zones or ["public"])[0]   # as firewalld: spaces around =, the first of duplicates
        self.where = "firewalld zone " + self.zone

    def element(self, kind, name):
        """A zone's or service's XML: /etc's copy overrides the package's."""
        import xml.etree.ElementTree as ElementTree
        for base in ("/etc/firewalld", "/usr/lib/firewalld"):
            data = self.run.host.read("%s/%s/%s.xml" % (base, kind, name))
            if data is not None:
                try:
                    return ElementTree.fromstring(data)
                except ElementTree.ParseError as exc:
                    raise StackbootError("%s/%s/%s.xml is not valid XML (%s)" % (base, kind, name, exc),
                                         "fix the file, or let firewall-cmd rewrite it")
        return None

    @staticmethod
    def rule(port, protocol):
        low, _, high = (port or "").partition("-")
        return (int(low), int(high or low), protocol) if low.isdigit() and (high or low).isdigit() else None

    def service_rules(self, names):
        services = [self.element("services", name) for name in names]
        return [self.rule(port.get("port"), port.get("protocol")) for service in services if service is not None
                for port in service.iter("port")]

    def permanent(self):
        zone = self.element("zones", self.zone)
        if zone is None:
            return []
        ports = [self.rule(port.get("port"), port.get("protocol")) for port in zone.findall("port")]   # (not a rich rule's)
        return [rule for rule in ports + self.service_rules(service.get("name") for service in zone.findall("service")) if rule]

    def runtime(self):
        if "firewalld" not in self.run.probed:
            result = self.run.runner.run(["firewall-cmd", "--zone=" + self.zone, "--list-all"], check=False)
            fields = dict((key.strip(), value.split()) for key, _, value in
                          (line.partition(":") for line in result.out.splitlines()) if key.strip() in ("ports", "services"))
            ports = [self.rule(*item.split("/", 1)) for item in fields.get("ports", []) if "/" in item]
            self.run.probed["firewalld"] = [rule for rule in ports + self.service_rules(fields.get("services", [])) if rule]
        return self.run.probed["firewalld"]

    def missing(self):
        """Why this firewall cannot be changed as it is, or None."""
        if self.element("zones", self.zone) is None:
            return ("firewalld's default zone %s has no zone file in /etc/firewalld/zones or /usr/lib/firewalld/zones: "
                    "fix DefaultZone in /etc/firewalld/firewalld.conf" % self.zone)
        return None

    def closed(self, spans, going=()):
        """Spans not let in at boot (permanent) or, with a daemon, now (runtime)."""
        closed = set(let_in(spans, self.permanent())) | set(let_in(spans, self.runtime()) if self.running else ())
        return sorted(closed)

    def stale(self, spans, label):
        """Ports opened for an earlier value of a port parameter: a zone's port carries no label, so none is known."""
        return []

    def ours(self, spans, label):
        """What removing closes: exactly the ports this step opens, where the zone has them."""
        zone = self.element("zones", self.zone)
        have = set((port.get("port"), port.get("protocol")) for port in (zone.findall("port") if zone is not None else ()))
        return [span for span in spans if tuple(span_text(span).split("/")) in have]

    def argv(self, verb, span, label):
        port = "--%s-port=%s" % (verb, span_text(span))
        if not self.running:
            return [["firewall-offline-cmd", "--zone=" + self.zone, port]]
        return [["firewall-cmd", "--permanent", "--zone=" + self.zone, port], ["firewall-cmd", "--zone=" + self.zone, port]]


class Ufw:
    """Debian's and Ubuntu's firewall, when enabled. Its rules are read from user.rules, where each
    has a "### tuple ###" line (action, protocol, ports, ..., direction, comment=HEX). stackboot's
    rules carry the comment "stackboot: LABEL": removing finds its own by it, and so does a port
    parameter's change (the old port's rule goes)."""

    RULES = "/etc/ufw/user.rules"
    where = "ufw"

    def __init__(self, run):
        self.run = run

    def rules(self, label=None):
        """(low, high, protocol) of each rule letting connections in (with a label: only stackboot's for it)."""
        found = []
        for line in as_text(self.run.host.read(self.RULES) or b"").splitlines():
            words = line[len("### tuple ### "):].split() if line.startswith("### tuple ### ") else []
            if len(words) < 4 or words[0] not in ("allow", "limit") or "in" not in words[3:]:   # limit: rate-limited, in
                continue
            comment = "".join(word[8:] for word in words if word.startswith("comment="))
            if label is not None and comment != ("stackboot: " + label).encode().hex():
                continue
            for part in ("1:65535" if words[2] == "any" else words[2]).split(","):
                low, _, high = part.partition(":")
                if low.isdigit() and (high or low).isdigit():
                    found.append((int(low), int(high or low), words[1]))
        return found

    def missing(self):
        return None

    def closed(self, spans, going=()):
        """Spans some port of which no rule lets in, once the rules `going` are deleted."""
        return let_in(spans, [rule for rule in self.rules() if rule not in going])

    def stale(self, spans, label):
        return [rule for rule in self.rules(label) if rule not in spans]

    def ours(self, spans, label):
        return self.rules(label)

    def argv(self, verb, span, label):
        port = span_text(span, ":")
        return [["ufw", "allow", port, "comment", "stackboot: " + label]] if verb == "add" else [["ufw", "delete", "allow", port]]


def host_firewall(run):
    """The firewall that filters incoming connections now or from the next boot, or None:
    firewalld when running or enabled at boot, ufw when enabled. Read from files, once a run.
    Under --root, ufw is left alone: it has no offline mode, and `ufw allow` in a chroot would
    change the running system's rules too (the next run on the booted host opens the ports)."""
    if "firewall" in run.probed:
        return run.probed["firewall"]
    host, found = run.host, None
    if host.exists("/usr/sbin/firewalld"):
        running = host.root == "/" and any(process_name(pid) == "firewalld" for pid in os.listdir("/proc") if pid.isdigit())
        if running or host.exists("/etc/systemd/system/multi-user.target.wants/firewalld.service"):
            found = Firewalld(run, running)
    conf = as_text(host.read("/etc/ufw/ufw.conf") or b"") if found is None and host.root == "/" else ""
    if any(line.replace(" ", "").lower() == "enabled=yes" for line in conf.splitlines()):
        found = Ufw(run)
    run.probed["firewall"] = found
    return found


@step_kind
class FirewallStep(Step):
    """Lets a role's ports in through the host firewall, where one is active (firewalld, ufw);
    where none is, there is nothing to say. Removing the role closes what stackboot opened:
    ufw's rules with its comment, firewalld's exact ports. FreeBSD's pf and ipfw are left to
    their owners: a rule set is one file, of which stackboot cannot safely own a part."""

    kind = "firewall"
    schema = {"ports": Field("list", required=True, items="ports", help="what comes in: 9422/tcp, 9419-9421/tcp"),
              "label": Field("text", required=True, help="whose ports they are (ufw's rule comment)")}
    goals = {"present": "open", "absent": "closed", "purged": "closed"}

    def target(self):
        return ",".join(self.args["ports"])

    def todo(self, firewall):
        """[(add or remove, span)]: what is left to open, and to close (an old port; all of ours when removing)."""
        spans, label = port_spans(self.args["ports"]), self.args["label"]
        if self.wanted == "open":
            stale = firewall.stale(spans, label)
            return [("remove", span) for span in stale] + [("add", span) for span in firewall.closed(spans, stale)]
        return [("remove", span) for span in firewall.ours(spans, label)]

    def check(self, run):
        firewall = host_firewall(run)
        if firewall is None:
            return []
        if firewall.missing():
            return [Change("!", firewall.missing())]
        return [Change("+", "let %s in (%s, for %s)" % (span_text(span), firewall.where, self.args["label"]), action="add")
                if verb == "add" else Change("-", "close %s (%s)" % (span_text(span), firewall.where), action="remove")
                for verb, span in self.todo(firewall)]

    def apply(self, run, changes):
        firewall = host_firewall(run)
        for verb, span in self.todo(firewall):
            for argv in firewall.argv(verb, span, self.args["label"]):
                run.runner.run(argv, change=True)
        run.probed.pop("firewalld", None)
        run.host.forget()


@step_kind
class DnfRepoStep(Step):
    """A repository the distribution ships but leaves off (CodeReady Builder, PowerTools), switched
    on: `enabled=1` in its section of /etc/yum.repos.d, as `dnf config-manager --set-enabled`
    writes it (a section without the key counts as on, as for dnf). Its id differs by
    distribution and release, so `names` lists them: the first one configured here is it.
    RHEL's come from subscription-manager, which rewrites redhat.repo: asked there."""

    kind = "dnf-repo"
    schema = {"names": Field("list", required=True, items="name", help="its ids: crb, codeready-builder-for-rhel-9-x86_64-rpms"),
              "why": Field("text", help="what needs it, for the refusal where it is not configured at all")}
    DIRECTORY = "/etc/yum.repos.d"

    def target(self):
        return self.args["names"][0]

    def section(self, run):
        """(id, file, its lines, the index of its enabled= line or None) of the first id configured, or None."""
        for wanted in self.args["names"]:
            found = self.find(run, wanted)
            if found:
                return (wanted,) + found
        return None

    def find(self, run, wanted):
        for name in run.host.listdir(self.DIRECTORY):
            if not name.endswith(".repo"):
                continue
            path = "%s/%s" % (self.DIRECTORY, name)
            lines, inside, found = as_text(run.host.read(path) or b"").splitlines(), False, None
            for index, line in enumerate(lines):
                if line.strip().startswith("["):
                    if inside:
                        break
                    inside = line.strip() == "[%s]" % wanted
                    found = index if inside else found
                elif inside and line.partition("=")[0].strip() == "enabled":
                    return path, lines, index
            if found is not None:
                return path, lines, None
        return None

    def check(self, run):
        found = self.section(run)
        if found is None:
            return [Change("!", "none of the repositories %s is in %s%s: add one (or one with the same packages), then "
                                "run again" % (", ".join(self.args["names"]), self.DIRECTORY,
                                               " (%s)" % self.args["why"] if self.args.get("why") else ""))]
        name, path, lines, index = found
        enabled = index is None or lines[index].partition("=")[2].strip().lower() in ("1", "yes", "true", "on")
        return [] if enabled else [Change("~", "enable %s in %s" % (name, path), action="enable")]

    def apply(self, run, changes):
        name, path, lines, index = self.section(run)
        if os.path.basename(path) == "redhat.repo":
            run.runner.run(["subscription-manager", "repos", "--enable", name], change=True)
        else:
            lines[index] = "enabled=1"
            st = run.host.stat(path)
            run.host.write_file(path, ("\n".join(lines) + "\n").encode(), st.st_mode & 0o7777, st.st_uid, st.st_gid)
        run.host.forget()
        run.packages.sources_changed()


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


@step_kind
class RepositoryStep(ManagedFileStep):
    machine_wide = True
    kind = "repository"
    schema = {"name": Field("name", required=True), "url": Field("url", required=True),
              "key": Field("lines", literal=True, help="the repository's public signing key, inline"),
              "key_file": Field("path", help="or a file holding it (say, from a download step with its sha256)"),
              "suite": Field("word"), "components": Field("list", items="word")}
    rules = (exactly_one("key", "key_file"),)

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
        return dict((path, (text.encode("utf-8"), 0o644, None)) for path, text in fmt().files(args).items())

    def apply(self, run, changes):
        ManagedFileStep.apply(self, run, changes)
        run.packages.sources_changed()


class Bundle:
    """The zipapp stackboot runs from, when `stackboot bundle` made it: verified artifacts by
    sha256 (artifacts/SHA256) and the parameter values it was made with (bundle.json)."""

    def __init__(self, path, names, manifest):
        self.path, self.names, self.manifest = path, names, manifest

    @classmethod
    def here(cls):
        """The bundle this copy of stackboot runs from, or None."""
        archive = running_zipapp()
        if archive is None:
            return None
        import zipfile
        with zipfile.ZipFile(archive) as zipped:
            names = set(zipped.namelist())
            if "bundle.json" not in names:
                return None
            origin, fix = "%s/bundle.json" % archive, "make the bundle again with `stackboot bundle`"
            manifest = load_json(zipped.read("bundle.json"), origin, fix, StackbootError)
        try:
            check_shape(origin, "$", manifest, {"stackboot": "text", "parameters": {"*": None}, "artifacts": {"*": "text"}})
        except ProfileError as exc:
            raise StackbootError("this bundle is damaged: " + exc.message, fix)
        return cls(archive, names, dict({"parameters": {}}, **manifest))

    def has(self, sha256):
        return "artifacts/" + sha256 in self.names

    def copy_to(self, host, sha256, path):
        """The artifact, written to `path` on the host (a part file)."""
        import zipfile
        with zipfile.ZipFile(self.path) as zipped, zipped.open("artifacts/" + sha256) as stream:
            host.save_stream(path, stream)


def running_zipapp():
    """The .pyz this stackboot was imported from, or None (a file, or piped in)."""
    path = globals().get("__file__") or ""
    archive, sep, _ = path.rpartition(".pyz" + os.sep)
    return archive + ".pyz" if sep and os.path.isfile(archive + ".pyz") else None


@step_kind
class DownloadStep(Step):
    machine_wide = True
    kind = "download"
    schema = {"url": Field("url", required=True), "sha256": Field("sha256", required=True),
              "dest": Field("path", help="where the verified file goes (default: the download cache)"),
              "mode": Field("mode")}

    def target(self):
        return self.args["url"]

    def dest(self):
        return self.args.get("dest") or "%s/downloads/%s" % (CACHE_DIR, self.args["url"].rstrip("/").rsplit("/", 1)[-1])

    def in_bundle(self, run):
        return bool(run.bundle and run.bundle.has(self.args["sha256"]))

    def check(self, run):
        dest, sha = self.dest(), self.args["sha256"]
        if run.host.exists(dest):
            if run.state.file_digest(dest) == sha:
                return []
            change = Change("~", "download again: %s does not match its sha256" % dest)
        elif self.in_bundle(run):
            return [Change("+", "copy to %s from the bundle (sha256 %s…)" % (dest, sha[:12]))]
        else:
            change = Change("+", "download to %s (sha256 %s…)" % (dest, sha[:12]))
        if not self.args["url"].startswith("file://"):
            change.fetches = ["%s (sha256 %s…, not in the cache%s)" % (self.args["url"], sha[:12],
                                                                       " or in this bundle" if run.bundle else "")]
        return [change]

    def apply(self, run, changes):
        dest, sha = self.dest(), self.args["sha256"]
        part = dest + ".part"
        if self.in_bundle(run):
            run.bundle.copy_to(run.host, sha, part)
        else:
            run.host.download(self.args["url"], part, run.out, run.offline)
        digest = sha256_file(run.host.path(part))
        if digest != sha:
            run.host.remove(part)
            raise StackbootError("%s: sha256 is %s, expected %s; nothing was installed" % (self.args["url"], digest, sha),
                                 "check the URL and the sha256 you gave")
        run.host.set_mode(part, parse_mode(self.args.get("mode") or "0644"))
        run.host.rename(part, dest)
        run.state.forget_digest(dest)


@step_kind
class BuildStep(Step):
    """An autotools source build, installed through a staging tree so every file is recorded.

    A build never overwrites a file a package owns: the packages of the same software it
    `replaces` are removed first, in the plan (a removal keeps their configuration, and the
    software's data and metadata are not theirs); any other package's file stops the install
    before anything is copied. Removing a build leaves a file a package owns in place."""

    machine_wide = True
    kind = "build"
    merge_lists = ("configure", "make", "replaces")   # roles sharing one build each add their modules
    schema = {"name": Field("name", required=True), "archive": Field("path", required=True),
              "replaces": Field("list", default=[], items="package",
                                help="packages of the same software: removed (not purged) before the build installs"),
              "sha256": Field("sha256", help="the archive's sha256 (saves hashing it on every run)"),
              "version": Field("word"), "autoreconf": Field("bool", default=False),
              "configure": Field("list", default=[], items="text"), "env": Field("environment", default={}),
              "make": Field("list", default=[], items="text", help="extra make arguments"), "jobs": Field("int")}
    goals = {"present": "present", "absent": "absent", "purged": "absent"}

    def inputs(self, run):
        """What the build depends on; the same digest means nothing to do."""
        archive_sha = self.args.get("sha256")
        if not archive_sha:
            if not run.host.exists(self.args["archive"]):
                return None
            archive_sha = run.state.file_digest(self.args["archive"])
        keys = ("version", "autoreconf", "configure", "env", "make")
        return sha256_bytes(json.dumps([archive_sha] + [self.args.get(key) for key in keys], sort_keys=True).encode())

    def recipe(self):
        """What the plan shows under a build line: the exact configure command and its environment."""
        env = " ".join("%s=%s" % item for item in sorted(self.args.get("env", {}).items()))
        return "%s./configure %s\n" % (env + " " if env else "", " ".join(self.args.get("configure", [])))

    def wants(self, run):
        run.packages.want(self.args["replaces"])

    def replaced(self, run):
        """{name: version} of the installed packages this build replaces."""
        if not self.args["replaces"]:
            return {}
        versions = run.packages.installed(self.args["replaces"])
        return dict((name, versions[name]) for name in self.args["replaces"] if versions.get(name))

    def check(self, run):
        record = run.state.build(self.args["name"])
        if self.wanted == "absent":
            return [Change("-", "remove the %d files %s %s installed" % (len(record["files"]), self.args["name"],
                                                                         record.get("version") or ""), action="remove")] if record else []
        digest = self.inputs(run)
        version = self.args.get("version") or ""
        replaced = self.replaced(run)
        if replaced:   # their files are where the build's go: they leave first, and the build (re)installs
            return [Change("-", "remove packages %s: this build replaces them (their configuration, the data and "
                           "the metadata stay)" % ", ".join("%s %s" % item for item in sorted(replaced.items())),
                           action="unpackage"),
                    Change("+" if record is None else "~", "build and install %s %s" % (self.args["name"], version), self.recipe())]
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

    def apply(self, run, changes):
        if self.wanted == "absent":
            owned = remove_build(run, self.args["name"])
            if owned:
                run.out.say("  kept %d files packages own now (%s…)" % (len(owned), sorted(owned)[0]))
            return
        replaced = self.replaced(run)
        if replaced:
            run.packages.remove(sorted(replaced))
        self.build(run)

    def build(self, run):
        name, host = self.args["name"], run.host
        work = "%s/build/%s" % (CACHE_DIR, name)
        stage = "%s/stage/%s" % (CACHE_DIR, name)
        for path in (work, stage):
            host.remove_tree(path)
        host.make_dirs(work)
        source = host.extract(self.args["archive"], work)
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
        owned = run.packages.owners(host.tree_files(stage))
        if owned:
            path = sorted(owned)[0]
            raise StackbootError("%s would overwrite %s, which package %s owns (%d files in all); nothing was installed" % (
                name, path, owned[path], len(owned)), "remove that package, or install this software from packages")
        files = host.install_tree(stage)
        run.state.record_build(name, self.inputs(run), self.args.get("version") or "", files, self.shared_by)
        host.remove_tree(stage)


@step_kind
class ServiceStep(Step):
    kind = "service"
    schema = {"name": Field("name", required=True), "enabled": Field("bool", default=True),
              "running": Field("bool", default=True, help="false stops it; null leaves it as it is (oneshot units)"),
              "restart_on": Field("list", default=[], items="word", help="ids of steps whose change restarts the service"),
              "reload_on": Field("list", default=[], items="word", help="ids of steps whose change reloads the service"),
              "direct": Field("object", help="start/stop/status/reload commands and pidfile, used when no init system runs")}
    goals = {"present": "present", "stopped": "stopped", "absent": "stopped", "purged": "stopped"}
    liveness = ("stop", "running", "STOPPED")

    @property
    def meant_to_run(self):
        """False for a service the role keeps stopped (the 3.x GUI a 4.x one replaced): no liveness to report."""
        return self.args.get("running", True) is not False

    def wants(self, run):
        run.services.want(self)

    def check(self, run):
        state = run.services.state(self)
        persistent = run.services.persistent
        if self.wanted == "stopped":
            return ([Change("-", "stop", action="stop")] if state.running else []) + \
                   ([Change("-", "disable at boot", action="disable")] if persistent and state.enabled else [])
        changes = []
        want_enabled, want_running = self.args.get("enabled", True), self.args.get("running", True)
        if persistent and want_enabled and not state.enabled:
            changes.append(Change("+", "enable at boot", action="enable"))
        if persistent and not want_enabled and state.enabled:
            changes.append(Change("-", "disable at boot", action="disable"))
        if want_running is None:
            return changes
        if want_running and not state.running:
            changes.append(Change("+", "start", action="start"))
        elif not want_running and state.running:
            changes.append(Change("-", "stop", action="stop"))
        elif want_running:
            restart, reload = run.triggered(self, "restart"), run.triggered(self, "reload")
            if restart:
                changes.append(Change("~", "restart (%s changed)" % ", ".join(restart), action="restart"))
            elif reload:
                changes.append(Change("~", "reload (%s changed)" % ", ".join(reload), action="reload"))
        return changes

    def apply(self, run, changes):
        for change in changes:
            run.services.do(self, change.action)

    def verify(self, run):
        """Daemons take a moment to write their pid file or settle: poll briefly."""
        deadline = time.time() + 15
        while True:
            run.services.forget(self)
            left = real_changes(self.check(run))
            if not left or time.time() > deadline:
                break
            time.sleep(0.2)
        if left:
            raise StackbootError("still not right after applying: %s" % left[0].summary, "look at the daemon's log")


class MountPoint:
    """A filesystem mounted at `path` now (seen in the kernel's mount table) and at boot
    (its fstab line): shared by the kinds that mount something."""

    def __init__(self, path, device, fstype, options, fstab=True, mount_argv=None):
        self.path, self.device, self.fstype, self.options = path, device, fstype, options or ["defaults"]
        self.fstab, self.mount_argv = fstab, mount_argv

    def fstab_line(self):
        return "%s %s %s %s 0 0" % (self.device, self.path, self.fstype, ",".join(self.options))

    def fstab_text(self, run):
        """fstab with our line in place of any other line for the same mount point."""
        current = as_text(run.host.read("/etc/fstab") or b"")
        lines, placed = [], False
        for line in current.splitlines():
            fields = line.split()
            if len(fields) >= 2 and not line.lstrip().startswith("#") and fields[1] == self.path:
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
        return run.mounts.table().get(run.host.path(self.path))

    def fstab_changes(self, run):
        if not self.fstab:
            return []
        current, new = self.fstab_text(run)
        if current == new:
            return []
        return [Change("~" if current else "+", "fstab: " + self.fstab_line(), unified_diff(current, new, "/etc/fstab"),
                       action="fstab")]

    def mount_changes(self, run):
        return [] if self.mounted(run) else [Change("+", "mount now", action="mount")]

    def unmount_changes(self, run, fstab=True):
        """Unmount now and (with fstab) drop our fstab line, as far as either is there."""
        changes = [Change("-", "unmount", action="unmount")] if self.mounted(run) else []
        current, _ = self.fstab_text(run)
        if fstab and self.fstab and self.fstab_line() in current.splitlines():
            changes.append(Change("-", "fstab: remove " + self.fstab_line(), action="unfstab"))
        return changes

    def apply(self, run, change):
        """One change this mount point made: fstab, mount, unmount or unfstab."""
        host = run.host
        if change.action in ("fstab", "unfstab"):
            current, new = self.fstab_text(run)
            if change.action == "unfstab":
                new = "\n".join(line for line in current.splitlines() if line != self.fstab_line()) + "\n"
            st = host.stat("/etc/fstab")
            host.write_file("/etc/fstab", new.encode(), st.st_mode & 0o7777 if st else 0o644)
        elif change.action == "mount":
            host.make_dirs(self.path)
            argv = self.mount_argv or (["mount", self.path] if self.fstab else
                                       ["mount", "-t", self.fstype, "-o", ",".join(self.options), self.device, self.path])
            run.runner.run(argv, change=True)
            run.mounts.forget()
        elif change.action == "unmount":
            run.runner.run(["umount", self.path], change=True)
            run.mounts.forget()


@step_kind
class MountStep(Step):
    """A filesystem mounted now and kept in fstab: a network filesystem's client, a bind mount."""

    kind = "mount"
    schema = {"path": Field("path", required=True, help="the mount point"),
              "device": Field("word", required=True), "fstype": Field("word", required=True),
              "options": Field("list", default=["defaults"], items="word"), "fstab": Field("bool", default=True),
              "mount": Field("argv", help="how to mount it now (default: mount PATH, which reads fstab; "
                                          "without fstab, mount -t FSTYPE -o OPTIONS DEVICE PATH)"),
              "remount_on": Field("list", default=[], items="word",
                                  help="ids of steps whose change remounts it (a FUSE client runs new software only then)")}
    goals = {"present": "present", "stopped": "unmounted", "absent": "absent", "purged": "absent"}
    keeps_data = "data; uninstall keeps it mounted"   # a store's mount stays, even with --purge-data
    liveness = ("unmount", "mounted", "NOT MOUNTED")

    def __init__(self, *args, **kwargs):
        Step.__init__(self, *args, **kwargs)
        self.mount = MountPoint(self.args["path"], self.args["device"], self.args["fstype"], self.args.get("options"),
                                self.args.get("fstab", True), self.args.get("mount"))

    def check(self, run):
        if system_directory(self.args["path"]):
            return [Change("!", "refusing to mount on %s: the system itself owns it" % self.args["path"])]
        if self.wanted == "unmounted":
            return self.mount.unmount_changes(run, fstab=False)
        if self.wanted == "absent":
            return self.mount.unmount_changes(run)
        changes = self.mount.fstab_changes(run) + self.mount.mount_changes(run)
        remount = run.triggered(self, "remount") if self.mount.mounted(run) else []
        return changes + ([Change("~", "remount (%s changed): the mounted client runs the old software until then"
                                  % ", ".join(remount), action="remount")] if remount else [])

    def apply(self, run, changes):
        for change in changes:
            if change.action == "remount":   # never lazily: what has files open there must not lose them unseen
                result = run.runner.run(["umount", self.args["path"]], change=True, check=False)
                run.mounts.forget()
                if result.rc != 0:
                    raise StackbootError("%s is in use, so it still runs the old client (%s)" % (
                        self.args["path"], one_line(result.err or result.out)),
                        "close what uses it (fuser -vm %s), then run again: the remount stays pending" % self.args["path"])
                change = Change("+", "mount now", action="mount")
            self.mount.apply(run, change)


@step_kind
class CommandStep(Step):
    """The rare rest: a command guarded so a converged host never runs it again."""

    kind = "command"
    schema = {"argv": Field("argv", required=True), "creates": Field("path", help="skip when this path exists"),
              "unless": Field("argv", help="skip when this command exits 0"),
              "run_on": Field("list", items="word", help="run only after one of these step ids changed (a probe after its config)"),
              "fails": Field("text", help="what a failure means, for the error line"),
              "cwd": Field("path"), "env": Field("environment", default={})}
    rules = (at_least_one("creates", "unless", "run_on", message='a command step needs a guard: "creates", "unless" or "run_on"'),)

    def target(self):
        return " ".join(self.args["argv"])

    def check(self, run):
        if self.args.get("creates") and run.host.exists(self.args["creates"]):
            return []
        if self.args.get("run_on") is not None:
            changed = run.triggered(self, "run")
            return [Change("+", "run %s (%s changed)" % (" ".join(self.args["argv"]), ", ".join(changed)))] if changed else []
        if self.args.get("unless") and run.runner.run(self.args["unless"], check=False).rc == 0:
            return []
        return [Change("+", "run " + " ".join(self.args["argv"]))]

    def apply(self, run, changes):
        env = dict((key, str(value)) for key, value in self.args.get("env", {}).items())
        result = run.runner.run(self.args["argv"], change=True, cwd=self.args.get("cwd"), env=env, check=False)
        if result.rc != 0:   # a pending run_on stays pending: the next run tries again
            raise CommandFailed(result, self.args.get("fails") or "see the command's message above")
        run.host.forget(self.args.get("creates") or "")


@step_kind
class RequireStep(Step):
    """Something stackboot does not install itself (a kernel module's tools from a third party):
    where it is missing, the plan refuses with how to get it."""

    kind = "require"
    schema = {"path": Field("path", required=True, help="what must exist (a program, usually)"),
              "fix": Field("text", required=True, help="how to get it, for the refusal")}

    def check(self, run):
        return [] if run.host.exists(self.args["path"]) else [Change("!", "%s is missing: %s" % (self.args["path"], self.args["fix"]))]

    def apply(self, run, changes):
        """Never reached: check only refuses."""


@step_kind
class SelinuxContextStep(Step):
    """A directory's SELinux type where SELinux enforces (facts.selinux), for good: a file-context
    rule (`semanage fcontext`, kept in file_contexts.local, so a relabel keeps it; a policy
    module's own rule in file_contexts will do) and the label on what is there now (`restorecon
    -R`), read from the security.selinux attribute. A directory not made yet gets the rule only."""

    kind = "selinux-context"
    schema = {"path": Field("path", required=True), "type": Field("name", required=True, help="an SELinux type: httpd_sys_content_t")}
    RULES = ("/etc/selinux/targeted/contexts/files/file_contexts.local", "/etc/selinux/targeted/contexts/files/file_contexts")

    def pattern(self):
        return "%s(/.*)?" % self.args["path"].rstrip("/")

    def contexts(self, run, path):
        """The context of each rule for our pattern in that file."""
        return [line.split()[-1] for line in as_text(run.host.read(path) or b"").splitlines() if line.split()[:1] == [self.pattern()]]

    def has_rule(self, run):
        return any((":%s:" % self.args["type"]) in context for path in self.RULES for context in self.contexts(run, path))

    def labelled(self, run):
        try:
            label = os.getxattr(run.host.path(self.args["path"]), "security.selinux")
        except (OSError, AttributeError):   # no such path yet, no xattrs here: restorecon will say
            return False
        return (":%s:" % self.args["type"]).encode() in label

    def check(self, run):
        changes = [] if self.has_rule(run) else [Change("+", "file-context rule %s -> %s" % (self.pattern(), self.args["type"]), action="rule")]
        if run.host.exists(self.args["path"]) and (changes or not self.labelled(run)):
            changes.append(Change("~", "label %s %s (restorecon -R)" % (self.args["path"], self.args["type"]), action="label"))
        return changes

    def apply(self, run, changes):
        if any(change.action == "rule" for change in changes):
            verb = "-m" if self.contexts(run, self.RULES[0]) else "-a"   # -a on a local rule for the path: "already defined"
            run.runner.run(["semanage", "fcontext", verb, "-t", self.args["type"], self.pattern()], change=True)
        if run.host.exists(self.args["path"]):   # (made since the plan, maybe: a new rule is for what is there too)
            run.runner.run(["restorecon", "-R", self.args["path"]], change=True)
        run.host.forget()



# ---------------------------------------------------------------------------
# Stores: btrfs filesystems and subvolumes, ZFS pools and datasets
# ---------------------------------------------------------------------------

def size_bytes(text):
    """'10GiB' or '10G' -> binary bytes, '10GB' -> decimal; as btrfs and ZFS read sizes."""
    match = re.match(r"^([0-9]+(?:\.[0-9]+)?)([kKMGTPE]?)(i?)(B?)\Z", text)
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
    for point, entry in run.mounts.table().items():
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

    goals = {"present": "present", "purged": "absent"}
    keeps = "a store; uninstall keeps it (--purge-data destroys it, as stackboot made it)"

    def exists(self, run):
        raise NotImplementedError

    def made(self, run):
        return run.state.made(self.id)

    def remember_made(self, run, **details):
        """Recorded at once (not at the step's end): only what stackboot made may ever be destroyed."""
        run.state.record_made(self.id, self.kind, self.target(), **details)
        run.state.save()

    def not_ours(self, run):
        """Why a removal must leave this store, whatever the goal: not made here, or gone."""
        if not self.exists(run):
            return "gone already"
        if not self.made(run):
            return "not made by stackboot; never destroyed by it"
        return None

    def kept(self, run):
        return [Change("=", "%s: %s" % (self.target(), self.not_ours(run) or self.keeps))]

    def check(self, run):
        if self.wanted == "absent":
            reason = self.not_ours(run) or self.purge_refusal(run)
            return [Change("=", "%s: %s" % (self.target(), reason))] if reason else self.purge_changes(run)
        return self.present_changes(run)

    def apply(self, run, changes):
        if self.wanted == "absent":
            self.purge(run, changes)
            run.state.forget_made(self.id)
            run.host.forget()
        else:
            self.make(run, changes)

    def purge_refusal(self, run):
        """Why --purge-data must keep this store after all (something in it is not stackboot's)."""
        return None

    def made_details(self, actions):
        """What the record of a store made by an interrupted run holds (it cannot know more)."""
        return {}

    def finish(self, run, actions):
        """Made (or destroyed) by a run that died before it said so: the record follows the store."""
        exists = self.exists(run)
        if self.wanted == "present" and exists and not self.made(run) and set(actions) & {"mkfs", "create"}:
            run.state.record_made(self.id, self.kind, self.target(), **self.made_details(actions))
        elif self.wanted == "absent" and not exists:
            run.state.forget_made(self.id)

    def present_changes(self, run):
        raise NotImplementedError

    def make(self, run, changes):
        raise NotImplementedError

    def purge_changes(self, run):
        raise NotImplementedError

    def purge(self, run, changes):
        raise NotImplementedError


@step_kind
class BtrfsFilesystemStep(StoreStep):
    """A btrfs filesystem on a device or an image file, created only on a target proven blank.

    Never `mkfs -f`: an existing btrfs is adopted, anything else is refused with what
    was found. Mounted with its options and kept in fstab (image files through `loop`).
    """

    kind = "btrfs-filesystem"
    schema = dict(OWNERSHIP, path=Field("path", required=True, help="the mount point"),
                  device=Field("path", help="a block device"),
                  image=Field("path", help="or an image file, created at `size` when missing"),
                  size=Field("size"), label=Field("text", default="stackboot"),
                  options=Field("list", default=["noatime"], items="word"), fstab=Field("bool", default=True))
    rules = (exactly_one("device", "image"), required_with("image", "size", "an image needs a size"))

    def __init__(self, *args, **kwargs):
        StoreStep.__init__(self, *args, **kwargs)
        options = list(self.args.get("options") or [])
        if self.args.get("image"):   # a loop mount that waits for the file's own filesystem
            options = ["loop"] + options + ["nofail", "x-systemd.requires-mounts-for=%s" % os.path.dirname(self.args["image"])]
        self.mount = MountPoint(self.args["path"], self.target_path(), "btrfs", options or ["defaults"],
                                self.args.get("fstab", True))

    def target_path(self):
        return self.args.get("image") or self.args["device"]

    def made_details(self, actions):
        return {"image": "image" in actions}

    def exists(self, run):
        return bool(self.mount.mounted(run)) or run.host.exists(self.target_path())

    def foreign_entries(self, run):
        """What the mounted filesystem holds besides the subvolumes stackboot made in it."""
        ours = run.state.made_targets("btrfs-subvolume")
        path = self.args["path"]
        return [path + "/" + name for name in run.host.listdir(path) if path + "/" + name not in ours]

    def purge_refusal(self, run):
        if not self.mount.mounted(run):
            return "kept: not mounted, so what it holds cannot be seen; mount it to purge it"
        foreign = self.foreign_entries(run)
        if foreign:
            return "kept: it also holds %s, which stackboot did not make" % ", ".join(foreign[:5])
        return None

    def purge_changes(self, run):
        changes = self.mount.unmount_changes(run)
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
        for change in changes:
            if change.action in ("unmount", "unfstab"):
                self.mount.apply(run, change)
            elif change.action == "purge":
                run.host.remove(self.target_path())

    def present_changes(self, run):
        target = self.target_path()
        if system_directory(self.args["path"]):
            return [Change("!", "refusing to mount on %s: the system itself owns it" % self.args["path"])]
        mounted = self.mount.mounted(run)
        if mounted:
            if mounted["fstype"] != "btrfs":
                return [Change("!", "%s is mounted with %s, not btrfs" % (self.args["path"], mounted["fstype"]))]
            return self.mount.fstab_changes(run) + self.ownership_changes(run, run.host.stat(self.args["path"]))
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
        return changes + self.mount.fstab_changes(run) + [Change("+", "mount now", action="mount")]

    def make(self, run, changes):
        target = self.target_path()
        for change in changes:
            if change.action == "image":
                run.host.create_file(target, size_bytes(self.args["size"]))
            elif change.action == "mkfs":
                info, problems = probe_target(run, target)   # proven blank again, right before mkfs
                if problems or info.get("TYPE"):
                    raise StackbootError("refusing to create a filesystem on %s: %s" % (target, "; ".join(problems)))
                run.runner.run(["mkfs.btrfs", "-L", self.args.get("label") or "stackboot", target], change=True)
                # the image may be an interrupted run's: the intent holds every run's actions
                began = run.state.intent(self.id) or {"actions": [c.action for c in changes]}
                self.remember_made(run, **self.made_details(began["actions"]))
            elif change.action in ("fstab", "mount"):
                self.mount.apply(run, change)
        run.host.forget()
        if self.ownership_changes(run, run.host.stat(self.args["path"])):
            self.set_ownership(run, self.args["path"])


@step_kind
class BtrfsSubvolumeStep(StoreStep):
    """A btrfs subvolume (inode 256 on btrfs), with an optional qgroup limit, owner and mode."""

    kind = "btrfs-subvolume"
    schema = dict(OWNERSHIP, path=Field("path", required=True),
                  limit=Field("size", help="qgroup limit (referenced bytes); quotas are enabled when one is asked"))

    def exists(self, run):
        return run.host.exists(self.args["path"])

    def purge_changes(self, run):
        return [Change("-", "btrfs subvolume delete %s (with its data)" % self.args["path"], action="purge")]

    def purge(self, run, changes):
        run.runner.run(["btrfs", "subvolume", "delete", self.args["path"]], change=True)

    def current_limit(self, run):
        result = run.runner.run(["btrfs", "qgroup", "show", "-re", "--raw", "-f", self.args["path"]], check=False)
        for line in result.out.splitlines():
            fields = line.split()
            if result.rc == 0 and fields and fields[0].startswith("0/") and len(fields) >= 4:
                return None if fields[3] == "none" else int(fields[3])
        return None

    def present_changes(self, run):
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

    def make(self, run, changes):
        path = self.args["path"]
        if changes[0].action == "create":
            run.runner.run(["btrfs", "subvolume", "create", path], change=True)
            self.remember_made(run)
            run.host.forget()
        if self.args.get("limit") and (changes[0].action == "create" or any(c.action == "limit" for c in changes)):
            run.runner.run(["btrfs", "quota", "enable", path], change=True)
            run.runner.run(["btrfs", "qgroup", "limit", str(size_bytes(self.args["limit"])), path], change=True)
        self.set_ownership(run, path)
        run.host.forget()


def retry_busy(run, argv, fix):
    """A ZFS destroy: the unmount it starts may finish after it answered "busy"; try again."""
    for attempt in range(5):
        result = run.runner.run(argv, change=True, check=False)
        if result.rc == 0 or "busy" not in result.err + result.out or attempt == 4:
            break
        time.sleep(1)
    if result.rc != 0:
        raise CommandFailed(result, fix + ", then run the uninstall again")


@step_kind
class ZfsPoolStep(StoreStep):
    """A ZFS pool by name: used when it exists; created only from the vdevs the user listed,
    each proven blank. stackboot never picks "the first pool" or a disk of its own choosing."""

    kind = "zfs-pool"
    schema = {"name": Field("word", required=True), "vdevs": Field("list", default=[], items="word"),
              "vdev_size": Field("size", help="size of a file vdev created when it does not exist yet"),
              "mountpoint": Field("path", help="mount point of the pool's root dataset")}

    def exists(self, run):
        return self.args["name"] in self.pools(run)

    def pools(self, run):
        if "pools" not in run.probed:
            result = run.runner.run(["zpool", "list", "-H", "-o", "name,health"], check=False)
            run.probed["pools"] = dict(line.split("\t")[:2] for line in result.out.splitlines() if "\t" in line)
        return run.probed["pools"]

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
        retry_busy(run, ["zpool", "destroy", self.args["name"]], "end what still uses pool %s" % self.args["name"])
        for vdev in self.made(run).get("files", []):   # the file vdevs it made itself
            run.host.remove(vdev)
        run.probed.pop("pools", None)
        run.mounts.forget()

    def creatable(self, run, vdev):
        return bool(self.args.get("vdev_size")) and not vdev.startswith("/dev/") and not run.host.exists(vdev)

    def present_changes(self, run):
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

    def make(self, run, changes):
        files = [vdev for vdev in self.args["vdevs"] if self.creatable(run, vdev)]
        for vdev in files:
            run.host.create_file(vdev, size_bytes(self.args["vdev_size"]))
        for vdev in self.args["vdevs"]:   # proven blank again, right before zpool create
            info, problems = probe_target(run, vdev)
            if problems or info.get("TYPE"):
                raise StackbootError("refusing to create pool %s on %s: %s" % (
                    self.args["name"], vdev, "; ".join(problems) or "it holds " + info["TYPE"]))
        mountpoint = ["-m", self.args["mountpoint"]] if self.args.get("mountpoint") else []
        run.runner.run(["zpool", "create"] + mountpoint + [self.args["name"]] + self.args["vdevs"], change=True)
        self.remember_made(run, files=files)
        run.probed.pop("pools", None)
        run.mounts.forget()


@step_kind
class ZfsDatasetStep(StoreStep):
    """A dataset with its properties. `zfs create -p` ignores -o on an existing dataset, so
    properties are compared and set one by one; new datasets are marked stackboot:profile."""

    kind = "zfs-dataset"
    schema = {"name": Field("word", required=True), "properties": Field("object", default={}),
              "user_properties": Field("object", default={}, help="module:name properties to keep set")}
    SIZES = ("quota", "refquota", "reservation", "refreservation", "recordsize", "volsize")

    def exists(self, run):
        return self.current(run) is not None

    def purge_changes(self, run):
        return [Change("-", "zfs destroy %s (with its data)" % self.args["name"], action="purge")]

    def purge(self, run, changes):   # never -r: a child somebody else made stops it, in zfs's words
        retry_busy(run, ["zfs", "destroy", self.args["name"]], "end what still uses %s" % self.args["name"])
        run.mounts.forget()

    def wanted_properties(self):
        """Properties to enforce; a null value (an optional parameter left unset) is left alone."""
        props = dict(self.args.get("properties") or {}, **(self.args.get("user_properties") or {}))
        return dict((key, render_scalar(value)) for key, value in props.items() if value is not None)

    def comparable(self, key, value):
        """How `zfs get -p` prints a value we asked for: sizes in bytes, none as 0."""
        if key in self.SIZES:
            return "0" if value in ("none", "0") else str(size_bytes(value))
        return value

    def current(self, run):
        names = sorted(self.wanted_properties()) or ["type"]
        result = run.runner.run(["zfs", "get", "-H", "-p", "-o", "property,value", ",".join(names), self.args["name"]],
                                check=False)
        if result.rc != 0:
            return None
        return dict(line.split("\t", 1) for line in result.out.splitlines() if "\t" in line)

    def present_changes(self, run):
        current = self.current(run)
        wanted = self.wanted_properties()
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

    def make(self, run, changes):
        name = self.args["name"]
        if changes[0].action == "create":
            options = []
            for key, value in sorted(self.wanted_properties().items()):
                options += ["-o", "%s=%s" % (key, value)]
            options += ["-o", "stackboot:profile=%s" % self.profile.name]
            self.zfs(run, ["zfs", "create", "-p"] + options + [name])
            self.remember_made(run)
            run.mounts.forget()
            return
        for change in changes:   # one property at a time, only the ones that differ
            self.zfs(run, ["zfs", "set", "%s=%s" % (change.action, self.wanted_properties()[change.action]), name])



# ---------------------------------------------------------------------------
# MooseFS: its value types and the metadata guard
# ---------------------------------------------------------------------------

@value_type("labels", "single-letter labels, comma-separated")
def type_labels(value, decl):
    labels = split_list(value)
    for label in labels:
        if not isinstance(label, str) or not re.match(r"^[A-Za-z]\Z", label):
            raise ValueError("labels are single letters A-Z, got %s" % json.dumps(label))
    return [label.upper() for label in labels]


HDD_RE = re.compile(r"^([*<>~]?)(/\S*?)(?:\s+(=|=?-?[0-9]+(?:\.[0-9]+)?(?:[kMGTPE]|[KMGTPE]i)?B?%?|=-?[0-9]+%))?\Z")


EXPORT_FLAGS = {"ro", "readonly", "rw", "readwrite", "ignoregid", "alldirs", "admin", "dynamicip", "canchangequota"}
EXPORT_SETTINGS = {"disable", "maproot", "mapall", "md5pass", "minversion", "mingoal", "maxgoal", "mintrashretention",
                   "maxtrashretention", "mintrashtime", "maxtrashtime", "umask", "password", "sclassgroups"}
IPV4 = r"(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}"
EXPORT_ADDRESS_RE = re.compile(r"^(\*|%s(/([0-9]|[12][0-9]|3[0-2])|/%s|-%s)?)\Z" % (IPV4, IPV4, IPV4))


@value_type("export", "an mfsexports.cfg line: ADDRESS DIRECTORY [OPTIONS]")
def type_export(value, decl):
    """One line of mfsexports.cfg (its options as mfsmaster's exports.c reads them): ADDRESS is *,
    an address, ADDRESS/BITS, ADDRESS/MASK or FROM-TO; DIRECTORY is / or a path in MooseFS, or .
    for the meta filesystem; OPTIONS are comma-separated, with no space."""
    plain_line = isinstance(value, str) and not any(ord(ch) < 32 or ord(ch) == 127 for ch in value) and "#" not in value
    words = value.split() if plain_line else []
    if not 2 <= len(words) <= 3:
        raise ValueError("expected an mfsexports.cfg line ADDRESS DIRECTORY [OPTIONS] (options comma-separated, no spaces; "
                         "a list of them as JSON: [\"* / rw,alldirs\"]), got %s" % json.dumps(value))
    address, directory, options = words[0], words[1], words[2].split(",") if len(words) == 3 else []
    if not EXPORT_ADDRESS_RE.match(address):
        raise ValueError("%s: the address must be *, A.B.C.D, A.B.C.D/BITS, A.B.C.D/MASK or FROM-TO" % json.dumps(address))
    if directory != "." and (not directory.startswith("/") or ".." in directory.split("/")):
        raise ValueError("%s: the directory must be / or a path in MooseFS (no ..), or . (meta)" % json.dumps(directory))
    for option in options:
        name, sep, setting = option.partition("=")
        if not (name in EXPORT_FLAGS and not sep or name in EXPORT_SETTINGS and sep and setting):
            raise ValueError("%s: not an mfsexports.cfg option (known: %s, and %s with =VALUE)" % (
                json.dumps(option), ", ".join(sorted(EXPORT_FLAGS)), ", ".join(sorted(EXPORT_SETTINGS))))
    return " ".join(words)


@value_type("hdd", "an mfshdd.cfg line: [*|<|>|~]PATH [LIMIT]")
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


@step_kind
class MooseFSMetadataStep(Step):
    """Guards MooseFS metadata: a new cluster starts only in a data directory with no history.

    metadata.mfs present: never touched. Backups, changelogs or metalogger
    files without metadata.mfs: refused, because an empty metadata file there
    would orphan every chunkserver (they keep the old cluster's id).

    It records which master version made the metadata; moosefs-upgrade guards what runs on it next.
    """

    kind = "moosefs-metadata"
    keeps = "MooseFS metadata; a re-install finds it"
    schema = dict(OWNERSHIP, data_path=Field("path", required=True),
                  empty=Field("path", help="the empty-metadata template (default DATA_PATH/metadata.mfs.empty)"),
                  restore=Field("argv", help="the master's own recovery command (mfsmaster -c CFG restore)"),
                  version=Field("word", help="the master version about to run (a build's)"),
                  packages=Field("list", items="package", help="else: the packages that bring the master (their version)"),
                  release=Field("word", help="the release those packages come from (apt's target release)"),
                  packages_version=Field("word", help="the version those packages are asked for (as the packages step's)"),
                  backups=Field("path", help="where the metadata is copied before a newer master first runs on it"))
    HISTORY = re.compile(r"^(metadata\.mfs\.back.*|metadata_ml\.mfs\.back.*|changelog(_ml)?(_back)?\.[0-9]+\.mfs"
                         r"|metadata\.mfs\.emergency|metadata\.mfs\.tmp)\Z")

    def target(self):
        return self.args["data_path"] + "/metadata.mfs"

    def history(self, run):
        return [entry for entry in run.host.listdir(self.args["data_path"]) if self.HISTORY.match(entry)]

    def master_running(self, run):
        """A running master keeps its metadata as metadata.mfs.back; its lock file holds its pid."""
        text = as_text(run.host.read(self.args["data_path"] + "/.mfsmaster.lock") or b"").split()
        return bool(text) and text[0].isdigit() and pid_alive(int(text[0]))

    def version(self, run):
        """The master version about to run: the build's, or the packages' (installed, else what
        the package manager would install); None when nobody can tell."""
        if self.args.get("version"):
            return self.args["version"]
        if not self.args.get("packages"):
            return None
        return run.packages.version(self.args["packages"], self.args.get("release"), self.args.get("packages_version"))

    def recorded_version(self, run):
        """The version recorded, or the one a run that made this metadata died before recording."""
        began = (run.state.intent("%s:%s" % (MooseFSMetadataStep.kind, self.target())) or {}).get("actions", [])
        return run.state.data_version(self.target()) or (self.version(run) if set(began) & {"create", "restore"} else None)

    def finish(self, run, actions):
        if set(actions) & {"create", "restore"} and not run.state.data_version(self.target()) and self.version(run):
            run.state.record_data_version(self.target(), self.version(run))

    def check(self, run):
        if run.host.exists(self.target()) or self.master_running(run):
            return []   # (what may run on it: the moosefs-upgrade step, before the software changes)
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

    def apply(self, run, changes):
        new = self.version(run)
        if new:   # a new or recovered cluster: this master is the first to run on it
            run.state.record_data_version(self.target(), new)
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


@step_kind
class MooseFSUpgradeStep(MooseFSMetadataStep):
    """What master version may run on existing metadata: placed before the packages and the build,
    because a package upgrade restarts the master itself (dpkg's postinst, under systemd).

    The state records the version of the master that last ran on the metadata (the metadata
    itself does not say: 3.x and 4.x both write "MFSM 2.0"). A newer one (an upgrade, or the
    first run of a version stackboot did not record) gets a copy of the metadata and changelogs
    first, in a directory the plan names; an older one is refused (a master cannot read what a
    newer one wrote). New metadata is the moosefs-metadata step's, after the software is there.
    """

    kind = "moosefs-upgrade"
    keeps = None

    def check(self, run):
        if run.host.exists(self.target()) or self.master_running(run):
            return self.upgrade_changes(run)
        return []

    def backup_dir(self, run, old, new):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(run.started))
        return "%s/%s-%s-to-%s" % (self.args["backups"], stamp, old or "unrecorded", new)

    def saved(self, run):
        """What a backup copies: metadata.mfs and the history (the running master's .back, changelogs)."""
        return sorted(entry for entry in run.host.listdir(self.args["data_path"])
                      if entry == "metadata.mfs" or (self.HISTORY.match(entry) and not entry.endswith(".tmp")))

    def upgrade_changes(self, run):
        new, old = self.version(run), self.recorded_version(run)
        if new is None or new == old:
            return []
        if old and version_key(new) < version_key(old):
            return [Change("!", "refusing mfsmaster %s on metadata that mfsmaster %s wrote: MooseFS cannot go back to an "
                                "older master; keep version %s%s" % (new, old, old, ", or restore a copy from %s" % self.args[
                                    "backups"] if self.args.get("backups") else ""))]
        files = self.saved(run)
        if not self.args.get("backups") or not files:
            return [Change("~", "mfsmaster %s from now on (was %s)" % (new, old or "not recorded"), action="record")]
        where = self.backup_dir(run, old, new)
        return [Change("~", "upgrade %s -> %s: first save %s to %s" % (old or "an unrecorded version", new, ", ".join(files), where),
                       action="save")]

    def apply(self, run, changes):
        new = self.version(run)
        if changes[0].action == "save":
            self.save_copy(run, self.backup_dir(run, self.recorded_version(run), new))
        run.state.record_data_version(self.target(), new)

    def save_copy(self, run, where):
        """The metadata and changelogs copied as they are now (a running master keeps writing
        changelogs: the copy is what upstream's own backups are, metadata.mfs.back and them)."""
        run.host.make_dirs(self.args["backups"], 0o700)
        run.host.make_dirs(where, 0o700)
        for entry in self.saved(run):
            run.host.copy_in(run.host.path(self.args["data_path"] + "/" + entry), where + "/" + entry)
        run.out.info("  saved the metadata to %s" % where)


# ---------------------------------------------------------------------------
# CernVM-FS: repository names, the repository guard, one-transaction publishing
# ---------------------------------------------------------------------------

FQRN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)+\Z")


@value_type("fqrn", "a CVMFS repository name like software.example.org")
def type_fqrn(value, decl):
    """A CVMFS repository's fully qualified name: dot-separated words, as mkfs and the URLs need."""
    if not isinstance(value, str) or not FQRN_RE.match(value) or len(value) > 64:
        raise ValueError("expected a CVMFS repository name like software.example.org (letters, digits, - and _ "
                         "in dot-separated words, at most 64 characters), got %s" % json.dumps(value))
    return value


@value_type("cvmfs_repository", "a CVMFS repository and its key: FQRN SHA256 or FQRN /path/to/key.pub")
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
        if not key.endswith(".pub"):
            raise ValueError("a repository's key file is its public key, NAME.pub, got %s" % json.dumps(key))
        return {"text": text, "name": name, "key_file": type_path(key, {}), "key_sha256": None}
    return {"text": text, "name": name, "key_file": None, "key_sha256": type_sha256(key, {})}


@step_kind
class CvmfsRepositoryStep(Step):
    """Guards a CernVM-FS repository: `cvmfs_server mkfs` runs only where no trace of it exists.

    mkfs's only "exists" test is its config directory, which a failed mkfs leaves
    behind, and other leftovers (a partial key set, a stale spool, fstab lines)
    make the next mkfs fail; an S3 repository whose bucket holds no manifest is
    unusable whatever the local files say. So every trace is looked for; a
    half-made repository is listed with the commands that clear it, in an order
    that works, and refused. --repair runs those commands: it clears what never
    published, and gives a published repository that lost its config that config
    back (import). Keys are never touched (the real `rmfs -f` deletes them, so it
    is never used): a full set is reused by mkfs and needed by import.
    """

    kind = "cvmfs-repository"
    keeps = "a CVMFS repository; remove one only with cvmfs_server rmfs, which deletes its keys too (copy them first)"
    schema = {"name": Field("fqrn", required=True), "owner": Field("name", required=True),
              "stratum0": Field("url", required=True, help="the repository's URL for mkfs -w; @fqrn@ becomes its name"),
              "s3_config": Field("path", help="S3 backend: the config file (mkfs -s); local backend when absent"),
              "garbage_collection": Field("bool", default=False, help="mkfs -z"),
              "settings": Field("settings", default={}, items="text", splice=True, help="server.conf keys kept at these values"),
              "mounts": Field("list", default=[], items="path", help="paths that must be mounts (a store) before mkfs or a repair"),
              "client_url": Field("url", help="CVMFS_SERVER_URL for clients, printed at the end"),
              "key_url": Field("url", help="where clients fetch the public key, printed at the end")}
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
        mounts = sorted(point[inside:] for point in run.mounts.table()
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

    def complete(self, run, found):
        """Made and usable. An S3 bucket with no manifest (a mkfs that failed to upload) is not,
        whatever the local files say: only its 404 proves that, so an unreachable one counts as made."""
        made = (found["server_conf"] and len(found["keys"]) == len(self.KEY_SUFFIXES) and found["spool"]
                and (found["manifest"] or not self.local()))
        return made and (self.local() or self.stratum0_published(run, found) is not False)

    def stratum0_published(self, run, found):
        """published(), asked once per check."""
        if "published" not in found:
            found["published"] = self.published(run, found)
        return found["published"]

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
        items += ["mounted: %s" % point for point in found["mounts"]]
        if items and found.get("published") is False and not self.local():   # (a new one's bucket is empty too)
            items.insert(len(items) - len(found["mounts"]), "no manifest in its bucket (%s/.cvmfspublished: not found)"
                         % self.repository_url())
        return items

    def restorable(self, found):
        """A published repository whose config is gone: import brings it back from the storage and the keys."""
        return (found["manifest"] and not found["server_conf"] and len(found["keys"]) == len(self.KEY_SUFFIXES))

    def cleanup(self, found):
        """What clears the leftovers, in an order that works: (the command as printed, what stackboot
        does for it under --repair). No `rmfs -f`: it deletes the keys, and without a server.conf it
        fails (rc 2). A published repository keeps its storage; import gives it its config back, and
        only after its stale mounts, fstab lines and spool are gone (it fails on them: read-only)."""
        name, config, spool = self.args["name"], "%s/%s" % (self.CONFIG, self.args["name"]), "%s/%s" % (self.SPOOL, self.args["name"])
        # the union at /cvmfs/NAME before the read-only layer under it, each deepest first
        mounts = sorted(found["mounts"], key=lambda point: (not point.startswith("/cvmfs/"), -len(point)))
        steps = [("umount %s" % point, ("umount", point)) for point in mounts]
        if found["fstab"]:
            steps.append(("sed -i '/# added by CernVM-FS for %s$/d' /etc/fstab" % name.replace(".", "\\."), ("fstab", None)))
        for present, path in ((found["spool"], spool), (found["config"], config),
                              (found["storage"] and not found["manifest"], "%s/%s" % (self.STORAGE, name))):
            if present:
                steps.append(("rm -rf " + path, ("remove", path)))
        if self.restorable(found):
            steps.append((" ".join(self.import_argv()), ("import", None)))
        return steps

    def published(self, run, found):
        """True when clients may have seen a revision; None when that cannot be told from here
        (the bucket unreachable, or --offline: never the network)."""
        if self.local():
            return found["manifest"]
        if run.offline:
            return None
        import urllib.request
        import urllib.error
        try:
            urllib.request.urlopen(self.repository_url() + "/.cvmfspublished", timeout=10).close()
            return True
        except urllib.error.HTTPError as exc:   # only "not found" proves it: 403 may hide a manifest
            return False if exc.code == 404 else None
        except (urllib.error.URLError, OSError):
            return None

    def import_argv(self):
        """The URL too: import's default is localhost's, and the repository was made with this one."""
        return ["cvmfs_server", "import", "-o", self.args["owner"], "-w", self.url("stratum0"), self.args["name"]]

    def mkfs_argv(self):
        argv = ["cvmfs_server", "mkfs", "-o", self.args["owner"], "-w", self.url("stratum0")]
        if not self.local():
            argv += ["-s", self.args["s3_config"]]
        return argv + (["-z"] if self.args.get("garbage_collection") else []) + [self.args["name"]]

    def check(self, run):
        name = self.args["name"]
        found = self.traces(run)
        if self.complete(run, found):
            if found["transaction"]:
                return [Change("!", "%s is in an open transaction; publish it (`cvmfs_server publish %s`) or drop it "
                                    "(`cvmfs_server abort -f %s`), then run again" % (name, name, name))]
            return self.identity_changes(run) or self.settings_changes(run)
        if run.host.uid(self.args["owner"]) is None:
            return [Change("!", "the owner %s does not exist: create that user first (mkfs would stop)" % self.args["owner"])]
        create = "`%s`" % " ".join(self.mkfs_argv())
        if len(found["keys"]) == len(self.KEY_SUFFIXES):
            create += " (reusing the keys in %s)" % self.KEYS
        if not self.local() and self.stratum0_published(run, found):   # its local traces are gone, the bucket holds it
            return [Change("!", "%s is published in its bucket (%s/.cvmfspublished) but has no configuration here: "
                                "stackboot never makes a repository over a published one; bring its configuration back "
                                "(cvmfs_server import with the S3 options) or choose another name" % (name, self.repository_url()))]
        leftovers = self.leftovers(found)
        if not leftovers:
            return [Change("+", "create repository: " + create, action="create")]
        partial_keys = 0 < len(found["keys"]) < len(self.KEY_SUFFIXES)
        commands = [] if partial_keys else [text for text, _ in self.cleanup(found)]
        cleanup = "clean it up with " + "; ".join("`%s`" % command for command in commands) + "; " if commands else ""
        if partial_keys:
            why = "stackboot never touches keys: move the partial key set away (keep it if it is the only copy)"
        elif found["manifest"] and not self.restorable(found):
            cleanup = ""
            why = ("it has published (clients may hold it) and %s, so --repair leaves it alone: only you can decide"
                   % ("its keys are gone from %s (import needs all four)" % self.KEYS if not found["server_conf"]
                      else "still has its server.conf (see `cvmfs_server check %s`)" % name))
        elif found["manifest"]:
            if run.repair:
                return [Change("~", "restore published repository (%s): %s" % ("; ".join(leftovers), "; ".join(commands)),
                               action="restore")]
            why = "or run install again with --repair: it keeps what was published and brings the config back"
        elif not run.repair:
            why = "or run install again with --repair if it never published anything"
        else:
            published = self.stratum0_published(run, found)
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

    def validate(self):
        Step.validate(self)
        flat_settings(self.args.get("settings") or {})

    def wanted_settings(self):
        """The settings, with an extra-settings parameter (a dict) spliced in; unset ones left out."""
        return dict((key, value) for key, value in flat_settings(self.args.get("settings", {})) if value is not None)

    def settings_changes(self, run):
        current = self.current_settings(run)
        return [Change("~", "server.conf: %s=%s (was %s)" % (key, shell_value(value), current.get(key, "unset")), action="settings")
                for key, value in sorted(self.wanted_settings().items()) if current.get(key) != render_scalar(value)]

    def apply(self, run, changes):
        if changes[0].action in ("repair", "create", "restore"):
            missing = [path for path in self.args.get("mounts", []) if run.host.path(path) not in run.mounts.table()]
            if missing:   # else mkfs would write into the empty directory under the store
                raise StackbootError("%s is not mounted, and the repository belongs on it" % ", ".join(missing),
                                     "mount the store (see /etc/fstab), then run again")
            if changes[0].action in ("repair", "restore"):
                self.repair(run, self.traces(run))
            if changes[0].action != "restore":   # a restored repository was made long ago
                result = run.runner.run(self.mkfs_argv(), change=True, check=False, timeout=600)
                run.host.forget()
                if result.rc != 0:
                    raise CommandFailed(result, "mkfs left the repository half-made; `stackboot plan` lists what is "
                                                "there and how to clean it up")
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
        """Run the cleanup that was printed: what never published goes, a published repository's
        config comes back. Only called with no partial key set."""
        for text, (what, path) in self.cleanup(found):
            run.out.info("  " + text)
            if what == "umount":
                run.runner.run(["umount", path], change=True)
                run.mounts.forget()
            elif what == "fstab":
                current = as_text(run.host.read("/etc/fstab") or b"")
                kept = [line for line in current.splitlines() if line not in found["fstab"]]
                st = run.host.stat("/etc/fstab")
                run.host.write_file("/etc/fstab", ("\n".join(kept) + "\n").encode(), st.st_mode & 0o7777)
            elif what == "remove":
                run.host.remove_tree(path)
            else:
                result = run.runner.run(self.import_argv(), change=True, check=False, timeout=600)
                run.host.forget()
                if result.rc != 0:
                    raise CommandFailed(result, "import could not bring the configuration back; `stackboot plan` "
                                                "lists what is left")

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



@step_kind
class CvmfsPublishStep(Step):
    """One transaction that makes a repository hold exactly a directory's content: open, sync,
    publish. Whatever fails after the open (an interrupt too) aborts the transaction it opened;
    somebody else's open transaction is never touched."""

    kind = "cvmfs-publish"
    schema = {"repository": Field("fqrn", required=True),
              "source": Field("text", required=True, help="a directory of the machine stackboot runs on (not under --root)"),
              "tag": Field("text", help="tag the new revision (cvmfs_server publish -a)"),
              "message": Field("text", help="the revision's message (-m)"),
              "timeout": Field("int", default=300, help="seconds to wait for the repository lock (transaction -t)")}

    def target(self):
        return self.args["repository"]

    def busy(self, run):
        spool = "%s/%s" % (CvmfsRepositoryStep.SPOOL, self.args["repository"])
        return [spool + "/" + mark for mark in CvmfsRepositoryStep.TRANSACTION_MARKS if run.host.exists(spool + "/" + mark)]

    def busy_fix(self):
        return "wait for the other publish to finish; if it is dead, `cvmfs_server abort -f %s`" % self.args["repository"]

    def check(self, run):
        name, source, host = self.args["repository"], self.args["source"], run.host
        if not host.exists("%s/%s/server.conf" % (CvmfsRepositoryStep.CONFIG, name)):
            return [Change("!", "no CVMFS repository %s on this host: install the cvmfs-server role with it first" % name)]
        if not os.path.isabs(source) or not os.path.isdir(source):
            return [Change("!", "%s is not a directory here: give the directory whose content the repository should hold" % source)]
        busy = self.busy(run)
        if busy:
            return [Change("!", "%s already has an open transaction (%s): %s" % (name, busy[0], self.busy_fix()))]
        counts = sync_tree(host, source, "/cvmfs/" + name, dry_run=True)
        problems = counts.pop("problems")
        if problems:
            return [Change("!", "%d entr%s of %s cannot be published: %s%s; a repository holds readable files, directories "
                                "and links only: fix or remove them" % (
                                    len(problems), "y" if len(problems) == 1 else "ies", source, "; ".join(problems[:3]),
                                    "; ..." if len(problems) > 3 else ""))]
        if not any(counts.values()) and not self.args.get("tag"):
            return []
        return [Change("~", "publish %s: %d new, %d changed, %d removed%s" % (
            name, counts["new"], counts["changed"], counts["removed"],
            " as tag " + self.args["tag"] if self.args.get("tag") else ""))]

    def apply(self, run, changes):
        name, source, out, runner = self.args["repository"], self.args["source"], run.out, run.runner
        # ours: the transaction is open and ours. maybe: an interrupt hit while it was being opened.
        ours = maybe = False
        try:
            maybe = True
            result = runner.run(["cvmfs_server", "transaction", "-t", str(self.args["timeout"]), name], change=True, check=False)
            maybe = False
            if result.rc != 0:   # 17 is somebody else's transaction (after -t seconds of retrying): never abort that
                if result.rc == 17:
                    raise StackbootError("%s already has an open transaction (waited %d s for it); nothing was changed"
                                         % (name, self.args["timeout"]), self.busy_fix())
                raise CommandFailed(result, "see cvmfs_server's message")
            ours = True
            out.say("+ transaction opened on %s" % name)
            try:
                counts = sync_tree(run.host, source, "/cvmfs/" + name)
            except OSError as exc:   # a source file that became unreadable, a full spool: the transaction is aborted below
                reading = (exc.filename or "").startswith(source.rstrip("/") + "/")
                raise StackbootError("cannot %s %s: %s; the transaction is aborted, nothing was published" % (
                    "read" if reading else "write", exc.filename, exc.strerror or exc),
                    "make it readable to the user stackboot runs as" if reading else
                    "check the free space of the spool (/var/spool/cvmfs/%s) and the store" % name)
            out.say("~ synced %s into /cvmfs/%s: %d new, %d changed, %d removed" % (
                source, name, counts["new"], counts["changed"], counts["removed"]))
            argv = ["cvmfs_server", "publish"] + (["-a", self.args["tag"]] if self.args.get("tag") else []) + \
                   (["-m", self.args["message"]] if self.args.get("message") else []) + [name]
            runner.run(argv, change=True)
            ours = False
            out.say("+ published %s%s" % (name, " as tag " + self.args["tag"] if self.args.get("tag") else ""))
        finally:
            if ours or maybe and self.busy(run):
                # anything went wrong, even an interrupt: drop the transaction, never leave it open
                aborted = runner.run(["cvmfs_server", "abort", "-f", name], change=True, check=False)
                out.say("- transaction on %s aborted%s" % (name, "" if aborted.rc == 0 else
                                                             " FAILED (exit %d): run `cvmfs_server abort -f %s`" % (aborted.rc, name)))

    def verify(self, run):
        """A publish is done when cvmfs_server said so; its tag would make check want another."""


def unpublishable(path, st):
    """Why a source entry cannot go into a repository, or None: a copy would fail half-way."""
    import stat as stat_module
    if stat_module.S_ISDIR(st.st_mode) or stat_module.S_ISLNK(st.st_mode):
        return None if stat_module.S_ISLNK(st.st_mode) or os.access(path, os.R_OK | os.X_OK) else "%s: not readable" % path
    if not stat_module.S_ISREG(st.st_mode):
        return "%s: a socket, pipe or device" % path
    try:   # root reads anything on a local disk, but not on root-squashed NFS or another user's FUSE mount
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as exc:
        return "%s: %s" % (path, exc.strerror or "not readable")
    return None


def sync_tree(host, source, dest, dry_run=False):
    """Make the host's `dest` hold exactly what `source` (a directory here) holds, deletions
    included; counts of new, changed and removed entries. Files count as the same when size
    and mtime match, as rsync's quick check does. With dry_run, only count, and list in
    "problems" the source entries a copy would fail on."""
    import stat as stat_module
    counts = {"new": 0, "changed": 0, "removed": 0}
    if dry_run:
        counts["problems"] = []
        problem = unpublishable(source, os.lstat(source))
        if problem:
            counts["problems"].append(problem)
            return counts
    wanted = set(os.listdir(source))
    for name in sorted(set(host.listdir(dest)) - wanted):
        target = dest + "/" + name
        if not dry_run:
            host.remove_tree(target) if stat_module.S_ISDIR(host.stat(target).st_mode) else host.remove(target)
        counts["removed"] += 1
    for name in sorted(wanted):
        src, target = os.path.join(source, name), dest + "/" + name
        st, have = os.lstat(src), host.stat(target)
        same_kind = have is not None and stat_module.S_IFMT(have.st_mode) == stat_module.S_IFMT(st.st_mode)
        if stat_module.S_ISDIR(st.st_mode):
            if not same_kind:
                counts["new" if have is None else "changed"] += 1
            elif (have.st_mode & 0o7777) != (st.st_mode & 0o7777):
                counts["changed"] += 1
            if dry_run:
                if same_kind:
                    for key, value in sync_tree(host, src, target, dry_run).items():
                        counts[key] += value
                    continue
                for top, dirs, files in os.walk(src, onerror=lambda exc: counts["problems"].append(
                        "%s: %s" % (exc.filename, exc.strerror or "not readable"))):
                    counts["new"] += len(dirs) + len(files)
                    for entry in dirs + files:
                        problem = unpublishable(os.path.join(top, entry), os.lstat(os.path.join(top, entry)))
                        if problem and entry in files:   # a directory's own problem is the walk's
                            counts["problems"].append(problem)
                continue
            if have is not None and not same_kind:
                host.remove(target)
            host.make_dirs(target)
            if (host.stat(target).st_mode & 0o7777) != (st.st_mode & 0o7777):
                host.set_mode(target, st.st_mode & 0o7777)
            for key, value in sync_tree(host, src, target).items():
                counts[key] += value
            continue
        if stat_module.S_ISLNK(st.st_mode):
            differs = not same_kind or host.readlink(target) != os.readlink(src)
        else:
            differs = not same_kind or (have.st_size, int(have.st_mtime)) != (st.st_size, int(st.st_mtime))
        if differs:
            counts["new" if have is None else "changed"] += 1
            problem = dry_run and unpublishable(src, st)
            if problem:
                counts["problems"].append(problem)
        elif (have.st_mode & 0o7777) != (st.st_mode & 0o7777) and not stat_module.S_ISLNK(st.st_mode):
            counts["changed"] += 1
            if not dry_run:
                host.set_mode(target, st.st_mode & 0o7777)
        if dry_run or not differs:
            continue
        if have is not None and not same_kind:
            host.remove_tree(target) if stat_module.S_ISDIR(have.st_mode) else host.remove(target)
        if stat_module.S_ISLNK(st.st_mode):
            host.symlink(os.readlink(src), target)
        else:
            host.copy_in(src, target)
    return counts


# ---------------------------------------------------------------------------
# Plan: roles + inputs + facts -> resolved values and ordered steps, for one goal
# ---------------------------------------------------------------------------

class Plan:
    """What a command will do for some roles on one host: their profiles (requirements
    first), the resolved values (with where each came from), and the ordered steps, each
    aimed at the plan's goal. Every command gets its steps from `make_plan`."""

    def __init__(self, roles, profiles, values, steps, facts, goal="present", reason=None, role_parameters=None):
        self.roles, self.profiles, self.values, self.steps = list(roles), profiles, values, steps
        self.facts, self.goal, self.reason = facts, goal, reason
        self.role_parameters = role_parameters or {}   # role -> the parameters its profiles declare
        self.notes = []   # said once after a removal (what it leaves for other roles)

    def context(self):
        return dict(self.values.values, **facts_context(self.facts))

    def render(self, value):
        """A profile's text ({{parameters}}, {{facts.NAME}}) as this plan fills it in."""
        return render_scalar(substitute(value, self.context()))

    def inputs_to_remember(self, role):
        """What the user chose for the role (not defaults), so a repair run needs no flags."""
        return dict((name, self.values.values[name]) for name in sorted(self.role_parameters.get(role, ()))
                    if self.values.sources.get(name, "").startswith(USER_SOURCES))

    def report(self, run):
        """What a user needs after an install: each step's report, then each role's summary lines."""
        lines = [line for step in self.steps for line in step.report(run)]
        return lines + [self.render(line) for profile in self.profiles for line in profile.summary]

    def part(self, steps):
        """The same plan with only `steps` (a lab's machine-wide ones, say)."""
        part = Plan(self.roles, self.profiles, self.values, steps, self.facts, self.goal, self.reason, self.role_parameters)
        part.notes = list(self.notes)
        return part

    def without(self, other):
        """This plan without the steps `other` also has (what other installed roles still use)."""
        ids = set(step.id for step in other.steps)
        part = self.part([step for step in self.steps if step.id not in ids])
        if ids & set(step.id for step in self.steps):
            part.notes.append("what %s still use" % ", ".join(other.roles))
        return part


USER_SOURCES = ("--set", "environment", "site file", "remembered", "bundle", "cluster")


def check_platforms(profiles, facts):
    for profile in reversed(profiles):   # name the role asked for before what it requires
        if profile.platforms and not any(os_matches(facts, name) for name in profile.platforms):
            raise BadInput("role %s supports only %s%s; this host is %s" % (
                profile.name, ", ".join(profile.platforms), " (%s)" % profile.platforms_why if profile.platforms_why else "",
                facts["pretty_name"]), "run it on a %s host" % " or ".join(profile.platforms))
        for selector, why in sorted(profile.refused_on.items()):
            if os_matches(facts, selector):
                raise BadInput("role %s cannot run on %s (%s): %s" % (profile.name, facts["pretty_name"], selector, why),
                               "run it on another host, or leave this role out")


def make_plan(library, roles, facts, inputs=None, goal="present", secrets=None, reason=None, recovering=False, steps=True,
              complete=True, packages=None):
    """The one way to a Plan: the roles' profiles (requirements first, each once), the platform
    check, the parameters resolved from the profiles and `inputs`, and the rendered steps.
    Secret values join `secrets` (the session's set that every output is redacted with)
    before anything else can print them. Removal goals take the steps in reverse order.
    steps=False: the values alone, for a command that acts on no host (show, cloud-init for
    a host yet to be made): no platform check, no steps. complete=False (show): a required
    parameter may stay without a value. `packages`: the host's package manager, for parameters
    declared `from_packages` (without it they keep the profiles' values)."""
    if goal not in GOALS:
        raise StackbootError("internal: unknown goal %s" % goal)
    for role in roles:
        library.get(role)
    profiles = library.closure(roles)
    if steps:
        check_platforms(profiles, facts)   # before any parameter: a Linux-only role fails at once
    values = resolve_parameters(library, profiles, facts, inputs or Inputs(), secrets, complete, packages)
    if secrets is not None:
        secrets.update(values.secret_texts())
    steps = render_steps(profiles, values, facts, goal, recovering) if steps else []
    if goal != "present":
        steps.reverse()
    role_parameters = dict((role, set(name for profile in library.closure([role]) for name in profile.parameters))
                           for role in roles)
    return Plan(roles, profiles, values, steps, facts, goal, reason, role_parameters)


def built_in_library(**profiles):
    """Profiles stackboot writes itself (its own installed copy, a lab's parts), checked as any
    profile is, so that their plans come from make_plan like every other."""
    library = Library()
    for name, data in profiles.items():
        origin = "built-in %s" % name
        validate_profile(origin, data)
        library.add(Profile(name, origin, data))
    library.validate()
    return library


def render_steps(profiles, values, facts, goal, recovering=False):
    """The ordered steps of the profiles, rendered with the values; the same step from two
    roles runs once, merged where its kind allows. Recovering, a profile's recover steps
    come right before its own (after the steps of what it requires)."""
    context = dict(values.values, **facts_context(facts))
    steps, by_id, explicit_ids = [], {}, set()
    for profile in profiles:
        specs = [(where, spec) for where, spec in profile.all_steps() if recovering or where.startswith("$.steps")]
        specs.sort(key=lambda item: not item[0].startswith("$.recover"))
        explicit_ids |= set(spec["id"] for _, spec in specs if "id" in spec)
        for where, spec in specs:
            if "when" in spec and "for_each" not in spec and not condition_holds(spec["when"], values, facts):
                continue
            for step in render_step(profile, where, spec, context, values, facts, goal):
                if step.id in by_id:
                    merged = merged_args(by_id[step.id], step)
                    if merged is None:
                        raise same_step_error(by_id[step.id], step, spec, values)
                    by_id[step.id].args = merged
                    by_id[step.id].shared_by.append(profile.name)
                    continue
                by_id[step.id] = step
                steps.append(step)
    for step in steps:
        for key in [trigger + "_on" for trigger in TRIGGERS]:
            for ref in step.args.get(key) or []:
                if ref not in by_id and ref not in explicit_ids:
                    raise ProfileError(step.profile.origin, "%s.%s" % (step.where, key), "no step has the id %s" % json.dumps(ref))
    return steps


def same_step_error(first, second, spec, values):
    """Two different steps became one (the same path or name): the user's values did it when they
    gave both the same value, else two profiles disagree."""
    given = sorted(set(ref.split(".")[0] for key in ("path", "name", "id") for ref in template_refs(spec.get(key))
                       if ref.split(".")[0] in values.decls and values.sources.get(ref.split(".")[0]) not in ("default", None)))
    if given:
        return BadInput("parameter %s (from %s) makes a %s step the same as another one (%s): they would fight over it"
                        % (given[0], values.sources[given[0]], second.kind, second.id), "give %s a value of its own" % given[0])
    return ProfileError(second.profile.origin, second.where, "step %s is also defined differently by %s" % (second.id, first.profile.name))


def merged_args(mine, theirs):
    """Arguments of one step that does what both copies ask; None when they conflict."""
    merged = dict(mine.args)
    for key in set(mine.args) | set(theirs.args):
        one, other = mine.args.get(key), theirs.args.get(key)
        if key in mine.merge_lists:
            merged[key] = list(one or []) + [item for item in other or [] if item not in (one or [])]
        elif one != other:
            return None
    return merged


def render_step(profile, where, spec, context, values, facts, goal="present"):
    """The step with {{values}} filled in; a `for_each` step once per item of its list
    whose `when` holds (it may test the item's fields, like "repo.key_file")."""
    cls = STEP_KINDS[spec["kind"]]
    try:
        return render_items(cls, profile, where, spec, context, values, facts, goal)
    except BadReference as exc:   # the profile's own doing: name its file
        raise ProfileError(profile.origin, where, exc.message)


def render_items(cls, profile, where, spec, context, values, facts, goal):
    items = [None]
    if "for_each" in spec:
        items = substitute(spec["for_each"], context)
        if not isinstance(items, list):
            raise ProfileError(profile.origin, where + ".for_each", "expected a list parameter, got %s" % json.dumps(items))
    steps = []
    for number, item in enumerate(items):
        scope = context
        if "for_each" in spec:
            name = spec.get("as", "item")
            scope = dict(context, **{name: item})
            scope.update((name + "." + key, value) for key, value in (item.items() if isinstance(item, dict) else []))
            if "when" in spec and not condition_holds(spec["when"], values, facts, scope):
                continue
        for name in spec.get("needs", []):   # wherever the step is used at all
            if context.get(name) in (None, "", []):
                raise BadInput("parameter %s has no value, and the %s step of %s needs one" % (name, cls.kind, profile.name),
                               "pass --set %s=VALUE" % name)
        args = {}
        for key, field in cls.schema.items():
            if key in spec:
                args[key] = spec[key] if field.literal else substitute(spec[key], scope)
                if args[key] is None and field.required:
                    name = TEMPLATE_REF.fullmatch(spec[key]).group(1)
                    raise BadInput("parameter %s has no value, and the %s step of %s needs one" % (name, cls.kind, profile.name),
                                   "pass --set %s=VALUE" % name)
            elif field.default is not None:
                args[key] = json.loads(json.dumps(field.default))
        given = dict((key, value) for key, value in args.items() if value is not None)
        for rule in cls.rules:   # a rule a profile keeps may still fail on values: a companion parameter left unset
            problem = rule.problem(cls.kind, given)
            if problem:
                unset = sorted(TEMPLATE_REF.fullmatch(spec[key]).group(1) for key in spec
                               if key in cls.schema and args.get(key) is None and is_whole_ref(spec[key]))
                if unset:
                    raise BadInput("parameter %s has no value, and the %s step of %s needs it (%s)" % (
                        unset[0], cls.kind, profile.name, problem), "pass --set %s=VALUE" % unset[0])
                raise ProfileError(profile.origin, where, problem)
        spec_for_item = dict(spec, id=spec["id"] + "#%d" % number) if "for_each" in spec and "id" in spec else spec
        try:
            steps.append(cls(profile, where if item is None else "%s(%s)" % (where, render_scalar(item)), spec_for_item, args, goal))
        except FieldError as exc:
            raise field_error(profile, where, cls.kind, spec, exc, values)
    return steps


def field_error(profile, where, kind, spec, exc, values):
    """A rendered value that a step cannot take: the user's parameter when one made it (with
    where its value came from), else the profile."""
    blamed = spec.get(exc.key)
    if exc.part is not None and isinstance(blamed, dict):
        blamed = blamed.get(exc.part)
    names = sorted(ref.split(".")[0] for ref in template_refs(blamed) if ref.split(".")[0] in values.decls)
    if names:
        name = names[0]
        message = "not a fitting value (it is secret: not shown)" if name in values.secrets else exc.message
        return BadInput("parameter %s (from %s): %s (it is the %s of a %s step of %s)" % (
            name, values.sources.get(name, "default"), message, exc.key, kind, profile.name),
            "give %s a value that fits" % name)
    return ProfileError(profile.origin, "%s.%s" % (where, exc.key), exc.message)


# ---------------------------------------------------------------------------
# Converge: the one loop that changes a host
# ---------------------------------------------------------------------------

class Outcome:
    """What a converge did: steps changed, steps already right, notes, and the changed ids."""

    def __init__(self):
        self.changed, self.right, self.notes, self.ids = 0, 0, [], set()


def assess(run, plans):
    """[(plan, step, changes)] for every step of the plans, in order; reads only."""
    run.roles = set(role for plan in plans for role in plan.roles)
    for plan in plans:
        for step in plan.steps:
            step.wants(run)
    assessed = []
    for plan in plans:
        for step in plan.steps:
            changes = with_intent(run, step, step.check(run) if step.wanted else step.kept(run))
            if real_changes(changes):
                run.changed.add(step.id)
            assessed.append((plan, step, changes))
    return assessed


def with_intent(run, step, changes):
    """A step's changes, and when a run was killed while changing it and nothing is left to
    change, finishing that run's work (record what it made, restart what watches it)."""
    intent = run.state.intent(step.id)
    if intent is None or real_changes(changes):
        return changes
    return changes + [Change("~", "finish what an interrupted run began (%s)" % ", ".join(
        str(action) for action in intent["actions"]), action="finish")]


def watchers(plans):
    """step id -> [(id of a step that watches it, one of TRIGGERS)]."""
    found = {}
    for plan in plans:
        for step in plan.steps:
            for key in TRIGGERS:
                for ref in step.args.get(key + "_on") or []:
                    found.setdefault(ref, []).append((step.id, key))
    return found


def converge(run, plans, verb=None, event=None, details=None, confirm=None, changed_before=(), record_roles=True):
    """Bring the host to what the plans' steps want, for every goal (install, uninstall,
    recover, lab up and down, publish). Under the host's lock: assess every step (reads
    only); refuse conflicts and, --offline, anything that needs the network, before any
    change; ask `confirm` if given; then act step by step, each re-checked if anything
    changed since, verified after, and saved to the state with the restarts it triggers.
    The roles are remembered as installed (present) or forgotten (other goals). With a
    verb, the report: what removals keep, the roles' summaries, `VERB: N changed...`."""
    out, host = run.out, run.host
    details = dict(details or {}, roles=[role for plan in plans for role in plan.roles])
    with host.holding_lock(event or (verb or "converge").lower(), **details):
        run.state.reload()   # read before the lock: another run may have saved since
        run.changed |= set(changed_before)   # an earlier converge's changes (a lab's shared build) trigger here too
        assessed = assess(run, plans)
        conflicts = [(plan, step, change) for plan, step, changes in assessed for change in changes if change.symbol == "!"]
        if conflicts:
            for plan, step, change in conflicts:
                report_change(out, step, change)
            out.add("steps", [step_json(step, [change], run.node) for _, step, change in conflicts])
            raise StackbootError("%d step(s) refused, nothing was changed: %s" % (len(conflicts), conflicts[0][2].summary),
                                 "resolve what it says, then run again (--force only replaces files edited by hand)")
        if run.offline:
            missing = [need for _, _, changes in assessed for change in changes for need in change.fetches]
            if missing:
                raise StackbootError("--offline, and %d thing(s) are missing: %s" % (len(missing), "; ".join(missing)),
                                     "bring them with a bundle (or install them), then run again")
        if confirm is not None:
            confirm([(step, real_changes(changes)) for _, step, changes in assessed if real_changes(changes)])
        watching = watchers(plans)
        outcome, reached = Outcome(), []
        run.changed.clear()   # from here on: what changed, not what would
        with host.changes_allowed():
            try:
                for done in changed_before:
                    mark_triggered(run, watching, done)
                for plan in plans:
                    reached.append(plan)
                    for step, changes in [(step, changes) for owner, step, changes in assessed if owner is plan]:
                        act(run, plan, step, changes, watching, outcome)
                    if record_roles and plan.goal != "present":   # all its steps done: not installed any more
                        for role in plan.roles:
                            run.state.forget_role(role)
                        run.state.save()
            finally:
                for plan in reached if record_roles else []:
                    if plan.goal == "present":   # even after a failure: the next run repairs with the same inputs
                        for role in plan.roles:
                            run.state.remember_role(role, plan.inputs_to_remember(role))
                run.state.save()
    out.tally(changed=outcome.changed, already_right=outcome.right)
    if verb:
        report_outcome(run, plans, verb, outcome)
    return outcome


def act(run, plan, step, changes, watching, outcome):
    """One step of the converge loop: look again if anything changed since assessing, then
    apply and verify it, write-ahead: before it changes anything the state says what it is
    about to do and owes the steps watching it (a restart), and the intent is closed only once
    it is done and recorded. A run killed anywhere in between leaves the intent, and the next
    run finishes it (step.finish: record a file that is right but not recorded, a store it made)."""
    if run.changed:   # something changed since assessing: look again just before acting
        changes = with_intent(run, step, step.check(run) if step.wanted else step.kept(run))
    outcome.notes += [change.summary for change in changes if change.symbol == "=" and plan.goal in ("absent", "purged")]
    changes = real_changes(changes)
    if not changes:
        outcome.right += 1
        return
    report_step(run.out, step, changes, plan.reason)
    to_apply = [change for change in changes if change.action != "finish"]
    # what an interrupted run began stays part of the intent: it made the image, this run makes
    # the filesystem, and the record must say that stackboot made both
    actions = (run.state.intent(step.id) or {}).get("actions", [])
    actions += [change.action for change in to_apply if change.action not in actions]
    with SIGNALS.step(step.describe()):
        run.state.begin(step.id, actions)
        if step.goal == "present":   # owed before the change: a kill right after it still restarts them
            mark_triggered(run, watching, step.id)
        run.state.save()
        try:
            if to_apply:
                step.apply(run, to_apply)
            run.state.clear_pending(step.id)   # what it waited for (a restart) just happened
            run.host.forget()   # commands change files behind the cache's back
            step.finish(run, run.state.intent(step.id)["actions"])
            step.verify(run)
        except StackbootError as exc:
            exc.message = "%s: %s" % (step.describe(), exc.message)
            raise
        run.state.end(step.id)
        run.changed.add(step.id)
        outcome.ids.add(step.id)
        run.state.save()
        outcome.changed += 1
        run.out.add("steps", [step_json(step, changes, run.node)])


def mark_triggered(run, watching, step_id):
    """The steps watching `step_id` (restart_on...) owe a restart, kept in the state until done."""
    for watcher, key in watching.get(step_id, []) + watching.get(step_id.split("#")[0], []) * ("#" in step_id):
        run.state.add_pending(watcher, key, step_id)


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def report_change(out, step, change, reason=None):
    out.say("%s %s: %s%s" % (out.paint(change.symbol, change.symbol), step.describe(), change.summary,
                             " (%s)" % reason if reason else ""))
    if change.diff and not out.quiet:
        for line in change.diff.rstrip("\n").splitlines():
            key = line[:1] if line[:1] in "+-" and not line.startswith(("+++", "---")) else None
            out.say("    " + (out.paint(line, key) if key else line))


def report_step(out, step, changes, reason=None):
    for change in changes:
        report_change(out, step, change, reason)


def report_outcome(run, plans, verb, outcome):
    """After a converge: what removals kept and why, the roles' summaries, then the last line."""
    out = run.out
    removing = all(plan.goal in ("absent", "purged") for plan in plans)
    kept = outcome.notes + [note for plan in plans for note in plan.notes]
    for note in kept:
        out.say("  kept %s" % note)
    out.add("kept", kept)
    for plan in plans:
        if plan.goal == "present":
            lines = plan.report(run)
            out.add("report", lines)
            for line in lines:
                out.say(line)
    if removing:
        out.say("%s: %d removed, %d kept." % (verb, outcome.changed, len(outcome.notes)))
    else:
        out.say("%s: %d changed, %d already right." % (verb, outcome.changed, outcome.right))


def step_json(step, changes, node=None):
    found = {"id": step.id, "kind": step.kind, "target": step.target(), "profile": step.profile.name,
             "changes": [change.as_json() for change in changes]}
    if node:
        found["node"] = node
    return found


def planned_json(assessed, node=None):
    return [step_json(step, changes, node) for _, step, changes in assessed]


def summary_counts(assessed):
    pending = sum(1 for _, _, changes in assessed if real_changes(changes))
    return pending, len(assessed) - pending


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
NODE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}\Z")   # short: it names network namespaces and veths
IPV4_RE = re.compile(r"^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}\Z")


class Cluster:
    """Nodes with addresses, roles and parameters; `parameters` at the top apply to every node
    whose roles know them, a node's own override them. Checked against the profiles."""

    def __init__(self, origin, data):
        self.origin, self.data = origin, data
        self.description = data.get("description", "")
        self.subnet = data.get("subnet")
        self.nodes = data["nodes"]

    def node_inputs(self, name, sets=None):
        """Where a node's values come from: the cluster's parameters (shared: each node takes the
        ones its roles know), the node's own (strict, like --set), then `sets`."""
        inputs = Inputs().add("cluster file %s" % self.origin, self.data.get("parameters", {}), "shared")
        inputs.add("cluster node %s" % name, self.nodes[name].get("parameters", {}), "strict")
        return inputs.add("--set", sets or {}, "strict")

    def node_plan(self, library, name, facts, sets=None, secrets=None, steps=True):
        return make_plan(library, self.nodes[name]["roles"], facts, self.node_inputs(name, sets), secrets=secrets, steps=steps)


def load_cluster(library, facts, where):
    """A cluster file, or the name of a built-in one (`seed`); every node's plan is made once to
    check its values with the roles that will use them, as --set would be."""
    if where in EMBEDDED_CLUSTERS and not os.path.exists(where):
        origin, text = "built-in cluster %s" % where, EMBEDDED_CLUSTERS[where]
    elif not os.path.lexists(where):
        raise BadInput("cluster %s: no such file or built-in cluster" % where,
                       "give a cluster JSON file (built in: %s)" % ", ".join(sorted(EMBEDDED_CLUSTERS)))
    else:
        origin, text = where, read_input(where, "cluster", "give a cluster JSON file")
    return parse_cluster(library, facts, origin, load_json(text, origin, "fix the cluster file"))


def parse_cluster(library, facts, origin, data):
    """A cluster's data checked: its keys, node names, addresses and roles, and every node's
    values by the roles that will use them."""
    def bad(path, message):
        return BadInput("%s: %s: %s" % (origin, path, message), "fix the cluster file")
    if not isinstance(data, dict) or set(data) - CLUSTER_KEYS:
        raise bad("$", "expected an object with %s" % ", ".join(sorted(CLUSTER_KEYS)))
    nodes = data.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise bad("$.nodes", "expected an object of node name -> {address, roles, parameters}")
    if not isinstance(data.get("parameters", {}), dict):
        raise bad("$.parameters", "expected an object of parameter -> value")
    for key in ("description", "subnet"):
        if not isinstance(data.get(key, ""), str) or "\n" in data.get(key, ""):
            raise bad("$." + key, "expected one line of text, got %s" % json.dumps(data[key]))
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
    for name in nodes:
        try:
            cluster.node_plan(library, name, facts, steps=False)
        except BadInput as exc:
            raise bad("$.nodes." + name, exc.message)
    return cluster


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

class Session:
    """What every command needs: output, the host under --root, its facts, the profiles, and
    the one set of secret values every output is redacted with."""

    def __init__(self, args, runner=None, uname=None, document=None):
        self.args = args
        self.secrets = set()
        self.out = Output(quiet=args.quiet, verbose=args.verbose, secrets=self.secrets, document=document)
        if args.root == "":
            raise BadInput("--root is empty", "give the directory of the system to act on, or leave --root out for this one")
        root = os.path.abspath(args.root or "/")
        if not os.path.isdir(root):
            raise BadInput("--root %s: no such directory" % root)
        runner = runner or Runner(root)
        runner.secrets = self.secrets
        self.host = Host(root, runner)
        self.host.facts = self.facts = detect_facts(self.host, uname)
        self.packages = PACKAGE_MANAGERS[self.facts["package_manager"]](self.host)
        self.library = load_library(args.profiles or [], self.host)
        self.bundle = Bundle.here()
        if self.bundle:   # a bundle is for hosts without network: it never reaches for one
            args.offline = True

    def site(self):
        """(path, parameters) of the site file: --site (a file here) or the host's own."""
        fix = "fix the site file"
        if self.args.site:
            path, data = self.args.site, read_input(self.args.site, "--site", fix)
        else:
            path = SITE_FILE
            try:
                data = self.host.read(path)
            except (IOError, OSError) as exc:
                raise BadInput("%s: cannot read it (%s)" % (self.host.path(path), exc.strerror or exc), fix)
            if data is None:
                return None
        parsed = load_json(data, path, fix)
        if not isinstance(parsed, dict) or set(parsed) - {"parameters"} or not isinstance(parsed.get("parameters", {}), dict):
            raise BadInput("%s: expected {\"parameters\": {NAME: VALUE, ...}}" % path, fix)
        return path, parsed.get("parameters", {})

    def inputs(self, remembered=None):
        """The layers of a command's inputs: a bundle's values, what an earlier install remembered,
        the site file, the environment, --set."""
        inputs = Inputs().add("bundle", self.bundle.manifest["parameters"] if self.bundle else {}, "quiet")
        inputs.add("remembered", remembered or {}, "quiet")
        site = self.site()
        if site:
            inputs.add("site file " + site[0], site[1], "shared")
        inputs.add("environment", dict(os.environ), "env")
        return inputs.add("--set", parse_sets(self.args.set), "strict")

    def plan(self, roles, goal="present", remembered_from=(), state=None, reason=None, recovering=False, steps=True,
             complete=True):
        """The plan for `roles` with the inputs an earlier install of them (or of the roles in
        remembered_from, first) remembered."""
        state = state or State(self.host)
        remembered = state.inputs(list(remembered_from) + list(roles))
        return make_plan(self.library, roles, self.facts, self.inputs(remembered), goal, self.secrets, reason, recovering,
                         steps, complete, self.packages)

    def run(self, state=None):
        return Run(self.host, self.facts, self.out, state, force=getattr(self.args, "force", False),
                   offline=self.args.offline, repair=getattr(self.args, "repair", False), bundle=self.bundle,
                   packages=self.packages)


def cmd_facts(session):
    session.out.put("facts", session.facts)
    for key in ("platform", "distro", "id_like", "version", "codename", "pretty_name", "init", "package_manager",
                "arch", "cores", "python"):
        value = session.facts[key]
        session.out.say("%-16s %s" % (key, " ".join(value) if isinstance(value, list) else value))
    return EXIT_OK


def cmd_list(session):
    profiles = sorted(session.library.profiles.values(), key=lambda profile: profile.name)
    session.out.put("roles", [{"name": p.name, "description": p.description, "origin": p.origin} for p in profiles])
    width = max([len(p.name) for p in profiles] + [4])
    for profile in profiles:
        session.out.say("%-*s  %s" % (width, profile.name, profile.description))
    return EXIT_OK


def cmd_show(session):
    plan = session.plan([session.args.role], steps=False, complete=False)   # every parameter, even before all are given
    values = plan.values
    session.out.put("role", session.args.role)
    session.out.put("requires", [p.name for p in plan.profiles[:-1]])
    session.out.put("parameters", dict((name, {
        "value": "***" if name in values.secrets and values.values[name] else values.values[name],
        "source": values.sources[name], "type": values.decls[name].get("type", "string"),
        "help": values.decls[name].get("help", "")}) for name in sorted(values.values)))
    role = plan.profiles[-1]
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


def print_plan(session, assessed, verb):
    pending, right = summary_counts(assessed)
    session.out.put("steps", planned_json(assessed))
    session.out.put("summary", {"to_change": pending, "already_right": right})
    for plan, step, changes in assessed:
        if real_changes(changes):
            report_step(session.out, step, real_changes(changes), plan.reason)
        elif session.out.verbose:
            session.out.say("  %s: already right" % step.describe())
    session.out.say("%s: %d to change, %d already right." % (verb, pending, right))
    return pending


def cmd_plan(session):
    if session.args.uninstall:   # what `uninstall ROLE...` would do
        state = State(session.host)
        plan = uninstall_plan(session, state, session.args.roles, session.args.purge_data)
        pending = print_plan(session, assess(session.run(state), [plan]), "Plan")
        return EXIT_PENDING if pending and session.args.detailed_exitcode else EXIT_OK
    plan = session.plan(session.args.roles)
    pending = print_plan(session, assess(session.run(), [plan]), "Plan")
    return EXIT_PENDING if pending and session.args.detailed_exitcode else EXIT_OK


def cmd_check(session):
    state = State(session.host)
    roles = session.args.roles or state.roles()
    if not roles:
        raise BadInput("nothing has been installed on this host yet", "run `stackboot install ROLE` first")
    unknown = [role for role in roles if role not in session.library.profiles and not session.args.roles]
    if unknown:
        raise StackbootError("%s says %s is installed, and no profile of that name is here" % (
            session.host.path(state.path), json.dumps(unknown[0])), "give the profiles it was installed with (--profiles DIR)")
    plan = session.plan(roles, state=state)
    pending = print_plan(session, assess(session.run(state), [plan]), "Check")
    return EXIT_PENDING if pending else EXIT_OK


def cmd_install(session):
    plan = session.plan(session.args.roles)
    converge(session.run(), [plan], verb="Install", event="install")
    return EXIT_OK


def cmd_uninstall(session):
    """Undo what stackboot did for these roles, and only that: services stopped and disabled,
    files it wrote that nobody edited since, the files a build installed, client mounts.
    Packages, users, stores and data stay (--purge-data, after a yes, deletes the data and the
    stores stackboot made, where they hold nothing else)."""
    out = session.out
    state = State(session.host)
    purge = session.args.purge_data
    plan = uninstall_plan(session, state, session.args.roles, purge)

    def confirm(planned):
        purging = [(step, changes) for step, changes in planned if step.goal == "purged" and
                   any(change.action == "purge" for change in changes)]
        if not purging or session.args.yes:
            return
        if not sys.stdin.isatty():
            raise BadInput("--purge-data deletes data and nobody is here to confirm it", "add --yes")
        for step, changes in planned:
            report_step(out, step, changes)
        if input("Delete this data for good? [y/N] ").strip().lower() not in ("y", "yes"):
            raise StackbootError("not confirmed; nothing was changed")

    converge(session.run(state), [plan], verb="Uninstall", event="uninstall", details={"purge": purge}, confirm=confirm)
    return EXIT_OK


def uninstall_plan(session, state, roles, purge):
    missing = [role for role in roles if role not in state.roles()]
    if missing:
        raise BadInput("%s not installed here (installed: %s)" % (", ".join(missing), ", ".join(state.roles()) or "none"),
                       "uninstall only what `stackboot install` put here")
    plan = session.plan(roles, goal="purged" if purge else "absent", state=state)
    remaining = [role for role in state.roles() if role not in roles]
    if remaining:   # what the other installed roles still use stays (the shared build, the user...)
        plan = plan.without(session.plan(remaining, state=state))
    return plan


def cmd_recover(session):
    """Rescue a role on this host (or under --root), the way its profile's `recover` says: stop
    what it replaces (a metalogger being promoted), then install it with the remembered inputs,
    its recover steps first (its data's ownership); the role's own steps do the rest (MooseFS
    metadata restored by mfsmaster's own restore, never replaced). Nothing is removed."""
    role = session.args.role
    profile = session.library.get(role)
    if not profile.recover:
        raise BadInput("role %s has no recovery" % role, "roles that have one: %s" % ", ".join(
            sorted(name for name, p in session.library.profiles.items() if p.recover)))
    out, host = session.out, session.host
    state = State(host)
    replaced = [name for name in profile.recover.get("replaces", []) if name in state.roles()]
    plan = session.plan([role], remembered_from=replaced, state=state, recovering=True)
    retired = [session.plan([name], goal="stopped", state=state, reason="%s becomes %s" % (name, role)) for name in replaced]
    import glob
    patterns = [plan.render(pattern) for pattern in profile.recover.get("evidence", [])]
    evidence = [found for pattern in patterns for found in glob.glob(host.path(pattern))]
    if patterns and not evidence:
        raise StackbootError("nothing to recover %s from: no %s" % (role, ", ".join(patterns)),
                             "look for backups elsewhere (another metalogger?) and copy them here; never start empty over a lost cluster")
    inside = len(host.root.rstrip("/"))
    for path in sorted(evidence, key=lambda p: os.stat(p).st_mtime, reverse=True):
        st = os.stat(path)
        out.say("  found %s (%d bytes, %s)" % (path[inside:], st.st_size, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))))
    converge(session.run(state), retired + [plan], verb="Recover", event="recover", details={"replaces": replaced})
    return EXIT_OK


def with_sets(library, items):
    """--with NAME=VERSION: the parameter that the version of the build named NAME comes from."""
    sets = {}
    for item in items or []:
        name, sep, version = item.partition("=")
        params = set()
        for profile in library.profiles.values():
            for spec in profile.steps:
                if spec.get("kind") == "build" and spec.get("name") == name and is_whole_ref(spec.get("version", "")):
                    params.add(TEMPLATE_REF.fullmatch(spec["version"]).group(1))
        if not sep or len(params) != 1:
            raise BadInput("--with %s: expected NAME=VERSION for a build the roles know" % item,
                           "known builds: %s" % ", ".join(sorted(set(spec.get("name") for p in library.profiles.values()
                                                                     for spec in p.steps if spec.get("kind") == "build"))))
        sets[params.pop()] = version
    return sets


def cmd_bundle(session):
    """A zipapp of this stackboot plus every file the roles download, each verified by its sha256,
    and the values it was made with; inside it, stackboot runs offline."""
    args, out, library, host = session.args, session.out, session.library, session.host
    sets, versions = parse_sets(args.set), with_sets(library, args.with_)
    given = dict(sets, **versions)
    output = os.path.abspath(args.output or "")
    if not args.output or os.path.isdir(output) or not os.path.isdir(os.path.dirname(output)):
        raise BadInput("-o %s: expected a new file's path in an existing directory" % json.dumps(args.output or ""),
                       "give -o DIR/NAME.pyz")
    roles = args.roles or sorted(name for name, profile in library.profiles.items()
                                 if any(spec.get("kind") in ("download", "build") for spec in profile.steps))
    artifacts = {}   # sha256 -> (url, where this host caches it, roles)
    secret = set()   # the given parameters some role keeps secret: the bundle carries them, so only its owner may read it
    for role in roles:
        try:   # the bundle's values are shared: each role takes the ones it knows
            plan = make_plan(library, [role], session.facts, Inputs().add("--set", sets, "shared").add("--with", versions, "shared"),
                             secrets=session.secrets)
        except BadInput as exc:
            if args.roles:
                raise
            out.info("  skipped %s: %s" % (role, exc.message))
            continue
        secret |= plan.values.secrets & set(given)
        for step in plan.steps:
            if isinstance(step, DownloadStep):
                artifacts.setdefault(step.args["sha256"], (step.args["url"], step.dest(), []))[2].append(role)
    if not artifacts:
        raise BadInput("the roles %s download nothing: there is nothing to bundle" % ", ".join(roles),
                       "name roles that build from source or fetch files")
    import tempfile
    with tempfile.TemporaryDirectory(prefix="stackboot-bundle-") as work:
        members = []
        for sha, (url, dest, users) in sorted(artifacts.items()):
            cached = host.path(dest)
            if os.path.isfile(cached) and sha256_file(cached) == sha:
                part = cached
            else:
                part = os.path.join(work, sha)
                fetch(url, part, out, args.offline)
            digest = sha256_file(part)
            if digest != sha:
                raise StackbootError("%s: sha256 is %s, expected %s; no bundle was written" % (url, digest, sha),
                                     "check the URL and the sha256 you gave")
            out.say("+ %s (sha256 %s…, %d KiB) for %s" % (url, sha[:12], os.path.getsize(part) // 1024, ", ".join(users)))
            out.add("artifacts", [{"url": url, "sha256": sha, "bytes": os.path.getsize(part), "roles": users}])
            members.append(("artifacts/" + sha, part))
        manifest = {"stackboot": __version__, "parameters": given,
                    "artifacts": dict((sha, url) for sha, (url, _, _) in artifacts.items())}
        members.append(("bundle.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()))
        write_zipapp(output, own_source(), members, 0o600 if secret else 0o755)
    if secret:
        out.say("  it carries the secret values of %s: the bundle is mode 0600, keep it that way" % ", ".join(sorted(secret)))
    out.put("bundle", {"path": output, "bytes": os.path.getsize(output), "secret": sorted(secret)})
    out.say("Bundle: %s, %d file(s), %d KiB; it runs offline: python3 %s install ROLE" % (
        args.output, len(artifacts), os.path.getsize(args.output) // 1024, os.path.basename(args.output)))
    return EXIT_OK


def cmd_cvmfs(session):
    """cvmfs publish REPO DIR: the cvmfs-publish role's one step, converged once (not remembered
    as installed): open, sync, publish, or abort."""
    args = session.args
    source = os.path.abspath(args.directory)
    if not os.path.isdir(source):
        raise BadInput("%s: no such directory" % args.directory, "give the directory whose content the repository should hold")
    if not session.host.exists("%s/%s/server.conf" % (CvmfsRepositoryStep.CONFIG, args.repository)):
        raise BadInput("no CVMFS repository %s on this host" % args.repository, "install the cvmfs-server role with it first")
    given = {"repository": args.repository, "source": source, "timeout": str(args.timeout)}
    given.update((key, value) for key, value in (("tag", args.tag), ("message", args.message)) if value is not None)
    plan = make_plan(session.library, ["cvmfs-publish"], session.facts, Inputs().add("cvmfs publish", given, "strict"),
                     secrets=session.secrets)
    outcome = converge(session.run(), [plan], event="cvmfs publish", details={"repository": args.repository, "source": source},
                       record_roles=False)
    if not outcome.changed:
        session.out.say("%s already holds what %s holds: nothing to publish" % (args.repository, source))
    return EXIT_OK


def own_source():
    """stackboot's own text, to carry it to another host: from its file, or from inside its zipapp."""
    path = globals().get("__file__") or ""
    if os.path.isfile(path) and path.endswith(".py"):
        return read_bytes(path)
    archive = running_zipapp()
    if archive:
        import zipfile
        with zipfile.ZipFile(archive) as zipped:
            return zipped.read("stackboot.py")
    raise BadInput("stackboot's own file is not at hand here (it was piped in)",
                   "run this from stackboot.py, the pyz or an installed copy")


# What runs stackboot as a module (an installed copy, a zipapp): Ctrl-C while it loads is one
# line too (the module's own handler is only set when it runs as a script).
MODULE_MAIN = ("import sys\n"
               "def interrupted_while_starting(signum, frame):\n"
               "    sys.stderr.write('error: interrupted while starting; nothing was changed\\nstackboot: failed (exit 130)\\n')\n"
               "    raise SystemExit(130)\n"
               "try:\n"
               "    import _signal\n"
               "except ImportError:\n"
               "    import signal as _signal\n"
               "_signal.signal(_signal.SIGINT, interrupted_while_starting)\n"
               "%s"
               "import stackboot\n"
               "sys.exit(stackboot.main())\n")
LAUNCHER_TEXT = ("#!/usr/bin/env python3\n"
                 "# stackboot, installed: the program is a module, so Python keeps its bytecode\n"
                 + MODULE_MAIN % ("sys.path.insert(0, %r)\n" % INSTALL_DIR))


def installed_copy(source):
    """The profile of stackboot's own installed copy: the module, its bytecode, the launcher."""
    module = INSTALL_DIR + "/stackboot.py"
    return {"description": "stackboot itself, installed: a module whose bytecode Python keeps, and a launcher",
            "steps": [{"kind": "directory", "path": INSTALL_DIR, "mode": "0755"},
                      {"kind": "file", "id": "stackboot-module", "path": module, "content": as_text(source), "mode": "0644",
                       "diff": False},
                      {"kind": "command", "id": "stackboot-bytecode", "argv": ["python3", "-m", "py_compile", module],
                       "run_on": ["stackboot-module"], "fails": "the module does not compile with this host's Python"},
                      {"kind": "file", "id": "stackboot-launcher", "path": LAUNCHER, "content": LAUNCHER_TEXT, "mode": "0755"}]}


def cmd_self_install(session):
    """stackboot as an installed program: a module Python caches the bytecode of, and a launcher."""
    plan = make_plan(built_in_library(stackboot=installed_copy(own_source())), ["stackboot"], session.facts)
    converge(session.run(), [plan], verb="Self-install", event="self-install", record_roles=False)
    session.out.say("Run it as: %s COMMAND (python3 %s COMMAND)" % (LAUNCHER, LAUNCHER))
    return EXIT_OK


# How much user-data each cloud takes, as it counts it: the raw bytes, or their base64 form.
CLOUD_TARGETS = {"ec2": ("raw", 16384, "EC2 user data: 16 KB before base64"),
                 "azure": ("raw", 65536, "Azure custom data: 64 KB"),
                 "openstack": ("base64", 65535, "OpenStack Nova user_data: 65,535 bytes of base64"),
                 "gce": ("raw", 262144, "a GCE metadata value: 256 KB"),
                 "nocloud": ("raw", None, "a NoCloud seed: no limit")}


def cloud_size(text, target):
    import base64
    how = CLOUD_TARGETS[target][0]
    data = text.encode()
    return len(data) if how == "raw" else len(base64.b64encode(data))


def clouds_fitting(text):
    return [target for target, (_, limit, _) in sorted(CLOUD_TARGETS.items()) if limit is None or cloud_size(text, target) <= limit]


def carried_source(source):
    """stackboot as user-data carries it: without its comments and docstrings (the code, its
    strings and line order untouched), so that more clouds take it; the whole source where that
    would not compile (it always should)."""
    import ast
    import io
    import tokenize
    text = source.decode("utf-8")
    inside, comments, strings = set(), {}, {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.STRING:
            strings[token.start] = token.end[0]
            inside.update(range(token.start[0] + 1, token.end[0] + 1))   # a string's own lines stay as they are
        elif token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.start[1]
    docstrings = {}   # first line -> (last line, whether it is the body's only statement)
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if type(value).__name__ in ("Str", "Constant") and isinstance(getattr(value, "s", getattr(value, "value", None)), str):
                start = (body[0].lineno, body[0].col_offset)
                docstrings[start[0]] = (strings.get(start, start[0]), len(body) == 1)
    lines, skip = [], 0
    for number, line in enumerate(text.splitlines(True), 1):
        if number <= skip:
            continue
        if number in docstrings:
            skip, alone = docstrings[number]
            if alone:
                lines.append(line[:len(line) - len(line.lstrip())] + "pass\n")
            continue
        if number in inside:
            lines.append(line)
            continue
        line = line[:comments[number]] if number in comments else line
        if line.strip():
            lines.append(line.rstrip() + "\n")
    result = "".join(lines)
    try:
        compile(result, "stackboot.py", "exec")
    except SyntaxError:
        return source
    return result.encode("utf-8")
# Runs on the new host when the user-data fetches stackboot instead of carrying it: nothing is
# installed unless the sha256 matches, and the file appears whole (rename) or not at all.
FETCH_PROGRAM = (
    "import hashlib,os,sys,urllib.request\n"
    "url,digest,dest=sys.argv[1:4]\n"
    "data=urllib.request.urlopen(url,timeout=60).read()\n"
    "if hashlib.sha256(data).hexdigest()!=digest: sys.exit('stackboot from %s: sha256 mismatch, nothing installed' % url)\n"
    "os.makedirs(os.path.dirname(dest),exist_ok=True); tmp=dest+'.part'\n"
    "with open(tmp,'wb') as f: f.write(data)\n"
    "os.chmod(tmp,0o644); os.rename(tmp,dest)\n")


def gzip_bytes(data):
    """gzip with a zero timestamp, so the same input gives the same user-data."""
    import zlib
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def cloud_config(roles, parameters, source=None, url=None, digest=None, hostname=None, hosts=()):
    """#cloud-config user-data (JSON is YAML) that installs stackboot as the host keeps it (a
    module and its launcher) and installs the roles.

    Parameters go into the site file (0600: they may hold secrets), not into a command line that
    `ps` shows; a later `stackboot install ROLE` by hand sees the same values. runcmd runs once
    per instance, and running it again is a converged install that changes nothing."""
    import base64
    module = INSTALL_DIR + "/stackboot.py"
    files = [{"path": SITE_FILE, "owner": "root:root", "permissions": "0600",
              "content": json.dumps({"parameters": parameters}, indent=2, sort_keys=True) + "\n"},
             {"path": LAUNCHER, "owner": "root:root", "permissions": "0755", "content": LAUNCHER_TEXT}]
    commands = []
    if url:
        commands.append(["python3", "-c", FETCH_PROGRAM, url, digest, module])
    else:
        files.append({"path": module, "owner": "root:root", "permissions": "0644", "encoding": "gz+b64",
                      "content": base64.b64encode(gzip_bytes(carried_source(source))).decode("ascii")})
    commands.append(["python3", LAUNCHER, "install"] + list(roles))
    body = {"write_files": files, "runcmd": commands}
    if hostname:   # a cluster's node: its name, and every node's, without DNS (kept: cloud-init leaves /etc/hosts alone)
        body.update(hostname=hostname, manage_etc_hosts=False)
        files.insert(0, {"path": "/etc/hosts", "append": True, "content": "".join(line + "\n" for line in hosts)})
    return "#cloud-config\n# stackboot %s: install %s\n%s\n" % (__version__, " ".join(roles), json.dumps(body, indent=2))


def cmd_cloud_init(session):
    args, out = session.args, session.out
    if bool(args.cluster) != bool(args.out):
        raise BadInput("--cluster and --out go together", "give both (one user-data file per node), or neither and roles")
    if bool(args.roles) == bool(args.cluster):
        raise BadInput("give roles, or --cluster FILE --out DIR", "see `stackboot cloud-init --help`")
    if bool(args.from_url) != bool(args.sha256):
        raise BadInput("--from-url needs --sha256 (and the other way round)", "give the URL and the sha256 of stackboot.py there")
    try:
        digest = type_sha256(args.sha256, {}) if args.sha256 else None
        if args.from_url:
            type_url(args.from_url, {})
    except ValueError as exc:
        raise BadInput("cloud-init: %s" % exc, "give the URL and the sha256 of stackboot.py there")
    if args.out:
        args.out = os.path.abspath(args.out)
        if os.path.exists(args.out) and not os.path.isdir(args.out) or not os.path.isdir(os.path.dirname(args.out)):
            raise BadInput("--out %s: expected a directory, or a new one in an existing directory" % args.out,
                           "give --out a directory for the nodes' files")
    source = None if args.from_url else own_source()
    sets = parse_sets(args.set)
    targets = []   # (node name, roles, the site file's parameters), each checked by the node's plan now
    hosts = []     # every node's address and names: its own, and its roles' aliases (mfsmaster for the master)
    if args.cluster:
        cluster = load_cluster(session.library, session.facts, args.cluster)
        for name, node in sorted(cluster.nodes.items()):
            plan = cluster.node_plan(session.library, name, session.facts, sets, session.secrets, steps=False)
            given = dict(cluster.data.get("parameters", {}), **node.get("parameters", {}))
            given.update(sets)
            targets.append((name, node["roles"], dict((key, value) for key, value in given.items() if key in plan.values.decls)))
            names = [name]
            for alias in [plan.render(alias) for profile in plan.profiles for alias in profile.aliases]:
                if alias and alias not in names and not IPV4_RE.match(alias) and HOST_RE.match(alias):
                    names.append(alias)
            hosts.append("%s %s" % (node["address"], " ".join(names)))
    else:
        make_plan(session.library, args.roles, session.facts, Inputs().add("--set", sets, "strict"), secrets=session.secrets,
                  steps=False)   # the values, checked here; the new host plans its own steps
        targets = [(None, args.roles, sets)]
    for name, roles, parameters in targets:
        text = cloud_config(roles, parameters, source, args.from_url, digest, name, hosts)
        size = len(text.encode())
        fits = clouds_fitting(text)
        if args.target and args.target not in fits:
            how, limit, what = CLOUD_TARGETS[args.target]
            raise BadInput("the user-data%s is %d bytes%s, and %s takes at most %d (%s)" % (
                " for " + name if name else "", cloud_size(text, args.target), " as base64" if how == "base64" else "",
                args.target, limit, what), "give --from-url URL --sha256 HEX: the host fetches stackboot, the user-data is "
                                           "about 1 KB" if source else "give fewer parameters")
        over = "; fits %s; too big for %s: use --from-url there" % (", ".join(fits), ", ".join(
            sorted(set(CLOUD_TARGETS) - set(fits)))) if len(fits) < len(CLOUD_TARGETS) else "; fits every cloud"
        if name is None:
            if out.document is not None:
                out.put("user_data", text)
            else:
                sys.stdout.write(text)   # the user-data itself, secrets included: that is where they go
                sys.stdout.flush()
            out.put("bytes", size)
            out.put("fits", fits)
            sys.stderr.write("user-data: %d bytes%s\n" % (size, over))
            continue
        path = os.path.join(args.out, name + ".yaml")
        write_output(path, text.encode())
        out.add("files", [{"node": name, "path": path, "roles": roles, "address": cluster.nodes[name]["address"], "bytes": size,
                           "fits": fits}])
        out.say("%s: %s (%s), %d bytes%s" % (path, " ".join(roles), cluster.nodes[name]["address"], size, over))
    return EXIT_OK



# ---------------------------------------------------------------------------
# Lab: a cluster on this one Linux host, each node in its own network namespace
# ---------------------------------------------------------------------------

LAB_BASE = "/var/lib/stackboot-lab"   # not under STATE_DIR (0700): the daemons' users must reach their dirs


def network_namespaces(run):
    """The network namespaces `ip netns` knows, asked once per look."""
    if "netns" not in run.probed:
        listed = run.runner.run(["ip", "netns", "list"], check=False).out.splitlines()
        run.probed["netns"] = set(line.split()[0] for line in listed if line.strip())
    return run.probed["netns"]


@step_kind
class NetnsStep(Step):
    """A network namespace (with a bridge br0 for a lab's switch). Deleting one first ends
    what still runs in it: a lab's own processes, such as a FUSE client's helper."""

    kind = "netns"
    schema = {"name": Field("name", required=True), "bridge": Field("bool", default=False)}
    goals = {"present": "present", "stopped": "absent", "absent": "absent", "purged": "absent"}

    def __init__(self, *args, **kwargs):
        Step.__init__(self, *args, **kwargs)
        self.ended = 0   # leftover processes this step ended

    def check(self, run):
        exists = self.args["name"] in network_namespaces(run)
        if self.wanted == "present":
            return [] if exists else [Change("+", "create" + (" with a bridge" if self.args.get("bridge") else ""), action="create")]
        return [Change("-", "end what still runs in it, then delete it", action="delete")] if exists else []

    def apply(self, run, changes):
        name, ip = self.args["name"], lambda *argv: run.runner.run(["ip"] + list(argv), change=True)
        if changes[0].action == "create":
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
            if self.args.get("bridge"):
                ip("-n", name, "link", "add", "br0", "type", "bridge")
                ip("-n", name, "link", "set", "br0", "up")
        else:
            self.ended += self.end_leftovers(run)
            ip("netns", "del", name)
        run.probed.pop("netns", None)

    def end_leftovers(self, run):
        """What still runs in the namespace once its services stopped is the lab's own: a FUSE
        client exits by itself soon after its unmount; what is left gets TERM, then KILL."""
        left, ended = [], 0
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                run.out.say("  end leftover process %d (%s)" % (pid, process_name(pid)))
                ended += run.host.kill(pid, sig) and sig == signal.SIGTERM
            deadline = time.time() + 10
            while True:
                left = [int(pid) for pid in run.runner.run(["ip", "netns", "pids", self.args["name"]], check=False).out.split()]
                if not left or time.time() > deadline:
                    break
                time.sleep(0.2)
            if not left:
                return ended
        raise StackbootError("processes %s in %s do not end" % (" ".join(map(str, left)), self.args["name"]),
                             "end them by hand, then run the same command again")


@step_kind
class VethStep(Step):
    """A veth pair from a namespace (or this host) to a lab's switch: `name` with `address`
    on this side, `peer` on the switch's bridge. Inside a namespace it goes with it."""

    kind = "veth"
    schema = {"name": Field("word", required=True), "netns": Field("name"), "address": Field("word", required=True),
              "peer": Field("word", required=True), "switch": Field("name", required=True)}
    goals = {"present": "present", "stopped": "absent", "absent": "absent", "purged": "absent"}

    def wanted_for(self, goal):
        return "present" if goal == "present" else (None if self.args.get("netns") else Step.wanted_for(self, goal))

    def exists(self, run):
        netns = self.args.get("netns")
        if netns and netns not in network_namespaces(run):
            return False
        return run.runner.run(["ip"] + (["-n", netns] if netns else []) + ["link", "show", self.args["name"]], check=False).rc == 0

    def check(self, run):
        exists = self.exists(run)
        if self.wanted == "present":
            return [] if exists else [Change("+", "create, %s on the switch, address %s" % (self.args["peer"], self.args["address"]),
                                             action="create")]
        return [Change("-", "delete", action="delete")] if exists else []

    def apply(self, run, changes):
        name, netns, switch, peer = self.args["name"], self.args.get("netns"), self.args["switch"], self.args["peer"]
        ip = lambda *argv: run.runner.run(["ip"] + list(argv), change=True)
        inside = ["-n", netns] if netns else []
        if changes[0].action == "delete":
            ip("link", "del", name)
            return
        ip("link", "add", name, *(["netns", netns] if netns else []) + ["type", "veth", "peer", "name", peer, "netns", switch])
        ip("-n", switch, "link", "set", peer, "master", "br0", "up")
        ip(*inside + ["addr", "add", self.args["address"], "dev", name])
        ip(*inside + ["link", "set", name, "up"])



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
        session = lab.session
        self.host = self.node_host(session.host.runner.with_prefix(["nsenter", "--net=/run/netns/" + self.netns]))
        # No init system of its own: services run in direct mode, as in a container.
        self.host.facts = self.facts = dict(session.facts, init="none", lab=self.dir, address=self.address)

    def node_host(self, runner):
        return Host("/", runner, state_dir=os.path.join(self.dir, "state"), log_file=os.path.join(self.dir, "stackboot.log"))

    def plan(self, goal="present"):
        """The node's roles; the cluster file is their only input."""
        session = self.lab.session
        return make_plan(session.library, self.roles, self.facts, self.lab.cluster.node_inputs(self.name), goal, session.secrets)

    def run(self):
        run = Run(self.host, self.facts, self.lab.session.out)
        run.node = self.name
        return run

    def outside_run(self):
        """The node's state and files, read from the host's own network: what a node would refuse
        can be known before its namespace exists (a lab that was down)."""
        host = self.node_host(self.lab.session.host.runner)
        host.facts = self.facts
        return Run(host, self.facts, self.lab.session.out)


class Lab:
    """A cluster file brought up on this host: `up`, `status`, `down` (data stays), `destroy`.

    The nodes hang off a bridge in a namespace of the lab's own, so the host's network is
    untouched but for one veth (`sb-NAME`) that gives the host an address in the lab's
    subnet: the GUI and every daemon are reachable from here. Software (packages, builds)
    is installed once on the host, since the namespaces have no route out; each node is
    then installed by the same steps as a real host, in file order, and stopped in reverse.
    The lab's own parts (its directory, lab.json, the namespaces and veths) are a plan too.
    """

    def __init__(self, session, name, directory, cluster):
        self.session, self.name, self.dir, self.cluster = session, name, os.path.abspath(directory), cluster
        self.prefix = "sb-" + self.name
        self.interface = self.prefix[:15]
        self.switch = self.prefix + "-switch"
        self.nodes = [LabNode(self, name, spec, number + 1) for number, (name, spec) in enumerate(cluster.nodes.items())]
        self.network, self.host_address = lab_network(cluster)
        self.recorded_status = None

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
        record = lab_record(where)
        if record is None:
            raise BadInput("%s: no lab there (no lab.json)" % where, "start one with `stackboot lab up`")
        try:
            cluster = parse_cluster(session.library, session.facts, record["origin"], record["cluster"])
        except BadInput as exc:   # lab.json is stackboot's own: damage, not the user's typing
            raise StackbootError("a lab's record is damaged: %s/lab.json: %s" % (where, exc.message),
                                 "repair it by hand, or end the lab yourself (`ip netns list`, `ip netns del`) and remove %s" % where)
        lab = Lab(session, record["name"], where, cluster)
        lab.recorded_status = record["status"]
        return lab

    def record(self, status):
        return json.dumps({"name": self.name, "origin": self.cluster.origin, "cluster": self.cluster.data, "status": status,
                           "network": str(self.network), "host_address": self.host_address}, indent=1) + "\n"

    def parts(self, action):
        """The plans of the lab's own parts for `action` (up, down, destroy): its home (the
        directory and lab.json) and its network (the switch's namespace and bridge, the host's
        veth, each node's namespace and veth)."""
        plen = self.network.prefixlen
        network = [{"kind": "netns", "name": self.switch, "bridge": True},
                   {"kind": "veth", "name": self.interface, "peer": "uplink", "switch": self.switch,
                    "address": "%s/%d" % (self.host_address, plen)}]
        for node in self.nodes:
            network += [{"kind": "netns", "name": node.netns},
                        {"kind": "veth", "id": "veth:%s/eth0" % node.netns, "name": "eth0", "netns": node.netns,
                         "peer": node.port, "switch": self.switch,
                         "address": "%s/%d" % (node.address, plen)}]
        home = [{"kind": "directory", "path": LAB_BASE, "mode": "0755", "prune": True}] if os.path.dirname(self.dir) == LAB_BASE else []
        home += [{"kind": "directory", "path": self.dir, "mode": "0755", "data": True},
                 {"kind": "file", "path": self.dir + "/lab.json", "content": self.record("up" if action == "up" else "down"),
                  "mode": "0600", "diff": False}]   # the cluster file's values, secrets too
        library = built_in_library(**{"lab-home": {"description": "lab %s: its directory" % self.name, "steps": home},
                                      "lab-network": {"description": "lab %s: its network" % self.name, "steps": network}})
        facts = self.session.facts
        if action == "up":
            return [make_plan(library, ["lab-home"], facts), make_plan(library, ["lab-network"], facts)]
        return [make_plan(library, ["lab-network"], facts, goal="stopped" if action == "down" else "purged"),
                make_plan(library, ["lab-home"], facts, goal="present" if action == "down" else "purged")]

    def up(self):
        out, session = self.session.out, self.session
        check_lab_dir(self.dir)
        clash = routes_overlapping(self.network, self.interface)
        if clash:
            raise BadInput("this host already has a route into the lab's subnet %s: %s" % (self.network, ", ".join(clash)),
                           "give the cluster file another subnet and node addresses")
        record = lab_record(self.dir)
        if record and record["status"] == "up" and topology(record["cluster"]) != topology(self.cluster.data):
            raise BadInput("lab %s is up with other nodes (names, addresses or roles)" % self.name,
                           "`stackboot lab down %s` first, then up with the new ones" % self.name)
        plans = [(node, node.plan()) for node in self.nodes]   # every node's values checked before anything changes
        software = self.software(plans)
        self.refuse_conflicts(plans)
        total = converge(session.run(), self.parts("up"), event="lab up", details={"lab": self.name}, record_roles=False).changed
        out.say("this host, for every node: %s" % " ".join(software.roles))
        shared = converge(Run(session.host, self.nodes[0].facts, out, offline=session.args.offline, bundle=session.bundle),
                          [software], event="lab up", details={"lab": self.name}, record_roles=False)
        total += shared.changed
        for node, plan in plans:
            out.say("%s (%s): %s" % (node.name, node.address, " ".join(node.roles)))
            run = node.run()
            own = converge(run, [self.own_part(plan)], event="install", details={"lab": self.name},
                           changed_before=shared.ids)   # new software restarts each node's daemons, in the cluster's order
            for line in plan.report(run):
                out.say("  " + line)
            out.add("report", plan.report(run))
            total += own.changed
        out.say("Lab %s is up: %d nodes on %s, this host is %s (%s); %d changed."
                % (self.name, len(self.nodes), self.network, self.host_address, self.interface, total))
        return EXIT_OK

    @staticmethod
    def own_part(plan):
        return plan.part([step for step in plan.steps if not step.machine_wide])

    def software(self, plans):
        """One plan of every node's machine-wide steps (packages, a build with every node's
        modules...), merged as one host's roles are: the host has one copy of the software."""
        steps, by_id = [], {}
        for node, plan in plans:
            for step in plan.steps:
                if not step.machine_wide:
                    continue
                if step.id not in by_id:
                    by_id[step.id] = step
                    steps.append(step)
                    continue
                merged = merged_args(by_id[step.id], step)
                if merged is None:
                    raise BadInput("node %s needs %s otherwise than an earlier node: the nodes share this host's software"
                                   % (node.name, step.describe()), "give the nodes the same values for it (the cluster's parameters)")
                by_id[step.id].args = merged
                by_id[step.id].shared_by += [name for name in step.shared_by if name not in by_id[step.id].shared_by]
        first = plans[0][1]
        roles = []
        for node, plan in plans:
            roles += [role for role in plan.roles if role not in roles]
        return Plan(roles, first.profiles, first.values, steps, first.facts, first.goal)

    def refuse_conflicts(self, plans):
        """What a node would refuse (a master on metadata a newer master wrote) stops the lab
        before the shared software changes under every node."""
        for node, plan in plans:
            for _, step, changes in assess(node.outside_run(), [self.own_part(plan)]):
                for change in changes:
                    if change.symbol == "!":
                        report_change(self.session.out, step, change)
                        raise StackbootError("node %s refused, nothing was changed: %s" % (node.name, change.summary),
                                             "resolve what it says, then run again")

    def down(self, destroy=False):
        out, session = self.session.out, self.session
        present = network_namespaces(session.run())
        stopped = 0
        for node in reversed(self.nodes):
            if node.netns in present:
                out.say("%s (%s): %s" % (node.name, node.address, " ".join(node.roles)))
                plan = node.plan("stopped")
                stopped += converge(node.run(), [self.own_part(plan)],
                                    event="lab down", details={"lab": self.name}).changed
        parts = self.parts("destroy" if destroy else "down")
        converge(session.run(), parts, event="lab destroy" if destroy else "lab down", details={"lab": self.name}, record_roles=False)
        ended = sum(step.ended for plan in parts for step in plan.steps if isinstance(step, NetnsStep))
        if destroy:
            out.say("Lab %s destroyed: %d stopped, %d leftover process(es) ended; %s removed." % (
                self.name, stopped, ended, self.dir))
            out.say("  kept on this host: the software its nodes used (packages, builds), as `stackboot install` keeps it")
        else:
            out.say("Lab %s is down: %d stopped, %d leftover process(es) ended; data kept in %s."
                    % (self.name, stopped, ended, self.dir))
        return EXIT_OK

    def status(self):
        """Every node, what runs on it, and what the cluster itself says about the node's address."""
        out = self.session.out
        out.say("Lab %s: %s, %d nodes on %s, this host is %s (%s)" % (
            self.name, self.recorded_status, len(self.nodes), self.network, self.host_address, self.interface))
        present = network_namespaces(self.session.run())
        views, rows = [], []
        for node in self.nodes:
            plan = node.plan("stopped")   # what stopping would do is what runs
            if node.netns not in present:
                rows.append((node, ["no namespace (lab down)"]))
                continue
            run = node.run()
            things = []
            for step in reversed(plan.steps):
                if step.liveness and step.wanted and not step.machine_wide and getattr(step, "meant_to_run", True):
                    action, running, idle = step.liveness
                    actions = [change.action for change in step.check(run)]
                    things.append("%s %s" % (step.target(), running if action in actions else idle))
            rows.append((node, things))
            views += [(node, substitute(profile.status, plan.context())) for profile in plan.profiles if profile.status]
        width = max(len(node.name) for node in self.nodes)
        reported = {}
        for node, argv in views:   # a role's own account of the cluster (MooseFS: mfscli)
            result = node.host.runner.run(argv, check=False)
            for line in result.out.splitlines():
                for other in self.nodes:
                    if re.search(r"(^|[^0-9.])%s([^0-9.]|$)" % re.escape(other.address), line):
                        reported.setdefault(other.name, []).append("%s says: %s" % (node.name, " ".join(line.split())))
        out.put("lab", {"name": self.name, "status": self.recorded_status, "network": str(self.network),
                        "host_address": self.host_address, "interface": self.interface})
        for node, things in rows:
            out.say("  %-*s  %-15s %-22s %s" % (width, node.name, node.address, " ".join(node.roles), "; ".join(things)))
            for line in reported.get(node.name, []):
                out.say("  %-*s    %s" % (width, "", line))
            out.add("nodes", [{"name": node.name, "address": node.address, "roles": node.roles, "running": things,
                               "reported": reported.get(node.name, [])}])
        return EXIT_OK


def topology(cluster):
    """What a running lab's namespaces and veths are made from (its parameters may change: an upgrade)."""
    return cluster.get("subnet"), sorted((name, node["address"], node["roles"]) for name, node in cluster["nodes"].items())


LAB_RECORD = {"name": "name", "origin": "text", "cluster": {"*": None}, "status": "word", "network": "text",
              "host_address": "text"}


def lab_record(directory):
    """What lab.json in `directory` says (name, the cluster, up or down), or None without one."""
    path = os.path.join(directory, "lab.json")
    fix = "repair %s by hand, or end the lab yourself (`ip netns list`, `ip netns del`) and remove %s" % (path, directory)
    try:
        data = read_bytes(path, INPUT_LIMIT)
    except (IOError, OSError) as exc:
        raise StackbootError("%s: cannot read it (%s)" % (path, exc.strerror or exc), fix)
    if data is None:
        return None
    record = load_json(data, path, fix, StackbootError)
    try:
        check_shape(path, "$", record, LAB_RECORD)
        if set(record) != set(LAB_RECORD) or record["status"] not in ("up", "down") or not NODE_NAME_RE.match(record["name"]):
            raise ProfileError(path, "$", "expected the keys %s, status up or down" % ", ".join(sorted(LAB_RECORD)))
    except ProfileError as exc:
        raise StackbootError("a lab's record is damaged: " + exc.message, fix)
    return record


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
    sets = parse_sets(args.set)
    if args.action != "up":
        if sets:
            raise BadInput("--set is for lab up (the values of its nodes)", "lab %s works with the values the lab is up with" % args.action)
        lab = Lab.open(session, args.dir or args.cluster)
        return lab.status() if args.action == "status" else lab.down(destroy=args.action == "destroy")
    where = args.cluster or "seed"
    cluster = load_cluster(session.library, session.facts, where)
    if sets:   # as the cluster's own parameters: each node takes those its roles know
        data = dict(cluster.data, parameters=dict(cluster.data.get("parameters", {}), **sets))
        cluster = parse_cluster(session.library, session.facts, "%s with --set" % cluster.origin, data)
    name = os.path.basename(where)
    name = name[:-5] if name.endswith(".json") else name
    if not NODE_NAME_RE.match(name):
        raise BadInput("lab name %s (from %s) is not 1-12 lower-case letters, digits and -" % (json.dumps(name), where),
                       "name the cluster file like mylab.json: the name prefixes network namespaces and a veth")
    return Lab(session, name, args.dir or os.path.join(LAB_BASE, name), cluster).up()



# ---------------------------------------------------------------------------
# Command line and main
# ---------------------------------------------------------------------------

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
    ("recover", cmd_recover, "rescue a role: stop what it replaces, then install it (master: its data's owner, restore)"),
    ("lab", cmd_lab, "lab up [CLUSTER] | status | down | destroy: a whole cluster on this host, one network namespace per node"),
    ("self-install", cmd_self_install, "install stackboot itself as %s (a module whose bytecode Python keeps)" % LAUNCHER),
]

COMMAND_NAMES = set(name for name, _, _ in COMMANDS)

EXIT_HELP = """exit codes:
  %d  success (plan: nothing to change)
  %d  failure
  %d  changes pending (plan --detailed-exitcode, check)
  %d  bad usage or bad input; nothing was changed
  %d  interrupted (Ctrl-C), %d stopped (SIGTERM); run the same command again to finish
""" % (EXIT_OK, EXIT_FAILED, EXIT_PENDING, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED)


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
            sub.add_argument("--uninstall", action="store_true", help="what `uninstall ROLE...` would do")
            sub.add_argument("--purge-data", action="store_true", help="with --uninstall: and `uninstall --purge-data`")
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
            sub.add_argument("--target", choices=sorted(CLOUD_TARGETS),
                             help="the cloud it is for: fail unless the user-data fits what it takes")
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
                                  "(a CVMFS repository that never published), then make it again; a published one "
                                  "that lost its config gets it back")
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
    if len(argv) == 1 and argv[0] not in COMMAND_NAMES and not argv[0].startswith("-") and os.path.isfile(argv[0]):
        return ansible_module(argv[0], runner, uname)   # Ansible's one argument: its file of JSON arguments
    verbose = "-v" in argv or "--verbose" in argv
    code = EXIT_FAILED
    session = None
    secrets = set()
    # --json: one document on stdout, whatever happens (an error in the command line too)
    document = {"format_version": JSON_FORMAT, "command": next((word for word in argv if word in COMMAND_NAMES), None)} \
        if "--json" in argv else None
    SIGNALS.install()

    def report(line, exc=None):
        if verbose:
            import traceback
            sys.stderr.write(printable(redact(traceback.format_exc(), secrets)))
        sys.stderr.write(one_line(redact(line, secrets)) + "\n")
        if document is not None:
            document["error"] = one_line(redact(exc.message if exc else line[len("error: "):], secrets))
            document["fix"] = redact(exc.fix, secrets) if exc and exc.fix else None
    try:
        try:
            args = merge_global_options(build_parser(argv).parse_args(argv))
        except SystemExit as exc:   # --help and --version
            return exc.code or EXIT_OK
        if not args.command:
            raise BadInput("no command given", "see `stackboot --help`")
        session = Session(args, runner=runner, uname=uname, document=document)
        secrets = session.secrets
        code = dict((name, func) for name, func, _ in COMMANDS)[args.command](session)
    except BrokenPipeError:   # `stackboot ... | head`: the reader has what it wanted
        try:
            sys.stdout = open(os.devnull, "w")   # nothing more to flush at exit
        except OSError:
            pass
        return EXIT_BROKEN_PIPE
    except StackbootError as exc:
        report(exc.line(), exc)
        code = exc.exit_code
    except KeyboardInterrupt:   # where stackboot's own handler is not in place (not the main thread)
        sys.stderr.write("error: interrupted; run the same command again to finish the job\n")
        if document is not None:
            document.update(error="interrupted", fix="run the same command again to finish the job")
        code = EXIT_INTERRUPTED
    except (IOError, OSError) as exc:
        report("error: %s: %s; check permissions (install needs root) and free space"
               % (getattr(exc, "filename", None) or "system call", exc.strerror or exc))
        code = EXIT_FAILED
    except Exception as exc:   # a bug of stackboot's own: one line still, the traceback with -v
        report("error: internal error (%s: %s); this is a bug in stackboot: please report it with the output of -v"
               % (type(exc).__name__, exc))
        code = EXIT_FAILED
    finally:
        SIGNALS.restore()
    if document is not None:
        document["exit_code"] = code
        user_data = document.pop("user_data", None)   # cloud-init's: secrets included, that is where they go
        document = redact_data(document, secrets)
        if user_data is not None:
            document["user_data"] = user_data
        try:
            if sys.stdout is not None:   # (started with stdout closed: nobody to give it to)
                sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
                sys.stdout.flush()
        except BrokenPipeError:
            return EXIT_BROKEN_PIPE
        except OSError:
            pass
    # A last line, so a truncated or empty download (curl | python3 -) is noticed.
    sys.stderr.write("stackboot: %s (exit %d)\n" % ("done" if code in (EXIT_OK, EXIT_PENDING) else "failed", code))
    return code


# WANT_JSON: these words make Ansible run this file as a module named after it (library/stackboot.py),
# with one argument, the path of a JSON file holding the task's arguments; it reads one JSON object back.
ANSIBLE_ARGUMENTS = {"roles": list, "state": str, "set": dict, "site": str, "root": str, "offline": bool,
                     "repair": bool, "force": bool, "purge_data": bool}
ANSIBLE_SYMBOLS = dict((action, symbol) for symbol, action in Change.ACTIONS.items())


def ansible_module(path, runner=None, uname=None):
    """stackboot as an Ansible module: the task's arguments become one command (install, or
    uninstall for state=absent; plan in check mode), run with --json, and its document becomes
    the module's result: `changed` exactly, the plan lines, the file diffs in diff mode, `failed`
    with the one error line as `msg`. The document is redacted already: no secret in the result."""
    result = {"changed": False}
    try:
        with open(path) as handle:
            given = json.load(handle)
        if not isinstance(given, dict):
            raise ValueError("expected a JSON object of arguments")
        for key, value in sorted(given.items()):
            if key.startswith("_ansible_"):
                continue
            if key not in ANSIBLE_ARGUMENTS:
                raise ValueError("unsupported argument %s (supported: %s)" % (key, ", ".join(sorted(ANSIBLE_ARGUMENTS))))
            if not isinstance(value, ANSIBLE_ARGUMENTS[key]):
                raise ValueError("argument %s: expected %s, got %s" % (key, ANSIBLE_ARGUMENTS[key].__name__, json.dumps(value)))
        state = given.get("state", "present")
        if state not in ("present", "absent") or not given.get("roles"):
            raise ValueError("give roles (a list) and state present or absent, not %s" % json.dumps(state))
    except ValueError as exc:   # (json's own errors are ValueErrors)
        result.update(failed=True, msg="stackboot: %s" % exc)
        sys.stdout.write(json.dumps(result) + "\n")
        return EXIT_BAD_INPUT
    check = given.get("_ansible_check_mode", False)
    argv = ["plan" if check else "install" if state == "present" else "uninstall"]
    argv += ["--uninstall"] if check and state == "absent" else []
    for name, value in sorted(given.get("set", {}).items()):
        text = json.dumps(value) if isinstance(value, (list, dict)) else render_scalar(value)
        argv += ["--set", "%s=%s" % (name, text)]
    for option in ("site", "root"):
        if given.get(option):
            argv += ["--" + option, given[option]]
    flags = {"offline": "--offline", "purge_data": "--purge-data"}   # (--purge-data: uninstall's, and plan --uninstall's)
    if not check:
        flags.update(repair="--repair", force="--force")
    argv += [flag for key, flag in sorted(flags.items()) if given.get(key)]
    argv += ["--yes", "--json"]   # (nobody is there to answer: the playbook's purge_data is the yes)
    argv += ["--"] + [str(role) for role in given["roles"]]   # a role is never an option ("--root=/")
    import contextlib
    import io
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv, runner, uname)
    document = json.loads(stdout.getvalue())
    summary = document.get("summary", {})
    result["changed"] = bool(summary.get("to_change" if check else "changed"))
    result["stackboot"] = document
    result["plan"] = ["%s %s %s: %s" % (ANSIBLE_SYMBOLS[change["action"]], step["kind"], step["target"], change["summary"])
                      for step in document.get("steps", []) for change in step["changes"]]
    if given.get("_ansible_diff"):
        result["diff"] = [{"before_header": step["target"], "after_header": step["target"], "prepared": change["diff"]}
                          for step in document.get("steps", []) for change in step["changes"] if change["diff"]]
    if code not in (EXIT_OK, EXIT_PENDING):
        result.update(failed=True, rc=code, msg="%s%s" % (document.get("error"), "; " + document["fix"] if document.get("fix") else ""))
    sys.stdout.write(json.dumps(result) + "\n")
    return code


def one_line(text, limit=2000):
    """An error line as one line: control characters (a newline in a value) shown escaped, and
    not endless (a 100 KB value is not worth showing whole)."""
    text = printable(text)
    text = "".join(ch if not CONTROL_RE.match(ch) else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[:limit] + "… (%d more characters)" % (len(text) - limit)


def printable(text):
    """Text any terminal can take: what could not be decoded (a lone surrogate) shown escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
      "items": "word",
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
      "type": "name",
      "default": "root",
      "help": "owner of the subvolumes"
    },
    "store_group": {
      "type": "name",
      "default": "root",
      "help": "group of the subvolumes"
    },
    "store_mode": {
      "type": "mode",
      "default": "0755",
      "help": "mode of the subvolumes"
    }
  },
  "platforms": [
    "linux"
  ],
  "refused_on": {
    "rhel-8": "RHEL 8 removed btrfs: its kernel has no btrfs module and its repositories no btrfs-progs (Rocky and AlmaLinux 8 follow it); use zfs-store or plain directories",
    "rhel-9": "RHEL 9 has no btrfs: no kernel module, no btrfs-progs (Rocky and AlmaLinux 9 follow it); use zfs-store or plain directories"
  },
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
      "type": "name",
      "default": "moosefs-chunkserver",
      "help": "the chunkserver's service name"
    },
    "chunkserver_packages": {
      "type": "list",
      "items": "package",
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
      "id": "chunkserver-packages",
      "names": "{{chunkserver_packages}}",
      "when": {
        "method": "packages"
      },
      "replaces_build": "moosefs",
      "release": "{{packages_release}}",
      "version": "{{packages_version}}"
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "replaces": [
        "{{chunkserver_packages}}"
      ],
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
      "needs": [
        "disk_dataset_root"
      ],
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
        "TimeoutStartSec=60",
        "TimeoutStopSec=600",
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
        "# REQUIRE: DAEMON",
        "# BEFORE: mountlate",
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
        "required_files=\"${mfschunkserver_config}\"",
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
      "kind": "firewall",
      "when": {
        "firewall": "auto"
      },
      "ports": [
        "{{chunkserver_listen_port}}/tcp"
      ],
      "label": "MooseFS chunkserver"
    },
    {
      "kind": "service",
      "name": "{{chunkserver_service}}",
      "restart_on": [
        "mfschunkserver.cfg",
        "chunkserver-packages",
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
      "items": "package",
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
      "id": "cli-packages",
      "names": "{{cli_packages}}",
      "when": {
        "method": "packages"
      },
      "replaces_build": "moosefs",
      "release": "{{packages_release}}",
      "version": "{{packages_version}}"
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "replaces": [
        "{{cli_packages}}"
      ],
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
      "items": "word",
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
      "items": "package",
      "default": [
        "moosefs-client"
      ],
      "help": "packages for method=packages"
    },
    "fuse_packages": {
      "type": "list",
      "items": "package",
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
      "id": "client-packages",
      "names": "{{client_packages}}",
      "when": {
        "method": "packages"
      },
      "replaces_build": "moosefs",
      "release": "{{packages_release}}",
      "version": "{{packages_version}}"
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "replaces": [
        "{{client_packages}}"
      ],
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
      "fstab": "{{mount_at_boot}}",
      "remount_on": [
        "client-packages",
        "moosefs-build"
      ]
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
      ],
      "remount_on": [
        "client-packages",
        "moosefs-build"
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
    "client_mount": {
      "type": "string",
      "default": "autofs",
      "choices": ["autofs", "fstab"],
      "help": "autofs: /cvmfs/FQRN mounts on first use (cvmfs_config setup); fstab: each repository mounted now and at boot from /etc/fstab, for hosts without autofs (containers, minimal images; keep autofs off /cvmfs there)"
    },
    "cache_base": {
      "type": "path",
      "default": "/var/lib/cvmfs",
      "help": "the cache directory (CVMFS_CACHE_BASE); where SELinux enforces it gets the type cvmfs_cache_t"
    },
    "client_extra": {
      "type": "settings",
      "default": {},
      "help": "more default.local settings"
    },
    "client_packages": {
      "type": "list",
      "items": "package",
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
                  "CVMFS_QUOTA_LIMIT": "{{cache_quota}}", "CVMFS_CACHE_BASE": "{{cache_base}}", "extra": "{{client_extra}}"}},
    {"kind": "selinux-context", "when": {"facts.selinux": "enforcing"}, "path": "{{cache_base}}", "type": "cvmfs_cache_t"},
    {"kind": "file", "id": "cvmfs-client-repository", "for_each": "{{client_repositories}}", "as": "repo",
     "path": "/etc/cvmfs/config.d/{{repo.name}}.conf", "mode": "0644", "separator": "=", "quote": true,
     "header": "# written by stackboot",
     "settings": {"CVMFS_SERVER_URL": "{{server_url}}", "CVMFS_PUBLIC_KEY": "/etc/cvmfs/keys/{{repo.name}}.pub"}},
    {"kind": "mount", "id": "cvmfs-mount", "when": {"client_mount": "fstab"}, "for_each": "{{client_repositories}}", "as": "repo",
     "path": "/cvmfs/{{repo.name}}", "device": "{{repo.name}}", "fstype": "cvmfs", "options": ["defaults", "_netdev", "nodev"],
     "remount_on": ["cvmfs-client-packages"],
     "comment": "as CernVM-FS documents it; mount makes its directory first (mount.cvmfs wants it)"},
    {"kind": "command", "id": "cvmfs-setup", "when": {"client_mount": "autofs"}, "argv": ["cvmfs_config", "setup"],
     "comment": "what setup establishes: autofs knows /cvmfs (chksetup exits 0 on a fresh host: it counts errors, and that is warnings)",
     "unless": ["grep", "-qsx", "/cvmfs /etc/auto.cvmfs", "/etc/auto.master.d/cvmfs.autofs", "/etc/auto.master"]},
    {"kind": "command", "id": "cvmfs-chksetup", "when": {"client_mount": "autofs"}, "argv": ["cvmfs_config", "chksetup"], "run_on": ["cvmfs-setup"],
     "fails": "cvmfs_config chksetup found errors setup cannot fix (its output above; /dev/fuse must be usable by the cvmfs user)"},
    {"kind": "command", "id": "cvmfs-probe", "argv": ["cvmfs_config", "probe", "{{client_repositories.name}}"],
     "run_on": ["default.local", "cvmfs-client-repository", "cvmfs-client-key", "cvmfs-setup", "cvmfs-mount"],
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
      "type": "package",
      "default": "cvmfs-release",
      "help": "the package the release file installs"
    },
    "firewall": {
      "type": "string",
      "default": "auto",
      "choices": ["auto", "off"],
      "help": "auto: where a host firewall is active (firewalld, ufw), let the role's ports in; off: leave the firewall alone"
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
    "cvmfs-publish": r"""{
  "description": "CernVM-FS publishing: a repository made to hold exactly a directory's content, in one transaction (what `stackboot cvmfs publish` runs)",
  "platforms": [
    "linux"
  ],
  "platforms_why": "CernVM-FS runs only on Linux",
  "parameters": {
    "repository": {
      "type": "fqrn",
      "help": "the repository, made by the cvmfs-server role"
    },
    "source": {
      "type": "text",
      "help": "the directory (on the machine stackboot runs on) whose content the repository should hold, deletions included"
    },
    "tag": {
      "type": "string",
      "default": null,
      "help": "a tag for the new revision (cvmfs_server publish -a)"
    },
    "message": {
      "type": "text",
      "default": null,
      "help": "the revision's message (cvmfs_server publish -m)"
    },
    "timeout": {
      "type": "int",
      "default": 300,
      "min": 0,
      "help": "seconds to wait for the repository's lock (cvmfs_server transaction -t)"
    }
  },
  "steps": [
    {
      "kind": "cvmfs-publish",
      "repository": "{{repository}}",
      "source": "{{source}}",
      "tag": "{{tag}}",
      "message": "{{message}}",
      "timeout": "{{timeout}}"
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
      "type": "name",
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
      "items": "path",
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
      "items": "package",
      "default": ["cvmfs", "cvmfs-server", "cvmfs-config-default"],
      "help": "the CernVM-FS packages"
    },
    "apache_package": {
      "type": "package",
      "default": "apache2",
      "help": "the web server package (cvmfs-server only recommends it, mkfs needs it)"
    },
    "apache_service": {
      "type": "name",
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
      "items": "name",
      "default": ["headers", "expires", "proxy", "proxy_http"],
      "help": "modules mkfs wants enabled (a2enmod; built in on the RHEL family)"
    },
    "web_root": {
      "type": "path",
      "default": "/var/www/html",
      "help": "the web server's document root; public keys go to WEB_ROOT/cvmfs-meta"
    },
    "cron_package": {
      "type": "package",
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
    {"kind": "host-name", "name": "localhost", "address": "127.0.0.1", "unless_resolves": true,
     "comment": "mkfs signs and checks through http://localhost; a bare root has no /etc/hosts (mkfs: cannot sign repo)"},
    {"kind": "packages", "id": "cvmfs-server-packages", "names": ["{{server_packages}}", "{{apache_package}}"]},
    {"kind": "command", "id": "apache-modules", "for_each": "{{apache_modules}}", "as": "module",
     "argv": ["a2enmod", "-q", "{{module}}"], "creates": "/etc/apache2/mods-enabled/{{module}}.load"},
    {"kind": "firewall", "when": {"firewall": "auto"}, "ports": ["80/tcp"], "label": "CernVM-FS stratum 0 (Apache)"},
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

    {"kind": "directory", "path": "/srv/cvmfs", "mode": "0755", "when": {"facts.selinux": "enforcing", "backend": "local"}},
    {"kind": "selinux-context", "when": {"facts.selinux": "enforcing", "backend": "local"}, "path": "/srv/cvmfs", "type": "httpd_sys_content_t",
     "comment": "Apache serves the storage; mkfs labels it only once (chcon), which a relabel or a store mounted there loses"},

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
    {"kind": "directory", "path": "/var/log/cvmfs", "mode": "0755", "when": {"garbage_collection": true},
     "comment": "gc -a logs there and fails (rc 2) without it; the package makes it, a build or an old install may not"},
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
      "type": "name",
      "default": "moosefs-gui",
      "help": "the GUI's service name (4.x)"
    },
    "gui_packages": {
      "type": "list",
      "items": "package",
      "default": [
        "moosefs-gui"
      ],
      "help": "packages for method=packages (4.x)"
    },
    "cgi_packages": {
      "type": "list",
      "items": "package",
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
    },
    "gui_configure_flags": {
      "type": "list",
      "items": "text",
      "default": null,
      "lookup": {
        "key": "series",
        "table": {
          "4": [
            "--enable-mfsgui",
            "--enable-mfscgi"
          ],
          "3": [
            "--enable-mfscgi",
            "--enable-mfscgiserv"
          ]
        }
      },
      "help": "a source build's GUI modules: the server and the pages it serves (mfscgi: without it every page is 404)"
    },
    "gui_server": {
      "type": "string",
      "default": null,
      "choices": [
        "mfsgui",
        "mfscgiserv"
      ],
      "lookup": {
        "key": "method",
        "table": {
          "source": "{{source_gui_server}}",
          "git": "mfsgui",
          "packages": "{{packaged_gui_server}}"
        }
      },
      "help": "the GUI daemon: mfsgui (4.57.7 and later) or mfscgiserv (before)"
    },
    "source_gui_server": {
      "type": "string",
      "default": null,
      "choices": [
        "mfsgui",
        "mfscgiserv"
      ],
      "lookup": {
        "key": "series",
        "table": {
          "4": "mfsgui",
          "3": "mfscgiserv"
        }
      },
      "help": "the GUI a source build of this series has"
    },
    "packaged_gui_server": {
      "type": "string",
      "default": "mfsgui",
      "choices": [
        "mfsgui",
        "mfscgiserv"
      ],
      "from_packages": {
        "names": [
          "moosefs-gui"
        ],
        "value": "mfsgui",
        "release": "packages_release",
        "when": {
          "method": "packages"
        },
        "version": "packages_version"
      },
      "help": "the GUI packages bring: mfsgui where the package manager has moosefs-gui, else mfscgiserv"
    }
  },
  "overlays": {
    "freebsd": {
      "gui_service": "mfsgui"
    },
    "debian": {
      "cgi_root": "/usr/share/moosefs-cgi",
      "packaged_gui_server": "mfscgiserv"
    },
    "ubuntu": {
      "packaged_gui_server": "mfscgiserv"
    }
  },
  "summary": [
    "MooseFS GUI: http://{{facts.address}}:{{gui_port}}/mfs.cgi?masterhost={{master_host}}"
  ],
  "steps": [
    {
      "kind": "packages",
      "id": "gui-packages",
      "names": "{{gui_packages}}",
      "when": {
        "method": "packages",
        "gui_server": "mfsgui"
      },
      "replaces_build": "moosefs",
      "release": "{{packages_release}}",
      "version": "{{packages_version}}"
    },
    {
      "kind": "packages",
      "id": "cgi-packages",
      "names": "{{cgi_packages}}",
      "when": {
        "method": "packages",
        "gui_server": "mfscgiserv"
      },
      "replaces_build": "moosefs",
      "release": "{{packages_release}}",
      "version": "{{packages_version}}"
    },
    {
      "kind": "firewall",
      "when": {
        "firewall": "auto"
      },
      "ports": [
        "{{gui_port}}/tcp"
      ],
      "label": "MooseFS GUI"
    },
    {
      "kind": "service",
      "id": "cgiserv-replaced",
      "name": "moosefs-cgiserv",
      "when": {
        "gui_server": "mfsgui"
      },
      "enabled": false,
      "running": false,
      "direct": {
        "start": [
          "{{sbin_dir}}/mfscgiserv",
          "start"
        ],
        "stop": "SIGTERM",
        "pidfile": "{{localstate_dir}}/mfs/.mfscgiserv.lock"
      }
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "replaces": [
        "{{gui_packages}}",
        "{{cgi_packages}}"
      ],
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
        "{{gui_configure_flags}}"
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
        "gui_server": "mfsgui"
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
        "facts.init": "systemd",
        "gui_server": "mfsgui"
      },
      "template": [
        "[Unit]",
        "Description=MooseFS GUI (built by stackboot)",
        "Wants=network-online.target",
        "After=network.target network-online.target",
        "",
        "[Service]",
        "Type=forking",
        "ExecStart={{sbin_dir}}/mfsgui -c {{config_dir}}/mfsgui.cfg start",
        "ExecStop={{sbin_dir}}/mfsgui -c {{config_dir}}/mfsgui.cfg stop",
        "ExecReload={{sbin_dir}}/mfsgui -c {{config_dir}}/mfsgui.cfg reload",
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
        "os": "freebsd",
        "gui_server": "mfsgui"
      },
      "template": [
        "#!/bin/sh",
        "#",
        "# PROVIDE: mfsgui",
        "# REQUIRE: DAEMON",
        "# KEYWORD: shutdown",
        "",
        ". /etc/rc.subr",
        "",
        "name=\"mfsgui\"",
        "rcvar=\"mfsgui_enable\"",
        "load_rc_config $name",
        ": ${mfsgui_enable:=\"NO\"}",
        "required_files=\"{{config_dir}}/mfsgui.cfg\"",
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
        "gui_server": "mfsgui"
      },
      "restart_on": [
        "mfsgui.cfg",
        "gui-packages",
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
        "os": [
          "debian",
          "ubuntu"
        ],
        "facts.init": "systemd",
        "gui_server": "mfscgiserv"
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
        "gui_server": "mfscgiserv"
      },
      "restart_on": [
        "cgi-packages",
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
  "aliases": [
    "mfsmaster",
    "{{master_host}}"
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
    "steps": [
      {
        "kind": "ownership",
        "comment": "the master reads and writes everything here: a backup copied in by hand, or a metalogger's files it takes over",
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
      "items": "export",
      "default": [
        "* / rw,alldirs,admin,maproot=0:0",
        "* . rw"
      ],
      "help": "mfsexports.cfg lines: IPRANGE PATH OPTIONS"
    },
    "master_service": {
      "type": "name",
      "default": "moosefs-master",
      "help": "the master's service name"
    },
    "master_packages": {
      "type": "list",
      "items": "package",
      "default": [
        "moosefs-master"
      ],
      "help": "packages for method=packages"
    },
    "master_extra": {
      "type": "settings",
      "default": {},
      "help": "more mfsmaster.cfg settings, KEY=VALUE,..."
    },
    "metadata_backups": {
      "type": "path",
      "default": "{{data_path}}.backups",
      "help": "where the metadata and changelogs are copied before a newer master first runs on them (one directory per upgrade)"
    }
  },
  "overlays": {
    "freebsd": {
      "master_service": "mfsmaster"
    }
  },
  "steps": [
    {
      "kind": "moosefs-upgrade",
      "comment": "before the software changes: a package upgrade restarts the master itself (dpkg, under systemd)",
      "data_path": "{{data_path}}",
      "version": "{{build_version}}",
      "packages": "{{master_packages}}",
      "release": "{{packages_release}}",
      "packages_version": "{{packages_version}}",
      "backups": "{{metadata_backups}}"
    },
    {
      "kind": "packages",
      "id": "master-packages",
      "names": "{{master_packages}}",
      "when": {
        "method": "packages"
      },
      "replaces_build": "moosefs",
      "release": "{{packages_release}}",
      "version": "{{packages_version}}"
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "replaces": [
        "{{master_packages}}"
      ],
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
      "kind": "host-name",
      "comment": "the name the other daemons and tools on this host use for the master (mfsmaster by default): where no DNS has it, this host's own address",
      "name": "{{master_host}}",
      "unless_resolves": true,
      "when": {
        "facts.lab": ""
      }
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
      ],
      "version": "{{build_version}}",
      "packages": "{{master_packages}}",
      "release": "{{packages_release}}",
      "packages_version": "{{packages_version}}"
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
        "# REQUIRE: DAEMON",
        "# BEFORE: mountlate",
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
        "required_files=\"${mfsmaster_config}\"",
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
      "kind": "firewall",
      "when": {
        "firewall": "auto"
      },
      "ports": [
        "{{metalogger_port}}/tcp",
        "{{chunkserver_port}}/tcp",
        "{{client_port}}/tcp"
      ],
      "label": "MooseFS master"
    },
    {
      "kind": "service",
      "name": "{{master_service}}",
      "restart_on": [
        "mfsmaster.cfg",
        "master-packages",
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
      "type": "name",
      "default": "moosefs-metalogger",
      "help": "the metalogger's service name"
    },
    "metalogger_packages": {
      "type": "list",
      "items": "package",
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
      "id": "metalogger-packages",
      "names": "{{metalogger_packages}}",
      "when": {
        "method": "packages"
      },
      "replaces_build": "moosefs",
      "release": "{{packages_release}}",
      "version": "{{packages_version}}"
    },
    {
      "kind": "build",
      "id": "moosefs-build",
      "name": "moosefs",
      "replaces": [
        "{{metalogger_packages}}"
      ],
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
        "# REQUIRE: DAEMON",
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
        "required_files=\"${mfsmetalogger_config}\"",
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
        "metalogger-packages",
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
    "build_version": {
      "type": "string",
      "default": null,
      "lookup": {
        "key": "method",
        "table": {
          "source": "{{version}}",
          "git": "{{version}}"
        }
      },
      "help": "the MooseFS version a build installs (none for method=packages: the packages tell)"
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
        "--with-systemdsystemunitdir=no",
        "--enable-option-checking=fatal",
        "--disable-all"
      ],
      "help": "configure flags every role shares (stackboot writes the units itself: upstream's are not installed); each role adds its module's --enable flag"
    },
    "build_packages": {
      "type": "list",
      "items": "package",
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
      "items": "package",
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
    "working_uid": {
      "type": "int",
      "default": null,
      "min": 1,
      "max": 4294967294,
      "help": "the working user's uid when stackboot creates it (an existing user keeps its own; FreeBSD: the ports' 925)"
    },
    "working_gid": {
      "type": "int",
      "default": null,
      "min": 1,
      "max": 4294967294,
      "help": "the working group's gid when stackboot creates it (an existing group keeps its own; FreeBSD: the ports' 925)"
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
    "firewall": {
      "type": "string",
      "default": "auto",
      "choices": ["auto", "off"],
      "help": "auto: where a host firewall is active (firewalld, ufw), let the role's ports in; off: leave the firewall alone"
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
    "build_repositories": {
      "type": "list",
      "items": "name",
      "default": [],
      "help": "repositories the build packages need switched on, by id (the first one configured is used)"
    },
    "moosefs_repository": {
      "type": "bool",
      "default": false,
      "help": "method=packages: use the official MooseFS repository (4.x) instead of the distribution's packages"
    },
    "packages_release": {
      "type": "word",
      "default": null,
      "help": "apt: the release to install MooseFS from (trixie-backports: 4.58.1 with moosefs-gui)"
    },
    "packages_version": {
      "type": "word",
      "default": null,
      "help": "method=packages: the MooseFS version to have (4.58.1 matches 4.58.1-1~bpo13+1; latest: what the package manager would install, from packages_release when set); unset: installed packages stay as they are"
    },
    "repo_url": {
      "type": "url",
      "default": "https://repository.moosefs.com/moosefs-4/yum/el{{facts.major}}",
      "help": "the official MooseFS repository for this platform"
    },
    "repo_suite": {
      "type": "word",
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
      "help": "major version of the distribution's MooseFS packages (what its package manager has; else this)",
      "from_packages": {
        "names": [
          "moosefs-master"
        ],
        "release": "packages_release",
        "when": {
          "method": "packages",
          "moosefs_repository": false
        },
        "version": "packages_version"
      }
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
    "source_series": {
      "type": "string",
      "default": null,
      "choices": [
        "3",
        "4"
      ],
      "lookup": {
        "key": "version",
        "table": {
          "3.*": "3",
          "*": "4"
        }
      },
      "help": "major version of a source build (from version)"
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
          "source": "{{source_series}}",
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
    "rhel-8": {
      "build_repositories": ["powertools", "PowerTools", "codeready-builder-for-rhel-8-x86_64-rpms", "codeready-builder-for-rhel-8-aarch64-rpms"]
    },
    "rhel-9": {
      "build_repositories": ["crb", "codeready-builder-for-rhel-9-x86_64-rpms", "codeready-builder-for-rhel-9-aarch64-rpms"]
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
      "repo_url": "https://repository.moosefs.com/moosefs-4/freebsd/{{facts.major}}",
      "working_uid": 925,
      "working_gid": 925
    },
    "lab": {
      "firewall": "off",
      "config_dir": "{{facts.lab}}/etc/mfs",
      "data_path": "{{facts.lab}}/var/lib/mfs",
      "working_home": "{{localstate_dir}}/mfs"
    }
  },
  "steps": [
    {
      "kind": "group",
      "name": "{{working_group}}",
      "gid": "{{working_gid}}",
      "keep_existing_id": true
    },
    {
      "kind": "user",
      "name": "{{working_user}}",
      "group": "{{working_group}}",
      "home": "{{working_home}}",
      "shell": "{{nologin_shell}}",
      "uid": "{{working_uid}}",
      "keep_existing_id": true
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
      "kind": "dnf-repo",
      "names": "{{build_repositories}}",
      "why": "libpcap-devel is there (PowerTools on EL8, CodeReady Builder on EL9)",
      "when": {
        "method": [
          "source",
          "git"
        ],
        "os": [
          "rhel-8",
          "rhel-9"
        ]
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
      "needs": [
        "git_commit"
      ],
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
      "needs": [
        "git_commit"
      ],
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
      "items": "package",
      "default": [
        "zfsutils-linux"
      ],
      "help": "packages that bring zpool and zfs"
    },
    "zfs_services": {
      "type": "list",
      "items": "name",
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
      "zfs_packages": []
    }
  },
  "steps": [
    {
      "kind": "packages",
      "names": "{{zfs_packages}}"
    },
    {
      "kind": "require",
      "when": {
        "os": "fedora"
      },
      "path": "/usr/sbin/zpool",
      "fix": "OpenZFS is in none of the RHEL family's or Fedora's repositories, and its kernel module must match the kernel: add its repository and install it as openzfs.github.io/openzfs-docs says (dnf install https://zfsonlinux.org/epel/zfs-release-3-0$(rpm --eval \"%{dist}\").noarch.rpm, then dnf install zfs; on the RHEL family the kABI-tracking kmod needs no EPEL), load it (modprobe zfs), then run again"
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
