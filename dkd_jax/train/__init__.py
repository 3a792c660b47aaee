"""Train: the jitted, sharded steps that turn a batch into an update.

Modules: `step` (the one distillation train step for every quadrant, its state and
optimizer), `grpo` (the clipped GRPO step), `teacher_topk` (the teacher pass that writes the
top-K cache).
"""
