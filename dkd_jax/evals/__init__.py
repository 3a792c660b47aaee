"""Evaluation: grading (`math_eval`), the Avg@k / Pass@k / length / entropy / KL
harness (`harness`) and the tradeoff plots and table of a set of runs (`plots`).

The command lines are `python -m dkd_jax.evaluate` and `python -m dkd_jax.report`.
"""
