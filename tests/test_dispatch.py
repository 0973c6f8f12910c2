"""The support matrix: for each op and a spread of inputs, "auto" picks a backend that can take the
input, that backend runs, and a forced backend that cannot take it raises with its reason."""
import pytest
import torch

import fastvid
from fastvid.dispatch import BackendUnsupportedError, dispatchers
from fastvid.registry import OPS


def _ta_args(frames=5, dtype=torch.float32, bias=True):
    q, k, v = (torch.randn(1, frames, 3, 2, 8, dtype=dtype) for _ in range(3))
    b = torch.randn(2, frames, frames, dtype=dtype) if bias else None
    return (q, k, v, b, False, 0.35)


def _fa_args(frames="sparse_causal", dtype=torch.float32):
    q = torch.randn(1, 4, 3, 2, 8, dtype=dtype)
    k, v = (torch.randn(1, 4, 5, 2, 8, dtype=dtype) for _ in range(2))
    return (q, k, v, frames, 0.35)


def _tc_args(dtype=torch.float32, bias=True, residual=False, pad=1):
    x = torch.randn(1, 4, 5, 2, 3, dtype=dtype)
    w = torch.randn(6, 4, 3, dtype=dtype)
    b = torch.randn(6, dtype=dtype) if bias else None
    r = torch.randn(1, 6, 5 + 2 * pad - 2, 2, 3, dtype=dtype) if residual else None
    return (x, w, b, r, pad)


def _ab_args(dtype=torch.float32, alpha_shape=(2, 1, 1)):
    xs, xt = (torch.randn(2, 5, 3, dtype=dtype) for _ in range(2))
    return (xs, xt, torch.rand(alpha_shape, dtype=dtype))


def _gn_args(dtype=torch.float32, groups=2, affine=True, per_frame=False):
    x = torch.randn(1, 4 * groups, 3, 2, 3, dtype=dtype)
    w, b = (torch.randn(4 * groups, dtype=dtype) if affine else None for _ in range(2))
    return (x, groups, w, b, 1e-5, per_frame)


# op name -> list of dispatcher argument tuples covering the matrix's corners.
CASES = {
    "temporal_attention": [_ta_args(), _ta_args(dtype=torch.float64), _ta_args(frames=130, bias=False),
                           _ta_args(dtype=torch.float16)],
    "frame_attention": [_fa_args(), _fa_args("all", torch.float64), _fa_args("self", torch.float16),
                        _fa_args(torch.tensor([[0, -1], [1, 0], [3, 3], [2, -1]]))],
    "temporal_conv": [_tc_args(), _tc_args(dtype=torch.float64),
                      _tc_args(dtype=torch.float16, bias=False, residual=True), _tc_args(pad=0)],
    "group_norm_silu": [_gn_args(), _gn_args(dtype=torch.float64), _gn_args(affine=False, per_frame=True),
                        _gn_args(groups=1, dtype=torch.float16),
                        (torch.randn(1, 1024, 1, 1, 2), 1, None, None, 1e-5, False)],  # 1024 channels per group
    "alpha_blend": [_ab_args(), _ab_args(torch.float64), _ab_args(torch.float16, (1,)),
                    _ab_args(alpha_shape=(3,))],  # alpha along the innermost dim
}


def test_every_registered_op_has_cases():
    assert set(OPS) == set(CASES), f"ops without support-matrix cases: {set(OPS) - set(CASES)}"


@pytest.mark.parametrize("interpret", ["0", "1"])
@pytest.mark.parametrize("op", sorted(CASES))
def test_auto_only_picks_a_backend_that_takes_the_input(op, interpret, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    dispatcher = dispatchers()[op]
    for args in CASES[op]:
        reasons = dispatcher.explain(*args)
        chosen = dispatcher.select("auto", *args)
        assert reasons[chosen.name] is None
        assert chosen.reason(*args) is None
        for backend in dispatcher.backends:
            why = backend.reason(*args)
            if why is None:
                continue
            assert isinstance(why, str) and why
            with pytest.raises(BackendUnsupportedError, match=backend.name):
                dispatcher.select(backend.name, *args)


def test_auto_runs_the_chosen_backend_and_reports_it():
    q, k, v, b, _, _ = _ta_args(frames=130, bias=False)
    out = fastvid.temporal_attention(q, k, v)
    assert out.shape == q.shape
    assert fastvid.last_backend("temporal_attention") == "torch"


def test_explain_takes_the_public_arguments_with_their_defaults():
    q, k, v, _, _, _ = _ta_args()
    x, groups, *_ = _gn_args()
    calls = {"temporal_attention": (q, k, v), "frame_attention": (q, k, v), "group_norm_silu": (x, groups),
             "temporal_conv": _tc_args()[:2], "alpha_blend": _ab_args()}
    for op, args in calls.items():
        reasons = dispatchers()[op].explain(*args)
        assert set(reasons) == {"triton", "torch", "reference"} and reasons["torch"] is None, op
    assert dispatchers()["frame_attention"].explain(q, k, v, frames="all", scale=0.5)["reference"] is None
    with pytest.raises(fastvid.FastvidInputError, match="argument 'frames'"):
        dispatchers()["frame_attention"].explain(q, k, v, frames="every")


@pytest.mark.parametrize("op", sorted(CASES))
def test_a_backend_name_that_is_not_one_is_an_input_error(op):
    with pytest.raises(fastvid.FastvidInputError, match="argument 'backend' is 'cuda'") as err:
        dispatchers()[op].select("cuda", *CASES[op][0])
    assert not isinstance(err.value, BackendUnsupportedError)

