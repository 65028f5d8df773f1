"""`make bench`: start-up, plan and no-op install timings against SPEC.md's budgets.

A bookworm root (tests/bareroot.py) is converged once with a 15-step profile (the demo
node plus four more files and directories) and given an installed copy of stackboot
(`self-install`: a module with its bytecode, and a launcher). Then, inside the root as a
host runs them, with a host's bare environment: `--help`, `plan` and a no-op `install`,
each piped (`python3 - < stackboot.py`, compiled every time) and from the installed copy;
medians over several runs. The no-op install's processes are counted from the root's log.
Run with the system interpreter (/usr/bin/python3): a pyenv shim adds ~0.13 s.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bareroot  # noqa: E402

RUNS = 9
# (how it runs, what) -> seconds; SPEC.md: piped --help 0.1 s, plan and no-op install 0.3 s;
# an installed copy 0.05 s for --help and a no-op install.
BUDGETS = {("piped", "--help"): 0.1, ("piped", "plan"): 0.3, ("piped", "install (no-op)"): 0.3,
           ("installed", "--help"): 0.05, ("installed", "plan"): 0.3, ("installed", "install (no-op)"): 0.05}
MAX_PROBES_PER_ROLE = 5
HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}   # a host's: no PYTHONDONTWRITEBYTECODE


def bench_profile():
    with open(os.path.join(HERE, "profiles", "demo-node.json")) as handle:
        profile = json.load(handle)
    profile["description"] = "benchmark: demo node plus more files (15 steps)"
    profile["steps"] += [
        {"kind": "directory", "path": "/etc/demo/conf.d", "mode": "0755"},
        {"kind": "file", "path": "/etc/demo/conf.d/a.cfg", "settings": {"A": "1", "B": "{{port}}"}},
        {"kind": "file", "path": "/etc/demo/conf.d/b.cfg", "template": "greeting={{greeting}}\n"},
        {"kind": "line", "path": "/etc/demo/conf.d/c.cfg", "line": "c = 3"},
    ]
    assert len(profile["steps"]) == 15
    return profile


def timed(argv, stdin=None):
    with open(stdin) if stdin else open(os.devnull) as feed:
        started = time.perf_counter()
        result = subprocess.run(argv, stdin=feed, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, env=HOST_ENV)
        elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit("%s failed:\n%s%s" % (" ".join(argv), result.stdout, result.stderr))
    return elapsed, result


def main():
    ok, why = bareroot.available("bookworm")
    if not ok:
        raise SystemExit("bench needs a bare root: " + why)
    python, script = sys.executable, os.path.join(TOP, "stackboot.py")
    bareroot.base_root("bookworm")
    work = tempfile.mkdtemp(prefix="stackboot-bench-")
    root = bareroot.fresh_root("bookworm", os.path.join(work, "root"))
    try:
        os.makedirs(os.path.join(root, "etc/stackboot/profiles"))
        with open(os.path.join(root, "etc/stackboot/profiles/bench-node.json"), "w") as handle:
            json.dump(bench_profile(), handle)
        ways = {"piped": (["chroot", root, "/usr/bin/python3", "-"], script),
                "installed": (["chroot", root, "/usr/bin/python3", "/usr/local/sbin/stackboot"], None)}
        timed(ways["piped"][0] + ["install", "bench-node", "--set", "port=18480"], script)
        timed([python, script, "--root", root, "self-install"])
        results = {}
        for way, (argv, stdin) in ways.items():
            for name, args in (("--help", ["--help"]), ("plan", ["plan", "bench-node"]), ("install (no-op)", ["install", "bench-node"])):
                results[(way, name)] = [timed(argv + args, stdin)[0] for _ in range(RUNS)]
        _, last = timed(ways["installed"][0] + ["install", "bench-node"])
        log = [json.loads(line) for line in open(os.path.join(root, "var/log/stackboot.log"))]
        start = max(i for i, record in enumerate(log) if record.get("event") == "install")
        spawned = [record for record in log[start + 1:] if "argv" in record]
        probes = [r for r in spawned if r["kind"] == "probe"]
        changes = [r for r in spawned if r["kind"] == "change"]
        failed = []
        print("stackboot bench (%s in a bookworm root, %d runs, median)" % (python, RUNS))
        for (way, name), samples in results.items():
            median = statistics.median(samples)
            over = median > BUDGETS[(way, name)]
            failed += [(way, name)] if over else []
            print("  %-10s %-16s %6.3f s   budget %.2f s%s" % (way, name, median, BUDGETS[(way, name)],
                                                              "  OVER BUDGET" if over else ""))
        print("  no-op install: %d probe processes (budget %d), %d mutating commands (budget 0); %s"
              % (len(probes), MAX_PROBES_PER_ROLE, len(changes), last.stdout.splitlines()[-1]))
        for record in probes:
            print("    probe: %s" % " ".join(record["argv"]))
        if len(probes) > MAX_PROBES_PER_ROLE or changes or "0 changed" not in last.stdout:
            failed.append("processes")
        return 1 if failed else 0
    finally:
        pidfile = os.path.join(root, "run/demo/demo.pid")
        if os.path.exists(pidfile):
            try:
                os.kill(int(open(pidfile).read().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        bareroot.cleanup_root(root)
        os.rmdir(work) if not os.listdir(work) else None


if __name__ == "__main__":
    sys.exit(main())
