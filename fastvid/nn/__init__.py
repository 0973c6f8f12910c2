"""Drop-in torch modules; each subclasses its twin in fastvid.reference (identical state_dict keys)."""
from .frame_attention import FrameAttention, SparseCausalAttention
from .temporal_attention import TemporalAttention

__all__ = ["FrameAttention", "SparseCausalAttention", "TemporalAttention"]
