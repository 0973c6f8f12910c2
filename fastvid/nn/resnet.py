"""The end of a ResNet block: ``(shortcut + h) / output_scale_factor`` without a pass it does not need.

Eager diffusers writes ``shortcut + h`` to a new tensor and divides it into another one, even by 1.0:
for an activation of E elements of s bytes that is 3Es (read both, write the sum) plus 2Es (read the
sum, write the quotient). Adding the shortcut into h, the conv's output that nothing else holds, and
skipping a division by 1.0 leaves the first 3Es and no new allocation; the values are the same bits
(each element is one rounded addition, then one rounded division when the factor is not 1).
"""
from __future__ import annotations

import torch


def add_residual(h: torch.Tensor, shortcut: torch.Tensor, output_scale_factor: float, *, in_place: bool) -> torch.Tensor:
    """``(shortcut + h) / output_scale_factor``; into ``h`` when ``in_place`` (the caller owns h: a plain
    conv's fresh output) and both have one shape and dtype (no broadcast, no type promotion; compared as
    attributes, so torch.compile traces it without a graph break)."""
    if not (in_place and shortcut.shape == h.shape and shortcut.dtype == h.dtype):
        return (shortcut + h) / output_scale_factor
    h.add_(shortcut)
    return h if output_scale_factor == 1.0 else h.div_(output_scale_factor)
