"""Row weights that pick each sequence's teacher (data, decided on the host)."""

import numpy as np
import pytest

from dkd_jax.objectives import routing


def test_source_modulo_and_weights():
  ids = ["chain-0-1", "gsm8k-7", "chain-0-2"]
  w = routing.teacher_weights("source", 2, [4, 5, 6], ids, sources=("chain-", "gsm8k-"))
  np.testing.assert_array_equal(w, [[1, 0], [0, 1], [1, 0]])
  w = routing.teacher_weights("modulo", 2, [4, 5, 6], ids)
  np.testing.assert_array_equal(w, [[1, 0], [0, 1], [1, 0]])
  w = routing.teacher_weights("weights", 2, [4, 5, 6], ids, weights=(0.25, 0.75))
  np.testing.assert_allclose(w, [[0.25, 0.75]] * 3)
  np.testing.assert_allclose(routing.teacher_weights("weights", 4, [0], ["x"]), [[0.25] * 4])


def test_bad_routing_names_the_field():
  with pytest.raises(ValueError, match="matches no prefix"):
    routing.teacher_weights("source", 2, [0], ["math-1"], sources=("chain-", "gsm8k-"))
  with pytest.raises(ValueError, match="one record-id prefix per teacher"):
    routing.check("source", 2, (), ("chain-",))
  with pytest.raises(ValueError, match="summing to 1"):
    routing.check("weights", 2, (0.3, 0.3), ())
