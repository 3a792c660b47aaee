"""DAgger-style on-policy SFT: student rollouts, forward KL(p||q).

Run: python -m dkd_jax.launch --config=configs/fwd_student.py[:tiny] --workdir=/tmp/fwd_student
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str = "") -> mlc.ConfigDict:
  c = common.base(arg)
  c.objective.prefix = "student"
  c.objective.kl = "forward"
  return c
