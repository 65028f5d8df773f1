"""Bad input: one clear error line, the bad-input exit code, no traceback, nothing changed."""

import json
import os

import pytest

import stackboot
from conftest import write_profile

GOOD = {
    "description": "demo role",
    "parameters": {
        "port": {"type": "port", "default": 9421, "help": "a port"},
        "host": {"type": "host", "default": "mfsmaster"},
        "label_set": {"type": "labels", "default": []},
        "size": {"type": "size", "default": "10GiB"},
        "where": {"type": "path", "default": "/srv/demo"},
        "name": {"type": "string", "default": "demo"},
        "mode_choice": {"type": "string", "default": "packages", "choices": ["packages", "source"]},
        "count": {"type": "int", "default": 1, "min": 1, "max": 8},
    },
    "steps": [{"kind": "directory", "path": "{{where}}"}],
}


def bad_profile(**changes):
    data = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        data[key] = value
    return data


def step(**fields):
    return bad_profile(steps=[fields])


# (case id, profile data or raw text, argv after the global options, expected error line)
CASES = [
    ("json-syntax", '{"description": "x",\n  "steps": [}\n', ["plan", "demo"],
     "error: {P}: line 2 column 13: invalid JSON: Expecting value; fix the profile and run again"),
    ("unknown-top-key", bad_profile(stpes=[]), ["plan", "demo"],
     "error: {P}: $.stpes: unknown key (known: aliases, description, overlays, parameters, platforms, platforms_why, recover, refused_on, requires, status, steps, summary); fix the profile and run again"),
    ("description-type", bad_profile(description=5), ["list"],
     "error: {P}: $.description: expected text, got 5; fix the profile and run again"),
    ("unknown-kind", step(kind="mkfs", path="/x"), ["plan", "demo"],
     'error: {P}: $.steps[0].kind: unknown step kind "mkfs" (known: btrfs-filesystem, btrfs-subvolume, build, command, cvmfs-publish, cvmfs-repository, directory, dnf-repo, download, file, firewall, group, host-name, line, moosefs-metadata, moosefs-upgrade, mount, netns, ownership, packages, repository, require, selinux-context, service, user, veth, zfs-dataset, zfs-pool); fix the profile and run again'),
    ("unknown-step-key", step(kind="directory", path="/x", owmer="mfs"), ["plan", "demo"],
     "error: {P}: $.steps[0].owmer: unknown key for a directory step (known: as, comment, data, for_each, group, id, kind, mode, needs, owner, path, prune, when); fix the profile and run again"),
    ("mode-as-number", step(kind="directory", path="/x", mode=644), ["plan", "demo"],
     'error: {P}: $.steps[0].mode: expected an octal mode like "0644", got 644; fix the profile and run again'),
    ("missing-required", step(kind="file", content="x"), ["plan", "demo"],
     'error: {P}: $.steps[0]: a file step needs "path"; fix the profile and run again'),
    ("unknown-reference", step(kind="directory", path="{{nope}}"), ["plan", "demo"],
     "error: {P}: $.steps: unknown parameter {{nope}}; fix the profile and run again"),
    ("unknown-param-type", bad_profile(parameters={"x": {"type": "float"}}), ["list"],
     'error: {P}: $.parameters.x.type: unknown type "float" (known: argv, bool, cvmfs_repository, environment, export, fqrn, hdd, host, int, labels, lines, list, mode, name, object, package, path, port, ports, regex, settings, sha256, size, string, text, url, word); fix the profile and run again'),
    ("bad-default", bad_profile(parameters={"p": {"type": "port", "default": 70000}}), ["list"],
     "error: {P}: $.parameters.p.default: parameter p: must be between 1 and 65535; fix the profile and run again"),
    ("param-name", bad_profile(parameters={"MasterHost": {"type": "host"}}), ["list"],
     "error: {P}: $.parameters.MasterHost: parameter names are lower_case_words; fix the profile and run again"),
    ("param-unknown-key", bad_profile(parameters={"p": {"type": "port", "defualt": 1}}), ["list"],
     "error: {P}: $.parameters.p.defualt: unknown key (known: allow, choices, default, from_packages, help, items, lookup, max, min, pattern, secret, type); fix the profile and run again"),
    ("requires-unknown", bad_profile(requires=["nosuch"]), ["plan", "demo"],
     'error: {P}: $.requires: unknown profile "nosuch"; fix the profile and run again'),
    ("command-unguarded", step(kind="command", argv=["/bin/true"]), ["plan", "demo"],
     'error: {P}: $.steps[0]: a command step needs a guard: "creates", "unless" or "run_on"; fix the profile and run again'),
    ("file-two-bodies", step(kind="file", path="/x", content="a", settings={"A": 1}), ["plan", "demo"],
     "error: {P}: $.steps[0]: a file step needs exactly one of content, template, settings or source; fix the profile and run again"),
    ("secret-mode", step(kind="file", path="/x", content="a", secret=True, mode="0644"), ["plan", "demo"],
     'error: {P}: $.steps[0]: a secret file needs mode "0600" or "0400"; fix the profile and run again'),
    ("restart-on-unknown", step(kind="service", name="d", restart_on=["cfgg"]), ["plan", "demo"],
     'error: {P}: $.steps[0].restart_on: no step has the id "cfgg"; fix the profile and run again'),
    ("when-unknown", step(kind="directory", path="/x", when={"metod": "x"}), ["plan", "demo"],
     "error: {P}: $.steps[0].when.metod: unknown parameter; fix the profile and run again"),
    ("bad-pattern", bad_profile(parameters={"p": {"pattern": "([a-z"}}), ["list"],
     "error: {P}: $.parameters.p.pattern: bad regular expression: unterminated character set at position 1; fix the profile and run again"),
    ("unknown-role", GOOD, ["plan", "nosuch"],
     'error: unknown role "nosuch"; `stackboot list` shows the roles (known: btrfs-store, chunkserver, cli, client, cvmfs-client, cvmfs-common, cvmfs-publish, cvmfs-server, demo, gui, master, metalogger, moosefs-common, zfs-store)'),
    ("set-no-equals", GOOD, ["plan", "demo", "--set", "port"],
     'error: --set "port": expected NAME=VALUE'),
    ("set-unknown", GOOD, ["plan", "demo", "--set", "prot=1"],
     'error: --set: unknown parameter "prot" for demo; `stackboot show ROLE` lists the parameters'),
    ("set-other-role", GOOD, ["plan", "demo", "--set", "exports=* / rw"],
     'error: --set: unknown parameter "exports" for demo; it belongs to master'),
    ("int-type", GOOD, ["plan", "demo", "--set", "port=abc"],
     'error: parameter port (from --set): expected a whole number, got "abc"'),
    ("int-range", GOOD, ["plan", "demo", "--set", "count=9"],
     "error: parameter count (from --set): must be between 1 and 8"),
    ("shell-meta-host", GOOD, ["plan", "demo", "--set", "host=a;rm -rf /"],
     'error: parameter host (from --set): expected a host name or address, got "a;rm -rf /"'),
    ("newline", GOOD, ["plan", "demo", "--set", "name=a\nb"],
     "error: parameter name (from --set): must be one line without control characters"),
    ("config-comment", GOOD, ["plan", "demo", "--set", "name=a # b"],
     "error: parameter name (from --set): must not contain '#'"),
    ("shell-dollar", GOOD, ["plan", "demo", "--set", "name=$(reboot)"],
     "error: parameter name (from --set): must not contain '$' '(' ')'"),
    ("relative-path", GOOD, ["plan", "demo", "--set", "where=srv/x"],
     'error: parameter where (from --set): expected an absolute path without spaces, \'..\' or \'%\', got "srv/x"'),
    ("dotdot-path", GOOD, ["plan", "demo", "--set", "where=/srv/../etc"],
     'error: parameter where (from --set): expected an absolute path without spaces, \'..\' or \'%\', got "/srv/../etc"'),
    ("bad-size", GOOD, ["plan", "demo", "--set", "size=10 GB"],
     'error: parameter size (from --set): expected a size like 100GiB, 1.5TiB or 512M, got "10 GB"'),
    ("bad-labels", GOOD, ["plan", "demo", "--set", "label_set=AB,C"],
     'error: parameter label_set (from --set): labels are single letters A-Z, got "AB"'),
    ("value-unfit-for-its-step", step(kind="group", name="{{name}}"), ["plan", "demo", "--set", "name=../x"],
     'error: parameter name (from --set): expected a name (letters, digits and . _ - + : @, not a path), got "../x" '
     '(it is the name of a group step of demo); give name a value that fits'),
    ("choice", GOOD, ["plan", "demo", "--set", "mode_choice=git"],
     "error: parameter mode_choice (from --set): must be one of: packages, source"),
    ("unknown-command", GOOD, ["deploy", "demo"],
     "error: argument COMMAND: invalid choice: 'deploy' (choose from 'facts', 'list', 'show', 'plan', 'install', 'check', 'cvmfs', 'cloud-init', 'bundle', 'uninstall', 'recover', 'lab', 'self-install'); see `stackboot --help`"),
    ("no-command", GOOD, [], "error: no command given; see `stackboot --help`"),
    ("plan-no-role", GOOD, ["plan"],
     "error: the following arguments are required: ROLE; see `stackboot --help`"),
    ("check-nothing-installed", GOOD, ["check"],
     "error: nothing has been installed on this host yet; run `stackboot install ROLE` first"),
]


