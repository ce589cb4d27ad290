"""mmpgnet model wrappers."""
from .device_agnostic_ddp import DeviceAgnosticDDP

__all__ = ['DeviceAgnosticDDP']
