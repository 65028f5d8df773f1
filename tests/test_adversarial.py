"""Bad input is harmless, proven by a generated adversarial suite (tables x generators).

Every case runs stackboot's main() in this process against a fake Debian 12 root and asserts
what SPEC.md's safety invariant 6 promises: the exit code (64 for the user's mistakes, 1 for a
damaged file of stackboot's own), exactly one `error:` line naming what and where, no
traceback, the root's tree byte-identical (paths, modes, contents), and no secret value in the
output or anywhere on disk. A value a serious tool should take is taken, and what the plan
would write from it is still well formed: as many lines as with a plain value, every settings
line one KEY = VALUE, every fstab line six fields, every mfsexports.cfg line two or three.
A sample of the cases also runs through a real `python3 stackboot.py` process.
"""

import collections
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

import stackboot
from conftest import TOP, FakeTools, RecordingRunner, run_main, write_profile
from test_one_plan import ROLE_SETS, fixture_root

UNAME = ("Linux", "x86_64")
SECRET = "S3cr3t-Adversary-9f27"   # a value no message may ever show

# -- payloads ---------------------------------------------------------------------------------

INJECTIONS = collections.OrderedDict([
    ("newline", "a\nb"), ("trailing-newline", "ok\n"), ("carriage-return", "a\rb"), ("semicolon", "a;reboot"),
    ("subshell", "$(reboot)"), ("backticks", "`reboot`"), ("comment", "a #b"), ("equals", "a=b"),
    ("double-quote", 'a"b'), ("single-quote", "a'b"), ("brackets", "[a]"), ("braces", "{a}"), ("dotdot", "../../tmp/x"),
    ("space", "a b"), ("nul", "a\x00b"), ("bell", "a\x07b"), ("non-ascii", "\u00fcber"), ("bidi", "a\u202eb"),
    ("option", "-rf"), ("empty", ""), ("long", "x" * 5000), ("surrogate", "a\udcffb"), ("percent", "/x/%h"),
    ("unicode-space", "/x/a\u00a0b"),
])
# Values each type must refuse, beyond the injections.
TYPED_INVALID = {
    "int": ["-1x", "1e3", "0x10", " ", "9" * 40 + "z", "1.5"],
    "port": ["0", "65536", "-1", "http"],
    "bool": ["maybe", "2", "yess"],
    "size": ["10 GB", "-1G", "1.5.5G", "GiB"],
    "sha256": ["xyz", "a" * 63, "a" * 65, "g" * 64],
    "url": ["ftp://example.org/x", "http://a b", "example.org/x", "javascript:alert(1)"],
    "host": ["a..b", "-x", "a_b", "x" * 300],
    "labels": ["AB", "A;B", "1", "A,,B,ab"],
    "hdd": ["relative/path", "/a b c", "*/x -10% extra", "/x\n/y"],
    "fqrn": ["nodot", ".leading.dot", "a" * 70 + ".org"],
    "cvmfs_repository": ["sw.example.org", "sw.example.org nosha", "sw.example.org relative/key.pub"],
    "export": ["alldirs", "* / rw alldirs", "* /../x rw", "300.1.1.1 / rw", "* / rw,bogus", "10.0.0.0/33 / ro",
               '["* / rw", "broken"]'],
    "settings": ["A=1\nB=2", "a-b=1", "X=$(reboot)", "noequals", '{"A": "\\n"}', '{"A": [1, {"B": 2}]}',
                 '{"A": {"B": {"C": "x"}}}', '{"A": NaN}', '{"A": 1e400}'],
    "mode": ["999", "0o644", "rwx", "8644"],
    "path": ["relative", "/a/../b", "/a b", "~/x"],
    "name": ["../x", "a/b", "-x", ".."],
    "word": ["-o", "a b", "a#b"],
    "list": ['["a\\nb"]', "[", '{"a": 1}', '[["nested"]]'],
}
# Values a serious tool takes.
VALID = {
    "master_host": ["10.0.0.1", "mfsmaster.example.org", "fd00::1"], "labels": ["A", "a,b", "M,B,C"],
    "exports": ["10.0.0.0/8 / ro", '["* / rw,alldirs,maproot=0:0", "192.168.1.1-192.168.1.9 . rw"]', '["* /data rw,password=x"]'],
    "disks": ["/srv/a", "/srv/a 10GiB,*/srv/b", "/srv/c -10%"], "mount_options": ["mfsdelayedinit,noatime"],
    "store_label": ["My Store"], "master_packages": ["moosefs-master=3.0.117-1"], "chunkserver_extra": ["HDD_TEST_FREQ=10"],
    "client_port": ["9421", "65535"], "method": ["packages"], "prefix": ["/opt/mfs"],
}


