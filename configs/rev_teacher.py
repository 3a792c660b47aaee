"""Offline-RL-style dense reward: teacher prefixes, reverse KL(q||p), from a warm-started student.

Run: python -m dkd_jax.launch --config=configs/rev_teacher.py[:tiny] --workdir=/tmp/rev_teacher

The student starts pretrained (`student.init='warm_start'`), as the paper's students do
(DESIGN §8): a short SFT (`student.warm_start`: 400 steps) on gold traces of problems
disjoint from the distillation's train and held-out problems, cached in the workdir like
the bootstrapped teacher. Why: from a random init this objective learns almost nothing
here (Avg@4 0.008 against the teacher's 0.37, half the answers cut at the length budget).
That is not a defect in the loss. It is what reverse KL on teacher prefixes does:
per token, its push toward the teacher's token scales with the student's own probability
of that token. The tokens a random student quickly gives no mass (e.g. the space after
'####') then barely move. The student stops correctly on teacher prefixes, but its own
samples loop ('#####...') at states it never visits in training (BUILD_NOTES, "rev_teacher
from a random student (issue 20)"). `--config.student.init=random` gives that run back.
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str = "") -> mlc.ConfigDict:
  c = common.base(arg)
  c.objective.prefix = "teacher"
  c.objective.kl = "reverse"
  c.student.init = "warm_start"
  return c
