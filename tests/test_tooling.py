"""The lint is one tool at one version: setup.py's test extra, the pre-commit hook and
.ci/run pin the same ruff, .ci/run lints before it runs the README's test command
verbatim, and the tree is clean."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
  found = {
    "setup.py": re.findall(r'"ruff==([\d.]+)"', (ROOT / "setup.py").read_text()),
    ".pre-commit-config.yaml": re.findall(
      r"rev: v([\d.]+)", (ROOT / ".pre-commit-config.yaml").read_text()
    ),
    ".ci/run": re.findall(r"ruff==([\d.]+)", (ROOT / ".ci" / "run").read_text()),
  }
  for where, versions in found.items():
    assert len(versions) == 1, f"{where}: expected one ruff pin, found {versions}"
  return {where: v[0] for where, v in found.items()}


def test_one_ruff_version():
  pins = _pins()
  assert len(set(pins.values())) == 1, pins


def test_ci_lints_before_the_readme_test_command():
  ci = (ROOT / ".ci" / "run").read_text()
  readme = (ROOT / "README.md").read_text()
  test_cmd = re.findall(r"^(python -m pip install -e \"\.\[test\]\".*)$", readme, re.M)
  assert len(test_cmd) == 1, test_cmd
  assert test_cmd[0] in ci.splitlines(), "the README's test command is not in .ci/run verbatim"
  assert ci.index("ruff check") < ci.index(test_cmd[0])
  assert ci.index("ruff format --check") < ci.index(test_cmd[0])


def test_tree_is_lint_clean():
  try:
    import ruff  # noqa: F401
  except ImportError:
    pytest.skip("ruff is not installed (pip install -e '.[test]')")
  for args in (["check", "."], ["format", "--check", "."]):
    out = subprocess.run(
      [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, f"ruff {' '.join(args)}:\n{out.stdout}{out.stderr}"
