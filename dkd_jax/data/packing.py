"""The packed layout every train step and rollout result shares.

tokens[b] = prompt ++ response, right-padded to P + R; loss_mask[b, t] = 1 iff
tokens[b, t+1] is a response token (position t predicts t+1).
"""

from __future__ import annotations

import numpy as np


def pack(
  prompt_tokens_BxP, prompt_len_B, response_tokens_BxR, response_len_B, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
  """(tokens [B, P+R] int32, loss_mask [B, P+R] float32) in the packed layout."""
  B, P = prompt_tokens_BxP.shape
  R = response_tokens_BxR.shape[1]
  tokens = np.full((B, P + R), pad_id, np.int32)
  mask = np.zeros((B, P + R), np.float32)
  for b in range(B):
    p, r = int(prompt_len_B[b]), int(response_len_B[b])
    tokens[b, :p] = prompt_tokens_BxP[b, :p]
    tokens[b, p : p + r] = response_tokens_BxR[b, :r]
    mask[b, p - 1 : p + r - 1] = 1.0
  return tokens, mask
