"""Samplers for the reference video models: DDPM, DDIM (eta, inversion, eps or v), EDM (Euler),
classifier-free guidance."""
from .ddim import ddim_invert, ddim_sample, ddim_step, predict_x0, x0_and_eps
from .ddpm import ddpm_sample
from .edm import euler_sample, karras_sigmas, preconditioning
from .guidance import guided_eps
from .schedule import NoiseSchedule, progress_bar, randn

__all__ = ["NoiseSchedule", "ddim_invert", "ddim_sample", "ddim_step", "ddpm_sample", "euler_sample", "guided_eps",
           "karras_sigmas", "predict_x0", "preconditioning", "progress_bar", "randn", "x0_and_eps"]
