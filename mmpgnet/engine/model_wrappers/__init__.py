"""mmpgnet model wrappers.

``PipelineGuidanceWrapper`` drives MMPose top-down models and is loaded only where
``mmpose.models`` imports.
"""
from mmpgnet.utils.optional_packages import missing_component_getattr, package_available
from .device_agnostic_ddp import DeviceAgnosticDDP

__all__ = ['DeviceAgnosticDDP']

if package_available('mmpose'):
    from .pipeline_guidance_wrapper import PipelineGuidanceWrapper
    __all__ += ['PipelineGuidanceWrapper']
else:
    __getattr__ = missing_component_getattr(__name__, 'mmpose', ['PipelineGuidanceWrapper'])
