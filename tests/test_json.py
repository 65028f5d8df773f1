"""--json: every command prints one JSON document on stdout (format 1, as README shows), the same
step and change objects everywhere, errors as {"error", "fix"}; progress stays on stderr; no
secret in it. Run against the host fixtures with fake tools, in-process."""

import hashlib
import json
import os

import pytest

from conftest import FakeTools, RecordingRunner, run_main
from test_one_plan import fixture_root

ACTIONS = {"create", "change", "remove", "conflict", "keep"}
COMMON = {"format_version": int, "command": (str, type(None)), "exit_code": int}
OPTIONAL = {"error": str, "fix": (str, type(None)), "steps": list, "summary": dict, "report": list, "kept": list}
# What each command adds (required keys and their types)
COMMANDS = {
    "facts": {"facts": dict}, "list": {"roles": list}, "show": {"role": str, "requires": list, "parameters": dict},
    "plan": {"steps": list, "summary": dict}, "check": {"steps": list, "summary": dict},
    "install": {"summary": dict}, "uninstall": {"summary": dict}, "recover": {}, "self-install": {"summary": dict},
    "cloud-init": {"bytes": int, "user_data": str, "fits": list}, "bundle": {"bundle": dict, "artifacts": list},
    "lab": {}, "cvmfs": {},
}
EXTRA = {"user_data", "bytes", "fits", "files", "bundle", "artifacts", "facts", "roles", "role", "requires", "parameters", "lab", "nodes"}


def check_step(step):
    assert set(step) - {"node"} == {"id", "kind", "target", "profile", "changes"}, step
    assert all(isinstance(step[key], str) for key in ("id", "kind", "target", "profile"))
    for change in step["changes"]:
        assert set(change) == {"action", "summary", "diff"} and change["action"] in ACTIONS, change
        assert isinstance(change["summary"], str) and isinstance(change["diff"], (str, type(None)))


def document(out, command, code):
    """The one JSON document stdout holds, checked against format 1."""
    data = json.loads(out)   # one document: anything else on stdout fails here
    assert data["format_version"] == 1 and data["command"] == command and data["exit_code"] == code, data
    for key, kind in COMMON.items():
        assert isinstance(data[key], kind), (key, data[key])
    for key, kind in dict(OPTIONAL, **COMMANDS.get(command, {})).items():
        if key in COMMANDS.get(command, {}) and "error" not in data:
            assert key in data, (command, key, data)
        if key in data:
            assert isinstance(data[key], kind), (key, data[key])
    assert set(data) <= set(COMMON) | set(OPTIONAL) | EXTRA, set(data)
    for step in data.get("steps", []):
        check_step(step)
    for key, number in data.get("summary", {}).items():
        assert key in ("to_change", "already_right", "changed") and isinstance(number, int), data["summary"]
    if "error" in data:
        assert code != 0 and data["error"] and not data["error"].startswith("error:")
    return data


@pytest.fixture
def host(tmp_path):
    root, uname = fixture_root(tmp_path, "debian-12")
    os.makedirs(os.path.join(root, "var/lib/apt/lists"))
    open(os.path.join(root, "var/lib/apt/lists/deb_Packages"), "w").close()
    tools = FakeTools(root)
    return root, uname, tools


def main(host, *argv):
    root, uname, tools = host
    code, out, err = run_main(["--root", root, "--json"] + list(argv), RecordingRunner(root, tools), uname)
    return code, out, err


