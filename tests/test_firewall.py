"""Firewalls: a role's ports let in where a host firewall is active (ufw, firewalld), planned like
any change, closed again by uninstall; nothing said where no firewall is active or firewall=off.

Against the stateful fakes in conftest.py (files are their state, as for the real tools). The
rule parsers meet generated rule sets, compared with a brute-force answer. tests/test_firewall_real.py
runs real ufw and firewalld.
"""

import os
import random

import pytest

import stackboot
from conftest import FakeTools, RecordingRunner, run_main
from test_cvmfs import host as debian_host  # noqa: F401 (a fixture)

UNAME = ("Linux", "x86_64")
PACKAGES = ["--set", "method=packages"]
ZONE = ('<?xml version="1.0" encoding="utf-8"?>\n<zone>\n  <short>Public</short>\n  <service name="ssh"/>\n'
        '  <service name="dhcpv6-client"/>\n</zone>\n')
HTTP = '<?xml version="1.0" encoding="utf-8"?>\n<service>\n  <short>WWW (HTTP)</short>\n  <port protocol="tcp" port="80"/>\n</service>\n'


@pytest.fixture
def host(debian_host):  # noqa: F811 (pytest passes the fixture imported above)
    """test_cvmfs's Debian 12 host, with MooseFS's packages as Debian 12 has them."""
    debian_host.package_files["moosefs-master"] = {"/var/lib/mfs/metadata.mfs.empty": "MFSM NEW"}
    for part in ("master", "metalogger", "chunkserver", "client", "cli", "cgi", "cgiserv"):
        debian_host.versions["moosefs-" + part] = "3.0.117-1"   # Debian 12's
    return debian_host


def stackboot_main(tools, *argv):
    runner = RecordingRunner("/", tools)
    code, out, err = run_main(list(argv), runner, UNAME)
    return code, out, err, runner


def ufw(fs, rules=()):
    fs.create_file("/etc/ufw/ufw.conf", contents="# /etc/ufw/ufw.conf\nENABLED=yes\nLOGLEVEL=low\n")
    fs.create_file("/usr/sbin/ufw", st_mode=0o100755)
    fs.create_file("/etc/ufw/user.rules", contents="*filter\n" + "".join(line + "\n" for line in rules) + "COMMIT\n")


def firewalld(fs, enabled=True, running=False, zone="public"):
    fs.create_file("/usr/sbin/firewalld", st_mode=0o100755)
    fs.create_file("/usr/lib/firewalld/zones/%s.xml" % zone, contents=ZONE)
    fs.create_file("/usr/lib/firewalld/services/http.xml", contents=HTTP)
    fs.create_file("/etc/firewalld/firewalld.conf", contents="# firewalld config file\nDefaultZone=%s\n" % zone)
    if enabled:
        fs.create_symlink("/etc/systemd/system/multi-user.target.wants/firewalld.service", "/usr/lib/systemd/system/firewalld.service")
    if running:
        fs.create_file("/proc/4242/comm", contents="firewalld\n")


def changed_lines(out):
    return [line for line in out.splitlines() if line[:2] in ("+ ", "~ ", "- ", "! ")]


def test_no_active_firewall_says_nothing(host, fs):
    fs.create_file("/etc/ufw/ufw.conf", contents="ENABLED=no\n")   # installed, not enabled: not active
    code, out, err, runner = stackboot_main(host, "plan", "master", *PACKAGES)
    assert code == 0 and "firewall" not in out


def test_ufw_opens_the_masters_ports_once_and_uninstall_closes_only_its_own(host, fs):
    ufw(fs, ["### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in", "-A ufw-user-input -p tcp --dport 22 -j ACCEPT"])
    code, out, err, runner = stackboot_main(host, "plan", "master", *PACKAGES)
    assert "+ firewall 9419/tcp,9420/tcp,9421/tcp: let 9419-9421/tcp in (ufw, for MooseFS master)" in out
    code, out, err, runner = stackboot_main(host, "install", "master", *PACKAGES)
    assert code == 0, out + err
    ufw_calls = [argv for argv in runner.changes() if argv[0] == "ufw"]
    assert ufw_calls == [["ufw", "allow", "9419:9421/tcp", "comment", "stackboot: MooseFS master"]]
    start = runner.changes().index(["systemctl", "start", "moosefs-master.service"])
    assert runner.changes().index(ufw_calls[0]) < start   # open before the daemon listens
    code, out, err, runner = stackboot_main(host, "install", "master")
    assert code == 0 and out.splitlines()[-1].startswith("Install: 0 changed") and runner.changes() == [], err
    code, out, err, runner = stackboot_main(host, "uninstall", "master")
    assert code == 0, out + err
    assert "- firewall 9419/tcp,9420/tcp,9421/tcp: close 9419-9421/tcp (ufw)" in out
    assert [argv for argv in runner.changes() if argv[0] == "ufw"] == [["ufw", "delete", "allow", "9419:9421/tcp"]]
    rules = open("/etc/ufw/user.rules").read()
    assert "9419:9421" not in rules and "allow tcp 22 " in rules   # the admin's rule stays


