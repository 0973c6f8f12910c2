"""Linear module: the reference twin with its residual add in the GEMM's epilogue."""
from __future__ import annotations

from .. import reference
from ..ops.linear import linear
from ._autocast import autocast_dtype, call_under_autocast


class Linear(reference.Linear):
    """``nn.Linear`` with ``forward(x, residual=None)``: ``fastvid.linear``, one GEMM that reads x in place
    (a transposed channel-first view too) and adds the residual in its epilogue, the output in the residual's
    memory order. Under autocast x, weight and bias are cast to the autocast dtype as ``F.linear`` would be; a
    residual of another dtype is then added after the GEMM (autocast's type promotion, as
    ``linear(x) + residual`` gives; the sum in the residual's memory order). Same parameters and state_dict keys as ``fastvid.reference.Linear``
    and ``nn.Linear``."""

    backend = "auto"

    def forward(self, x, residual=None):
        self.check_input(x)
        dtype = autocast_dtype(x.device.type, fp32_op=False)
        if residual is not None and dtype is not None and residual.dtype != dtype:
            y = call_under_autocast(linear, x, self.weight, self.bias, fp32_op=False, backend=self.backend)
            return residual + y
        return call_under_autocast(linear, x, self.weight, self.bias, fp32_op=False, residual=residual,
                                   backend=self.backend)