def role_of():
    """parameter -> (the role to plan, its declaration): the role that declares it, or one that needs it."""
    library = stackboot.load_library([], stackboot.Host("/"))
    found = {}
    for name in sorted(library.profiles):
        for param, decl in library.profiles[name].parameters.items():
            found.setdefault(param, (name, decl))
    stand_in = {"moosefs-common": "master", "cvmfs-common": "cvmfs-client"}
    return dict((param, (stand_in.get(role, role), decl)) for param, (role, decl) in found.items())


# The settings that make a parameter matter (an S3 key only with the S3 backend...).
CONTEXT = {
    "cvmfs-server": {"s3_": ["backend=s3", "s3_host=s3.example.org", "s3_bucket=bucket1", "s3_access_key=AKIA1",
                             "s3_secret_key=" + SECRET]},
    "chunkserver": {"disk_dataset_root": ["disk_store=zfs-dataset"]},
    "master": {"git_": ["method=git", "git_commit=0123abc"], "repo_": ["method=packages", "moosefs_repository=true",
                                                                     "repo_key_sha256=" + "b" * 64]},
    "btrfs-store": {"store_device": ["store_target=device"]},
}


def sets_for(role, param):
    sets = list(ROLE_SETS.get(role, []))
    for prefix, extra in CONTEXT.get(role, {}).items():
        if param.startswith(prefix):
            sets = [item for item in sets if item.split("=")[0] not in [e.split("=")[0] for e in extra]] + extra
    return [item for item in sets if item.split("=")[0] != param]


def parameter_cases():
    cases = []
    for param, (role, decl) in sorted(role_of().items()):
        kind = decl.get("type", "string")
        payloads = list(INJECTIONS.items())
        for key in (kind, decl.get("items")):
            payloads += [("%s-invalid-%d" % (key, index), value) for index, value in enumerate(TYPED_INVALID.get(key, []))]
        payloads += [("valid-%d" % index, value) for index, value in enumerate(VALID.get(param, []))]
        for label, value in payloads:
            expect = "accept" if label.startswith("valid") else "either"
            cases.append(("parameter", "%s-%s" % (param, label), {"role": role, "param": param, "value": value, "kind": kind,
                                                                  "sets": sets_for(role, param), "expect": expect,
                                                                  "secret": bool(decl.get("secret"))}))
    return cases


# -- files a user hands over ----------------------------------------------------------------------

def deep(levels):
    return "[" * levels + "]" * levels


BAD_JSON = collections.OrderedDict([
    ("syntax", b'{"parameters": {'), ("utf16", '{"parameters": {}}'.encode("utf-16")), ("binary", b"\x89PNG\r\n\x1a\n\x00\x01"),
    ("latin1", '{"parameters": {"x": "\xe9"}}'.encode("latin-1")), ("deep", ('{"parameters": {"a": %s}}' % deep(5000)).encode()),
    ("deep-ok-json-too-deep", ('{"parameters": {"a": %s}}' % deep(40)).encode()), ("empty", b""), ("null", b"null"),
    ("list", b"[]"), ("string", b'"x"'), ("duplicate", b'{"parameters": {"method": "source", "method": "git"}}'),
])
SITE_SHAPES = collections.OrderedDict([
    ("parameters-list", {"parameters": []}), ("unknown-top", {"params": {}}), ("unknown-param", {"parameters": {"nosuch": 1}}),
    ("typo", {"parameters": {"mastr_host": "x"}}), ("wrong-type", {"parameters": {"client_port": [1]}}),
    ("injected", {"parameters": {"master_host": "a\nb"}}), ("secret-as-list", {"parameters": {"s3_secret_key": [SECRET]}}),
    ("secret-bad", {"parameters": {"s3_secret_key": SECRET + "\n"}}),
])


def site_cases():
    cases = [("site", "json-" + label, {"site": data}) for label, data in BAD_JSON.items()]
    cases += [("site", "shape-" + label, {"site": json.dumps(data).encode()}) for label, data in SITE_SHAPES.items()]
    return cases


