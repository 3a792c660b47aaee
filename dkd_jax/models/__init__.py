"""Models: the decoder family, checkpoints in and out (HF, GGUF) and tokenizers.

Modules: `decoder` (Flax NNX Llama/Qwen2/Qwen3 + KV cache), `hf` (HF directories),
`gguf` (llama.cpp files, via the HF path), `tokenizer` (HF tokenizers offline), `rope`,
`kv_cache`, `architectures` (HF config.json <-> ModelConfig), `handoff`, `hub_shapes`
(public checkpoints' config.json shapes, for the AOT compile check).
"""
