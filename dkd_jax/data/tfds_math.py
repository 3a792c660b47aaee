"""A TFDS builder for the local math files, prepared to array_record, read without TF.

Finding (tfds 4.9.10, array_record 0.8.6): `download_and_prepare` with
`file_format="array_record"` and `tfds.data_source` / `as_data_source` work with
TensorFlow absent; only `as_dataset` (tf.data) needs it, and we never call it.
Prepared data then feeds grain like any random-access source:

    src = data_source("gsm8k", "train", manual_dir=..., data_dir=...)
    ds = grain.MapDataset.source(src)          # or pipeline.prompt_dataset(src, ...)

The builder reuses `sources.read_records`, so malformed files fail with the same
file:line `DataError` as the plain readers, and records keep file order.

Preparing a local file is quiet: TFDS's "Downloading and preparing dataset..." banner,
its custom-config warning and its per-split bars (written for remote downloads, and
alarming to an offline user) are replaced by one line naming the file and the folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator
from collections.abc import Sequence

try:
  import tensorflow_datasets as tfds
except ImportError as e:  # pragma: no cover - the package is a hard dependency
  raise ImportError(
    "dkd_jax.data.tfds_math needs the packages tensorflow-datasets and array-record "
    "(not TensorFlow). Without them use dkd_jax.data.sources readers, which give "
    "the same records."
  ) from e

from etils import epath

from dkd_jax.data import sources

_FIELDS = ("id", "question", "answer", "solution")


# Not frozen: tfds.core.BuilderConfig is a plain dataclass.
@dataclasses.dataclass
class LocalMathConfig(tfds.core.BuilderConfig):
  """fmt: one of sources.FORMATS; split_files: split name -> file in MANUAL_DIR."""

  fmt: str = "gsm8k"
  split_files: tuple[tuple[str, str], ...] = ()


class LocalMath(tfds.core.GeneratorBasedBuilder):
  """Local GSM8K/MATH/AIME/AMC files as uniform (id, question, answer, solution)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Uniform records from local JSON/JSONL files."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Place the data files (e.g. gsm8k_train.jsonl, math500.json; see "
    "../shared/data/README.md) in the manual dir."
  )
  BUILDER_CONFIGS = [
    LocalMathConfig(
      name="gsm8k",
      fmt="gsm8k",
      split_files=(("train", "gsm8k_train.jsonl"), ("test", "gsm8k_test.jsonl")),
    ),
    LocalMathConfig(name="math500", fmt="math", split_files=(("test", "math500.json"),)),
    LocalMathConfig(name="aime24", fmt="aime", split_files=(("test", "aime24.jsonl"),)),
    LocalMathConfig(name="amc23", fmt="amc", split_files=(("test", "amc23.jsonl"),)),
  ]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds 4.9.10 derives this through the `importlib_resources` backport, which
    # it does not declare as a dependency; this file is the same answer.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: dataset_info_from_configs wants metadata files
    # (README, TAGS...) beside the module, which a library module does not ship.
    return tfds.core.DatasetInfo(
      builder=self,
      description="Local math problems as uniform records.",
      features=tfds.features.FeaturesDict({k: tfds.features.Text() for k in _FIELDS}),
      # File order is meaningful (ids, eval reproducibility): do not shuffle.
      disable_shuffling=True,
    )

  # Nothing is downloaded: TFDS's download banners would only mislead (see `_quiet`).
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  def _split_generators(self, dl_manager) -> dict[str, Iterator[tuple[int, dict[str, str]]]]:
    manual_dir = os.fspath(dl_manager.manual_dir)
    return {
      split: self._generate_examples(os.path.join(manual_dir, filename))
      for split, filename in self.builder_config.split_files
    }

  def _generate_examples(self, path: str) -> Iterator[tuple[int, dict[str, str]]]:
    for i, record in enumerate(sources.read_records(path, self.builder_config.fmt)):
      # Key = position: unique and, with disable_shuffling, the read order.
      yield i, {k: record[k] for k in _FIELDS}


class TfdsRecords(Sequence):
  """A prepared split as a random-access sequence of str records (grain source)."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __iter__(self):
    return (self[i] for i in range(len(self)))

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    ex = self._source[i]
    return {k: v.decode("utf-8") if isinstance(v, bytes) else str(v) for k, v in ex.items()}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
  """No TFDS progress bars or absl warnings while a local file is prepared."""
  from tensorflow_datasets.core.utils import tqdm_utils

  bars = getattr(tqdm_utils, "_active", True)
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  tfds.display_progress_bar(False)
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    tfds.display_progress_bar(bars)
    absl_logger.setLevel(level)


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def prepare(config: str, *, manual_dir: str, data_dir: str) -> LocalMath:
  """Builds (once) the array_record files for `config` under data_dir."""
  with _quiet():
    builder = LocalMath(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
  return builder


def data_source(config: str, split: str, *, manual_dir: str, data_dir: str) -> TfdsRecords:
  """`tfds.data_source` for local_math/<config>, preparing on first use."""
  with _quiet():
    source = tfds.data_source(
      f"local_math/{config}",
      split=split,
      data_dir=data_dir,
      builder_kwargs={"file_format": "array_record"},
      download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)
      },
    )
  return TfdsRecords(source)


def _file_builder(path: str, fmt: str, data_dir: str) -> LocalMath:
  stem = os.path.splitext(os.path.basename(path))[0].lower()
  name = "".join(ch if ch.isalnum() else "_" for ch in f"{fmt}_{stem}")
  config = LocalMathConfig(name=name, fmt=fmt, split_files=(("train", os.path.basename(path)),))
  with _quiet():
    return LocalMath(config=config, data_dir=data_dir, file_format="array_record")


def is_prepared(path: str, fmt: str, *, data_dir: str) -> bool:
  """Whether `records_from_file` would only read data_dir (it writes nothing then)."""
  return epath.Path(data_dir).is_dir() and _file_builder(path, fmt, data_dir).is_prepared()


def records_from_file(path: str, fmt: str, *, data_dir: str, log=_stderr) -> list[dict]:
  """Any one local file as a TFDS dataset (prepared once under data_dir), read back
  through `as_data_source` — the run's path from a `--config.data.path` to grain.
  Logs one line: the file, and the folder it was prepared into (or is read from)."""
  builder = _file_builder(path, fmt, data_dir)
  ready = builder.is_prepared()
  with _quiet():
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.dirname(os.path.abspath(path))
      )
    )
    records = list(TfdsRecords(builder.as_data_source()["train"]))
  verb = "read from" if ready else "prepared as TFDS array_record in"
  log(f"data: {path} ({len(records)} records) {verb} {builder.data_dir}")
  return records
