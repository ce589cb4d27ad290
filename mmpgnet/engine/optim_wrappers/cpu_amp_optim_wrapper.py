"""Mixed precision on the CPU: bfloat16 autocast for MMEngine's optimizer wrapper."""
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from mmpgnet.registry import register_optim_wrapper


@register_optim_wrapper()
class CPUAmpOptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose forward runs under ``torch.autocast('cpu', torch.bfloat16)``.

    MMEngine's ``AmpOptimWrapper`` asserts a CUDA (or NPU/MLU/MUSA) device, so ``--amp`` cannot
    work on CPU machines with it. bfloat16 has float32's exponent range, so no loss scaling is
    needed: gradients and the optimizer step stay in float32 (the parameters are never cast).
    ``tools/train.py --amp`` picks this wrapper when CUDA is unavailable and
    ``AmpOptimWrapper`` otherwise.

    Args:
        dtype (str | torch.dtype): autocast dtype, ``'bfloat16'`` (default) or ``'float16'``.
        **kwargs: passed to :class:`mmengine.optim.OptimWrapper`.

    Example:
        >>> optim_wrapper = dict(type='CPUAmpOptimWrapper',
        ...                      optimizer=dict(type='SGD', lr=0.01))
    """

    def __init__(self, dtype: str | torch.dtype = 'bfloat16', **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            if dtype not in ('bfloat16', 'float16'):
                raise ValueError(f"CPUAmpOptimWrapper dtype must be 'bfloat16' or 'float16', "
                                 f'got {dtype!r}')
            dtype = getattr(torch, dtype)
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """Enter the parent context (gradient accumulation) and CPU autocast."""
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
