"""dkd_jax: decoupled KL / prefix-source LLM distillation in JAX."""

from setuptools import find_packages
from setuptools import setup

setup(
  name="dkd_jax",
  version="0.1.0",
  description="JAX/TPU-native LLM knowledge distillation: decoupled prefix source and token KL.",
  packages=find_packages(include=["dkd_jax", "dkd_jax.*", "configs"]),
  python_requires=">=3.10",
  install_requires=[
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "etils[epath]",
    "grain>=0.2.10",
    "tensorflow-datasets>=4.9.9",
    "array-record>=0.7",
    "ml-collections>=1.0",
    "absl-py",
    "tensorboardX>=2.6",
    "safetensors>=0.4",
    "tokenizers>=0.20",
    "numpy>=1.26",
    "gguf>=0.10",
    "math-verify>=0.7",
    "tqdm",
    "jinja2",
    "matplotlib",
  ],
  extras_require={
    # torch pinned exactly: a looser spec pulls a multi-GB CUDA build.
    # accelerate: transformers' GGUF loader (from_pretrained(..., gguf_file=...)) needs it.
    # nbclient/nbformat/ipykernel execute notebooks/colab_tpu_demo.ipynb in the tests.
    # ruff: the lint and format check .ci/run runs (pinned like .pre-commit-config.yaml).
    "test": [
      "pytest>=8",
      "hypothesis==6.155.2",  # property-based tests of the data readers (issue 23)
      "torch==2.13.0",
      "transformers>=4.50",
      "accelerate",
      "nbclient==0.11.0",
      "nbformat==5.11.1",
      "ipykernel==7.4.0",
      "ruff==0.17.6",
    ],
    "jetstream": ["google-jetstream==0.2.2"],
    # python -m dkd_jax.aot: the TPU compiler (libtpu) for compiling against a TPU
    # topology from any machine; also what a TPU VM runs on.
    "tpu": ["jax[tpu]==0.10.2"],
    # benchmarks/opd_bench.py: TRL's GKDTrainer side by side with our OPD step.
    "bench": ["trl==1.16.0"],
  },
)
