"""Data: tokenizer protocol, the synthetic arithmetic task, dataset readers, grain pipelines.

`dkd_jax.data.tfds_math` (the TFDS builder) is not imported here: it pulls in
tensorflow_datasets, which most runs do not need.
"""
from dkd_jax.data.arithmetic import ArithmeticConfig, CharTokenizer, make_problem, make_records, score
from dkd_jax.data.pipeline import EncodedRecords, batch_dataset, encode_records, prompt_dataset
from dkd_jax.data.sources import (DataError, Record, extract_hash_answer, read_aime, read_amc,
                                  read_gsm8k, read_math, read_records, read_shared)
from dkd_jax.data.protocols import Tokenizer

__all__ = [
    "ArithmeticConfig", "CharTokenizer", "DataError", "EncodedRecords", "Record", "Tokenizer",
    "batch_dataset", "encode_records", "extract_hash_answer", "make_problem", "make_records",
    "prompt_dataset", "read_aime", "read_amc", "read_gsm8k", "read_math", "read_records",
    "read_shared", "score",
]
