"""The toolkit every launcher in fastvid.ops shares: output allocation, grid helpers, the
precision rule, the SM count, interpreter detection and the reasons Triton refuses a call.

Tests switch on poisoning so that an output element a kernel forgets to write shows up as NaN
instead of passing by luck. Nothing here queries the GPU or imports triton at import time.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import Callable, Iterator, Optional

import torch

from .._interpreter import interpreting
from ..validation import FLOAT_DTYPES

LOG2E = 1.4426950408889634  # kernels take exp2 and log2: scores are scaled by log2(e)

_poison = False
_meta_as_cuda = False


def set_poison(enabled: bool) -> bool:
    global _poison
    previous, _poison = _poison, enabled
    return previous


def empty(*shape, dtype, device) -> torch.Tensor:
    if _poison:
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(shape, fill, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


# torch's lower-overhead allocators (what torch Inductor's generated code calls instead of
# torch.empty_strided, whose argument parsing and dispatch cost more than the allocation): they take exact
# tuples of ints and allocate on the current device of their type. None where this torch lacks them.
try:
    from torch._C._dynamo.guards import _empty_strided_cpu, _empty_strided_cuda
except ImportError:  # another torch build: torch.empty_strided everywhere
    _empty_strided_cpu = _empty_strided_cuda = None
_cuda_device = getattr(torch._C, "_cuda_getDevice", None) if _empty_strided_cuda is not None else None


def _poisoned(t: torch.Tensor) -> torch.Tensor:
    return t.fill_(float("nan") if t.dtype.is_floating_point else -1)


def allocator(shape, strides, dtype: torch.dtype, device: torch.device, poison: bool = True
              ) -> Callable[[], torch.Tensor]:
    """A function of no argument returning a new uninitialised tensor of ``shape``, ``strides``, ``dtype`` on
    ``device``: what a plan keeps per output, so a call allocates with the cheapest call torch has for that
    device (on the CPU torch's allocator itself, bound; on CUDA only while ``device`` is the current device;
    else, and on other devices, ``torch.empty_strided``). NaN-filled where poisoning was on when the plan
    was made (the signature holds the poisoning state), unless ``poison`` is False (a kernel's scratch).
    The lower-overhead allocators pass by torch's dispatcher (no TorchDispatchMode sees them): for a plan's
    ``run`` on real tensors, never for a fake implementation."""
    shape, strides = tuple(int(n) for n in shape), tuple(int(s) for s in strides)
    poisoned = _poison and poison

    def generic() -> torch.Tensor:
        t = torch.empty_strided(shape, strides, dtype=dtype, device=device)
        return _poisoned(t) if poisoned else t

    if device.type == "cpu" and _empty_strided_cpu is not None:
        if poisoned:
            return lambda: _poisoned(_empty_strided_cpu(shape, strides, dtype))
        return functools.partial(_empty_strided_cpu, shape, strides, dtype)
    if device.type == "cuda" and _cuda_device is not None:
        index = device.index if device.index is not None else 0

        def on_cuda() -> torch.Tensor:
            if _cuda_device() != index:
                return generic()
            t = _empty_strided_cuda(shape, strides, dtype)
            return _poisoned(t) if poisoned else t
        return on_cuda
    return generic


def empty_strided(shape, strides, *, dtype, device) -> torch.Tensor:
    """:func:`empty` with the strides a plan worked out, through the lower-overhead allocator where ``shape``
    and ``strides`` are tuples and ``device`` is the CPU or the current CUDA device (as :func:`allocator`:
    for real tensors, never in a fake implementation). A plan may keep an :func:`allocator` per output
    instead (cheaper still: the choice is made once)."""
    if type(shape) is tuple and type(strides) is tuple:
        kind = device.type
        if kind == "cpu" and _empty_strided_cpu is not None:
            t = _empty_strided_cpu(shape, strides, dtype)
            return _poisoned(t) if _poison else t
        if kind == "cuda" and _cuda_device is not None and device.index == _cuda_device():
            t = _empty_strided_cuda(shape, strides, dtype)
            return _poisoned(t) if _poison else t
    t = torch.empty_strided(shape, strides, dtype=dtype, device=device)
    return _poisoned(t) if _poison else t


def dim_order(t: torch.Tensor):
    """t's dims from outermost to innermost in memory (ties, e.g. size-1 dims, keep their order)."""
    return sorted(range(t.dim()), key=lambda d: -t.stride(d))


def video_order(t: torch.Tensor):
    """:func:`dim_order` of a (B, C, F, H, W) tensor with H and W kept adjacent (H outer), so that
    a tensor allocated in this order always views as (B, C, F, H * W)."""
    order = [d for d in dim_order(t) if d != 4]
    order.insert(order.index(3) + 1, 4)
    return order


def empty_in_order(shape, order, *, dtype, device) -> torch.Tensor:
    """A dense tensor of ``shape`` whose dims lie in memory in ``order`` (see :func:`dim_order`),
    e.g. the memory format of an input (contiguous, channels_last_3d or a frame-major view)."""
    t = empty(*[shape[d] for d in order], dtype=dtype, device=device)
    return t.permute(*sorted(range(len(order)), key=lambda d: order[d]))


_CONTIGUOUS, _CHANNELS_LAST_3D = (0, 1, 2, 3, 4), (0, 2, 3, 4, 1)


def video_layout(x: torch.Tensor):
    """x's memory order as :func:`empty_like_video` lays outputs out (the two common layouts skip the sort)."""
    if x.is_contiguous():
        return _CONTIGUOUS
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return _CHANNELS_LAST_3D
    return video_order(x)


def video_strides(shape, order) -> tuple:
    """The strides of :func:`empty_in_order`'s tensor of ``shape`` in ``order``, without allocating it."""
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = step
        step *= max(shape[d], 1)
    return tuple(strides)


def empty_like_video(x: torch.Tensor, shape=None) -> torch.Tensor:
    """An output of ``shape`` (default x's) laid out in x's memory order, see :func:`video_order`."""
    return empty_in_order(x.shape if shape is None else shape, video_layout(x), dtype=x.dtype, device=x.device)


def merges_pixels(t: torch.Tensor) -> bool:
    """Whether ``t.flatten(3)`` of a (B, C, F, H, W) tensor is a view of the same data (H and W adjacent in
    memory): a launch may then take ``t`` itself, whose data pointer is the view's, with the view's strides
    in its plan (an output laid out by :func:`empty_like_video` always merges)."""
    return t.shape[3] <= 1 or t.shape[4] <= 1 or t.stride(3) == t.stride(4) * t.shape[4]


def contiguous_strides(shape) -> tuple:
    """The strides of a contiguous tensor of ``shape`` (as torch gives them): an output's strides known
    before it is allocated, for a launch plan."""
    return video_strides(shape, range(len(shape)))


def in_video_order(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` laid out like :func:`empty_like_video` lays out x's outputs (a copy only when it is not
    already): the torch backends' results keep the documented memory order of the fused ones."""
    if out.is_contiguous() and x.is_contiguous():
        return out
    laid = empty_like_video(x, out.shape)
    if laid.stride() == out.stride():
        return out
    return laid.copy_(out)


def in_order_of(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` (x's shape) laid out in x's memory order with no gaps, as :func:`empty_in_order` of
    :func:`dim_order` lays it out (a copy only when it is not already; size-1 dims' strides are free)."""
    order = dim_order(x)
    expected = video_strides(out.shape, order)
    if all(n == 1 or s == e for n, s, e in zip(out.shape, out.stride(), expected)):
        return out
    return empty_in_order(out.shape, order, dtype=out.dtype, device=out.device).copy_(out)


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1): a tile that covers x elements."""
    return 1 << max(0, (x - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints: the host-side grid arithmetic (triton.cdiv is a ConstexprFunction:
    ~20 us a call under cProfile on a 2-core CPU)."""
    return -(-a // b)


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` of tl.dot: fp32 inputs use TF32 tensor cores only where torch's own
    matmuls would (``torch.backends.cuda.matmul.allow_tf32``); "tf32" changes nothing for fp16/bf16."""
    return "ieee" if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"


def gemm_auto_reason(x: torch.Tensor, *tensors: Optional[torch.Tensor]) -> Optional[str]:
    """Why "auto" leaves a Triton GEMM (x and the other operands) to torch, or None: off CUDA, and for float32
    without TF32, where torch's matmul is the faster IEEE float32 GEMM."""
    why = triton_auto_reason(x, *tensors)
    if why is None and dot_precision(x.dtype) == "ieee":
        return ("float32 without TF32 (torch.backends.cuda.matmul.allow_tf32 off): torch's matmul is the faster "
                "IEEE float32 GEMM")
    return why


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device: read when a launcher first needs it, never at import."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def target_programs(t: torch.Tensor, per_sm: int, off_gpu: int) -> int:
    """How many programs fill the GPU holding ``t`` (``per_sm`` per SM); ``off_gpu`` under the interpreter."""
    return per_sm * sm_count(t.device.index or 0) if t.is_cuda else off_gpu


# ---- why Triton refuses a call (checked per call, never at import) ------------------------------

@contextlib.contextmanager
def meta_as_cuda() -> Iterator[None]:
    """Within: meta tensors are routed as CUDA tensors would be (Triton backends take them, the
    fused modules read meta parameters instead of treating them as offloaded), so a model run on the
    meta device reaches the same torch.library ops, and their fake implementations, as a GPU run.
    The step model (``fastvid.roofline``) counts a GPU step this way; no kernel is launched."""
    global _meta_as_cuda
    previous, _meta_as_cuda = _meta_as_cuda, True
    try:
        yield
    finally:
        _meta_as_cuda = previous


def capturing(t: torch.Tensor) -> bool:
    """``t`` is a CUDA tensor and a CUDA graph is capturing on the current stream: reading its values would
    synchronise, which capture forbids."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def on_gpu(t: torch.Tensor) -> bool:
    """t is a CUDA tensor, or a meta tensor within :func:`meta_as_cuda`."""
    return t.device.type == "cuda" or (_meta_as_cuda and t.device.type == "meta")


_UNASKED = object()
_triton_missing = _UNASKED  # why Triton cannot be imported (None: it can); a global, not an lru_cache, which
# torch 2.11's dynamo warns about when it traces a call


def _ask_triton() -> Optional[str]:
    global _triton_missing
    try:
        import triton  # noqa: F401
        _triton_missing = None
    except ImportError:
        _triton_missing = "triton is not installed"
    return _triton_missing


def triton_reason(*tensors: Optional[torch.Tensor]) -> Optional[str]:
    """Why Triton cannot run on these tensors, or None."""
    missing = _ask_triton() if _triton_missing is _UNASKED else _triton_missing
    if missing:
        return missing
    for t in tensors:
        if t is None:
            continue
        if on_gpu(t):
            continue
        if t.device.type == "cpu" and interpreting():
            continue
        return f"tensors are on {t.device.type}; Triton needs CUDA tensors (or TRITON_INTERPRET=1 for CPU testing)"
    return None


def dtype_reason(t: torch.Tensor) -> Optional[str]:
    """Why the Triton kernels cannot take t's dtype, or None: for an op whose Triton backend declares no
    ``Limits`` (the declared ones check dtypes themselves)."""
    if t.dtype not in FLOAT_DTYPES:
        return f"dtype {t.dtype} is not supported by the Triton kernel (float32, float16, bfloat16)"
    return None


def triton_auto_reason(*tensors: Optional[torch.Tensor]) -> Optional[str]:
    """"auto" takes Triton on CUDA only; the interpreter is slower than the torch paths."""
    for t in tensors:
        if t is not None and not on_gpu(t):
            return "auto uses Triton only on CUDA (the CPU interpreter is for testing)"
    return None


# ---- the per-signature cache: validate and plan once, then look up -------------------------------

PLAN_CACHE_SIZE = 256  # signatures kept per cache; the oldest goes first past this


def tensor_key(t: torch.Tensor) -> tuple:
    """What a plan may depend on in a tensor: shape, strides, dtype, device, requires_grad and the
    data pointer's alignment (mod 16: the JIT specialises pointers on it; vector widths read it)."""
    return t.shape, t.stride(), t.dtype, t.device, t.requires_grad, t.data_ptr() & 15


_tf32 = torch._C._get_cublas_allow_tf32
_grad_enabled = torch.is_grad_enabled
_Tensor, _Parameter = torch.Tensor, torch.nn.Parameter


def signature(args: tuple, first=None) -> Optional[tuple]:
    """The signature of a call of ``args`` (``first``: a value put before them, e.g. the backend name):
    grad mode, the TF32 setting, :func:`meta_as_cuda`, output poisoning (:func:`set_poison`: a plan's
    allocators fill or not), ``first``, then each plain tensor's
    :func:`tensor_key` items (``requires_grad`` only while grad mode is on: no plan depends on it under
    ``torch.no_grad()``) and every other value's type and value, in one flat tuple (a tensor's items start
    with a ``torch.Size``, another value's with a type, so no two calls share a key). None (no caching) for a
    tensor subclass; an unhashable value makes a cache lookup skip the cache. Either way such a call takes
    the full path, which validates it. Inlined: this runs on every call."""
    if _grad_enabled():
        key = [True, _tf32(), _meta_as_cuda, _poison, first]
        for a in args:
            kind = type(a)
            if kind is _Tensor or kind is _Parameter:
                key += (a.shape, a.stride(), a.dtype, a.device, a.requires_grad, a.data_ptr() & 15)
            elif isinstance(a, _Tensor):
                return None
            else:
                key += (kind, a)
        return tuple(key)
    key = [False, _tf32(), _meta_as_cuda, _poison, first]
    for a in args:
        kind = type(a)
        if kind is _Tensor or kind is _Parameter:
            key += (a.shape, a.stride(), a.dtype, a.device, a.data_ptr() & 15)
        elif isinstance(a, _Tensor):
            return None
        else:
            key += (kind, a)
    return tuple(key)


def call_key(*args) -> Optional[tuple]:
    """:func:`signature` of ``args``."""
    return signature(args)


class PlanCache:
    """A bounded map from a call signature (:func:`call_key`) to what was worked out for it once:
    a launch plan, a chosen backend. ``lookup(key, make, *args)`` returns the stored plan or stores
    ``make(*args)``; ``make`` raising stores nothing, so a bad call raises again on every call."""

    def __init__(self, size: int = PLAN_CACHE_SIZE):
        self.size, self.plans = size, {}

    def lookup(self, key, make, *args):
        try:
            plan = self.plans.get(key)
        except TypeError:  # an unhashable argument: not cached
            plan, key = None, None
        if plan is None:
            plan = make(*args)
            if key is not None:
                if len(self.plans) >= self.size:
                    del self.plans[next(iter(self.plans))]
                self.plans[key] = plan
        return plan

    def __len__(self):
        return len(self.plans)

    def clear(self):
        self.plans.clear()


# ---- launching a kernel with a fixed argument list ----------------------------------------------

@functools.lru_cache(maxsize=None)
def _runtime_knobs():
    from triton import knobs

    return knobs.runtime


def _idle(hook) -> bool:
    return hook is None or not getattr(hook, "calls", True)


def _idle_hooks(knobs=None) -> Optional[tuple]:
    """Triton's (launch_enter_hook, launch_exit_hook) when neither does anything (no profiler hook is
    installed), else None: the fixed-argument launch passes no launch metadata."""
    if knobs is None:
        knobs = _runtime_knobs()
    enter, leave = knobs.launch_enter_hook, knobs.launch_exit_hook
    if _idle(enter) and _idle(leave):
        return enter, leave
    return None


class Launch:
    """One kernel launch whose grid, scalar arguments, constexprs and options are fixed; only the tensors
    change from call to call. The first call goes through ``kernel.run(..., grid=grid, warmup=False)``
    (what ``kernel[grid](...)`` calls: compiling, autotuning); later calls hand the fixed argument list
    straight to the compiled kernel's launcher, as torch Inductor's generated launchers do, when
    :func:`_fixed_launcher` can build one (a CUDA kernel, no profiler hooks, an autotuner without config
    hooks); else every call goes through ``kernel.run``. A kernel defined at module level is looked up
    there on every call, so a kernel object replaced in its module (a recorder, a stub) is what runs."""

    __slots__ = ("kernel", "module", "name", "grid", "scalars", "kwargs", "run_kwargs", "fixed", "tried")

    def __init__(self, kernel, grid, scalars: tuple, **kwargs):
        self.kernel, self.grid, self.scalars, self.kwargs = kernel, grid, scalars, kwargs
        base = kernel
        while hasattr(base, "fn"):  # autotuner -> jit function -> the Python function
            base = base.fn
        self.module, self.name = sys.modules.get(getattr(base, "__module__", "")), getattr(base, "__name__", "")
        if getattr(self.module, self.name, None) is not kernel:
            self.module = None
        self.run_kwargs = dict(kwargs, grid=grid, warmup=False)
        self.fixed, self.tried = None, False

    def __call__(self, *tensors) -> None:
        if self.module is not None:
            kernel = getattr(self.module, self.name)
            if kernel is not self.kernel:
                self.kernel, self.fixed, self.tried = kernel, None, False
        fixed = self.fixed
        if fixed is not None and fixed(tensors):
            return
        compiled = self.kernel.run(*tensors, *self.scalars, **self.run_kwargs)
        if not self.tried:
            self.tried = True
            if tensors[0].is_cuda:
                self.fixed = _fixed_launcher(self, compiled, len(tensors))


def _fixed_launcher(launch: Launch, compiled, n_tensors: int):
    """A callable launching ``compiled`` (what ``kernel.run`` returned) with the fixed arguments of
    ``launch``, returning False where it cannot (then the caller takes ``kernel.run``); None when this
    Triton's compiled kernels do not expose the launcher both Triton 3.6 and 3.9 call:
    ``compiled.run(grid_x, grid_y, grid_z, stream, function, packed_metadata, launch_metadata,
    enter_hook, exit_hook, *every_argument_in_signature_order)``."""
    kernel, kwargs = launch.kernel, dict(launch.kwargs)
    config = getattr(kernel, "best_config", None)
    if config is not None:  # autotuned: the tuned config's constexprs join the fixed arguments
        # A launch after tuning runs only the config's pre_hook (the autotuner's own hooks serve its benchmarks).
        if getattr(config, "pre_hook", None) is not None:
            return None
        kwargs.update(config.all_kwargs())
        kernel = kernel.fn
    if not all(hasattr(compiled, name) for name in ("run", "function", "packed_metadata")):
        return None
    if type(kernel).__name__ != "JITFunction" or getattr(kernel, "pre_run_hooks", None):
        return None
    names = kernel.arg_names[n_tensors + len(launch.scalars):]
    params = kernel.signature.parameters
    try:
        tail = tuple(kwargs[name] if name in kwargs else params[name].default for name in names)
    except KeyError:
        return None
    if any(value is params[name].empty for name, value in zip(names, tail)):
        return None
    grid = launch.grid(kwargs) if callable(launch.grid) else launch.grid
    grid = tuple(grid) + (1,) * (3 - len(grid))
    run, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
    fixed = launch.scalars + tail
    device = torch.cuda.current_device()
    current_device = getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device)  # the first: no lazy-init check
    raw_stream = torch._C._cuda_getCurrentRawStream
    knobs = _runtime_knobs()

    def launch_fixed(tensors) -> bool:
        hooks = _idle_hooks(knobs)
        if hooks is None or current_device() != device:
            return False
        run(grid[0], grid[1], grid[2], raw_stream(device), function, metadata, None, hooks[0], hooks[1],
            *tensors, *fixed)
        return True

    return launch_fixed
