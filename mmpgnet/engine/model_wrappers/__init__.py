"""mmpgnet model wrappers."""
from .device_agnostic_ddp import DeviceAgnosticDDP

__all__ = ['DeviceAgnosticDDP']
from .pipeline_guidance_wrapper import PipelineGuidanceWrapper  # noqa: E402

__all__ += ['PipelineGuidanceWrapper']
