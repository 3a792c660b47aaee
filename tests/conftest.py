"""Test harness: an emulated 8-device CPU mesh, set before jax is imported."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must follow the XLA_FLAGS line)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def shared_data():
  """Path to ../shared/data, or skip when a fresh clone has none."""
  path = os.path.abspath(SHARED_DATA)
  if not os.path.isdir(path):
    pytest.skip("../shared/data is absent")
  return path


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
