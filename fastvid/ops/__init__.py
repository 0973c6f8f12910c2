"""Functional ops: launchers, torch.library registrations, autograd and backend dispatch."""
from .temporal_attention import temporal_attention