def test_every_command_prints_one_document(host, tmp_path):
    root = host[0]
    for argv, command in ((["facts"], "facts"), (["list"], "list"), (["show", "master"], "show")):
        code, out, err = main(host, *argv)
        assert code == 0, err
        document(out, command, 0)

    sets = ["--set", "method=packages", "--set", "master_host=10.1.0.1"]
    code, out, err = main(host, "plan", "cli", *sets)
    plan = document(out, "plan", 0)
    assert plan["summary"]["to_change"] >= 1 and any(step["changes"] for step in plan["steps"])
    assert "Plan:" not in out and "Plan:" in err   # the human lines are progress: stderr

    code, out, err = main(host, "install", "cli", *sets)
    installed = document(out, "install", 0)
    assert installed["summary"]["changed"] == plan["summary"]["to_change"]
    assert [step["id"] for step in installed["steps"]] == [step["id"] for step in plan["steps"] if step["changes"]]
    assert "Install:" in err

    code, out, err = main(host, "install", "cli")
    again = document(out, "install", 0)
    assert again["summary"]["changed"] == 0 and again.get("steps", []) == []

    code, out, err = main(host, "check")
    assert code == 0 and document(out, "check", 0)["summary"]["to_change"] == 0

    code, out, err = main(host, "uninstall", "cli")
    removed = document(out, "uninstall", 0)
    assert removed["summary"]["changed"] == len(removed.get("steps", []))
    assert all(change["action"] in ("remove", "change") for step in removed.get("steps", []) for change in step["changes"])

    code, out, err = main(host, "cloud-init", "master", *sets)
    data = document(out, "cloud-init", 0)
    assert data["user_data"].startswith("#cloud-config") and data["bytes"] == len(data["user_data"].encode())

    host[2].on(lambda argv: "py_compile" in argv, lambda argv: (0, "", ""))
    code, out, err = main(host, "self-install")
    assert code == 0, err
    assert document(out, "self-install", 0)["summary"]["changed"] >= 1

    archive = tmp_path / "moosefs-4.99.1-1.tar.gz"
    archive.write_bytes(b"not really a tarball, but the bundle only checks its sha256")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    code, out, err = main(host, "bundle", "master", "--with", "moosefs=4.99.1", "--set", "source_url=file://%s" % archive,
                          "--set", "source_sha256=" + sha, "-o", str(tmp_path / "b.pyz"))
    bundle = document(out, "bundle", 0)
    assert bundle["bundle"]["path"] == str(tmp_path / "b.pyz") and bundle["artifacts"][0]["sha256"] == sha
    assert os.path.exists(root)


def test_errors_are_documents_too(host):
    code, out, err = main(host, "plan", "master", "--set", "nosuch=1")
    data = document(out, "plan", 64)
    assert data["error"] == 'unknown parameter "nosuch" for moosefs-common, master' or "nosuch" in data["error"]
    assert data["fix"] and err.startswith("error: ")
    code, out, err = main(host, "plna")   # a command line argparse refuses: still one document
    data = document(out, None, 64)
    assert "invalid choice" in data["error"]
    code, out, err = main(host, "recover", "master", "--set", "method=packages")
    data = document(out, "recover", 1)
    assert data["error"].startswith("nothing to recover master from")


def test_a_conflict_is_listed_as_a_step(host):
    root, _, tools = host
    os.makedirs(os.path.join(root, "var/lib/mfs"))
    open(os.path.join(root, "var/lib/mfs/metadata.mfs"), "w").close()
    os.makedirs(os.path.join(root, "var/lib/stackboot"))
    with open(os.path.join(root, "var/lib/stackboot/state.json"), "w") as handle:   # a 4.x master ran on it
        json.dump({"data_versions": {"/var/lib/mfs/metadata.mfs": "4.58.1"}}, handle)
    tools.versions["moosefs-master"] = "3.0.117-1"
    code, out, err = main(host, "install", "master", "--set", "method=packages")
    data = document(out, "install", 1)
    conflicts = [change for step in data["steps"] for change in step["changes"] if change["action"] == "conflict"]
    assert code == 1 and conflicts and "refused" in data["error"]


def test_no_secret_reaches_the_document(host, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "vault.json").write_text(json.dumps({
        "description": "a secret in a file", "parameters": {"token": {"type": "string", "secret": True, "default": None}},
        "steps": [{"kind": "file", "path": "/etc/vault.conf", "template": "token = {{token}}", "mode": "0600"}]}))
    secret = "sécret-välue"   # JSON's text escapes it (\u00e9): redacted before dumping, not after
    for command in ("plan", "install"):
        code, out, err = main(host, "--profiles", str(profiles), command, "vault", "--set", "token=" + secret)
        data = document(out, command, 0)
        assert secret not in json.dumps(data) and secret not in out and json.dumps(secret)[1:-1] not in out
        assert data["steps"][0]["target"] == "/etc/vault.conf" and "***" in data["steps"][0]["changes"][0]["diff"]
    assert open(os.path.join(host[0], "etc/vault.conf")).read().strip() == "token = " + secret   # (it was there to find)
