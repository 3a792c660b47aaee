"""Test harness: an emulated 8-device CPU mesh, set before jax is imported."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def shared_data():
  """Path to ../shared/data, or skip when a fresh clone has none."""
  path = os.path.abspath(SHARED_DATA)
  if not os.path.isdir(path):
    pytest.skip("../shared/data is absent")
  return path


MOCK_BUCKET = "gs://dkd-mock-bucket"


@pytest.fixture
def mock_gcs(tmp_path):
  """`gs://dkd-mock-bucket/...` served from a local folder through etils' own epath mock
  (`epath.testing.mock_epath`): code that reaches a run directory through epath works on
  it, code that uses os.path or open() on the string does not. Yields (bucket URL, the
  local folder behind it). etils 1.15 has no `file://` scheme and no in-memory backend;
  tensorstore (orbax's array reads) has its own GCS driver, which this cannot reach."""
  from etils.epath import testing

  root = tmp_path / "bucket"
  root.mkdir()

  def local(p):
    s = os.fspath(p) if isinstance(p, os.PathLike) else p
    return (
      str(root) + s[len(MOCK_BUCKET) :] if isinstance(s, str) and s.startswith(MOCK_BUCKET) else p
    )

  def redirect(fn, path, *args, **kwargs):
    return fn(local(path), *[local(a) for a in args], **kwargs)

  fns = "copy exists glob isdir listdir makedirs mkdir open remove rename replace rmtree stat walk"
  with testing.mock_epath(**{name: redirect for name in fns.split()}):
    yield MOCK_BUCKET, root


@pytest.fixture(scope="session")
def fault_bench():
  """benchmarks/faults.py as a module (loaded by path: site-packages may hold an unrelated
  `benchmarks` package): the fault scenarios the tests run at small size."""
  import importlib.util

  path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "faults.py")
  spec = importlib.util.spec_from_file_location("faults_bench", os.path.abspath(path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