def test_an_admins_rule_already_letting_the_ports_in_is_enough_and_stays(host, fs):
    ufw(fs, ["### tuple ### allow any 9000:9500 0.0.0.0/0 any 10.0.0.0/8 in"])
    assert stackboot_main(host, "install", "chunkserver", *PACKAGES, "--set", "master_host=10.1.0.1")[0] == 0
    code, out, err, runner = stackboot_main(host, "uninstall", "chunkserver")
    assert code == 0 and "firewall" not in out and not [argv for argv in runner.changes() if argv[0] == "ufw"]
    assert "9000:9500" in open("/etc/ufw/user.rules").read()


def test_firewall_off_leaves_the_firewall_alone(host, fs):
    ufw(fs)
    code, out, err, runner = stackboot_main(host, "install", "master", *PACKAGES, "--set", "firewall=off")
    assert code == 0 and "firewall" not in out and not [argv for argv in runner.changes() if argv[0] == "ufw"]
    code, out, err, runner = stackboot_main(host, "plan", "master", "--set", "firewall=sometimes")
    assert code == 64 and "firewall" in err and "auto, off" in err


def test_firewalld_without_its_daemon_is_edited_offline_and_services_count(host, fs):
    firewalld(fs, zone="internal")
    code, out, err, runner = stackboot_main(host, "install", "gui", *PACKAGES, "--set", "master_host=10.1.0.1")
    assert code == 0, out + err
    assert "+ firewall 9425/tcp: let 9425/tcp in (firewalld zone internal, for MooseFS GUI)" in out
    assert [argv for argv in runner.changes() if argv[0].startswith("firewall")] == [
        ["firewall-offline-cmd", "--zone=internal", "--add-port=9425/tcp"]]
    assert '<port port="9425" protocol="tcp"/>' in open("/etc/firewalld/zones/internal.xml").read()
    assert stackboot_main(host, "install", "gui")[1].splitlines()[-1].startswith("Install: 0 changed")
    code, out, err, runner = stackboot_main(host, "uninstall", "gui")
    assert [argv for argv in runner.changes() if argv[0].startswith("firewall")] == [
        ["firewall-offline-cmd", "--zone=internal", "--remove-port=9425/tcp"]]
    assert "9425" not in open("/etc/firewalld/zones/internal.xml").read()


def test_firewalld_running_changes_runtime_and_permanent_sets(host, fs):
    firewalld(fs, enabled=False, running=True)
    host.firewalld_runtime = {"public": {"9419-9421/tcp"}}   # opened by hand for now, not for good
    code, out, err, runner = stackboot_main(host, "install", "master", *PACKAGES)
    assert code == 0, out + err
    assert ["firewall-cmd", "--zone=public", "--list-all"] in runner.probes()
    assert [argv for argv in runner.changes() if argv[0].startswith("firewall")] == [
        ["firewall-cmd", "--permanent", "--zone=public", "--add-port=9419-9421/tcp"],
        ["firewall-cmd", "--zone=public", "--add-port=9419-9421/tcp"]]
    assert host.firewalld_zone("public") == {"9419-9421/tcp"} == host.firewalld_zone("public", runtime=True)
    code, out, err, runner = stackboot_main(host, "install", "master")
    assert out.splitlines()[-1].startswith("Install: 0 changed"), out


def test_a_zone_that_lets_http_in_as_a_service_needs_nothing_for_port_80(host, fs):
    firewalld(fs)
    fs.create_file("/etc/firewalld/zones/public.xml", contents=ZONE.replace("</zone>", '  <service name="http"/>\n</zone>'))
    rule = stackboot.FirewallStep(None, "test", {}, {"ports": ["80/tcp"], "label": "web"})
    run = stackboot.Run(stackboot.Host("/", RecordingRunner("/", host)), stackboot.detect_facts(stackboot.Host("/"), UNAME),
                        stackboot.Output(open(os.devnull, "w")))
    assert rule.check(run) == []


def test_a_broken_zone_file_is_an_error_with_its_fix(host, fs):
    firewalld(fs)
    fs.create_file("/etc/firewalld/zones/public.xml", contents="<zone><port port=")
    code, out, err, runner = stackboot_main(host, "plan", "master", *PACKAGES)
    assert code == 1 and "/etc/firewalld/zones/public.xml is not valid XML" in err and "Traceback" not in err