GOOD_PROFILE = {"description": "x", "parameters": {"p": {"type": "string", "default": "v"}},
                "steps": [{"kind": "directory", "path": "/srv/{{p}}"}]}
# (where in the profile, what to put there): every key, given JSON of the wrong kind.
WRONG_VALUES = [[], {}, 5, "x", None, True, 1.5, "a\nb"]
PROFILE_KEYS = ["description", "requires", "parameters", "overlays", "steps", "platforms", "platforms_why", "refused_on", "recover",
                "summary", "status"]
PARAM_KEYS = ["type", "default", "help", "choices", "pattern", "secret", "items", "min", "max", "allow", "lookup"]
STEP_KEYS = ["kind", "id", "when", "comment", "for_each", "as", "needs", "data", "path", "owner", "mode", "prune"]


def profile_with(where, key, value):
    data = json.loads(json.dumps(GOOD_PROFILE))
    target = {"top": data, "param": data["parameters"]["p"], "step": data["steps"][0]}[where]
    target[key] = value
    return data


def profile_cases():
    cases = []
    for where, keys in (("top", PROFILE_KEYS), ("param", PARAM_KEYS), ("step", STEP_KEYS)):
        for key in keys:
            for index, value in enumerate(WRONG_VALUES):
                data = profile_with(where, key, value)
                try:   # the few that are right are not this table's business
                    stackboot.validate_profile("probe", data)
                    continue
                except stackboot.BadInput:
                    pass
                cases.append(("profile", "%s-%s-%d" % (where, key, index), {"profile": json.dumps(data).encode()}))
    cases += [("profile", "json-" + label, {"profile": data}) for label, data in BAD_JSON.items()
              if label not in ("null", "list", "string", "empty")]
    cases += [("profile", "unreadable-" + label, {"profile": label}) for label in ("directory", "symlink-loop")]
    for kind in sorted(stackboot.STEP_KINDS):   # every field of every kind, given JSON of the wrong kind
        for key in sorted(stackboot.STEP_KINDS[kind].schema):
            for index, value in enumerate([[1], {"a": {}}, 3.5]):
                step = {"kind": kind, key: value}
                data = dict(GOOD_PROFILE, steps=[step])
                try:
                    stackboot.validate_profile("probe", data)
                    continue
                except stackboot.BadInput:
                    pass
                cases.append(("profile", "field-%s-%s-%d" % (kind, key, index), {"profile": json.dumps(data).encode()}))
    return cases


def cluster_cases():
    node = {"address": "10.0.0.1", "roles": ["chunkserver"]}
    variants = collections.OrderedDict([
        ("nodes-list", {"nodes": []}), ("node-name", {"nodes": {"Bad_Name": node}}),
        ("address-newline", {"nodes": {"cs1": dict(node, address="10.0.0.1\n")}}),
        ("address-type", {"nodes": {"cs1": dict(node, address=10)}}), ("roles-string", {"nodes": {"cs1": dict(node, roles="chunkserver")}}),
        ("role-unknown", {"nodes": {"cs1": dict(node, roles=["nosuch"])}}), ("parameters-list", {"nodes": {"cs1": dict(node, parameters=[])}}),
        ("param-injection", {"nodes": {"cs1": dict(node, parameters={"labels": "M\nB"})}}),
        ("param-unknown", {"nodes": {"cs1": dict(node, parameters={"nosuch": 1})}}),
        ("top-typo", {"parameters": {"mastr_host": "x"}, "nodes": {"cs1": node}}), ("subnet-type", {"subnet": [], "nodes": {"cs1": node}}),
        ("description-newline", {"description": "a\nb", "nodes": {"cs1": node}}),
        ("exports-split", {"nodes": {"m": {"address": "10.0.0.2", "roles": ["master"], "parameters": {"exports": "* / rw,alldirs"}}}}),
    ])
    cases = [("cluster", label, {"cluster": json.dumps(data).encode()}) for label, data in variants.items()]
    cases.append(("cluster", "duplicate-node", {"cluster": b'{"nodes": {"cs1": {"address": "10.0.0.1", "roles": ["chunkserver"]},'
                                                          b' "cs1": {"address": "10.0.0.2", "roles": ["chunkserver"]}}}'}))
    cases += [("cluster", "json-" + label, {"cluster": data}) for label, data in BAD_JSON.items()]
    return cases


