"""Offline-RL-style dense reward: teacher prefixes, reverse KL(q||p).

Run: python -m dkd_jax.launch --config=configs/rev_teacher.py[:tiny] --workdir=/tmp/rev_teacher
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str = "") -> mlc.ConfigDict:
  c = common.base(arg)
  c.objective.prefix = "teacher"
  c.objective.kl = "reverse"
  return c
