"""download and build step kinds for real: a loopback HTTP server, a small autotools-style tarball, real make."""

import hashlib
import http.server
import io
import os
import tarfile
import threading

import pytest

import stackboot
from conftest import DEBIAN, library_of, plan_of

CONFIGURE = """#!/bin/sh
# A stand-in for an autotools configure: records its flags, honours --prefix.
prefix=/usr/local
for arg in "$@"; do
  case "$arg" in --prefix=*) prefix="${arg#--prefix=}";; esac
done
echo "$@" > configure.flags
sed "s|@PREFIX@|$prefix|" Makefile.in > Makefile
echo "configured for $prefix"
"""
MAKEFILE_IN = """PREFIX = @PREFIX@
all: hello
hello: hello.c
\t$(CC) -o hello hello.c
install: hello
\tmkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/hello
\tcp hello $(DESTDIR)$(PREFIX)/bin/hello
\tcp configure.flags $(DESTDIR)$(PREFIX)/share/hello/flags
\tln -sf hello $(DESTDIR)$(PREFIX)/bin/hello-link
"""


def make_tarball(version, extra_member=None):
    buffer = io.BytesIO()
    top = "hello-%s" % version
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        files = {"configure": (CONFIGURE, 0o755), "Makefile.in": (MAKEFILE_IN, 0o644),
                 "hello.c": ('#include <stdio.h>\nint main(void){puts("hello %s");return 0;}\n' % version, 0o644)}
        for name, (text, mode) in files.items():
            data = text.encode()
            info = tarfile.TarInfo("%s/%s" % (top, name))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        if extra_member:
            info = tarfile.TarInfo(extra_member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


class Server:
    """Serves bytes from memory on 127.0.0.1, honouring Range like a real web server."""

    def __init__(self):
        self.files, self.requests = {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """State, log, cache and install prefix inside tmp_path; commands run for real."""
    monkeypatch.setattr(stackboot, "STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(stackboot, "LOG_FILE", str(tmp_path / "stackboot.log"))
    monkeypatch.setattr(stackboot, "CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def engine(steps, parameters=None, sets=(), goal="present"):
    plan = plan_of(library_of(b={"description": "build test", "parameters": parameters or {}, "steps": steps}),
                   ["b"], DEBIAN, sets, goal)
    out = io.StringIO()
    host = stackboot.Host("/", stackboot.Runner("/"), DEBIAN)
    run = stackboot.Run(host, DEBIAN, stackboot.Output(out))
    return run, plan, out


def plan_lines(steps, parameters=None, sets=()):
    run, plan, _ = engine(steps, parameters, sets)
    return ["%s %s: %s" % (c.symbol, s.describe(), c.summary) for _, s, cs in stackboot.assess(run, [plan]) for c in cs]


def apply(steps, parameters=None, sets=(), goal="present"):
    run, plan, out = engine(steps, parameters, sets, goal)
    outcome = stackboot.converge(run, [plan])
    return (outcome.changed, outcome.right), run, out.getvalue()


def test_download_verifies_caches_and_is_idempotent(sandbox, server):
    data = os.urandom(300000)
    server.files["/src/pkg.tar.gz"] = data
    step = {"kind": "download", "url": server.url + "/src/pkg.tar.gz", "sha256": hashlib.sha256(data).hexdigest()}
    dest = str(sandbox / "cache" / "downloads" / "pkg.tar.gz")
    assert plan_lines([step]) == ["+ download %s/src/pkg.tar.gz: download to %s (sha256 %s…)"
                                  % (server.url, dest, step["sha256"][:12])]
    (changed, right), run, out = apply([step])
    assert changed == 1 and open(dest, "rb").read() == data
    assert "downloading pkg.tar.gz 100%" in out
    assert apply([step])[0] == (0, 1) and len(server.requests) == 1


def test_download_of_a_small_file_says_so_once(sandbox, server):
    """A key is one block: its first progress line is already the last (it was printed twice)."""
    data = os.urandom(700)
    server.files["/keys/sw.example.org.pub"] = data
    step = {"kind": "download", "url": server.url + "/keys/sw.example.org.pub", "sha256": hashlib.sha256(data).hexdigest()}
    out = apply([step])[2]
    assert [line.strip() for line in out.splitlines() if "downloading" in line] == ["downloading sw.example.org.pub 100% (0 KiB)"]


def test_download_with_a_wrong_sha256_installs_nothing(sandbox, server):
    server.files["/x.tgz"] = b"tampered"
    step = {"kind": "download", "url": server.url + "/x.tgz", "sha256": "a" * 64}
    with pytest.raises(stackboot.StackbootError, match="sha256 is .*, expected a{64}; nothing was installed"):
        apply([step])
    assert os.listdir(str(sandbox / "cache" / "downloads")) == []


def test_download_resumes_a_partial_file(sandbox, server):
    data = os.urandom(200000)
    server.files["/big.tgz"] = data
    os.makedirs(str(sandbox / "cache" / "downloads"))
    with open(str(sandbox / "cache" / "downloads" / "big.tgz.part"), "wb") as handle:
        handle.write(data[:123456])
    apply([{"kind": "download", "url": server.url + "/big.tgz", "sha256": hashlib.sha256(data).hexdigest()}])
    assert server.requests == [("/big.tgz", "bytes=123456-")]
    assert open(str(sandbox / "cache" / "downloads" / "big.tgz"), "rb").read() == data


def test_download_http_error_is_one_clear_line(sandbox, server):
    with pytest.raises(stackboot.StackbootError, match="HTTP 404"):
        apply([{"kind": "download", "url": server.url + "/missing.tgz", "sha256": "b" * 64}])


BUILD_PARAMS = {"version": {"type": "string", "default": "1.0", "allow": ""},
                "sha": {"type": "sha256"}, "prefix": {"type": "path"}, "url": {"type": "url"},
                "cache": {"type": "path"}}


def build_steps():
    return [
        {"kind": "download", "id": "tarball", "url": "{{url}}/hello-{{version}}.tar.gz", "sha256": "{{sha}}"},
        {"kind": "build", "name": "hello", "version": "{{version}}", "sha256": "{{sha}}",
         "archive": "{{cache}}/downloads/hello-{{version}}.tar.gz",
         "configure": ["--prefix={{prefix}}", "--disable-all", "--enable-hello"], "jobs": 2},
    ]


def publish(server, version):
    data = make_tarball(version)
    server.files["/hello-%s.tar.gz" % version] = data
    return hashlib.sha256(data).hexdigest()


def test_build_configures_installs_records_and_never_rebuilds(sandbox, server):
    sha = publish(server, "1.0")
    prefix = str(sandbox / "prefix")
    sets = ["sha=" + sha, "prefix=" + prefix, "url=" + server.url, "cache=%s/cache" % sandbox]
    lines = plan_lines(build_steps(), BUILD_PARAMS, sets)
    assert lines[1] == "+ build hello: build and install hello 1.0"
    (changed, right), run, out = apply(build_steps(), BUILD_PARAMS, sets)
    assert changed == 2
    assert "hello: configure done in" in out and "hello: make done in" in out
    assert open(prefix + "/share/hello/flags").read() == "--prefix=%s --disable-all --enable-hello\n" % prefix
    assert os.readlink(prefix + "/bin/hello-link") == "hello"
    record = run.state.build("hello")
    assert sorted(record["files"]) == [prefix + "/bin/hello", prefix + "/bin/hello-link", prefix + "/share/hello/flags"]
    assert record["version"] == "1.0"
    # the same inputs: nothing to do, nothing run
    run2, plan2, _ = engine(build_steps(), BUILD_PARAMS, sets)
    assert stackboot.assess(run2, [plan2])[1][2] == []
    assert apply(build_steps(), BUILD_PARAMS, sets)[0] == (0, 2)
    # a new version is an upgrade: rebuilt and reinstalled
    sha2 = publish(server, "1.1")
    sets2 = ["sha=" + sha2, "prefix=" + prefix, "url=" + server.url, "version=1.1", "cache=%s/cache" % sandbox]
    assert plan_lines(build_steps(), BUILD_PARAMS, sets2)[1] == "~ build hello: upgrade hello 1.0 -> 1.1: rebuild and reinstall"
    apply(build_steps(), BUILD_PARAMS, sets2)
    import subprocess
    assert subprocess.check_output([prefix + "/bin/hello"]).decode() == "hello 1.1\n"
    # a removed installed file is put back
    os.unlink(prefix + "/bin/hello")
    assert plan_lines(build_steps(), BUILD_PARAMS, sets2)[0].startswith("~ build hello: reinstall: 1 installed files are missing")


def test_changed_configure_flags_rebuild(sandbox, server):
    sha = publish(server, "1.0")
    prefix = str(sandbox / "prefix")
    sets = ["sha=" + sha, "prefix=" + prefix, "url=" + server.url, "cache=%s/cache" % sandbox]
    apply(build_steps(), BUILD_PARAMS, sets)
    steps = build_steps()
    steps[1]["configure"].append("--enable-extra")
    assert plan_lines(steps, BUILD_PARAMS, sets) == ["~ build hello: rebuild hello: the build inputs changed"]


def test_archive_escaping_the_build_directory_is_refused(sandbox, tmp_path):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(make_tarball("1.0", extra_member="../../etc/evil"))
    step = {"kind": "build", "name": "evil", "archive": str(archive), "configure": []}
    with pytest.raises(stackboot.StackbootError, match="refusing archive member ../../etc/evil"):
        apply([step])
    assert not os.path.exists(str(tmp_path / "etc" / "evil"))


def test_a_failing_build_names_the_stage(sandbox, tmp_path):
    broken = io.BytesIO()
    with tarfile.open(fileobj=broken, mode="w:gz") as tar:
        data = b"#!/bin/sh\necho 'configure: error: zlib not found' >&2\nexit 1\n"
        info = tarfile.TarInfo("broken-1/configure")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(broken.getvalue())
    with pytest.raises(stackboot.StackbootError, match="broken: configure failed \\(exit 1\\)"):
        apply([{"kind": "build", "name": "broken", "archive": str(archive)}])


def test_build_from_a_git_checkout_runs_autoreconf_first(sandbox, tmp_path):
    """The exact command sequence, recorded: autoreconf, configure with flags, make -jN, staged install."""
    from conftest import FakeTools, RecordingRunner
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "src.tar.gz").write_bytes(make_tarball("2.0"))
    tools = FakeTools("/")

    def staged_install(argv):   # as `make install` inside the root would
        stage = str(root) + argv[2][len("DESTDIR="):]
        os.makedirs(stage + "/usr/sbin")
        with open(stage + "/usr/sbin/hello", "w") as handle:
            handle.write("binary")
        return 0, "", ""

    tools.on(lambda argv: argv[:2] == ["make", "install"], staged_install)
    tools.on(lambda argv: argv[0] in ("autoreconf", "./configure", "make"), lambda argv: (0, "ok\n", ""))
    data = {"description": "git build", "steps": [
        {"kind": "build", "name": "hello", "archive": "/src/src.tar.gz", "autoreconf": True, "jobs": 3,
         "configure": ["--prefix=/usr", "--disable-all"], "env": {"PYTHON": "/usr/bin/python3"}}]}
    plan = plan_of(library_of(g=data), ["g"], DEBIAN)
    runner = RecordingRunner("/", tools)
    host = stackboot.Host(str(root), runner, DEBIAN)
    runner.root = "/"   # record plain argv; the files still land under root
    run = stackboot.Run(host, DEBIAN, stackboot.Output(io.StringIO()))
    stackboot.converge(run, [plan])
    stage = stackboot.CACHE_DIR + "/stage/hello"
    assert [(argv, env) for argv, kind, env in runner.calls] == [
        (["autoreconf", "-f", "-i"], {"PYTHON": "/usr/bin/python3"}),
        (["./configure", "--prefix=/usr", "--disable-all"], {"PYTHON": "/usr/bin/python3"}),
        (["make", "-j3"], {"PYTHON": "/usr/bin/python3"}),
        (["make", "install", "DESTDIR=" + stage], {"PYTHON": "/usr/bin/python3"})]
    assert open(str(root / "usr/sbin/hello")).read() == "binary"
    assert run.state.build("hello")["files"] == ["/usr/sbin/hello"]


def test_uninstall_removes_exactly_what_a_build_installed(sandbox, server):
    sha = publish(server, "1.0")
    prefix = str(sandbox / "prefix")
    sets = ["sha=" + sha, "prefix=" + prefix, "url=" + server.url, "cache=%s/cache" % sandbox]
    apply(build_steps(), BUILD_PARAMS, sets)
    with open(prefix + "/bin/not-ours", "w") as handle:
        handle.write("somebody else's\n")
    assert plan_lines(build_steps(), BUILD_PARAMS, sets) == []
    run, plan, _ = engine(build_steps(), BUILD_PARAMS, sets, goal="absent")
    assert [(s.kind, [c.summary for c in cs]) for _, s, cs in stackboot.assess(run, [plan])] == [
        ("build", ["remove the 3 files hello 1.0 installed"]), ("download", [])]
    assert apply(build_steps(), BUILD_PARAMS, sets, goal="absent")[0] == (1, 1)
    assert os.listdir(prefix + "/bin") == ["not-ours"] and not os.path.exists(prefix + "/share/hello/flags")
    run, plan, _ = engine(build_steps(), BUILD_PARAMS, sets, goal="absent")
    assert run.state.build("hello") is None and stackboot.real_changes(stackboot.assess(run, [plan])[0][2]) == []


# -- a build and the distribution's packages of the same software ---------------------------

class Switch:
    """A root where a build of "hello" and a package "hello-pkg" both put /usr/sbin/hello (fake
    apt and dpkg: the package's files and its dpkg file list)."""

    def __init__(self, tmp_path):
        from conftest import FakeTools, RecordingRunner
        self.root = tmp_path / "root"
        (self.root / "src").mkdir(parents=True)
        (self.root / "src" / "src.tar.gz").write_bytes(make_tarball("2.0"))
        self.tools = FakeTools(str(self.root))
        self.tools.package_files["hello-pkg"] = {"/usr/sbin/hello": "packaged", "/usr/share/doc/hello-pkg/copyright": "GPL"}
        self.tools.package_files["other"] = {"/usr/sbin/hello": "another's"}
        self.tools.on(lambda argv: argv[:2] == ["make", "install"], self.staged_install)
        self.tools.on(lambda argv: argv[0] in ("./configure", "make"), lambda argv: (0, "ok\n", ""))
        self.runner = RecordingRunner(str(self.root), self.tools)

    def staged_install(self, argv):   # as `make install` inside the root would
        stage = str(self.root) + argv[2][len("DESTDIR="):]
        for path, text in (("/usr/sbin/hello", "built"), ("/usr/share/hello/readme", "hello")):
            os.makedirs(os.path.dirname(stage + path), exist_ok=True)
            with open(stage + path, "w") as handle:
                handle.write(text)
        return 0, "", ""

    def read(self, path):
        full = str(self.root) + path
        return open(full).read() if os.path.exists(full) else None

    def package(self, name):
        assert self.tools.tool_apt_get(["install", name])[0] == 0

    def engine(self, step, goal="present"):
        plan = plan_of(library_of(s={"description": "switch", "steps": [step]}), ["s"], DEBIAN, goal=goal)
        host = stackboot.Host(str(self.root), self.runner, DEBIAN)
        return stackboot.Run(host, DEBIAN, stackboot.Output(io.StringIO())), plan

    def changes(self, step, goal="present"):
        run, plan = self.engine(step, goal)
        return [change.summary for _, _, changes in stackboot.assess(run, [plan]) for change in changes]

    def converge(self, step, goal="present"):
        run, plan = self.engine(step, goal)
        stackboot.converge(run, [plan])
        return run


BUILD_STEP = {"kind": "build", "name": "hello", "archive": "/src/src.tar.gz", "version": "2.0", "replaces": ["hello-pkg"],
              "configure": ["--prefix=/usr"]}
PACKAGES_STEP = {"kind": "packages", "names": ["hello-pkg"], "replaces_build": "hello"}


def test_a_build_removes_the_packages_it_replaces_first(tmp_path):
    switch = Switch(tmp_path)
    switch.package("hello-pkg")
    assert switch.changes(BUILD_STEP) == [
        "remove packages hello-pkg 1.0-1: this build replaces them (their configuration, the data and the metadata stay)",
        "build and install hello 2.0"]
    run = switch.converge(BUILD_STEP)
    changes = [argv for argv in switch.runner.changes()]
    removal = [index for index, argv in enumerate(changes) if "remove" in argv]
    assert changes[removal[0]][-2:] == ["-y", "hello-pkg"] and removal[0] < changes.index(["./configure", "--prefix=/usr"])
    assert switch.read("/usr/sbin/hello") == "built" and switch.read("/var/lib/dpkg/info/hello-pkg.list") is None
    assert sorted(run.state.build("hello")["files"]) == ["/usr/sbin/hello", "/usr/share/hello/readme"]
    assert switch.changes(BUILD_STEP) == []


def test_a_build_never_overwrites_a_file_another_package_owns(tmp_path):
    switch = Switch(tmp_path)
    switch.package("other")
    with pytest.raises(stackboot.StackbootError) as caught:
        switch.converge(BUILD_STEP)
    assert "hello would overwrite /usr/sbin/hello, which package other owns (1 files in all); nothing was installed" in str(caught.value)
    assert switch.read("/usr/sbin/hello") == "another's" and switch.read("/usr/share/hello/readme") is None


def test_packages_take_the_place_of_a_build(tmp_path):
    switch = Switch(tmp_path)
    switch.converge(BUILD_STEP)
    assert switch.changes(PACKAGES_STEP) == [
        "remove the 2 files build hello 2.0 installed: these packages replace it (the configuration and the data stay)",
        "install hello-pkg"]
    run = switch.converge(PACKAGES_STEP)
    assert run.state.build("hello") is None
    assert switch.read("/usr/sbin/hello") == "packaged" and switch.read("/usr/share/hello/readme") is None
    assert switch.changes(PACKAGES_STEP) == []


def test_packages_an_old_build_overwrote_are_reinstalled(tmp_path):
    switch = Switch(tmp_path)
    switch.package("hello-pkg")
    run, _ = switch.engine(PACKAGES_STEP)   # what an older stackboot left: a build over the package's files
    with run.host.changes_allowed():
        for path in ("/usr/sbin/hello", "/usr/share/hello/readme"):
            run.host.write_file(path, b"built")
        run.state.record_build("hello", "inputs", "2.0", ["/usr/sbin/hello", "/usr/share/hello/readme"])
        run.state.save()
    assert switch.changes(PACKAGES_STEP) == [
        "remove the 2 files build hello 2.0 installed: these packages replace it (the configuration and the data stay)",
        "reinstall hello-pkg: the build overwrote their files"]
    switch.converge(PACKAGES_STEP)
    assert switch.read("/usr/sbin/hello") == "packaged" and switch.read("/usr/share/hello/readme") is None
    assert ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "install", "--reinstall", "-y", "--no-install-recommends",
            "hello-pkg"] in switch.runner.changes()
    assert switch.changes(PACKAGES_STEP) == []


def test_removing_a_build_leaves_what_a_package_owns(tmp_path):
    switch = Switch(tmp_path)
    switch.converge(dict(BUILD_STEP, replaces=[]))
    switch.package("other")   # installed over the build afterwards, by hand
    switch.converge(dict(BUILD_STEP, replaces=[]), goal="absent")
    assert switch.read("/usr/sbin/hello") == "another's" and switch.read("/usr/share/hello/readme") is None


def test_one_build_serving_two_roles_goes_for_both_or_stays(tmp_path):
    """Roles a and b share one build (as master and cli share MooseFS's): switching b alone to
    packages would take the build's files from under a; refused, with the way that works."""
    switch = Switch(tmp_path)
    switch.tools.package_files["hello-a"] = {"/usr/sbin/hello": "packaged"}
    method = {"method": {"type": "string", "default": "source", "choices": ["source", "packages"]}}

    def role(name):
        return {"description": name, "parameters": method, "steps": [
            dict(BUILD_STEP, id="hello-build", replaces=[], configure=["--enable-" + name], when={"method": "source"}),
            {"kind": "packages", "names": ["hello-" + name], "replaces_build": "hello", "when": {"method": "packages"}}]}
    library = library_of(a=role("a"), b=role("b"))

    def assess(roles, *sets):
        run = stackboot.Run(stackboot.Host(str(switch.root), switch.runner, DEBIAN), DEBIAN, stackboot.Output(io.StringIO()))
        plan = plan_of(library, roles, DEBIAN, sets)
        return run, plan, [change.symbol + " " + change.summary for _, _, changes in stackboot.assess(run, [plan]) for change in changes]

    run, plan, _ = assess(["a", "b"])
    stackboot.converge(run, [plan])
    assert run.state.build("hello")["roles"] == ["a", "b"]
    assert [argv for argv in switch.runner.changes() if argv[0] == "./configure"] == [["./configure", "--enable-a", "--enable-b"]]
    _, _, alone = assess(["b"], "method=packages")
    assert alone == ["! build hello also serves a, which this run leaves on it (the packages would take its place under a "
                     "too): switch them in one run (stackboot install a b with the same --set), or keep b built"]
    run, plan, together = assess(["a", "b"], "method=packages")
    assert together[0].startswith("- remove the 2 files build hello 2.0 installed")
    stackboot.converge(run, [plan])
    assert run.state.build("hello") is None and switch.read("/usr/sbin/hello") == "packaged"
