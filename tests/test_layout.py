"""The package's shape: imports run one way (no cycle, lazy ones included), modules sit
in data-flow layers, and no two modules are look-alikes."""

import ast
import os
import pathlib
import re

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "dkd_jax"

# One folder per layer, in data-flow order. Lower layers never import higher ones; within
# a layer imports may go either way as long as there is no cycle. Only `__init__`, the
# command lines and `launch` stand directly in dkd_jax/.
LAYERS = (
  ("core.*",),
  ("data.*",),
  ("objectives.*",),
  ("models.*",),
  ("generate.*", "train.*"),
  ("evals.*",),
  ("runs.*",),
  ("launch", "evaluate", "report", "export", "rl_report", "aot"),
)
TOP_LEVEL = {"__init__", "launch", "evaluate", "report", "export", "rl_report", "aot"}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PKG.rglob("*.py"):
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    out[".".join(parts) or "__init__"] = path
  return out


def _resolve(name: str, modules) -> str | None:
  """dkd_jax.a.b (maybe a.b.symbol) -> the module key it names, or None if external."""
  if not name.startswith("dkd_jax"):
    return None
  parts = name.split(".")[1:]
  while parts and ".".join(parts) not in modules:
    parts = parts[:-1]
  return ".".join(parts) if parts else None


def import_graph() -> dict[str, set[str]]:
  """Every `import` / `from ... import` of each module: top level, inside functions and
  under TYPE_CHECKING alike."""
  modules = _modules()
  graph = {}
  for key, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" for a in node.names]
      for n in names:
        dep = _resolve(n, modules)
        if dep and dep != key and dep != "__init__":
          deps.add(dep)
    graph[key] = deps
  return graph


def _cycle(graph):
  state, stack = {}, []

  def visit(n):
    state[n] = 1
    stack.append(n)
    for m in sorted(graph.get(n, ())):
      if state.get(m) == 1:
        return stack[stack.index(m) :] + [m]
      if m not in state and (found := visit(m)):
        return found
    state[n] = 2
    stack.pop()
    return None

  for n in sorted(graph):
    if n not in state and (found := visit(n)):
      return found
  return None


def _layer(module: str) -> int:
  for i, names in enumerate(LAYERS):
    for pat in names:
      if module == pat or (
        pat.endswith(".*") and (module == pat[:-2] or module.startswith(pat[:-1]))
      ):
        return i
  raise AssertionError(f"module {module!r} has no layer in tests/test_layout.py LAYERS")


def test_no_import_cycle():
  assert _cycle(import_graph()) is None, " -> ".join(_cycle(import_graph()))


def test_cycle_finder_finds_one():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_only_go_down_the_layers():
  bad = [
    f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
    for m, deps in import_graph().items()
    if m != "__init__"
    for d in deps
    if _layer(d) > _layer(m)
  ]
  assert not bad, "\n".join(bad)


def test_only_command_lines_at_the_top():
  flat = {p.stem for p in PKG.glob("*.py")}
  assert flat <= TOP_LEVEL, f"move {sorted(flat - TOP_LEVEL)} into a layer folder"
  folders = {pat.split(".")[0] for names in LAYERS for pat in names if pat.endswith(".*")}
  subs = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
  assert subs == folders, f"folders {sorted(subs ^ folders)} must match LAYERS one to one"


def test_generate_and_train_are_siblings():
  """The engine serves the train step's rollouts and never needs the step itself."""
  g = import_graph()
  bad = [
    (m, d)
    for m, deps in g.items()
    for d in deps
    if (m.startswith("generate") and d.startswith("train"))
    or (m.startswith("train") and d.startswith("generate"))
  ]
  assert not bad, bad


def test_at_least_three_subpackages():
  subs = [p.name for p in PKG.iterdir() if (p / "__init__.py").exists()]
  assert len(subs) >= 3, subs


_ENDINGS = re.compile(r"(s|es|ing|ion|ions|er|ers|ed)$")


def _stem(name: str) -> str:
  return _ENDINGS.sub("", name)


def test_no_look_alike_module_names():
  names = sorted({k.split(".")[-1] for k in _modules()} - {"__init__"})
  clash = [
    (a, b)
    for i, a in enumerate(names)
    for b in names[i + 1 :]
    if _stem(a) == _stem(b) or a.startswith(b) or b.startswith(a)
  ]
  assert not clash, clash


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_has_a_docstring(module):
  tree = ast.parse(_modules()[module].read_text())
  assert ast.get_docstring(tree), f"dkd_jax/{module}: add a docstring saying what it is for"


def test_tests_mirror_the_package():
  tests = pathlib.Path(__file__).resolve().parent
  for sub in {pat.split(".")[0] for names in LAYERS for pat in names if pat.endswith(".*")}:
    assert list((tests / sub).glob("test_*.py")), f"tests/{sub}/ has no tests"
  assert os.path.exists(tests / "core" / "test_rng.py")
