"""Functional ops: launchers, torch.library registrations, autograd and backend dispatch."""
from .temporal_attention import temporal_attention
from .frame_attention import frame_attention
