"""Models: the decoder family, checkpoints in and out (HF, GGUF), tokenizers, the
bootstrapped teacher, and the teacher/student pair a run distils.

Modules: `decoder` (Flax NNX Llama/Qwen2/Qwen3 + KV cache), `hf` (HF directories),
`gguf` (llama.cpp files, via the HF path), `tokenizer` (HF tokenizers offline),
`bootstrap` (SFT teacher for the embedded task), `pair` (what a run loads).
"""