STATE_SHAPES = collections.OrderedDict([
    ("list", []), ("string", "x"), ("roles-list", {"roles": []}), ("role-number", {"roles": {"master": 3}}),
    ("inputs-list", {"roles": {"master": {"inputs": []}}}), ("files-bad-sha", {"files": {"/etc/x": {"sha256": "zz"}}}),
    ("builds-files-string", {"builds": {"moosefs": {"inputs": "x", "version": "1", "files": "/usr/sbin/x"}}}),
    ("pending-number", {"pending": {"service:x": {"restart": 5}}}), ("version-string", {"version": "1"}),
])


def state_cases():
    cases = [("state", "json-" + label, {"state": data}) for label, data in BAD_JSON.items() if label != "empty"]
    cases += [("state", "shape-" + label, {"state": json.dumps(data).encode()}) for label, data in STATE_SHAPES.items()]
    cases.append(("state", "remembered-injection", {"state": json.dumps({"roles": {"master": {"inputs": {"master_host": "a\nb"}}}}).encode(),
                                                    "expect_code": 64}))
    return cases


def cli_cases():
    argvs = [
        ["plan"], ["plan", "nosuch"], ["deploy"], ["plan", "master", "--set", "master_host"], ["plan", "master", "--set", "=x"],
        ["plan", "master", "--set", "Master_Host=x"], ["plan", "master", "--bogus"], ["show"], ["install"], ["uninstall", "master"],
        ["recover", "client"], ["recover", "nosuch"], ["check"], ["cloud-init"], ["cloud-init", "master", "--from-url", "ftp://x/s.py",
                                                                                 "--sha256", "a" * 64],
        ["cloud-init", "master", "--from-url", "https://x/s.py", "--sha256", "zzz"], ["cloud-init", "master", "--sha256", "a" * 64],
        ["cloud-init", "--cluster", "seed"], ["cloud-init", "--cluster", "/no/such.json", "--out", "/tmp/nowhere-stackboot"],
        ["bundle", "master", "--with", "moosefs", "-o", "/tmp/nowhere-stackboot.pyz"],
        ["bundle", "master", "--set", "source_sha256=zz", "-o", "/tmp/nowhere-stackboot.pyz"],
        ["cvmfs", "publish", "not a name", "/tmp"], ["cvmfs", "publish", "sw.example.org", "/no/such/dir"],
        ["cvmfs", "publish", "sw.example.org", "/tmp", "--tag", "a;b"], ["cvmfs", "publish", "sw.example.org", "/tmp"],
        ["--root", "", "list"], ["--root", "/no/such/root", "list"], ["--profiles", "/no/such/dir", "list"],
        ["--site", "/no/such/site.json", "show", "master"], ["lab", "up", "/no/such/cluster.json"], ["lab", "fly"],
        ["plan", "btrfs-store", "--set", "store_target=device"], ["plan", "chunkserver", "--set", "disk_store=zfs-dataset"],
        ["plan", "master", "--set", "method=git"], ["plan", "cvmfs-server", "--set", "repositories=a.b", "--set", "backend=s3",
                                                    "--set", "cvmfs_release=false"],
        ["plan", "zfs-store"], ["plan", "cvmfs-client", "--set", "cvmfs_release=false"],
        ["plan", "master", "--set", "exports=* / rw,alldirs"],
    ]
    return [("cli", "%d-%s" % (index, "-".join(argv)[:40]), {"argv": argv}) for index, argv in enumerate(argvs)]


def environment_cases():
    params = ["master_host", "master_service", "data_path", "labels", "client_port", "mount_options", "exports", "repo_suite",
              "s3_secret_key", "store_options"]
    roles = role_of()
    return [("environment", "%s-%s" % (param, label), {"env": {"STACKBOOT_" + param.upper(): value}, "role": roles[param][0],
                                                      "sets": sets_for(roles[param][0], param), "secret": param == "s3_secret_key"})
            for param in params for label, value in INJECTIONS.items() if "\x00" not in value]


LAB_RECORD = {"name": "lt", "origin": "lt.json", "status": "up", "network": "10.250.0.0/24", "host_address": "10.250.0.1",
              "cluster": {"nodes": {"cs1": {"address": "10.250.0.10", "roles": ["chunkserver"]}}}}


