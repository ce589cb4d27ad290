"""Engine parts: hooks, model and optimizer wrappers (each registered on import)."""
from . import hooks  # noqa: F401
from .model_wrappers import DeviceAgnosticDDP
from .optim_wrappers import CPUAmpOptimWrapper

__all__ = ['DeviceAgnosticDDP', 'CPUAmpOptimWrapper']
from . import runner  # noqa: F401,E402
