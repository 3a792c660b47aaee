"""Objectives: the design's two axes and what schedules them, as pure functions.

Modules: `kl` (the fused, chunked, vocab-sharded forward / reverse / mixed / JSD KL),
`naive_kl` (the direct reference it is tested against), `topk_loss` (KL against a cached
teacher top-K), `prefixes` (where prefixes come from), `schedules` (the KL-mixing alpha
schedules), `curriculum` (the entropy-gated length curriculum).
"""
