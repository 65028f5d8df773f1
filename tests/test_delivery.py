"""Delivery: one file that runs piped, carries its profiles, stays stdlib-only; the zipapp matches it."""

import ast
import os
import subprocess
import sys

import pytest

import embed_profiles
from conftest import TOP

SOURCE = os.path.join(TOP, "stackboot.py")


def run(argv, stdin=None, cwd="/"):
    return subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, cwd=cwd)


def test_embedded_profiles_and_clusters_are_identical_to_profiles_dir():
    with open(os.path.join(TOP, "stackboot.py")) as handle:
        source = handle.read()
    for name, directory in embed_profiles.BLOCKS.items():
        block = embed_profiles.block_re(name).search(source).group(0)
        assert block == embed_profiles.render_block(embed_profiles.profile_texts(directory), name), \
            "stackboot.py's %s differ from %s: run `make embed`" % (name, directory)


def test_embedded_profiles_pass_every_check_a_users_profile_gets():
    """stackboot trusts its built-in profiles at start-up (speed); here they get every check."""
    import stackboot
    library = stackboot.Library()
    for name, text in stackboot.EMBEDDED_PROFILES.items():
        library.add(stackboot.parse_profile_text(name, "embedded %s" % name, text))
    library.validate(everything=True)
    for name, text in stackboot.EMBEDDED_CLUSTERS.items():
        stackboot.parse_cluster(library, stackboot.detect_facts(stackboot.Host("/"), ("Linux", "x86_64")), name,
                                stackboot.load_json(text, name, "fix it"))


def test_top_level_holds_only_definitions_and_main_comes_last():
    tree = ast.parse(open(SOURCE).read())
    body = tree.body
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign)
    for node in body[1:-1]:
        if isinstance(node, ast.If):   # only the early Ctrl-C handler, before the rest is read
            assert ast.unparse(node.test) == "__name__ == '__main__'" and "main()" not in ast.unparse(node)
            assert node.lineno < 50, "line %d: the early handler belongs at the top" % node.lineno
            continue
        assert isinstance(node, allowed), "line %d: %s at top level" % (node.lineno, type(node).__name__)
        if isinstance(node, ast.Assign):
            assert not any(isinstance(sub, ast.Call) and getattr(sub.func, "id", "") == "main" for sub in ast.walk(node))
    last = body[-1]
    assert isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'"
    assert "main()" in ast.unparse(last)


def test_only_standard_library_imports():
    tree = ast.parse(open(SOURCE).read())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module.split(".")[0])
    assert modules and modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


def test_piped_run_uses_the_embedded_profiles_and_prints_a_final_line(tmp_path):
    with open(SOURCE) as script:
        piped = run([sys.executable, "-", "list"], stdin=script, cwd=str(tmp_path))
    assert piped.returncode == 0, piped.stderr
    assert "master " in piped.stdout and "moosefs-common" in piped.stdout
    assert piped.stderr.splitlines()[-1] == "stackboot: done (exit 0)"
    direct = run([sys.executable, SOURCE, "list"])
    assert direct.stdout == piped.stdout


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.9, 0.99])
def test_a_truncated_download_runs_nothing(tmp_path, fraction):
    """What `curl | python3 -` gets when the connection drops: no output and no final line."""
    lines = open(SOURCE).read().splitlines(True)
    cut = tmp_path / "cut.py"
    cut.write_text("".join(lines[:int(len(lines) * fraction)]))
    with open(str(cut)) as script:
        result = run([sys.executable, "-", "install", "master"], stdin=script, cwd=str(tmp_path))
    assert result.stdout == ""
    assert "stackboot: done" not in result.stderr


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    out = run(["make", "-C", TOP, "dist"])
    assert out.returncode == 0, out.stderr
    return os.path.join(TOP, "dist", "stackboot.pyz")


@pytest.fixture
def bare(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return str(root)


@pytest.mark.parametrize("args", [["list"], ["show", "master"], ["plan", "master"], ["show", "master", "--json"]])
def test_zipapp_gives_the_same_output(pyz, bare, args):
    argv = ["--root", bare] + args
    with_file = run([sys.executable, SOURCE] + argv)
    with_pyz = run([sys.executable, pyz] + argv)
    assert with_file.returncode == with_pyz.returncode
    assert with_file.stdout == with_pyz.stdout and with_file.stdout
    assert with_pyz.stderr.splitlines()[-1].startswith("stackboot: done")


def test_help_and_version():
    helped = run([sys.executable, SOURCE, "--help"])
    assert helped.returncode == 0
    for command in ("facts", "list", "show", "plan", "install", "check"):
        assert "    %s " % command in helped.stdout
    for line in ("  0  success", "  1  failure", "  2  changes pending", "  64  bad usage or bad input"):
        assert line in helped.stdout
    version = run([sys.executable, SOURCE, "--version"])
    assert version.returncode == 0 and version.stdout.startswith("stackboot ")
