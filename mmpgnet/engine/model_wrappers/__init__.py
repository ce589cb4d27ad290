"""mmpgnet model wrappers.

``PipelineParallelWrapper`` drives MMPose top-down models and is loaded only where
``mmpose.models`` imports.
"""
from mmpgnet.utils.optional_packages import missing_component_getattr, package_available
from .device_agnostic_ddp import DeviceAgnosticDDP

__all__ = ['DeviceAgnosticDDP']

if package_available('mmpose'):
    from .pipeline_parallel_wrapper import PipelineParallelWrapper
    __all__ += ['PipelineParallelWrapper']
else:
    __getattr__ = missing_component_getattr(__name__, 'mmpose', ['PipelineParallelWrapper'])
