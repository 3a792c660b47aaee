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


# Below `runs/`, settings arrive typed (ModelConfig, KLSpec, EvalSpec, Sampler, ...): the
# experiment's ConfigDict is turned into them once, by runs/configuration.py.
TYPED_ONLY = ("models", "evals", "generate")
CONFIG_SECTIONS = {
  "seed", "mesh", "teacher", "student", "objective", "curriculum", "data", "rollout",
  "optim", "train", "eval", "export", "rl", "init",
}  # fmt: skip


def _config_takers(tree: ast.Module) -> list[str]:
  """Functions that take a ConfigDict: a parameter annotated ConfigDict, or read as one
  (`param.data.x`, `param.eval.k`, ...: a config section, then a field)."""
  found = []
  for fn in ast.walk(tree):
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    names = {a.arg for a in args} - {"self", "cls"}
    for a in args:
      note = ast.unparse(a.annotation) if a.annotation is not None else ""
      if "ConfigDict" in note:
        found.append(f"{fn.name}({a.arg})")
    for node in ast.walk(fn):
      if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id in names
        and node.value.attr in CONFIG_SECTIONS
      ):
        found.append(f"{fn.name}: {ast.unparse(node)}")
  return found


def _to_dict(node: ast.AST) -> bool:
  """`x.to_dict` or `hasattr(x, "to_dict")`: treating an argument as a ConfigDict."""
  return (isinstance(node, ast.Attribute) and node.attr == "to_dict") or (
    isinstance(node, ast.Constant) and node.value == "to_dict"
  )


@pytest.mark.parametrize("layer", TYPED_ONLY)
def test_no_config_dict_below_runs(layer):
  bad = {}
  for path in sorted((PKG / layer).rglob("*.py")):
    tree = ast.parse(path.read_text())
    imports = [
      n.lineno
      for n in ast.walk(tree)
      if isinstance(n, (ast.Import, ast.ImportFrom))
      and any(
        (a.name if isinstance(n, ast.Import) else n.module or "").startswith("ml_collections")
        for a in n.names
      )
    ]
    found = _config_takers(tree) + [f"imports ml_collections (line {i})" for i in imports]
    found += [f"reads .to_dict() (line {n.lineno})" for n in ast.walk(tree) if _to_dict(n)]
    if found:
      bad[str(path.relative_to(PKG))] = found
  assert not bad, f"build a typed spec in runs/configuration.py and pass that instead: {bad}"


def test_the_config_scan_finds_a_config_taker():
  src = (
    "def f(pair, e):\n  return e.eval.k\n\n"
    "def g(c: mlc.ConfigDict):\n  pass\n\n"
    "def h(spec, n):\n  return spec.k + n.data\n"
  )
  assert sorted(_config_takers(ast.parse(src))) == ["f: e.eval.k", "g(c)"]


# ---------------------------------------------------------------- README's Layout section


def _summary(path: pathlib.Path, width: int = 76) -> str:
  """A module's one-line summary: its docstring's first sentence, cut to `width` at a
  word boundary."""
  text = " ".join(ast.get_docstring(ast.parse(path.read_text())).split("\n\n")[0].split())
  sentence = re.split(r"(?<=[a-z0-9)`'])\. ", text + " ", maxsplit=1)[0].strip().rstrip(".")
  if len(sentence) <= width:
    return sentence
  return sentence[: width - 1].rsplit(" ", 1)[0].rstrip(",:;") + " …"


def render_layout() -> str:
  """README's Layout block, from LAYERS (one entry per folder, in data-flow order) and
  each module's docstring."""
  lines = ["dkd_jax/"]
  for names in LAYERS:
    folders = [pat[:-2] for pat in names if pat.endswith(".*")]
    if not folders:  # the command lines, directly in dkd_jax/
      for name in names:
        lines.append(f"  {name + '.py':<19} {_summary(PKG / (name + '.py'))}")
      continue
    if len(folders) > 1:
      lines.append(
        f"  ({' and '.join(f + '/' for f in folders)}: side by side, neither imports the other)"
      )
    for folder in folders:
      lines.append(f"  {folder + '/':<19} {_summary(PKG / folder / '__init__.py')}")
      for path in sorted((PKG / folder).glob("*.py")):
        if path.stem != "__init__":
          lines.append(f"    {path.name:<17} {_summary(path)}")
  return "\n".join(lines) + "\n"


def _readme_layout() -> str:
  readme = (PKG.parent / "README.md").read_text()
  section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
  return section.split("```\n", 2)[1]


def test_readme_layout_is_the_rendered_one():
  assert _readme_layout() == render_layout(), (
    "README's Layout block drifted from the package: paste `python tests/test_layout.py`"
  )


if __name__ == "__main__":
  print(render_layout(), end="")
