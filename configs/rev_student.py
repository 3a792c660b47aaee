"""On-policy distillation (OPD): student rollouts, reverse KL(q||p).

Run: python -m dkd_jax.launch --config=configs/rev_student.py[:tiny] --workdir=/tmp/rev_student
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str = "") -> mlc.ConfigDict:
  c = common.base(arg)
  c.objective.prefix = "student"
  c.objective.kl = "reverse"
  return c