def brute_spans(items):
    ports = set()
    for item in items:
        span, protocol = item.split("/")
        low, _, high = span.partition("-")
        ports.update((protocol, port) for port in range(int(low), int(high or low) + 1))
    return ports


@pytest.mark.parametrize("seed", range(40))
def test_generated_port_lists_merge_into_the_same_ports(seed):
    rng = random.Random(seed)
    items = []
    for _ in range(rng.randint(1, 6)):
        low = rng.randint(1, 65530)
        high = low + rng.choice([0, 0, 1, 2, 5])
        items.append("%d%s/%s" % (low, "-%d" % high if high != low else "", rng.choice(["tcp", "udp"])))
    spans = stackboot.port_spans(items)
    assert set((protocol, port) for low, high, protocol in spans for port in range(low, high + 1)) == brute_spans(items)
    for first, second in zip(spans, spans[1:]):   # merged as far as possible, in order
        assert (first[2], first[1]) < (second[2], second[0]) and not (first[2] == second[2] and first[1] + 1 == second[0])


@pytest.mark.parametrize("seed", range(40))
def test_generated_ufw_rule_sets_are_read_as_ufw_reads_them(seed, fs):
    """Random user.rules (ranges, lists, protocols, directions, denies, comments): the ports left to
    open are exactly those no allow-in rule for the protocol (or any) covers."""
    rng = random.Random(seed)
    lines, allowed = [], set()
    for _ in range(rng.randint(0, 8)):
        action, direction = rng.choice(["allow", "allow", "deny", "reject"]), rng.choice(["in", "in", "out"])
        protocol = rng.choice(["tcp", "udp", "any"])
        parts = []
        for _ in range(rng.randint(1, 3)):
            low = rng.randint(9400, 9440)
            parts.append((low, low + rng.choice([0, 0, 3])))
        ports = ",".join("%d:%d" % part if part[0] != part[1] else str(part[0]) for part in parts)
        comment = " comment=%s" % "someone".encode().hex() if rng.random() < 0.3 else ""
        lines.append("### tuple ### %s %s %s 0.0.0.0/0 any 0.0.0.0/0 %s%s" % (action, protocol, ports, direction, comment))
        if action == "allow" and direction == "in":
            for low, high in parts:
                allowed.update((protocol, port) for port in range(low, high + 1))
    fs.create_file("/etc/ufw/user.rules", contents="\n".join(lines) + "\n")
    run = type("Run", (), {"host": stackboot.Host("/")})()
    wanted = stackboot.port_spans(["9419-9421/tcp", "9422/tcp", "9425/tcp", "9430/udp"])
    closed = stackboot.Ufw(run).closed(wanted)
    expect = [span for span in wanted if any((span[2], port) not in allowed and ("any", port) not in allowed
                                             for port in range(span[0], span[1] + 1))]
    assert closed == expect, lines


def test_a_changed_port_closes_the_old_one_where_the_rule_says_it_is_ours(host, fs):
    ufw(fs)
    sets = PACKAGES + ["--set", "master_host=10.1.0.1"]
    assert stackboot_main(host, "install", "chunkserver", *sets)[0] == 0
    code, out, err, runner = stackboot_main(host, "install", "chunkserver", "--set", "chunkserver_listen_port=9522")
    assert code == 0, out + err
    assert [argv for argv in runner.changes() if argv[0] == "ufw"] == [
        ["ufw", "delete", "allow", "9422/tcp"], ["ufw", "allow", "9522/tcp", "comment", "stackboot: MooseFS chunkserver"]]
    assert "- firewall 9522/tcp: close 9422/tcp (ufw)" in out and "+ firewall 9522/tcp: let 9522/tcp in (ufw, for MooseFS chunkserver)" in out


def test_under_root_ufw_is_left_for_the_booted_host(tmp_path):
    """ufw has no offline mode: in a chroot `ufw allow` would change the running system's rules."""
    from test_one_plan import fixture_root
    root, uname = fixture_root(tmp_path, "debian-12")
    os.makedirs(os.path.join(root, "etc/ufw"))
    with open(os.path.join(root, "etc/ufw/ufw.conf"), "w") as handle:
        handle.write("ENABLED=yes\n")
    runner = RecordingRunner(root, FakeTools(root))
    code, out, err = run_main(["--root", root, "plan", "master", "--set", "method=packages"], runner, uname)
    assert code == 0 and "firewall" not in out, out + err


def host_run(tools):
    return stackboot.Run(stackboot.Host("/", RecordingRunner("/", tools)), stackboot.detect_facts(stackboot.Host("/"), UNAME),
                         stackboot.Output(open(os.devnull, "w")))