def snapshot(root):
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            found[path] = (st.st_mode, st.st_size, st.st_mtime)
    return found


@pytest.mark.parametrize("case,profile,argv,expected", CASES, ids=[case[0] for case in CASES])
def test_bad_input(tmp_path, capsys, case, profile, argv, expected):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    profiles = str(tmp_path / "profiles")
    path = write_profile(profiles, "demo", profile)
    before = snapshot(str(root))
    code = stackboot.main(["--root", str(root), "--profiles", profiles] + argv, uname=("Linux", "x86_64"))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == stackboot.EXIT_BAD_INPUT
    assert lines[0] == expected.replace("{P}", path)
    assert lines[1:] == ["stackboot: failed (exit 64)"]
    assert "Traceback" not in err
    assert snapshot(str(root)) == before


def test_environment_and_site_values_are_checked_too(tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    (root / "etc" / "stackboot").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\n")
    profiles = str(tmp_path / "profiles")
    write_profile(profiles, "demo", GOOD)
    monkeypatch.setenv("STACKBOOT_PORT", "0")
    argv = ["--root", str(root), "--profiles", profiles, "show", "demo"]
    assert stackboot.main(argv) == 64
    assert capsys.readouterr().err.splitlines()[0] == \
        "error: parameter port (from environment STACKBOOT_PORT): must be between 1 and 65535"
    monkeypatch.delenv("STACKBOOT_PORT")
    (root / "etc" / "stackboot" / "site.json").write_text('{"parameters": {"hots": "x"}}')
    assert stackboot.main(argv) == 64
    assert capsys.readouterr().err.splitlines()[0] == \
        'error: site file /etc/stackboot/site.json: unknown parameter "hots" for demo; `stackboot show ROLE` lists the parameters'
    (root / "etc" / "stackboot" / "site.json").write_text('{"parameters": ')
    assert stackboot.main(argv) == 64
    assert capsys.readouterr().err.splitlines()[0].startswith("error: /etc/stackboot/site.json: line 1 column 16: invalid JSON")


def test_verbose_shows_a_traceback_for_debugging(tmp_path, capsys):
    code = stackboot.main(["-v", "--root", str(tmp_path / "missing"), "list"])
    assert code == 64
    assert "Traceback" in capsys.readouterr().err