def lab_cases():
    variants = collections.OrderedDict([
        ("truncated", json.dumps(LAB_RECORD)[:-20].encode()), ("list", b"[]"), ("no-status", json.dumps(dict(LAB_RECORD, status=None)).encode()),
        ("status-other", json.dumps(dict(LAB_RECORD, status="sideways")).encode()), ("name-bad", json.dumps(dict(LAB_RECORD, name="../x")).encode()),
        ("cluster-list", json.dumps(dict(LAB_RECORD, cluster=[])).encode()),
        ("address-newline", json.dumps(dict(LAB_RECORD, cluster={"nodes": {"cs1": {"address": "10.250.0.10\n", "roles": ["chunkserver"]}}})).encode()),
        ("extra-key", json.dumps(dict(LAB_RECORD, extra=1)).encode()),
    ])
    cases = [("lab", label, {"lab": data}) for label, data in variants.items()]
    return cases + [("lab", "json-" + label, {"lab": data}) for label, data in BAD_JSON.items() if label not in ("empty",)]


CASES = parameter_cases() + site_cases() + profile_cases() + cluster_cases() + state_cases() + cli_cases() + environment_cases() + \
    lab_cases()


def test_the_suite_is_as_large_as_promised():
    counts = collections.Counter(category for category, _, _ in CASES)
    assert sum(counts.values()) >= 1000, counts
    assert set(counts) == {"parameter", "site", "profile", "cluster", "state", "cli", "environment", "lab"}


# -- running a case -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root, uname = fixture_root(tmp_path_factory.mktemp("adversary"), "debian-12")
    os.makedirs(os.path.join(root, "var/lib/apt/lists"))
    with open(os.path.join(root, "var/lib/apt/lists/deb_Packages"), "w"):
        pass
    return root


def snapshot(root):
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            with open(path, "rb") if os.path.isfile(path) and not os.path.islink(path) else io.BytesIO() as handle:
                found[path] = (st.st_mode, st.st_uid, handle.read())
    return found


PLAIN = {"path": "/plain/value", "host": "plainhost", "url": "http://plain.example.org/x", "port": "1234", "int": "3",
         "size": "1GiB", "bool": "true", "sha256": "c" * 64, "fqrn": "plain.example.org", "labels": "A", "mode": "0644"}


def well_formed(root, role, base_sets, sets, param, kind):
    """What a plan of these inputs would write, line by line, against the plan with a plain value
    of the same parameter: one value is one value, it never adds a line."""
    host = stackboot.Host(root)
    facts = stackboot.detect_facts(host, UNAME)
    library = stackboot.load_library([], host)

    def files(items):
        plan = stackboot.make_plan(library, [role], facts, stackboot.Inputs().add("--set", stackboot.parse_sets(items), "strict"))
        found = {}
        for step in plan.steps:
            if isinstance(step, stackboot.FileStep) and not step.args.get("source"):
                found[step.args["path"]] = (step, step.text())
            elif isinstance(step, (stackboot.MountStep, stackboot.BtrfsFilesystemStep)):
                found["fstab " + step.args["path"]] = (step, step.mount.fstab_line() + "\n")
        return found
    try:
        base = files(base_sets + ["%s=%s" % (param, PLAIN.get(kind, "plainvalue"))])
    except stackboot.BadInput:   # no plain value fits (a choice): nothing to hold it against
        base = {}
    scalar = kind not in ("list", "settings")
    for path, (step, text) in files(sets).items():
        assert not any(ord(ch) < 32 and ch not in "\n\t" for ch in text), (path, text)
        if path.startswith("fstab "):
            assert len(text.split()) == 6, text
            continue
        if path in base and scalar:   # one value is one value: it never adds a line
            assert text.count("\n") == base[path][1].count("\n"), (path, text)
        if step.args.get("settings") is not None:
            separator = step.args.get("separator", " = ")
            for line in text.splitlines()[1 if step.args.get("header") else 0:]:
                key, sep, value = line.partition(separator)
                assert sep and key.strip() and "\n" not in value, (path, line)
        if path.endswith("mfsexports.cfg"):
            for line in text.splitlines()[1:]:
                assert 2 <= len(line.split()) <= 3, line


