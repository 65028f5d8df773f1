"""Shared test helpers: a recording runner backed by stateful fakes of the host's tools.

The fakes change the (pyfakefs or temp-dir) filesystem the way the real tools
do, so a step's check after its apply sees the real effect, and a second run
proves idempotency without mocks of stackboot's own code.
"""

import json
import os
import re
import shlex
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(TESTS)
sys.path.insert(0, TOP)
sys.path.insert(0, TESTS)

import stackboot  # noqa: E402
import fake_cvmfs  # noqa: E402  (imported before pyfakefs hides the real disk)

MUTATING = {"apt-get", "cvmfs_server mkfs", "a2enmod", "dnf", "yum", "pkg install", "groupadd", "useradd", "usermod", "pw", "sysrc",
            "systemctl enable", "systemctl start", "systemctl restart", "systemctl reload", "systemctl stop",
            "systemctl daemon-reload", "service start", "service restart"}


class FakeTools:
    """Stateful stand-ins for package managers, user tools and service managers."""

    def __init__(self, root="/"):
        self.root = root
        self.installed = {}          # package -> version
        self.available = None        # None: every package exists
        self.units = {}              # unit -> {"enabled": bool, "active": bool}
        self.handlers = []           # (predicate, function(argv) -> (rc, out, err))
        self.next_uid = 400
        self.modules = set()         # FreeBSD kernel modules loaded
        self.mounted = {}            # mount point -> (device, fstype)
        # package -> {path: content} its install creates (Apache's config directory: mkfs looks for it)
        self.package_files = {"apache2": {"/etc/apache2/apache2.conf": "# Debian's Apache"},
                              "httpd": {"/etc/httpd/conf/httpd.conf": "# the RHEL family's Apache"}}
        self.versions = {}           # package -> the version an install brings (the candidate queries know only these)
        self.offered = {}            # package -> {version: suite}: the sources' other versions (apt's version table)
        self.pools = set()           # ZFS pools
        self.datasets = {}           # ZFS dataset -> {property: value as `zfs get -p` prints it}
        self.file_packages = {}      # a local package file -> the package it installs
        self.netns = {}              # network namespace -> {link: {"master": bridge, "addresses": [...], "up": bool}}
        self.links = {}              # this host's own links, as above

    def path(self, path):
        return os.path.join(self.root, path.lstrip("/")) if self.root != "/" else path

    def append(self, path, line):
        full = self.path(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "a") as handle:
            handle.write(line + "\n")

    def table(self, name):
        try:
            with open(self.path("/etc/" + name)) as handle:
                return [line.rstrip("\n").split(":") for line in handle if line.strip()]
        except FileNotFoundError:
            return []

    def write_table(self, name, rows):
        with open(self.path("/etc/" + name), "w") as handle:
            handle.write("".join(":".join(row) + "\n" for row in rows))

    def on(self, predicate, function):
        self.handlers.append((predicate, function))

    def __call__(self, argv, env):
        for predicate, function in self.handlers:
            if predicate(argv):
                return function(argv)
        name = os.path.basename(argv[0])
        method = getattr(self, "tool_" + name.replace("-", "_"), None)
        if method is None:
            return 127, "", "%s: command not found (fake)" % argv[0]
        return method(argv[1:])

    def tool_grep(self, args):
        """grep -q[s][x] PATTERN FILE...: a fixed line (-x) or a substring, in any of the files."""
        flags = "".join(arg[1:] for arg in args if arg.startswith("-"))
        words = [arg for arg in args if not arg.startswith("-")]
        pattern, files = words[0], words[1:]
        for name in files:
            try:
                with open(self.path(name)) as handle:
                    lines = handle.read().splitlines()
            except OSError:
                continue
            if any(line == pattern if "x" in flags else pattern in line for line in lines):
                return 0, "", ""
        return 1, "", ""

    def tool_dpkg(self, args):
        """dpkg --configure -a: finishes what an interrupted dpkg left in its journal."""
        assert args == ["--configure", "-a"], args
        journal = self.path("/var/lib/dpkg/updates")
        for name in os.listdir(journal) if os.path.isdir(journal) else []:
            os.unlink(os.path.join(journal, name))
        return 0, "", ""

    def tool_yum_complete_transaction(self, args):
        """yum-utils: finishes the transaction yum's journal (transaction-all.*) names."""
        for name in os.listdir(self.path("/var/lib/yum")):
            if name.startswith("transaction-"):
                os.unlink(os.path.join(self.path("/var/lib/yum"), name))
        return 0, "", ""

    def tool_dpkg_query(self, args):
        names = [a for a in args if not a.startswith("-")]
        out, err = [], []
        for name in names:
            if name in self.installed:
                out.append("%s\tii \t%s" % (name, self.installed[name]))
            else:
                err.append("dpkg-query: no packages found matching %s" % name)
        return (1 if err else 0), "".join(line + "\n" for line in out), "\n".join(err)

    def install(self, names, separator="="):
        """names: NAME, NAME=VERSION (apt's pin; dnf's and pkg's: NAME-VERSION, `separator`), or a local package file."""
        names = [self.file_packages.get(n, os.path.basename(n).split("_")[0]) if n.startswith("/") else n for n in names]
        pins = {}
        for word in list(names):
            for name in self.offered:
                if word.startswith(name + separator) and word[len(name) + 1:] in self.offered[name]:
                    pins[name] = word[len(name) + 1:]
                    names[names.index(word)] = name
        unknown = [n for n in names if "=" in n]   # a pinned version the sources do not have
        if unknown:
            return 100, "", "E: Version '%s' for '%s' was not found" % tuple(reversed(unknown[0].split("=", 1)))
        missing = [n for n in names if self.available is not None and n not in self.available]
        if missing:
            return 100, "", "E: Unable to locate package %s" % missing[0]
        for name in names:
            self.installed[name] = pins.get(name) or self.versions.get(name, "1.0-1")
            for path, content in self.package_files.get(name, {}).items():
                full = self.path(path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "w") as handle:
                    handle.write(content)
        return 0, "installed\n", ""

    def tool_apt_get(self, args):
        words, rest = [], list(args)
        while rest:   # as apt-get reads them: options anywhere, -o takes the next word
            word = rest.pop(0)
            if word in ("-o", "-t"):   # an option, the target release
                rest.pop(0)
            elif not word.startswith("-"):
                words.append(word)
        if words[0] == "update":
            return 0, "", ""
        if words[0] == "remove":
            return self.remove(words[1:])
        code = self.install(words[1:])
        for name in words[1:]:   # as dpkg keeps them: one file list per package
            if name in self.installed and not name.startswith("/"):
                self.write_file("/var/lib/dpkg/info/%s.list" % name, "".join(
                    "%s\n" % path for path in ["/."] + sorted(self.package_files.get(name, {}))))
        return code

    def remove(self, names):
        """apt-get remove: the package's files and its file list go, its configuration stays."""
        for name in names:
            if name not in self.installed:
                return 100, "", "E: Package '%s' is not installed, so not removed" % name
            del self.installed[name]
            for path in list(self.package_files.get(name, {})) + ["/var/lib/dpkg/info/%s.list" % name]:
                if os.path.exists(self.path(path)):
                    os.unlink(self.path(path))
        return 0, "removed\n", ""

    def write_file(self, path, content):
        full = self.path(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(content)

    def tool_apt_cache(self, args):
        """apt-cache policy NAME...: what is installed and what an install would bring."""
        release = None
        if args[0] == "-o":   # -o APT::Default-Release=R: R's versions are candidates first
            release, args = args[1].split("=", 1)[1], args[2:]
        assert args[0] == "policy", args
        out = []
        for name in args[1:]:
            if name in self.installed or name in self.versions or name in self.offered:
                preferred = [v for v, suite in self.offered.get(name, {}).items() if release and suite == release]
                candidate = max(preferred, key=lambda v: [int(n) for n in re.findall("[0-9]+", v)]) if preferred else \
                    self.versions.get(name, self.installed.get(name, "(none)"))
                out += ["%s:" % name, "  Installed: %s" % self.installed.get(name, "(none)"),
                        "  Candidate: %s" % candidate, "  Version table:"]
                table = dict(self.offered.get(name, {}))
                if name in self.versions:
                    table.setdefault(self.versions[name], "stable")
                if name in self.installed:
                    table.setdefault(self.installed[name], None)
                for version in sorted(table, key=lambda v: [int(n) for n in re.findall("[0-9]+", v)], reverse=True):
                    mark = "***" if self.installed.get(name) == version else "   "
                    out.append(" %s %s %d" % (mark, version, 100 if table[version] and "backports" in table[version] else 500))
                    if table[version]:
                        out.append("        500 http://deb.debian.org/debian %s/main amd64 Packages" % table[version])
                    if mark == "***":
                        out.append("        100 /var/lib/dpkg/status")
        return 0, "".join(line + "\n" for line in out), ""

    def candidates(self, names):
        """pkg rquery / dnf repoquery: NAME\tVERSION of what the repositories have (every version)."""
        out = ["%s\t%s" % (name, self.versions[name]) for name in names if name in self.versions]
        out += ["%s\t%s" % (name, version) for name in names for version in self.offered.get(name, {})]
        return 0, "".join(line + "\n" for line in out), ""

    def tool_rpm(self, args):
        names = [a for a in args[2:] if not a.startswith("-")][1:] if "--qf" in args else args[1:]
        out = []
        for name in names:
            out.append("%s\t%s" % (name, self.installed[name]) if name in self.installed else
                       "package %s is not installed" % name)
        return (0 if all(n in self.installed for n in names) else 1), "\n".join(out) + "\n", ""

    def tool_dnf(self, args):
        if args[0] == "repoquery":
            return self.candidates([a for a in args[1:] if not a.startswith("-") and "%" not in a and a != "1"])
        return self.install([a for a in args[1:] if not a.startswith("-")], "-")

    tool_yum = tool_dnf

    def tool_pkg(self, args):
        if args[0] == "query":
            names = args[2:]
            out = ["%s\t%s" % (n, self.installed[n]) for n in names if n in self.installed]
            return (0 if out else 1), "".join(line + "\n" for line in out), ""
        if args[0] == "rquery":
            return self.candidates(args[2:])
        return self.install([a for a in args[1:] if not a.startswith("-")])

    def tool_groupadd(self, args):
        name = args[-1]
        gid = args[args.index("-g") + 1] if "-g" in args else str(self.next_uid)
        self.next_uid += 1
        rows = self.table("group")
        if any(row[0] == name for row in rows):
            return 9, "", "groupadd: group '%s' already exists" % name
        self.write_table("group", rows + [[name, "x", gid, ""]])
        return 0, "", ""

    def user_fields(self, args):
        flags = {"-u": 2, "-g": 3, "-c": 4, "-d": 5, "-s": 6}
        fields = {}
        index = 0
        while index < len(args):
            if args[index] in flags and index + 1 < len(args):
                fields[flags[args[index]]] = args[index + 1]
                index += 2
            else:
                index += 1
        return fields

    def group_id(self, group):
        for row in self.table("group"):
            if row[0] == group or row[2] == group:
                return row[2]
        return None

    def tool_useradd(self, args):
        name = args[-1]
        rows = self.table("passwd")
        if any(row[0] == name for row in rows):
            return 9, "", "useradd: user '%s' already exists" % name
        fields = self.user_fields(args[:-1])
        row = [name, "x", fields.get(2, str(self.next_uid)), "", fields.get(4, ""), fields.get(5, "/home/" + name),
               fields.get(6, "/bin/sh")]
        self.next_uid += 1
        gid = self.group_id(fields.get(3, name))
        if gid is None:
            return 6, "", "useradd: group '%s' does not exist" % fields.get(3, name)
        row[3] = gid
        self.write_table("passwd", rows + [row])
        return 0, "", ""

    def tool_usermod(self, args):
        name = args[-1]
        rows = self.table("passwd")
        for row in rows:
            if row[0] == name:
                for index, value in self.user_fields(args[:-1]).items():
                    row[index] = self.group_id(value) if index == 3 else value
                self.write_table("passwd", rows)
                return 0, "", ""
        return 6, "", "usermod: user '%s' does not exist" % name

    def tool_pw(self, args):
        verb, name, rest = args[0], args[1], args[2:]
        if verb == "groupadd":
            return self.tool_groupadd(rest + [name])
        if verb == "useradd":
            return self.tool_useradd(rest + [name])
        return self.tool_usermod(rest + [name])

    def tool_systemctl(self, args):
        if args[0] == "show":
            blocks = []
            for unit in [a for a in args[1:] if not a.startswith("-") and "," not in a]:
                state = self.units.get(unit)
                if state is None:
                    blocks.append("Id=%s\nLoadState=not-found\nActiveState=inactive\nUnitFileState=" % unit)
                else:
                    blocks.append("Id=%s\nLoadState=loaded\nActiveState=%s\nUnitFileState=%s" % (
                        unit, "active" if state["active"] else "inactive", "enabled" if state["enabled"] else "disabled"))
            return 0, "\n\n".join(blocks) + "\n", ""
        if args[0] == "daemon-reload":
            return 0, "", ""
        unit = args[1]
        state = self.units.setdefault(unit, {"enabled": False, "active": False, "restarts": 0})
        if args[0] in ("enable", "disable"):
            state["enabled"] = args[0] == "enable"
        elif args[0] in ("start", "restart", "reload"):
            state["active"] = True
            state["restarts"] = state.get("restarts", 0) + (args[0] != "start")
        elif args[0] == "stop":
            state["active"] = False
        return 0, "", ""

    def rc_conf(self):
        try:
            with open(self.path("/etc/rc.conf")) as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def tool_sysrc(self, args):
        check = args[0] == "-c"
        key, _, value = args[-1].partition("=")
        if key.endswith("+"):   # kld_list+=fusefs: add a word to a list variable
            key = key[:-1]
            current = ([line.split("=", 1)[1].strip('"') for line in self.rc_conf().splitlines()
                        if line.startswith(key + "=")] or [""])[-1].split()
            if check:
                return (0 if value in current else 1), "", ""
            value = " ".join(current + [value] if value not in current else current)
        elif check:
            return (0 if '%s="%s"' % (key, value) in self.rc_conf() else 1), "", ""
        self.append("/etc/rc.conf", '%s="%s"' % (key, value))
        return 0, "", ""

    def tool_kldstat(self, args):
        return (0 if args[-1] in self.modules else 1), "", ""

    def tool_kldload(self, args):
        self.modules.add(args[-1])
        return 0, "", ""

    def tool_zpool(self, args):
        if args[0] == "list":
            return 0, "".join("%s\tONLINE\n" % pool for pool in sorted(self.pools)), ""
        words = [a for i, a in enumerate(args[1:]) if not a.startswith("-") and not (i and args[i] == "-m")]
        self.pools.add(words[0])
        self.datasets[words[0]] = {}
        return 0, "", ""

    def tool_zfs(self, args):
        import stackboot
        sizes = ("quota", "refquota", "reservation", "recordsize")

        def value(key, val):
            return str(stackboot.size_bytes(val)) if key in sizes and val != "none" else val
        name = args[-1]
        if args[0] == "get":
            if name not in self.datasets:
                return 1, "", "cannot open '%s': dataset does not exist" % name
            props = self.datasets[name]
            return 0, "".join("%s\t%s\n" % (key, props.get(key, "-")) for key in args[-2].split(",")), ""
        if args[0] == "create":
            if name.split("/")[0] not in self.pools:
                return 1, "", "cannot create '%s': no such pool" % name
            parts = name.split("/")
            for depth in range(2, len(parts)):
                self.datasets.setdefault("/".join(parts[:depth]), {})
            options = [args[i + 1] for i, a in enumerate(args) if a == "-o"]
            self.datasets[name] = dict((o.split("=", 1)[0], value(*o.split("=", 1))) for o in options)
            self.zfs_mount(name)
            return 0, "", ""
        key, val = args[1].split("=", 1)
        self.datasets[name][key] = value(key, val)
        self.zfs_mount(name)
        return 0, "", ""

    def zfs_mount(self, name):
        """ZFS mounts a dataset as soon as it has a mountpoint, as the real one does."""
        point = self.datasets[name].get("mountpoint")
        if point and point.startswith("/") and self.root == "/" and os.path.exists("/proc/self/mountinfo"):
            with open("/proc/self/mountinfo", "a") as handle:
                handle.write("98 1 0:98 / %s rw - zfs %s rw\n" % (point, name))

    def tool_mount(self, args):
        """Linux: appends to the fake /proc/self/mountinfo; FreeBSD: `mount -p` lists fstab-style."""
        if args == ["-p"]:
            return 0, "".join("%s %s %s rw 0 0\n" % (dev, point, fstype) for point, (dev, fstype) in self.mounted.items()), ""
        point = args[-1]
        device, fstype = "unknown", "unknown"
        try:
            for line in open(self.path("/etc/fstab")):
                fields = line.split()
                if len(fields) >= 3 and fields[1] == point:
                    device, fstype = fields[0], fields[2]
        except FileNotFoundError:
            pass
        if not os.path.isdir(self.path(point)):
            return 32, "", "mount: %s: mount point does not exist." % point
        if fstype == "cvmfs":   # mount.cvmfs: the client's settings, key and server must do, as for a probe
            local = self.cvmfs().settings("/etc/cvmfs/default.local")
            if not local.get("CVMFS_HTTP_PROXY"):
                return 1, "", "CVMFS_HTTP_PROXY required"
            problem = self.cvmfs().probe_one(device, dict(local, **self.cvmfs().settings("/etc/cvmfs/config.d/%s.conf" % device)))
            if problem:
                return 32, "", problem
            device, fstype = "cvmfs2", "fuse"   # as /proc/mounts shows it
        self.mounted[point] = (device, fstype)
        if os.path.exists("/proc/self/mountinfo") and self.root == "/":
            with open("/proc/self/mountinfo", "a") as handle:
                handle.write("99 1 0:99 / %s rw - %s %s rw\n" % (point, fstype, device))
        return 0, "", ""

    def cvmfs(self):
        if getattr(self, "_cvmfs", None) is None:
            self._cvmfs = fake_cvmfs.Cvmfs(self.root, http_get=self.http_get, fail="", poll_seconds=0,
                                           running=lambda name: self.web_running(), user="root")
        return self._cvmfs

    def tool_cvmfs_server(self, args):
        return self.cvmfs().server(args)

    def tool_cvmfs_config(self, args):
        return self.cvmfs().config(args)

    def web_running(self):
        return any(unit.split(".")[0] in ("apache2", "httpd") and state["active"] for unit, state in self.units.items())

    def http_get(self, url):
        """The fake web: Apache's aliases (cvmfs.FQRN.conf, the document root) and fake S3 buckets."""
        scheme, _, rest = url.partition("://")
        host, _, path = rest.partition("/")
        name, _, port = host.partition(":")
        if name in ("localhost", "127.0.0.1") and port in ("", "80"):   # Apache; another port is an S3 server
            if not self.web_running():
                raise OSError("connection refused")
            if path.startswith("cvmfs/"):
                name, _, tail = path[6:].partition("/")
                full = self.path("/srv/cvmfs/%s/%s" % (name, tail))
            else:
                full = self.path("/var/www/html/" + path)
        else:
            full = self.path("/var/lib/fake-s3/" + path)
        if not path:
            return b"It works!"
        if not os.path.isfile(full):
            raise OSError("HTTP Error 404: Not Found")
        with open(full, "rb") as handle:
            return handle.read()

    def tool_a2enmod(self, args):
        for module in [a for a in args if not a.startswith("-")]:
            self.append("/etc/apache2/mods-enabled/%s.load" % module, "LoadModule %s_module" % module)
        return 0, "", ""

    # Host firewalls, as ufw 0.36 and firewalld 1.3 behave (FACTS.md): files are the state.
    def tool_ufw(self, args):
        path = "/etc/ufw/user.rules"
        text = open(self.path(path)).read() if os.path.exists(self.path(path)) else ""
        lines = text.splitlines()
        delete = args[:1] == ["delete"]
        args = args[1:] if delete else args
        if args[:1] != ["allow"] or len(args) < 2 or "/" not in args[1]:
            return 1, "", "ERROR: Must specify 'tcp' or 'udp' with multiple ports (fake: allow PORT/PROTO only)"
        port, protocol = args[1].split("/")
        tuple_line = "### tuple ### allow %s %s 0.0.0.0/0 any 0.0.0.0/0 in" % (protocol, port)
        comment = args[args.index("comment") + 1] if "comment" in args else ""
        have = [i for i, line in enumerate(lines) if line.split(" comment=")[0] == tuple_line]
        if delete:
            if not have:
                return 0, "Could not delete non-existent rule\n", ""
            lines = [line for i, line in enumerate(lines) if i not in have and i - 1 not in have]
            out = "Rule deleted\n"
        else:
            rule = tuple_line + (" comment=" + comment.encode().hex() if comment else "")
            if have and lines[have[0]] == rule:
                return 0, "Skipping adding existing rule\n", ""
            if have:
                lines[have[0]] = rule
                out = "Rule updated\n"
            else:
                dports = ("-m multiport --dports " if ":" in port else "--dport ") + port
                lines += [rule, "-A ufw-user-input -p %s %s -j ACCEPT" % (protocol, dports)]
                out = "Rule added\n"
        os.makedirs(os.path.dirname(self.path(path)), exist_ok=True)
        with open(self.path(path), "w") as handle:
            handle.write("".join(line + "\n" for line in lines))
        return 0, out, ""

    def firewalld_zone(self, zone, runtime=False):
        """The zone's ports: the permanent XML file (a copy of the package's once changed), or the daemon's."""
        if runtime:
            return self.__dict__.setdefault("firewalld_runtime", {}).setdefault(zone, set())
        import re
        for base in ("/etc/firewalld/zones/", "/usr/lib/firewalld/zones/"):
            if os.path.exists(self.path(base + zone + ".xml")):
                text = open(self.path(base + zone + ".xml")).read()
                return set("%s/%s" % pair for pair in re.findall(r'<port port="([^"]+)" protocol="([^"]+)"/>', text))
        return None

    def firewalld_write(self, zone, ports):
        base = self.path("/usr/lib/firewalld/zones/%s.xml" % zone)
        text = open(base).read() if os.path.exists(base) else '<?xml version="1.0" encoding="utf-8"?>\n<zone>\n</zone>\n'
        import re
        text = re.sub(r'  <port port="[^"]+" protocol="[^"]+"/>\n', "", text)
        ports_xml = "".join('  <port port="%s" protocol="%s"/>\n' % tuple(port.split("/")) for port in sorted(ports))
        os.makedirs(self.path("/etc/firewalld/zones"), exist_ok=True)
        with open(self.path("/etc/firewalld/zones/%s.xml" % zone), "w") as handle:
            handle.write(text.replace("</zone>", ports_xml + "</zone>"))

    def firewalld(self, args, runtime):
        zone = [arg.split("=", 1)[1] for arg in args if arg.startswith("--zone=")] or ["public"]
        ports = self.firewalld_zone(zone[0], runtime)
        if ports is None:
            return 112, "", "INVALID_ZONE: get_zone(): %s" % zone[0]
        for arg in args:
            verb, _, port = arg.partition("=")
            if verb in ("--add-port", "--remove-port"):
                there = port in ports
                (ports.add if verb == "--add-port" else ports.discard)(port)
                if not runtime:
                    self.firewalld_write(zone[0], ports)
                warning = "ALREADY_ENABLED" if verb == "--add-port" and there else "NOT_ENABLED" if verb == "--remove-port" and not there else ""
                return 0, "success\n", "Warning: %s: '%s'\n" % (warning, port) if warning else ""
            if verb == "--list-all":
                return 0, "%s (active)\n  services: ssh dhcpv6-client\n  ports: %s\n" % (zone[0], " ".join(sorted(ports))), ""
        return 2, "", "unexpected %s (fake)" % " ".join(args)

    def tool_firewall_offline_cmd(self, args):
        return self.firewalld(args, runtime=False)

    def tool_firewall_cmd(self, args):
        return self.firewalld([arg for arg in args if arg != "--permanent"], runtime="--permanent" not in args)

    # SELinux's file-context rules (file_contexts.local) and labels (the security.selinux attribute)
    def tool_semanage(self, args):
        """fcontext -a adds a local rule (an existing one for the pattern: "already defined"); -m changes one."""
        assert args[0] == "fcontext" and args[1] in ("-a", "-m") and args[2] == "-t", args
        path = self.path("/etc/selinux/targeted/contexts/files/file_contexts.local")
        lines = open(path).read().splitlines() if os.path.exists(path) else []
        mine = [line for line in lines if line.split()[:1] == [args[4]]]
        if (args[1] == "-a") == bool(mine):
            return 1, "", "ValueError: File context for %s %s" % (args[4], "already defined" if mine else "is not defined")
        lines = [line for line in lines if line not in mine] + ["%s    system_u:object_r:%s:s0" % (args[4], args[3])]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write("".join(line + "\n" for line in lines))
        return 0, "", ""

    def tool_restorecon(self, args):
        path = self.path(args[-1])
        if not os.path.exists(path):
            return 255, "", "restorecon: lstat(%s) failed: No such file or directory" % args[-1]
        rules = open(self.path("/etc/selinux/targeted/contexts/files/file_contexts.local")).read().splitlines()
        for line in rules:
            pattern, context = line.split()
            if pattern == args[-1].rstrip("/") + "(/.*)?":
                for top, dirs, files in os.walk(path):
                    for name in [""] + dirs + files:
                        os.setxattr(os.path.join(top, name) if name else top, "security.selinux", context.encode())
        return 0, "", ""

    def tool_umount(self, args):
        self.mounted.pop(args[-1], None)
        if self.root == "/" and os.path.exists("/proc/self/mountinfo"):
            with open("/proc/self/mountinfo") as handle:
                lines = [line for line in handle if line.split()[4] != args[-1]]
            with open("/proc/self/mountinfo", "w") as handle:
                handle.writelines(lines)
        return 0, "", ""

    def tool_nsenter(self, args):
        """nsenter --net=/run/netns/NAME COMMAND...: the command, as if inside that namespace."""
        options = [arg for arg in args if arg.startswith("-")]
        return self(args[len(options):], {})

    def tool_ip(self, args):
        """iproute2 as the lab uses it: namespaces, veth pairs with a peer in another namespace,
        bridges, addresses. State only; nothing is wired."""
        links = self.links
        if args[:1] == ["-n"]:
            if args[1] not in self.netns:
                return 1, "", 'Cannot open network namespace "%s": No such file or directory' % args[1]
            links, args = self.netns[args[1]], args[2:]
        verb = args[:2]
        if verb == ["netns", "list"]:
            return 0, "".join("%s (id: %d)\n" % (name, i) for i, name in enumerate(sorted(self.netns))), ""
        if verb == ["netns", "add"]:
            if args[2] in self.netns:
                return 1, "", "Cannot create namespace file: File exists"
            self.netns[args[2]] = {"lo": {"up": False, "addresses": []}}
            return 0, "", ""
        if verb == ["netns", "del"]:
            return (0, "", "") if self.netns.pop(args[2], None) is not None else (1, "", "No such file or directory")
        if verb == ["netns", "pids"]:
            return 0, "", ""
        if verb == ["link", "show"]:
            return (0, "%s: <UP>\n" % args[2], "") if args[2] in links else (1, "", 'Device "%s" does not exist.' % args[2])
        if verb == ["link", "del"]:
            return (0, "", "") if links.pop(args[2], None) is not None else (1, "", "Cannot find device")
        if verb == ["link", "add"]:
            name, rest = args[2], args[3:]
            home = links
            if rest[:1] == ["netns"]:
                home, rest = self.netns[rest[1]], rest[2:]
            if rest[:2] == ["type", "bridge"]:
                home[name] = {"up": False, "addresses": [], "bridge": True}
                return 0, "", ""
            assert rest[:4] == ["type", "veth", "peer", "name"], rest
            peer, peer_home = rest[4], links
            if rest[5:6] == ["netns"]:
                peer_home = self.netns[rest[6]]
            home[name] = {"up": False, "addresses": [], "peer": peer}
            peer_home[peer] = {"up": False, "addresses": [], "peer": name}
            return 0, "", ""
        if verb == ["link", "set"]:
            link = links[args[2]]
            if "master" in args:
                link["master"] = args[args.index("master") + 1]
            link["up"] = "up" in args[3:]
            return 0, "", ""
        if verb == ["addr", "add"]:
            links[args[args.index("dev") + 1]]["addresses"].append(args[2])
            return 0, "", ""
        return 1, "", "ip: unexpected %s (fake)" % " ".join(args)

    def tool_service(self, args):
        name, verb = args[0], args[1]
        state = self.units.setdefault(name, {"enabled": False, "active": False, "restarts": 0})
        if verb in ("status", "onestatus"):
            return (0 if state["active"] else 1), "", ""
        verb = verb[3:] if verb.startswith("one") else verb
        state["active"] = verb != "stop"
        state["restarts"] = state.get("restarts", 0) + (verb == "restart")
        return 0, "", ""


class RecordingRunner(stackboot.Runner):
    """Runs nothing: every argv goes to the fake tools and is recorded."""

    def __init__(self, root="/", tools=None):
        stackboot.Runner.__init__(self, root)
        self.tools = tools or FakeTools(root)
        self.calls = []
        self.inherited = []   # (argv, the descriptors it would inherit)

    def spawn(self, argv, cwd, env, input, timeout, stream, detach=False, kind="probe", inherit=()):
        rc, out, err = self.tools(argv, env)
        self.calls.append((list(argv), self.counts["change"], env))
        self.inherited.append((list(argv), list(inherit)))
        if stream is not None:
            for line in out.splitlines():
                stream(line)
        return stackboot.Result(self.display(argv), rc, out, err)

    def run(self, argv, change=False, **kwargs):
        result = stackboot.Runner.run(self, argv, change=change, **kwargs)
        self.calls[-1] = (self.calls[-1][0], "change" if change else "probe", self.calls[-1][2])
        return result

    def changes(self):
        return [argv for argv, kind, _ in self.calls if kind == "change"]

    def probes(self):
        return [argv for argv, kind, _ in self.calls if kind == "probe"]


DEBIAN = {"platform": "linux", "distro": "debian", "id_like": [], "version": "12", "major": "12", "pretty_name": "Debian 12",
          "codename": "bookworm", "init": "systemd", "package_manager": "apt", "arch": "x86_64", "cores": 2,
          "python": "3.11.2"}
FREEBSD = dict(DEBIAN, platform="freebsd", distro="freebsd", version="14.1", major="14", pretty_name="FreeBSD 14.1",
               codename="", init="rc", package_manager="pkg")
ROCKY = dict(DEBIAN, distro="rocky", id_like=["rhel", "centos", "fedora"], version="9.4", major="9", pretty_name="Rocky 9.4",
             codename="", package_manager="dnf")


def library_of(**profiles):
    """A library of test profiles (name=data), checked as stackboot checks its own."""
    library = stackboot.Library()
    for name, data in profiles.items():
        library.add(stackboot.parse_profile_text(name, name + ".json", json.dumps(data)))
    library.validate()
    return library


def plan_of(library, roles, facts, sets=(), goal="present"):
    """stackboot's one Plan for roles, with --set items as the only input."""
    inputs = stackboot.Inputs().add("--set", stackboot.parse_sets(list(sets)), "strict")
    return stackboot.make_plan(library, roles, facts, inputs, goal)


@pytest.fixture
def plan_spy(monkeypatch):
    """Every plan make_plan returns, in order; assess (and so converge) fails a test when it
    meets a step that no make_plan made: no command may build steps of its own."""
    made = []
    real_make_plan, real_assess = stackboot.make_plan, stackboot.assess

    def make_plan(library, roles, *args, **kwargs):
        made.append(real_make_plan(library, roles, *args, **kwargs))
        return made[-1]

    def assess(run, plans):
        for plan in plans:
            for step in plan.steps:
                assert any(step is mine for other in made for mine in other.steps), "%s: not from make_plan" % step.describe()
        return real_assess(run, plans)
    monkeypatch.setattr(stackboot, "make_plan", make_plan)
    monkeypatch.setattr(stackboot, "assess", assess)
    return made


def write_profile(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name + ".json")
    with open(path, "w") as handle:
        handle.write(json.dumps(data, indent=2) if not isinstance(data, str) else data)
    return path


def need_bare_root(suite):
    """Skip where debootstrapped roots cannot be had (not root, no debootstrap, no cache)."""
    import bareroot
    ok, why = bareroot.available(suite)
    if not ok:
        pytest.skip(why)
    bareroot.base_root(suite)


def bare_root_copy(suite, dest):
    """A fresh copy of the cached root for suite at dest."""
    import bareroot
    need_bare_root(suite)
    return bareroot.fresh_root(suite, dest)


def run_main(argv, runner, uname):
    """stackboot.main on a fake host: (exit code, stdout, stderr)."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = stackboot.main(argv, runner=runner, uname=uname)
    return code, out.getvalue(), err.getvalue()


def quote(argv):
    return " ".join(shlex.quote(a) for a in argv)


@pytest.fixture
def root(tmp_path):
    """A fresh bookworm root; a MooseFS master a test started in it is stopped afterwards.
    (Modules that need more, like /dev for loop devices, define their own.)"""
    import bareroot
    import signal
    path = bare_root_copy("bookworm", str(tmp_path / "root"))
    yield path
    try:
        with open(os.path.join(path, "var/lib/mfs/.mfsmaster.lock")) as handle:
            os.kill(int(handle.read().split()[0]), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass
    bareroot.cleanup_root(path)


@pytest.fixture
def tools():
    return FakeTools("/")


def pytest_configure(config):
    config.addinivalue_line("markers", "root: needs root privileges")
    config.addinivalue_line("markers", "bareroot: builds or uses debootstrapped Debian roots")
