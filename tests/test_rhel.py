"""The RHEL family's own habits: repositories shipped switched off (CodeReady Builder, PowerTools),
SELinux labels, what needs a third party (OpenZFS). Fake hosts from tests/fixtures/hosts; the
golden plans (test_golden.py) show the same on whole roles."""

import os

import pytest

import stackboot
from conftest import RecordingRunner, run_main
from test_golden import fake_host

UNAME = ("Linux", "x86_64")
SOURCE = ["--set", "method=source", "--set", "master_host=10.1.0.1"]


def host_run(tools):
    return stackboot.Run(stackboot.Host("/", RecordingRunner("/", tools)), stackboot.detect_facts(stackboot.Host("/"), UNAME),
                         stackboot.Output(open(os.devnull, "w")))


def plan(tools, *argv):
    runner = RecordingRunner("/", tools)
    code, out, err = run_main(["plan", "master"] + list(argv), runner, UNAME)
    return code, [line for line in out.splitlines() if "dnf-repo" in line], err


def test_crb_is_switched_on_for_a_source_build_only(fs):
    spec, tools = fake_host(fs, "rocky-9")
    code, lines, err = plan(tools, *SOURCE)
    assert lines == ["~ dnf-repo crb: enable crb in /etc/yum.repos.d/rocky.repo"]
    assert plan(tools, "--set", "method=packages")[1] == []
    run = host_run(tools)
    step = stackboot.DnfRepoStep(None, "test", {}, {"names": ["crb", "codeready-builder-for-rhel-9-x86_64-rpms"]})
    with run.host.changes_allowed():
        step.apply(run, step.check(run))
    text = open("/etc/yum.repos.d/rocky.repo").read()
    section = text[text.index("[crb]"):]
    assert "enabled=1" in section and text.count("enabled=1") == 3   # baseos, appstream, crb; nothing else touched
    assert plan(tools, *SOURCE)[1] == []


@pytest.mark.parametrize("text,expect", [
    ("[powertools]\nname=PowerTools\n", []),   # no enabled= line: dnf counts it on
    ("[PowerTools]\nenabled = 0\n", ["~ dnf-repo powertools: enable PowerTools in /etc/yum.repos.d/CentOS-PowerTools.repo"]),
    ("[powertools-debug]\nenabled=0\n", ["! dnf-repo powertools: none of the repositories powertools, PowerTools, "
                                         "codeready-builder-for-rhel-8-x86_64-rpms, codeready-builder-for-rhel-8-aarch64-rpms is in "
                                         "/etc/yum.repos.d (libpcap-devel is there (PowerTools on EL8, CodeReady Builder on EL9)): "
                                         "add one (or one with the same packages), then run again"]),
    ("[powertools]\nenabled=True\n[other]\nenabled=0\n", []),
])
def test_powertools_as_each_rocky_8_spells_it(fs, text, expect):
    spec, tools = fake_host(fs, "rocky-8")
    os.remove("/etc/yum.repos.d/Rocky-PowerTools.repo")
    fs.create_file("/etc/yum.repos.d/CentOS-PowerTools.repo", contents=text)
    assert plan(tools, *SOURCE)[1] == expect


def test_rhel_itself_asks_subscription_manager(fs):
    spec, tools = fake_host(fs, "rocky-9")
    os.remove("/etc/yum.repos.d/rocky.repo")
    fs.create_file("/etc/yum.repos.d/redhat.repo", contents="[codeready-builder-for-rhel-9-x86_64-rpms]\nname = CRB\nenabled = 0\n")
    tools.on(lambda argv: argv[0] == "subscription-manager", lambda argv: (0, "Repository '%s' is enabled for this system.\n" % argv[-1], ""))
    run = host_run(tools)
    step = stackboot.DnfRepoStep(None, "test", {}, {"names": ["crb", "codeready-builder-for-rhel-9-x86_64-rpms"]})
    with run.host.changes_allowed():
        step.apply(run, step.check(run))
    assert run.runner.changes() == [["subscription-manager", "repos", "--enable", "codeready-builder-for-rhel-9-x86_64-rpms"]]


def test_selinux_label_needs_rule_and_label(fs):
    spec, tools = fake_host(fs, "rocky-9")
    fs.create_dir("/srv/cvmfs")
    step = stackboot.SelinuxContextStep(None, "test", {}, {"path": "/srv/cvmfs", "type": "httpd_sys_content_t"})
    run = host_run(tools)
    assert run.facts["selinux"] == "enforcing"
    assert [change.action for change in step.check(run)] == ["rule", "label"]
    os.setxattr("/srv/cvmfs", "security.selinux", b"system_u:object_r:var_t:s0")
    tools.append("/etc/selinux/targeted/contexts/files/file_contexts.local", "/srv/cvmfs(/.*)?    system_u:object_r:httpd_sys_content_t:s0")
    run.host.forget()
    assert [change.action for change in step.check(run)] == ["label"]   # a relabel by hand, or a store mounted there
    os.setxattr("/srv/cvmfs", "security.selinux", b"system_u:object_r:httpd_sys_content_t:s0")
    run.host.forget()
    assert step.check(run) == []


def test_selinux_under_root_is_the_targets(tmp_path, monkeypatch):
    """Under --root the target's /etc/selinux/config counts, not the SELinux of the machine building it."""
    from test_one_plan import fixture_root
    root, uname = fixture_root(tmp_path, "debian-12")
    real = stackboot.read_bytes
    monkeypatch.setattr(stackboot, "read_bytes", lambda path, limit=None: b"1\n" if path == "/sys/fs/selinux/enforce" else real(path, limit))
    assert stackboot.detect_facts(stackboot.Host(root), uname)["selinux"] == "off"
    os.makedirs(os.path.join(root, "etc/selinux"))
    with open(os.path.join(root, "etc/selinux/config"), "w") as handle:
        handle.write("# a Rocky image\nSELINUX=enforcing\nSELINUXTYPE=targeted\n")
    assert stackboot.detect_facts(stackboot.Host(root), uname)["selinux"] == "enforcing"
    assert stackboot.detect_facts(stackboot.Host("/"), uname)["selinux"] == "enforcing"   # the running kernel's


def test_a_local_rule_with_another_type_is_modified_not_added(fs):
    """semanage fcontext -a on a path with a local rule fails ("already defined"): -m changes it."""
    spec, tools = fake_host(fs, "rocky-9")
    fs.create_dir("/srv/cvmfs")
    tools.append("/etc/selinux/targeted/contexts/files/file_contexts.local", "/srv/cvmfs(/.*)?    system_u:object_r:var_t:s0")
    step = stackboot.SelinuxContextStep(None, "test", {}, {"path": "/srv/cvmfs", "type": "httpd_sys_content_t"})
    run = host_run(tools)
    with run.host.changes_allowed():
        step.apply(run, step.check(run))
    assert [argv for argv in run.runner.changes() if argv[0] == "semanage"] == [
        ["semanage", "fcontext", "-m", "-t", "httpd_sys_content_t", "/srv/cvmfs(/.*)?"]]
