"""Engine parts: hooks, model and optimizer wrappers (each registered on import)."""
from . import hooks, model_wrappers, optim_wrappers  # noqa: F401
