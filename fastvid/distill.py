"""Progressive distillation (Salimans & Ho 2022), the survey's route to fast Imagen Video sampling.

A student, initialised from the teacher's weights, learns to take in one DDIM step what the teacher
takes in two: for data x, a student timestep t and noise eps, z_t = sqrt(a_t) x + sqrt(1 - a_t) eps;
two deterministic teacher DDIM steps t -> t' -> t'' give z_t''; the target x~ is the x0 that one DDIM
step from z_t lands on z_t'',

    x~ = (z_t'' - (s_t'' / s_t) z_t) / (sqrt(a_t'') - (s_t'' / s_t) sqrt(a_t)),   s = sqrt(1 - a),

and the student regresses the matching v-prediction v~ = sqrt(a_t) eps~ - s_t x~ (eps~ = (z_t - sqrt(a_t) x~) / s_t)
with the mean squared error. Each round halves the steps: the student of an N-step teacher samples in
N / 2 steps on every other teacher timestep. The student is ``fastvid.patch``ed, so training runs through
the fastvid kernels' backward passes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from torch import nn

from .patching import patch
from .samplers import NoiseSchedule, ddim_sample, randn
from .validation import check_tensor, fail


@dataclass
class DistillResult:
    student: nn.Module
    timesteps: List[int]  # the student's sampling timesteps (descending)
    losses: List[float] = field(default_factory=list)


def check_teacher(teacher: nn.Module) -> None:
    prediction = getattr(teacher, "prediction", None)
    if prediction != "v":
        fail("fastvid.distill", "teacher", f"predicts {prediction!r}",
             "a v-prediction model (prediction = 'v'), as progressive distillation trains v-targets")


def student_timesteps(timesteps: Sequence[int]) -> List[int]:
    """Every other teacher timestep: the student's step i covers the teacher's steps 2i and 2i + 1."""
    return list(timesteps)[::2]


@torch.no_grad()
def distillation_target(teacher: nn.Module, z: torch.Tensor, i: int, timesteps: Sequence[int],
                        schedule: NoiseSchedule, context: Optional[torch.Tensor]) -> torch.Tensor:
    """The v-target at z (at timesteps[2i]) from two teacher DDIM steps."""
    t, t_end = timesteps[2 * i], schedule.previous(timesteps, 2 * i + 1)
    z2 = ddim_sample(teacher, z, steps=2, schedule=schedule, timesteps=timesteps[2 * i: 2 * i + 2], t_end=t_end,
                     context=context, prediction="v")
    a, a2 = schedule.alpha_bar(t), schedule.alpha_bar(t_end)
    s, s2 = (1 - a) ** 0.5, (1 - a2) ** 0.5
    x = (z2 - (s2 / s) * z) / (a2 ** 0.5 - (s2 / s) * a ** 0.5)
    eps = (z - a ** 0.5 * x) / s
    return a ** 0.5 * eps - s * x


def distill(teacher: nn.Module, data: torch.Tensor, *, steps: int, context: Optional[torch.Tensor] = None,
            iterations: int = 100, batch: int = 4, lr: float = 1e-4, schedule: Optional[NoiseSchedule] = None,
            timesteps: Optional[Sequence[int]] = None, seed: int = 0, backend: str = "auto") -> DistillResult:
    """One round: a student sampling in steps / 2 from a ``steps``-step v-prediction ``teacher``.

    ``data`` (M, C, F, H, W) holds the training x0 (e.g. the teacher's own samples); ``context`` (1, L, D)
    the conditioning shared by every example; ``timesteps`` (descending, ``steps`` of them) default to
    ``schedule.timesteps(steps)``. Returns the (patched, eval-mode) student, its timesteps and the losses."""
    check_teacher(teacher)
    check_tensor("fastvid.distill", "data", data, ndim=5, layout="(M, C, F, H, W)", dtypes=())
    if steps < 2 or steps % 2:
        fail("fastvid.distill", "steps", f"is {steps}", "an even number of teacher steps >= 2")
    schedule = schedule or NoiseSchedule()
    timesteps = list(schedule.timesteps(steps) if timesteps is None else timesteps)
    if len(timesteps) != steps:
        fail("fastvid.distill", "timesteps", f"has {len(timesteps)} entries", f"steps = {steps}")
    teacher = teacher.eval()
    student = copy.deepcopy(teacher)
    patch(student, backend=backend)
    student.train()
    student.requires_grad_(True)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    result = DistillResult(student=student, timesteps=student_timesteps(timesteps))
    for _ in range(iterations):
        x = data[torch.randint(data.shape[0], (batch,), generator=g)]
        i = int(torch.randint(steps // 2, (1,), generator=g))
        a = schedule.alpha_bar(timesteps[2 * i])
        z = a ** 0.5 * x + (1 - a) ** 0.5 * randn(x.shape, g, x.device, x.dtype)
        ctx = None if context is None else context.expand(batch, -1, -1)
        target = distillation_target(teacher, z, i, timesteps, schedule, ctx)
        t = torch.tensor([timesteps[2 * i]], device=x.device)
        loss = torch.nn.functional.mse_loss(student(z, t, ctx), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        result.losses.append(loss.item())
    student.eval()
    return result


def progressive_distill(teacher: nn.Module, data: torch.Tensor, *, steps: int, rounds: int,
                        **kwargs) -> List[DistillResult]:
    """``rounds`` rounds, each student the next round's teacher on its own timesteps: steps, steps / 2, ..."""
    results = []
    timesteps = kwargs.pop("timesteps", None)
    for _ in range(rounds):
        result = distill(teacher, data, steps=steps, timesteps=timesteps, **kwargs)
        results.append(result)
        teacher, steps, timesteps = result.student, steps // 2, result.timesteps
    return results


@torch.no_grad()
def sample_errors(teacher: nn.Module, student: nn.Module, noise: torch.Tensor, timesteps: Sequence[int],
                  context: Optional[torch.Tensor] = None) -> dict:
    """From the same noise: the mean squared distance to the teacher's N-step samples (``timesteps``)
    of the teacher's own N/2-step samples and of the student's (every other timestep)."""
    half = student_timesteps(timesteps)
    ctx = None if context is None else context.expand(noise.shape[0], -1, -1)

    def run(model, ts):
        return ddim_sample(model, noise, steps=len(ts), timesteps=ts, context=ctx, prediction="v")

    full = run(teacher, timesteps)
    return {"teacher_half": (run(teacher, half) - full).square().mean().item(),
            "student_half": (run(student, half) - full).square().mean().item()}


def tiny_teacher(seed: int = 0) -> nn.Module:
    """A random-weight v-prediction pseudo-3D video U-Net small enough to distill on a CPU in a minute."""
    from .models import UNetConfig, VideoUNet

    config = UNetConfig(channels=(8, 16), attention_levels=(False, True), block_spec=("spatial", "temporal", "cross"),
                        conv="pseudo3d", in_channels=3, groups=4, heads=1, context_dim=8, prediction="v")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VideoUNet(config).eval()
