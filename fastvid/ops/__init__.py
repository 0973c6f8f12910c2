"""Functional ops: launchers, torch.library registrations, autograd and backend dispatch."""
from .temporal_attention import temporal_attention
from .frame_attention import frame_attention
from .group_norm_silu import group_norm_silu
from .temporal_conv import temporal_conv
