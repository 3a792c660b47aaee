"""dkd_jax: decoupled prefix-source x token-KL distillation for LLMs in JAX."""

__version__ = "0.1.0"
