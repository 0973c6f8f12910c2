"""VDM's 1x3x3 inflation of an image model's Conv2d into a per-frame Conv3d, and back."""
import pytest
import torch
from torch import nn

import fastvid
from fastvid import reference
from fastvid.validation import FastvidInputError

from conftest import DEVICE


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 5), stride=2, padding=(1, 2), dilation=(1, 2), groups=2, bias=False),
    dict(kernel_size=3, padding="same", padding_mode="reflect"),
])
def test_inflated_conv_is_the_2d_conv_per_frame(kwargs):
    conv2d = nn.Conv2d(4, 6, **kwargs).to(DEVICE)
    conv3d = fastvid.inflate_conv2d(conv2d)
    assert isinstance(conv3d, nn.Conv3d) and conv3d.kernel_size[0] == 1
    x = torch.randn(2, 4, 5, 9, 11, device=DEVICE)
    frames = x.transpose(1, 2).flatten(0, 1)
    expected = conv2d(frames).unflatten(0, (2, 5)).transpose(1, 2)
    torch.testing.assert_close(conv3d(x), expected, atol=1e-5, rtol=1e-5)


def test_inflated_conv_matches_reference_spatial_conv():
    conv2d = nn.Conv2d(4, 6, 3, padding=1).to(DEVICE)
    x = torch.randn(1, 4, 3, 5, 7, device=DEVICE)
    expected = reference.spatial_conv(x, conv2d.weight, conv2d.bias, padding=1)
    torch.testing.assert_close(fastvid.inflate_conv2d(conv2d)(x), expected, atol=1e-5, rtol=1e-5)


def test_inflate_and_deflate_share_the_weights():
    conv2d = nn.Conv2d(3, 5, 3, padding=1).to(DEVICE)
    conv3d = fastvid.inflate_conv2d(conv2d)
    back = fastvid.deflate_conv3d(conv3d)
    assert conv3d.weight.data_ptr() == conv2d.weight.data_ptr() == back.weight.data_ptr()
    assert conv3d.bias.data_ptr() == conv2d.bias.data_ptr() == back.bias.data_ptr()
    with torch.no_grad():
        conv2d.weight.add_(1.0)  # an in-place update of one is seen by the others
    assert torch.equal(conv3d.weight[:, :, 0], conv2d.weight) and torch.equal(back.weight, conv2d.weight)
    x = torch.randn(2, 3, 7, 6, device=DEVICE)
    assert torch.equal(back(x), conv2d(x))
    assert list(back.state_dict()) == list(conv2d.state_dict())


@pytest.mark.parametrize("case, match", [
    ("not_conv2d", r"inflate_conv2d: argument 'conv2d' is a Linear"),
    ("not_conv3d", r"deflate_conv3d: argument 'conv3d' is a Conv2d"),
    ("temporal_kernel", r"deflate_conv3d: argument 'conv3d' has kernel_size \(3, 1, 1\)"),
    ("temporal_padding", r"deflate_conv3d: argument 'conv3d' has padding \(1, 1, 1\)"),
])
def test_bad_input_names_the_argument(case, match):
    with pytest.raises(FastvidInputError, match=match):
        if case == "not_conv2d":
            fastvid.inflate_conv2d(nn.Linear(3, 3))
        elif case == "not_conv3d":
            fastvid.deflate_conv3d(nn.Conv2d(3, 3, 3))
        elif case == "temporal_kernel":
            fastvid.deflate_conv3d(nn.Conv3d(3, 3, (3, 1, 1)))
        else:
            fastvid.deflate_conv3d(nn.Conv3d(3, 3, (1, 3, 3), padding=1))
