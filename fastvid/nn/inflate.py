"""VDM's inflation of an image model's 2D conv into a (1, kh, kw) Conv3d applied per frame, and back.

Both directions share the weight storage (the new module's parameters are views of the old
ones), so an inflated image model keeps its trained weights without a copy.
"""
from __future__ import annotations

from torch import nn

from ..validation import fail


def _shared(p: nn.Parameter, view) -> nn.Parameter:
    return nn.Parameter(view, requires_grad=p.requires_grad)


def inflate_conv2d(conv2d: nn.Conv2d) -> nn.Conv3d:
    """A Conv3d with kernel (1, kh, kw) that applies ``conv2d`` to every frame of (B, C, F, H, W);
    its weight is ``conv2d.weight.unsqueeze(2)`` (same storage)."""
    if not isinstance(conv2d, nn.Conv2d):
        fail("inflate_conv2d", "conv2d", f"is a {type(conv2d).__name__}", "a torch.nn.Conv2d")
    padding = conv2d.padding if isinstance(conv2d.padding, str) else (0, *conv2d.padding)
    conv3d = nn.Conv3d(conv2d.in_channels, conv2d.out_channels, (1, *conv2d.kernel_size), stride=(1, *conv2d.stride),
                       padding=padding, dilation=(1, *conv2d.dilation), groups=conv2d.groups,
                       bias=conv2d.bias is not None, padding_mode=conv2d.padding_mode, device="meta")
    conv3d.weight = _shared(conv2d.weight, conv2d.weight.detach().unsqueeze(2))
    if conv2d.bias is not None:
        conv3d.bias = _shared(conv2d.bias, conv2d.bias.detach())
    return conv3d


def deflate_conv3d(conv3d: nn.Conv3d) -> nn.Conv2d:
    """The Conv2d of a Conv3d with kernel (1, kh, kw), temporal stride 1 and no temporal padding;
    its weight is ``conv3d.weight.squeeze(2)`` (same storage)."""
    op = "deflate_conv3d"
    if not isinstance(conv3d, nn.Conv3d):
        fail(op, "conv3d", f"is a {type(conv3d).__name__}", "a torch.nn.Conv3d")
    if conv3d.kernel_size[0] != 1 or conv3d.stride[0] != 1:
        fail(op, "conv3d", f"has kernel_size {conv3d.kernel_size} and stride {conv3d.stride}",
             "temporal kernel size 1 and temporal stride 1, i.e. an inflated (1, kh, kw) conv")
    if not isinstance(conv3d.padding, str) and conv3d.padding[0] != 0:
        fail(op, "conv3d", f"has padding {conv3d.padding}", "no temporal padding")
    padding = conv3d.padding if isinstance(conv3d.padding, str) else conv3d.padding[1:]
    conv2d = nn.Conv2d(conv3d.in_channels, conv3d.out_channels, conv3d.kernel_size[1:], stride=conv3d.stride[1:],
                       padding=padding, dilation=conv3d.dilation[1:], groups=conv3d.groups,
                       bias=conv3d.bias is not None, padding_mode=conv3d.padding_mode, device="meta")
    conv2d.weight = _shared(conv3d.weight, conv3d.weight.detach().squeeze(2))
    if conv3d.bias is not None:
        conv2d.bias = _shared(conv3d.bias, conv3d.bias.detach())
    return conv2d
