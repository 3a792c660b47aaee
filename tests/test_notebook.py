"""notebooks/colab_tpu_demo.ipynb runs top to bottom on CPU (tiny preset, a few steps), so
the Colab demo cannot drift from the code."""

import os

import pytest

nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient)")
nbformat = pytest.importorskip("nbformat")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def test_colab_notebook_executes_on_cpu(monkeypatch):
  # The kernel is a fresh process: it inherits these, not conftest's jax state.
  monkeypatch.setenv("DKD_NOTEBOOK_SMOKE", "1")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "colab_tpu_demo.ipynb"), as_version=4)
  nbclient.NotebookClient(
    nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": ROOT}}
  ).execute()
  out = "".join(
    o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
  )
  assert "mesh {'data': 2" in out
  for name in ("fwd_teacher", "rev_teacher", "fwd_student", "rev_student"):
    assert f"{name} " in out and "Avg@2=" in out
