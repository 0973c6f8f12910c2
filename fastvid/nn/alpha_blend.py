"""AlphaBlender's mix in one pass: the reference twin's parameter, ``fastvid.learned_alpha_blend``."""
from __future__ import annotations

import torch

from .. import reference
from ..ops.alpha_blend import learned_alpha_blend


class AlphaBlender(reference.AlphaBlender):
    """``sigmoid(mix_factor) * spatial + (1 - sigmoid(mix_factor)) * temporal`` through
    ``fastvid.learned_alpha_blend`` (one kernel, the sigmoid inside it: one read of each input, one write).
    Same parameter and state_dict key as ``fastvid.reference.AlphaBlender``. Inputs of different shapes or
    dtypes (broadcasting, autocast's type promotion) take the reference's eager expression."""

    patch_kind = "conv"
    backend = "auto"

    def forward(self, spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        if spatial.shape != temporal.shape or spatial.dtype != temporal.dtype:
            return super().forward(spatial, temporal)
        return learned_alpha_blend(spatial, temporal, self.mix_factor, merge_strategy="learned", backend=self.backend)
