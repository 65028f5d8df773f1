"""`facts` against real os-release files of many platforms (tests/fixtures/hosts)."""

import json
import os

import pytest

import stackboot

HOSTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hosts")
NAMES = sorted(os.listdir(HOSTS))


def read_fixture(name):
    with open(os.path.join(HOSTS, name, "host.json")) as handle:
        spec = json.load(handle)
    with open(os.path.join(HOSTS, name, "os-release")) as handle:
        return spec, handle.read()


FIXTURES = dict((name, read_fixture(name)) for name in NAMES)   # read before pyfakefs hides them


def load(name):
    return FIXTURES[name]


def fake_host(fs, name):
    spec, release = load(name)
    fs.create_file("/etc/os-release", contents=release)
    for binary in spec["binaries"]:
        fs.create_file(binary, st_mode=0o100755)
    if spec["systemd_running"]:
        fs.create_dir("/run/systemd/system")
    return spec


def test_fixture_set_is_complete():
    wanted = {"debian-11", "debian-12", "debian-13", "ubuntu-20.04", "ubuntu-22.04", "ubuntu-24.04", "rocky-8",
              "rocky-9", "alma-9", "alpine-3.20", "freebsd-13", "freebsd-14", "debian-12-chroot"}
    assert wanted <= set(NAMES) and any(name.startswith("fedora") for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_facts_match_the_platform(fs, name):
    spec = fake_host(fs, name)
    facts = stackboot.detect_facts(stackboot.Host("/"), uname=(spec["system"], spec["machine"]))
    got = dict((key, facts[key]) for key in spec["expected"])
    assert got == spec["expected"]
    assert facts["cores"] >= 1 and facts["python"].count(".") == 2


@pytest.mark.parametrize("name", ["debian-12", "freebsd-14", "rocky-8"])
def test_facts_command_text_and_json(fs, name, capsys):
    spec = fake_host(fs, name)
    assert stackboot.main(["facts", "--json"], uname=(spec["system"], spec["machine"])) == 0
    data = json.loads(capsys.readouterr().out)["facts"]
    assert data["platform"] == spec["expected"]["platform"] and data["package_manager"] == spec["expected"]["package_manager"]
    assert stackboot.main(["facts"], uname=(spec["system"], spec["machine"])) == 0
    text = capsys.readouterr().out
    assert "init             %s\n" % spec["expected"]["init"] in text


def test_os_selectors(fs):
    fake_host(fs, "rocky-9")
    facts = stackboot.detect_facts(stackboot.Host("/"), uname=("Linux", "x86_64"))
    for selector in ("linux", "rocky", "rhel", "fedora", "rocky-9", "rocky-9.4"):
        assert stackboot.os_matches(facts, selector), selector
    for selector in ("debian", "freebsd", "rocky-8", "rocky-9.5"):
        assert not stackboot.os_matches(facts, selector), selector


def test_facts_read_no_process(fs):
    fake_host(fs, "debian-12")
    host = stackboot.Host("/")
    host.runner.spawn = lambda *a: (_ for _ in ()).throw(AssertionError("facts must not spawn"))
    stackboot.detect_facts(host, uname=("Linux", "x86_64"))
