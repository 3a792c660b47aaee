"""On-policy distillation with the entropy-gated length curriculum (DESIGN.md §6).

Run: python -m dkd_jax.launch --config=configs/curriculum.py[:tiny] --workdir=/tmp/curriculum
Stages of max response length advance when the windowed student entropy stays
above `gate_entropy` and truncation is low; on collapse the stage is held and the
forward-KL weight alpha is raised (KL mixing as the stabiliser).
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str = "") -> mlc.ConfigDict:
  c = common.base(arg)
  c.objective.prefix = "student"
  c.objective.kl = "mixed"
  c.objective.alpha = 0.2
  c.curriculum.enabled = True
  return c
