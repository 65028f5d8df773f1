"""The Ansible module's argument file is user input: every bad one (generated: each argument times
wrong types and payloads) gives one JSON result with failed and a one-line msg, no traceback,
and leaves the root byte-identical. Secrets given in `set` never reach the result."""

import json
import os

import pytest

import stackboot
from conftest import FakeTools, RecordingRunner, run_main
from test_adversarial import snapshot
from test_one_plan import fixture_root

PAYLOADS = ["", "master\n", "master; rm -rf /", "../../etc", "'\"`$(id)`", " ", "\x00", "é" * 3, "a" * 5000, "--json", "-v",
            "--root=/", "--profiles=/tmp"]
WRONG_TYPES = [None, 1, 1.5, True, [], {}, [[[[[[]]]]]], {"a": {"b": {"c": {}}}}]
GOOD = {"roles": ["cli"], "set": {"method": "packages"}}


def cases():
    found = [("not-json", "{roles: [cli]"), ("a-list", "[]"), ("a-string", '"cli"'), ("empty", ""), ("deep", "[" * 200 + "]" * 200),
             ("no-roles", json.dumps({"state": "present"})), ("empty-roles", json.dumps({"roles": []})),
             ("unknown-argument", json.dumps(dict(GOOD, nosuch=1))), ("state-latest", json.dumps(dict(GOOD, state="latest")))]
    for key in stackboot.ANSIBLE_ARGUMENTS:
        for number, value in enumerate(WRONG_TYPES):
            if isinstance(value, stackboot.ANSIBLE_ARGUMENTS[key]):   # (a right type: not this table's case)
                continue
            found.append(("%s-type-%d" % (key, number), json.dumps(dict(GOOD, **{key: value}))))
    for number, payload in enumerate(PAYLOADS):
        found.append(("role-%d" % number, json.dumps(dict(GOOD, roles=[payload]))))
        found.append(("set-value-%d" % number, json.dumps(dict(GOOD, set={"method": "packages", "master_host": payload}))))
        found.append(("set-name-%d" % number, json.dumps(dict(GOOD, set={payload or "x y": "1"}))))
        found.append(("site-%d" % number, json.dumps(dict(GOOD, site=payload or "/nonexistent"))))
    return found


CASES = cases()


@pytest.mark.parametrize("label,text", CASES, ids=[case[0] for case in CASES])
def test_a_bad_argument_file_fails_the_task_in_one_line(tmp_path, label, text):
    root, uname = fixture_root(tmp_path, "debian-12")
    args = tmp_path / "args"
    args.write_text(text)
    given = json.loads(text) if label not in ("not-json", "empty", "deep") else {}
    if isinstance(given, dict) and "root" not in given:   # aimed at the fixture, never at this host
        given["root"] = root
        args.write_text(json.dumps(given))
    before = snapshot(root)
    code, out, err = run_main([str(args)], RecordingRunner(root, FakeTools(root)), uname)
    result = json.loads(out)   # one JSON object, whatever the input
    assert result["failed"] is True and code != 0, (label, result)
    assert "\n" not in result["msg"] and result["msg"] and "Traceback" not in out + err, result["msg"]
    assert snapshot(root) == before


def test_a_secret_in_set_never_reaches_the_result(tmp_path):
    root, uname = fixture_root(tmp_path, "debian-12")
    profiles = os.path.join(root, "etc/stackboot/profiles")
    os.makedirs(profiles)
    with open(os.path.join(profiles, "vault.json"), "w") as handle:
        json.dump({"description": "a token", "parameters": {"token": {"type": "string", "secret": True, "default": None}},
                   "steps": [{"kind": "file", "path": "/etc/vault.conf", "template": "token = {{token}}", "mode": "0600"}]}, handle)
    for check in (True, False):
        args = tmp_path / "args"
        args.write_text(json.dumps({"roles": ["vault"], "root": root, "set": {"token": "Sekr1t-Value"},
                                    "_ansible_check_mode": check, "_ansible_diff": True}))
        code, out, err = run_main([str(args)], RecordingRunner(root, FakeTools(root)), uname)
        result = json.loads(out)
        assert code == 0 and result["changed"] is True and result["diff"][0]["before_header"] == "/etc/vault.conf"
        assert "Sekr1t-Value" not in out + err and "***" in result["diff"][0]["prepared"]
    with open(os.path.join(root, "etc/vault.conf")) as handle:
        assert handle.read().strip() == "token = Sekr1t-Value"
