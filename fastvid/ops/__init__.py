"""Functional ops, one module per op: launchers, torch.library registrations, autograd and backend
dispatch. ``fastvid.ops.<op>`` is the module; the public function is ``fastvid.<op>``."""
