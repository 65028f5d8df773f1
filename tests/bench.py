"""`make bench`: start-up, plan and no-op install timings against SPEC.md's budgets.

A bookworm root (tests/bareroot.py) is converged once with a 15-step profile
(the demo node plus four more files and directories); then `plan` and a no-op
`install` are timed from the host with --root, medians over several runs, and
the no-op install's processes are counted from stackboot's own log.
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
BUDGETS = {"--help": 0.1, "plan": 0.3, "install (no-op)": 0.3}
MAX_PROBES_PER_ROLE = 5


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


def timed(argv):
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit("%s failed:\n%s%s" % (" ".join(argv), result.stdout, result.stderr))
    return elapsed, result


def main():
    ok, why = bareroot.available("bookworm")
    if not ok:
        raise SystemExit("bench needs a bare root: " + why)
    python = sys.executable
    bareroot.base_root("bookworm")
    work = tempfile.mkdtemp(prefix="stackboot-bench-")
    root = bareroot.fresh_root("bookworm", os.path.join(work, "root"))
    try:
        profiles = os.path.join(work, "profiles")
        os.makedirs(profiles)
        with open(os.path.join(profiles, "bench-node.json"), "w") as handle:
            json.dump(bench_profile(), handle)
        base = [python, os.path.join(TOP, "stackboot.py"), "--root", root, "--profiles", profiles]
        timed(base + ["install", "bench-node", "--set", "port=18480"])
        results = {}
        results["--help"] = [timed([python, os.path.join(TOP, "stackboot.py"), "--help"])[0] for _ in range(RUNS)]
        results["plan"] = [timed(base + ["plan", "bench-node"])[0] for _ in range(RUNS)]
        results["install (no-op)"] = [timed(base + ["install", "bench-node"])[0] for _ in range(RUNS)]
        _, last = timed(base + ["install", "bench-node"])
        log = [json.loads(line) for line in open(os.path.join(root, "var/log/stackboot.log"))]
        start = max(i for i, record in enumerate(log) if record.get("event") == "install")
        spawned = [record for record in log[start + 1:] if "argv" in record]
        probes = [r for r in spawned if r["kind"] == "probe"]
        changes = [r for r in spawned if r["kind"] == "change"]
        failed = []
        print("stackboot bench (%s, %d runs, median)" % (python, RUNS))
        for name, samples in results.items():
            median = statistics.median(samples)
            over = median > BUDGETS[name]
            failed += [name] if over else []
            print("  %-18s %6.3f s   budget %.1f s%s" % (name, median, BUDGETS[name], "  OVER BUDGET" if over else ""))
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
