"""Core: the infrastructure every layer above stands on, with no knowledge of models or
objectives.

Modules: `rng` (named key streams), `sharding` (the mesh and the logical-axis rules table),
`multihost` (process-aware helpers), `paths` (local or `gs://` paths through etils.epath),
`checkpointing` (atomic orbax checkpoints that resume exactly), `metrics_log` (JSONL and
TensorBoard metrics, once per step), `platforms` (which JAX platform a command line uses).
"""
