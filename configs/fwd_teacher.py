"""SFT with soft targets: teacher prefixes, forward KL(p||q).

Run: python -m dkd_jax.launch --config=configs/fwd_teacher.py[:tiny] --workdir=/tmp/fwd_teacher
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str = "") -> mlc.ConfigDict:
  c = common.base(arg)
  c.objective.prefix = "teacher"
  c.objective.kl = "forward"
  return c
