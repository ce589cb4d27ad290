"""Engine parts: hooks, model and optimizer wrappers, runners (each registered on import).

The pipeline-parallel wrapper and runner are registered only where ``mmpose.models`` imports (see
:mod:`mmpgnet.utils.optional_packages`).
"""
from . import hooks  # noqa: F401
from .model_wrappers import DeviceAgnosticDDP
from .optim_wrappers import CPUAmpOptimWrapper

__all__ = ['DeviceAgnosticDDP', 'CPUAmpOptimWrapper']
from mmpgnet.utils.optional_packages import package_available  # noqa: E402
from . import runner  # noqa: F401,E402

if package_available('mmpose'):
    from . import deprecated_names  # noqa: F401  (PipelineGuidanceWrapper, PipelineRunner, ...)
