"""Offline-RL-style dense reward: teacher prefixes, reverse KL(q||p).

Run: python -m dkd_jax.launch --config=configs/rev_teacher.py[:tiny] --workdir=/tmp/rev_teacher
"""

from configs import common


def get_config(arg: str = ""):
  c = common.base(arg)
  c.objective.prefix = "teacher"
  c.objective.kl = "reverse"
  return c
