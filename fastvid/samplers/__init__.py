"""Samplers for the reference video models: DDPM, DDIM (eta, inversion), classifier-free guidance."""
from .ddim import ddim_invert, ddim_sample, ddim_step, predict_x0
from .ddpm import ddpm_sample
from .guidance import guided_eps
from .schedule import NoiseSchedule, progress_bar, randn

__all__ = ["NoiseSchedule", "ddim_invert", "ddim_sample", "ddim_step", "ddpm_sample", "guided_eps", "predict_x0",
           "progress_bar", "randn"]
