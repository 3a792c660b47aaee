"""Runs: assembling a run from a config and driving it.

Modules: `configuration` (the config's typed, validated pieces), `tasks` (the task a config
names: records, tokenizer, grader), `pair` (the teacher/student pair a run loads),
`bootstrap` (the SFT teacher for the embedded task), `workdir` (everything about a run
directory), `distill_loop` (the distillation loop), `rl_loop` (the GRPO loop),
`tpu_compile` (every jitted function of a run compiled ahead of time for a TPU topology).
"""
