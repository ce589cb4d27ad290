"""mmpgnet optimizer wrappers."""
from .cpu_amp_optim_wrapper import CPUAmpOptimWrapper
from .traceable_optim_context import traceable_optim_context

__all__ = ['CPUAmpOptimWrapper', 'traceable_optim_context']