def prepare(case, host, tmp_path):
    """The files a case hands over; returns (argv, env)."""
    category, label, spec = case
    profiles = str(tmp_path / "profiles")
    os.makedirs(profiles)
    argv = ["--root", host, "--profiles", profiles]
    if category == "parameter":
        argv += ["plan", spec["role"]] + [x for item in spec["sets"] + ["%s=%s" % (spec["param"], spec["value"])] for x in ("--set", item)]
    elif category == "environment":
        argv += ["plan", spec["role"]] + [x for item in spec["sets"] for x in ("--set", item)]
    elif category == "site":
        path = str(tmp_path / "site.json")
        with open(path, "wb") as handle:
            handle.write(spec["site"])
        argv += ["--site", path, "show", "cvmfs-server"]
    elif category == "profile":
        path = os.path.join(profiles, "evil.json")
        if spec["profile"] == "directory":
            os.makedirs(path)
        elif spec["profile"] == "symlink-loop":
            os.symlink(path, path)
        else:
            with open(path, "wb") as handle:
                handle.write(spec["profile"])
        argv += ["plan", "evil"]
    elif category == "cluster":
        path = str(tmp_path / "cluster.json")
        with open(path, "wb") as handle:
            handle.write(spec["cluster"])
        argv += ["cloud-init", "--cluster", path, "--out", str(tmp_path / "out")]
    elif category == "state":
        argv += ["plan", "master"]
    elif category == "lab":   # a lab works on this host itself, never under --root
        labdir = str(tmp_path / "lt")
        os.makedirs(labdir)
        with open(os.path.join(labdir, "lab.json"), "wb") as handle:
            handle.write(spec["lab"])
        argv = ["--profiles", profiles, "lab", "status", "--dir", labdir]
    elif category == "cli":
        argv = [item.replace("{root}", host) for item in spec["argv"]]
        argv = (["--root", host] if "--root" not in argv else []) + argv
    return argv, spec.get("env", {})


