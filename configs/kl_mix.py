"""KL mixing: alpha*forward + (1-alpha)*reverse on student rollouts, alpha on a cosine schedule.

Run: python -m dkd_jax.launch --config=configs/kl_mix.py[:tiny] --workdir=/tmp/kl_mix
Presets (comma-separated with tiny): `teacher` uses teacher prefixes instead;
`adaptive` makes alpha entropy-adaptive (rises when student entropy < target).
"""

import ml_collections as mlc

from configs import common

EXTRA = ("teacher", "adaptive")


def get_config(arg: str = "") -> mlc.ConfigDict:
  presets = common.presets(arg, EXTRA)
  c = common.base(arg, EXTRA)
  c.objective.prefix = "teacher" if "teacher" in presets else "student"
  c.objective.kl = "mixed"
  c.objective.alpha = 0.8
  c.objective.alpha_schedule.kind = "entropy_adaptive" if "adaptive" in presets else "cosine"
  c.objective.alpha_schedule.alpha_end = 0.2
  return c
