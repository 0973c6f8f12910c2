"""The support matrix: for each op and a spread of inputs, "auto" picks a backend that can take the
input, that backend runs, and a forced backend that cannot take it raises with its reason."""
import pytest
import torch

import fastvid
from fastvid.dispatch import BackendUnsupportedError, dispatchers
from fastvid.examples import geglu_args, group_norm_silu_args, temporal_attention_args, temporal_conv_args
from fastvid.ops import _launch
from fastvid.registry import OPS

from conftest import DEVICE

# op name -> dispatcher argument tuples covering the matrix's corners (the registry's examples).
CASES = {name: spec.examples.corners() for name, spec in OPS.items()}


@pytest.mark.parametrize("op", sorted(CASES))
def test_every_op_has_cases_in_every_dtype_a_backend_treats_apart(op):
    dtypes = {args[0].dtype for args in CASES[op]}
    assert {torch.float32, torch.float16, torch.float64} <= dtypes, f"{op}: corner cases only in {dtypes}"


@pytest.mark.parametrize("interpret", ["0", "1"])
@pytest.mark.parametrize("op", sorted(CASES))
def test_auto_only_picks_a_backend_that_takes_the_input(op, interpret, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    dispatcher = dispatchers()[op]
    for args in CASES[op]:
        reasons = dispatcher.explain(*args)
        chosen = dispatcher.select("auto", *args)
        assert reasons[chosen.name] is None
        assert dispatcher.why_not(chosen, *args) is None
        for backend in dispatcher.backends:
            why = dispatcher.why_not(backend, *args)
            if why is None:
                continue
            assert isinstance(why, str) and why
            with pytest.raises(BackendUnsupportedError, match=backend.name):
                dispatcher.select(backend.name, *args)


def test_auto_runs_the_chosen_backend_and_reports_it():
    q, k, v, b, _, _ = temporal_attention_args(frames=130, bias=False)
    out = fastvid.temporal_attention(q, k, v)
    assert out.shape == q.shape
    assert fastvid.last_backend("temporal_attention") == "torch"


def test_explain_takes_the_public_arguments_with_their_defaults():
    q, k, v, _, _, _ = temporal_attention_args()
    x, groups, *_ = group_norm_silu_args()
    calls = {"temporal_attention": (q, k, v), "frame_attention": (q, k, v), "group_norm_silu": (x, groups),
             "temporal_conv": temporal_conv_args()[:2], "geglu": geglu_args()[:1]}
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



@pytest.mark.parametrize("op", ["linear", "geglu_linear"])
def test_gemms_auto_pick_triton_for_half_precision_on_the_gpu_and_fp32_only_with_tf32(op):
    """The GEMM ops' shared auto rule (``_launch.gemm_auto_reason``), routed as a GPU run would be (meta tensors
    under meta_as_cuda): fp16 goes to Triton; fp32 to the torch path unless TF32 matmuls are allowed."""
    spec, dispatcher = OPS[op], dispatchers()[op]

    def arguments(dtype, device):
        return dispatcher.arguments(**spec.examples.make(2, 4, device=device, dtype=dtype), **spec.examples.kwargs)

    allowed = torch.backends.cuda.matmul.allow_tf32
    try:
        with _launch.meta_as_cuda():
            torch.backends.cuda.matmul.allow_tf32 = False
            assert dispatcher.explain(*arguments(torch.float16, "meta"))["triton"] is None
            assert "TF32" in dispatcher.explain(*arguments(torch.float32, "meta"))["triton"]
            torch.backends.cuda.matmul.allow_tf32 = True
            assert dispatcher.explain(*arguments(torch.float32, "meta"))["triton"] is None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    spec.function(**spec.examples.make(2, 4, device=DEVICE), **spec.examples.kwargs)
    assert fastvid.last_backend(op) == ("triton" if DEVICE == "cuda" and allowed else "torch")
