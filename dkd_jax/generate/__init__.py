"""Generation: the JetStream-API engine, its pure decode-state functions, samplers and
the continuous-batching rollout driver that serves student (and teacher) prefixes.

Modules: `sampling` (samplers as frozen dataclasses), `decode_state` (pure prefill / insert /
generate over a decode-state pytree), `engine` (the Engine API around them),
`rollout` (host loop: keeps every decode slot busy, returns packed results).
"""
