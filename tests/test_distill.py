"""Progressive distillation: one round on a tiny CPU model beats the teacher's own half-step sampling,
the loss falls, the student checkpoint loads into the teacher's class, bad input is named."""
import io

import pytest
import torch

import fastvid
from fastvid import models
from fastvid.distill import distill, distillation_target, sample_errors, student_timesteps, tiny_teacher
from fastvid.samplers import NoiseSchedule, ddim_sample, randn

STEPS = 4
SHAPE = (3, 2, 8, 8)


def teacher_samples(teacher, context, n, seed, timesteps):
    noise = randn((n, *SHAPE), torch.Generator().manual_seed(seed), "cpu", torch.float32)
    with torch.no_grad():
        return ddim_sample(teacher, noise, steps=len(timesteps), timesteps=timesteps,
                           context=context.expand(n, -1, -1), prediction="v")


@pytest.mark.slow
def test_one_round_halves_the_steps_and_beats_the_teacher_at_half_steps():
    teacher = tiny_teacher(0)
    context = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1))
    timesteps = NoiseSchedule().timesteps(STEPS)
    data = teacher_samples(teacher, context, 16, 100, timesteps)
    result = distill(teacher, data, steps=STEPS, context=context, iterations=60, batch=8, lr=5e-4)
    assert result.timesteps == timesteps[::2]
    losses = result.losses
    assert sum(losses[-10:]) < sum(losses[:10])
    noise = randn((4, *SHAPE), torch.Generator().manual_seed(0), "cpu", torch.float32)
    errors = sample_errors(teacher, result.student, noise, timesteps, context)
    assert errors["student_half"] < errors["teacher_half"]
    assert any(type(m).__module__.startswith("fastvid.nn") for m in result.student.modules())  # trained patched
    buffer = io.BytesIO()
    torch.save(result.student.state_dict(), buffer)
    buffer.seek(0)
    loaded = type(teacher)(teacher.config)
    loaded.load_state_dict(torch.load(buffer))
    x, t = torch.randn(1, *SHAPE), torch.tensor([250])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, context), result.student(x, t, context), rtol=1e-4, atol=1e-5)


def test_target_is_the_two_teacher_steps_in_one():
    """One student DDIM step with the v-target lands where two teacher steps do."""
    teacher = tiny_teacher(0)
    schedule, timesteps = NoiseSchedule(), NoiseSchedule().timesteps(STEPS)
    context = torch.randn(2, 4, 8)
    z = torch.randn(2, *SHAPE)
    for i in range(STEPS // 2):
        v = distillation_target(teacher, z, i, timesteps, schedule, context)
        one = ddim_sample(lambda x, t, c: v, z, steps=1, schedule=schedule,
                          timesteps=student_timesteps(timesteps)[i:i + 1], t_end=schedule.previous(timesteps, 2 * i + 1), prediction="v")
        with torch.no_grad():
            two = ddim_sample(teacher, z, steps=2, schedule=schedule, timesteps=timesteps[2 * i:2 * i + 2],
                              t_end=schedule.previous(timesteps, 2 * i + 1), context=context, prediction="v")
        torch.testing.assert_close(one, two, rtol=1e-4, atol=1e-4)


def test_distill_rejects_bad_input():
    data = torch.randn(2, *SHAPE)
    with pytest.raises(fastvid.FastvidInputError, match="teacher"):
        distill(models.build("vdm", "tiny"), data, steps=4)
    with pytest.raises(fastvid.FastvidInputError, match="steps"):
        distill(tiny_teacher(), data, steps=3)
    with pytest.raises(fastvid.FastvidInputError, match="data"):
        distill(tiny_teacher(), data[0], steps=4)
