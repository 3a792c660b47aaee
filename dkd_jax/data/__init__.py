"""Data: tokenizer protocol, the synthetic arithmetic task, dataset readers, grain pipelines.

`dkd_jax.data.tfds_math` (the TFDS builder) is not imported here: it pulls in
tensorflow_datasets, which most runs do not need.
"""

from dkd_jax.data.arithmetic import ArithmeticConfig
from dkd_jax.data.arithmetic import CharTokenizer
from dkd_jax.data.arithmetic import make_problem
from dkd_jax.data.arithmetic import make_records
from dkd_jax.data.arithmetic import score
from dkd_jax.data.pipeline import EncodedRecords
from dkd_jax.data.pipeline import batch_dataset
from dkd_jax.data.pipeline import encode_records
from dkd_jax.data.pipeline import prompt_dataset
from dkd_jax.data.protocols import Tokenizer
from dkd_jax.data.sources import DataError
from dkd_jax.data.sources import Record
from dkd_jax.data.sources import extract_hash_answer
from dkd_jax.data.sources import read_aime
from dkd_jax.data.sources import read_amc
from dkd_jax.data.sources import read_gsm8k
from dkd_jax.data.sources import read_math
from dkd_jax.data.sources import read_records
from dkd_jax.data.sources import read_shared

__all__ = [
  "ArithmeticConfig",
  "CharTokenizer",
  "DataError",
  "EncodedRecords",
  "Record",
  "Tokenizer",
  "batch_dataset",
  "encode_records",
  "extract_hash_answer",
  "make_problem",
  "make_records",
  "prompt_dataset",
  "read_aime",
  "read_amc",
  "read_gsm8k",
  "read_math",
  "read_records",
  "read_shared",
  "score",
]