@pytest.mark.parametrize("case", CASES, ids=["%s:%s" % (case[0], case[1]) for case in CASES])
def test_bad_input_is_harmless(host, tmp_path, monkeypatch, case):
    category, label, spec = case
    if category == "lab" and (os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nsenter")):
        pytest.skip("lab needs root, ip and nsenter")
    state = os.path.join(host, "var/lib/stackboot/state.json")
    if category == "state":
        os.makedirs(os.path.dirname(state))
        with open(state, "wb") as handle:
            handle.write(spec["state"])
    try:
        argv, env = prepare(case, host, tmp_path)
        for key in [key for key in os.environ if key.startswith("STACKBOOT_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        before = snapshot(host)
        code, out, err = run_main(argv, RecordingRunner(host, FakeTools(host)), UNAME)
        after = snapshot(host)
    finally:
        if category == "state":
            shutil.rmtree(os.path.dirname(state))
    assert "Traceback" not in err, err
    assert after == before, "the root changed: %s" % sorted(set(after.items()) ^ set(before.items()))[:3]
    if category == "lab":
        assert os.listdir(str(tmp_path / "lt")) == ["lab.json"]
    assert not os.path.exists(str(tmp_path / "out")), "user-data written for a bad cluster"
    lines = err.splitlines()
    expect = spec.get("expect", "either")
    if code == 0 or (category == "cli" and code in (0, 2)):
        assert expect != "reject", out + err
        assert lines[-1].startswith("stackboot: done"), err
        if category in ("parameter", "environment") and code == 0:
            sets = spec["sets"] + (["%s=%s" % (spec["param"], spec["value"])] if category == "parameter" else [])
            if category == "parameter":
                well_formed(host, spec["role"], spec["sets"], sets, spec["param"], spec["kind"])
    else:
        assert expect != "accept", "refused a value a serious tool takes: " + err
        wanted = spec.get("expect_code", 1 if category in ("state", "lab") else 64)
        assert code == wanted, (code, err)
        assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1] == "stackboot: failed (exit %d)" % code, err
    if spec.get("secret") or SECRET in json.dumps(spec, default=str):
        assert SECRET not in out + err, "a secret was printed"


# -- the same through real processes, for a sample --------------------------------------------

SAMPLE = [case for index, case in enumerate(CASES) if index % 97 == 0 and case[0] in ("parameter", "cli", "site", "cluster")]


@pytest.mark.parametrize("case", SAMPLE, ids=["%s:%s" % (case[0], case[1]) for case in SAMPLE])
def test_a_sample_through_a_real_process(host, tmp_path, case):
    argv, env = prepare(case, host, tmp_path)
    if any("\x00" in item for item in argv):
        pytest.skip("a command line cannot carry NUL")
    before = snapshot(host)
    result = subprocess.run([sys.executable, os.path.join(TOP, "stackboot.py")] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            env=dict({"PATH": os.environ["PATH"]}, **env))
    assert snapshot(host) == before
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2, 64), result.stderr
    if result.returncode == 64:
        assert len(result.stderr.splitlines()) == 2, result.stderr
    assert SECRET not in result.stdout + result.stderr


BUNDLE_MANIFESTS = collections.OrderedDict([
    ("truncated", b'{"stackboot": "0.2.0", "parameters": {'), ("list", b"[]"), ("parameters-list", b'{"parameters": []}'),
    ("artifacts-number", b'{"artifacts": {"abc": 5}}'), ("binary", b"\xff\xfe\x00"), ("duplicate", b'{"parameters": {}, "parameters": {}}'),
    ("bad-value", b'{"parameters": {"master_host": "a\\nb"}}'),
])


@pytest.mark.parametrize("label", sorted(BUNDLE_MANIFESTS))
def test_a_damaged_bundle_says_so_in_one_line(tmp_path, label):
    with open(os.path.join(TOP, "stackboot.py"), "rb") as handle:
        source = handle.read()
    bundle = str(tmp_path / "b.pyz")
    stackboot.write_zipapp(bundle, source, [("bundle.json", BUNDLE_MANIFESTS[label])])
    result = subprocess.run([sys.executable, bundle, "--root", str(tmp_path), "show", "master"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert result.returncode == (64 if label == "bad-value" else 1) and len(lines) == 2, result.stderr
    assert ("bundle" in lines[0] or "parameter master_host (from bundle)" in lines[0]), lines[0]


# -- what the first adversary found, each kept as a case --------------------------------------

def fifo(path):
    os.mkfifo(path)
    return path


REGRESSIONS = [
    # (label, argv after --root ROOT, setup(tmp) -> extra argv, expected code, a piece of the error line)
    ("surrogate-in-settings", ["plan", "master", "--set", "master_extra=A=\udcff"], None, 64, "master_extra"),
    ("surrogate-in-label", ["plan", "btrfs-store", "--set", "store_label=a\udcff"], None, 64, "store_label"),
    ("key-file-not-a-key", ["plan", "cvmfs-client", "--set", "http_proxy=DIRECT", "--set", "cvmfs_release=false",
                            "--set", "client_repositories=sw.example.org /etc/shadow"], None, 64, "NAME.pub"),
    ("extra-repeats-a-setting", ["plan", "master", "--set", "master_extra=DATA_PATH=/tmp"], None, 64, "DATA_PATH is set twice"),
    ("systemd-specifier", ["plan", "master", "--set", "prefix=/opt/%h"], None, 64, "prefix"),
    ("same-directory-twice", ["plan", "master", "--set", "data_path=/etc/mfs"], None, 64, "give data_path a value of its own"),
    ("with-is-its-own-source", ["bundle", "master", "--with", "moosefs=x;y", "-o", "/tmp/stackboot-nowhere.pyz"], None, 64,
     "(from --with)"),
    ("bundle-output-empty", ["bundle", "master", "-o", ""], None, 64, "-o"),
    ("bundle-output-directory", ["bundle", "master", "-o", "/tmp"], None, 64, "-o"),
    ("colons-host", ["plan", "client", "--set", "master_host=" + ":" * 120000], None, 64, "master_host"),
    ("site-is-a-fifo", ["show", "master"], lambda tmp: ["--site", fifo(str(tmp / "site.fifo"))], 64, "not a plain file"),
    ("cluster-is-a-fifo", ["cloud-init"], lambda tmp: ["--cluster", fifo(str(tmp / "c.fifo")), "--out", str(tmp / "out")], 64,
     "not a plain file"),
    ("cloud-init-out-is-a-file", ["cloud-init", "--cluster", "seed"], lambda tmp: ["--out", os.path.join(TOP, "README.md")], 64,
     "--out"),
]


@pytest.mark.parametrize("label,argv,setup,code,piece", REGRESSIONS, ids=[case[0] for case in REGRESSIONS])
def test_what_the_first_adversary_found(host, tmp_path, label, argv, setup, code, piece):
    extra = setup(tmp_path) if setup else []
    before = snapshot(host)
    got, out, err = run_main(["--root", host] + argv + extra, RecordingRunner(host, FakeTools(host)), UNAME)
    assert snapshot(host) == before and "Traceback" not in err
    lines = err.splitlines()
    assert got == code and len(lines) == 2 and piece in lines[0], err


PROFILE_TRAPS = collections.OrderedDict([
    ("when-os-number", {"kind": "directory", "path": "/srv/x", "when": {"os": 5}}),
    ("argv-of-a-number", {"kind": "command", "argv": ["echo", "{{n}}"], "creates": "/x"}),
    ("template-text-number", {"kind": "file", "path": "/etc/x", "template": ["a", {"text": 5}]}),
    ("header-text-number", {"kind": "file", "path": "/etc/x", "content": "x", "header": [{"text": 1}]}),
    ("env-nul", {"kind": "command", "argv": ["true"], "creates": "/x", "env": {"A": "a\u0000b"}}),
    ("env-name", {"kind": "command", "argv": ["true"], "creates": "/x", "env": {"A=B": "x"}}),
])


@pytest.mark.parametrize("label", sorted(PROFILE_TRAPS))
def test_a_user_profile_cannot_crash_it(host, tmp_path, label):
    profiles = str(tmp_path / "profiles")
    write_profile(profiles, "trap", {"description": "x", "parameters": {"n": {"type": "int", "default": 3}},
                                     "steps": [PROFILE_TRAPS[label]]})
    before = snapshot(host)
    code, out, err = run_main(["--root", host, "--profiles", profiles, "plan", "trap"], RecordingRunner(host, FakeTools(host)), UNAME)
    assert snapshot(host) == before and "Traceback" not in err
    assert code == 64 and len(err.splitlines()) == 2, err


@pytest.mark.parametrize("name", ["--offline", "x\nbootcmd", "Upper"])
def test_a_profile_file_name_is_a_role_name(host, tmp_path, name):
    profiles = str(tmp_path / "profiles")
    write_profile(profiles, name, GOOD_PROFILE)
    code, out, err = run_main(["--root", host, "--profiles", profiles, "list"], RecordingRunner(host, FakeTools(host)), UNAME)
    assert code == 64 and "a profile's file name is its role's name" in err and len(err.splitlines()) == 2


@pytest.mark.parametrize("values,shown", [
    (["disks=/etc"], "! directory /etc: refusing to change or remove /etc"),
    (["data_path=/"], "! directory /: refusing"),
    (["working_user=root"], "! user root: root is the superuser (uid 0)"),
])
def test_what_the_system_owns_is_refused_in_the_plan(host, values, shown):
    sets = [item for value in values for item in ("--set", value)]
    code, out, err = run_main(["--root", host, "plan", "chunkserver"] + sets, RecordingRunner(host, FakeTools(host)), UNAME)
    assert code == 0 and shown in out, out + err


def test_the_lock_and_the_log_never_follow_a_link_out_of_the_root(tmp_path):
    root, uname = fixture_root(tmp_path, "debian-12")
    outside = tmp_path / "outside"
    outside.write_text("IMPORTANT\n")
    os.makedirs(os.path.join(root, "var/lib/stackboot"))
    with open(os.path.join(root, "var/lib/stackboot/state.json"), "w") as handle:
        json.dump({"roles": {"cli": {"inputs": {}}}}, handle)
    for link in ("var/lib/stackboot/lock", "var/log/stackboot.log"):
        os.makedirs(os.path.dirname(os.path.join(root, link)), exist_ok=True)
        os.symlink(str(outside), os.path.join(root, link))
        code, out, err = run_main(["--root", root, "uninstall", "cli"], RecordingRunner(root, FakeTools(root)), uname)
        assert code == 1 and "symbolic link" in err.splitlines()[0], err
        assert outside.read_text() == "IMPORTANT\n"
        os.unlink(os.path.join(root, link))


def test_with_stdout_closed_it_still_ends_in_one_line(host):
    result = subprocess.run([sys.executable, os.path.join(TOP, "stackboot.py"), "--root", host, "facts", "--json"],
                            stdout=None, stderr=subprocess.PIPE, universal_newlines=True, close_fds=True,
                            preexec_fn=lambda: os.close(1))
    assert "Traceback" not in result.stderr and result.stderr.splitlines()[-1].startswith("stackboot: ")
