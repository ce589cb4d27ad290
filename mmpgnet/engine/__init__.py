"""Engine parts: hooks, model and optimizer wrappers, runners (each registered on import).

The pipeline wrapper and runner are registered only where ``mmpose.models`` imports (see
:mod:`mmpgnet.utils.optional_packages`).
"""
from . import hooks  # noqa: F401
from .model_wrappers import DeviceAgnosticDDP
from .optim_wrappers import CPUAmpOptimWrapper

__all__ = ['DeviceAgnosticDDP', 'CPUAmpOptimWrapper']
from . import runner  # noqa: F401,E402
