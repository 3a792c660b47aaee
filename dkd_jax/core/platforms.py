"""Which JAX platform a command line uses, decided before JAX starts a backend.

With `jax[tpu]` installed (the `tpu` extra, which CI installs for the compile check),
every JAX process on a machine without TPUs still loads libtpu when JAX_PLATFORMS is
unset: it prints five lines of "could not determine TPU accelerator type" errors and
takes the machine-wide lock /tmp/libtpu_lockfile for its whole life. A second such
process (another run, or `python -m dkd_jax.aot`) then cannot load libtpu at all.

`prefer_cpu_without_accelerator()` (called by the command lines first thing in `main`,
before any JAX backend starts) therefore sets JAX_PLATFORMS=cpu when the user left it unset
and the machine shows no TPU chip and no NVIDIA GPU; a TPU VM, a GPU host and any
explicit JAX_PLATFORMS are left alone. `compile_only()` is the AOT check's setting:
JAX on the CPU, libtpu loaded only for its compiler, never holding the chips' lock.
"""

from __future__ import annotations

import glob
import os
import sys

# PCI ids of TPU chips (the table jax/_src/hardware_utils.py keeps; vendor Google).
_GOOGLE_VENDOR = "0x1ae0"
_TPU_DEVICE_IDS = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}
_NVIDIA_DEVICES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")


def visible_tpu_chips() -> int:
  """TPU chips attached to this machine over PCI (0 on a CPU machine)."""
  n = 0
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() != _GOOGLE_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor), "device")) as f:
        n += f.read().strip() in _TPU_DEVICE_IDS
    except OSError:
      continue
  return n


def prefer_cpu_without_accelerator() -> str | None:
  """Sets JAX_PLATFORMS=cpu when it is unset and no TPU or GPU is visible; returns the
  value it set (None when it left the environment alone)."""
  if os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME"):
    return None
  if visible_tpu_chips() or any(os.path.exists(d) for d in _NVIDIA_DEVICES):
    return None
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "jax" in sys.modules:  # imported already: its flag read the environment then
    sys.modules["jax"].config.update("jax_platforms", "cpu")
  return "cpu"


def compile_only() -> None:
  """For AOT compilation against a TPU topology description: JAX computes on the CPU
  (unless the user chose otherwise) and libtpu is loaded without its multi-process lock,
  so the check runs beside a training process or another check, even on a TPU VM."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
