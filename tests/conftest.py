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
