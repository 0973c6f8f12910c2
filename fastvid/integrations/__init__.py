"""Integrations with other libraries; each is imported on first use (``fastvid.patch`` does it), so
fastvid itself never needs them. ``fastvid.integrations.diffusers``: diffusers video models."""
