"""Progressive distillation, one round on a tiny CPU model (``fastvid.distill``): a random-weight
v-prediction pseudo-3D U-Net teacher sampling in N DDIM steps, its student trained (patched, through the
fastvid kernels' backward) to sample in N / 2. Prints the loss at the start and the end of training and,
from the same seeds, the mean squared distance to the teacher's N-step samples of the teacher's own
N/2-step samples and of the student's.

    python benchmarks/bench_distill.py --steps 4 --iterations 60
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastvid.distill import distill, sample_errors, tiny_teacher  # noqa: E402
from fastvid.samplers import NoiseSchedule, ddim_sample, randn  # noqa: E402

SHAPE = (3, 2, 8, 8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="the teacher's DDIM steps (even)")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--data", type=int, default=16, help="training samples (the teacher's N-step samples)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    teacher = tiny_teacher(0)
    context = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1))
    timesteps = NoiseSchedule().timesteps(args.steps)
    noise = randn((args.data, *SHAPE), torch.Generator().manual_seed(100), "cpu", torch.float32)
    with torch.no_grad():
        data = ddim_sample(teacher, noise, steps=args.steps, timesteps=timesteps,
                           context=context.expand(args.data, -1, -1), prediction="v")
    start = time.perf_counter()
    result = distill(teacher, data, steps=args.steps, context=context, iterations=args.iterations, batch=8,
                     lr=args.lr, backend=args.backend)
    seconds = time.perf_counter() - start
    window = max(1, args.iterations // 6)
    print(f"distilled {args.steps} -> {args.steps // 2} steps in {args.iterations} iterations ({seconds:.1f} s, CPU)")
    print(f"loss: first {window} mean {statistics.mean(result.losses[:window]):.5f}, "
          f"last {window} mean {statistics.mean(result.losses[-window:]):.5f}")
    errors = sample_errors(teacher, result.student, randn((4, *SHAPE), torch.Generator().manual_seed(0), "cpu",
                                                          torch.float32), timesteps, context)
    print(f"MSE to the teacher's {args.steps}-step samples: teacher at {args.steps // 2} steps "
          f"{errors['teacher_half']:.5f}, student at {args.steps // 2} steps {errors['student_half']:.5f}")
    return 0 if errors["student_half"] < errors["teacher_half"] else 1


if __name__ == "__main__":
    sys.exit(main())
