"""On-policy distillation (OPD): student rollouts, reverse KL(q||p).

Run: python -m dkd_jax.launch --config=configs/rev_student.py[:tiny] --workdir=/tmp/rev_student
"""

from configs import common


def get_config(arg: str = ""):
  c = common.base(arg)
  c.objective.prefix = "student"
  c.objective.kl = "reverse"
  return c