def test_a_changed_port_inside_a_merged_range_keeps_the_others_open(host, fs):
    """9419-9421 is one rule; a new client_port removes it and lets in 9419-9420 and 9500, in one run."""
    ufw(fs)
    assert stackboot_main(host, "install", "master", *PACKAGES)[0] == 0
    code, out, err, runner = stackboot_main(host, "install", "master", "--set", "client_port=9500")
    assert code == 0, out + err
    assert [argv for argv in runner.changes() if argv[0] == "ufw"] == [
        ["ufw", "delete", "allow", "9419:9421/tcp"], ["ufw", "allow", "9419:9420/tcp", "comment", "stackboot: MooseFS master"],
        ["ufw", "allow", "9500/tcp", "comment", "stackboot: MooseFS master"]]
    assert stackboot_main(host, "install", "master")[1].splitlines()[-1].startswith("Install: 0 changed")


@pytest.mark.parametrize("line", [
    "### tuple ### limit tcp 9422 0.0.0.0/0 any 0.0.0.0/0 in",   # rate-limited, but in (an allow would replace it)
    "### tuple ### allow any any 0.0.0.0/0 any 0.0.0.0/0 in",    # every port
    "### tuple ### allow tcp any 0.0.0.0/0 any 10.0.0.0/8 in",   # every port, from a network the admin chose
])
def test_ufw_rules_that_already_let_the_port_in_are_enough(host, fs, line):
    ufw(fs, [line])
    rule = stackboot.FirewallStep(None, "test", {}, {"ports": ["9422/tcp"], "label": "MooseFS chunkserver"})
    assert rule.check(host_run(host)) == []


@pytest.mark.parametrize("conf,zone", [("DefaultZone = internal\n", "internal"),   # firewalld strips around =
                                       ("DefaultZone=internal\nDefaultZone=public\n", "internal"),   # and keeps the first
                                       ("# DefaultZone=internal\n", "public")])
def test_the_default_zone_is_read_as_firewalld_reads_it(host, fs, conf, zone):
    firewalld(fs, zone="internal")
    fs.create_file("/usr/lib/firewalld/zones/public.xml", contents=ZONE)
    os.remove("/etc/firewalld/firewalld.conf")
    fs.create_file("/etc/firewalld/firewalld.conf", contents=conf)
    assert stackboot.host_firewall(host_run(host)).zone == zone


@pytest.mark.parametrize("rule,ports", [
    ('<rule family="ipv4"><source address="192.0.2.0/24"/><port port="9425" protocol="tcp"/><reject/></rule>', "9425/tcp"),
    ('<rule family="ipv4"><source address="192.0.2.0/24"/><service name="http"/><drop/></rule>', "80/tcp"),
])
def test_a_rich_rule_is_not_the_zones_port(host, fs, rule, ports):
    """A rich rule's port (rejected, or only from some sources) neither lets the port in nor is ours to remove."""
    firewalld(fs)
    fs.create_file("/etc/firewalld/zones/public.xml", contents=ZONE.replace("</zone>", "  %s\n</zone>" % rule))
    opening = stackboot.FirewallStep(None, "test", {}, {"ports": [ports], "label": "x"})
    closing = stackboot.FirewallStep(None, "test", {}, {"ports": [ports], "label": "x"}, goal="absent")
    assert [change.action for change in opening.check(host_run(host))] == ["add"]
    assert closing.check(host_run(host)) == []


def test_a_default_zone_without_its_file_is_refused_before_anything_changes(host, fs):
    firewalld(fs)
    os.remove("/etc/firewalld/firewalld.conf")
    fs.create_file("/etc/firewalld/firewalld.conf", contents="DefaultZone=gone\n")
    code, out, err, runner = stackboot_main(host, "install", "gui", *PACKAGES, "--set", "master_host=10.1.0.1")
    assert code == 1 and runner.changes() == []
    assert "firewalld's default zone gone has no zone file" in err and "Traceback" not in err


def test_ports_refuses_everything_but_ports_and_a_protocol():
    """The adversarial payloads and the near misses: each one a ValueError (a profile's error line), never a rule."""
    from test_adversarial import INJECTIONS
    near = ["80", "80/sctp", "0/tcp", "65536/tcp", "9421-9419/tcp", "1-2-3/tcp", "80/TCP", " 80/tcp", "80/tcp ", "-1/tcp", "80-/tcp"]
    for value in list(INJECTIONS.values()) + near + [80, None, ["80/tcp"], {"port": 80}]:
        with pytest.raises(ValueError):
            stackboot.type_ports(value, {})
    for good in ("1/tcp", "65535/udp", "9419-9421/tcp", "80-80/tcp"):
        assert stackboot.type_ports(good, {}) == good
