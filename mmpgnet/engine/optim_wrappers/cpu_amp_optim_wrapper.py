"""Mixed precision on the CPU: bfloat16 autocast of the feature extractor."""
from contextlib import contextmanager
from typing import Any, Iterator, List, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from mmpgnet.registry import register_optim_wrapper
from mmpgnet.utils.tensor_tree import map_tensors
from mmpgnet.utils.torch_compat import (TorchVersionError, cpu_autocast_supports, get_cpu_autocast,
                                        set_cpu_autocast)


def _to_float32(value: Any) -> Any:
    """Cast low-precision floating tensors (also inside tuples, lists, dicts) to float32."""
    return map_tensors(
        value, lambda t: t.float() if t.is_floating_point() and t.dtype != torch.float32 else t)


@register_optim_wrapper()
class CPUAmpOptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` that runs the feature extractor under CPU bfloat16 autocast.

    MMEngine's ``AmpOptimWrapper`` asserts a CUDA (or NPU/MLU/MUSA) device, so ``--amp`` cannot
    work on CPU machines with it. This wrapper autocasts only the submodules named in
    ``autocast_modules`` (the backbone and neck by default, where nearly all FLOPs are) and casts
    their outputs back to float32, so heads, losses and metrics computed in numpy (MMPose's
    ``to_numpy`` rejects bfloat16) run in float32. A model with none of those submodules is
    autocast as a whole. bfloat16 has float32's exponent range: no loss scaling is needed, and
    parameters, gradients and the optimizer step stay float32. ``tools/train.py --amp`` picks this
    wrapper when CUDA is unavailable and ``AmpOptimWrapper`` otherwise.

    The hooks switch CPU autocast on and off with torch's global autocast setters (what
    ``torch.autocast`` does on entry and exit, including its cast cache), not by keeping
    ``torch.autocast`` objects open between two hooks: dynamo traces the setters, so a model
    trained with MMEngine's ``compile=True`` keeps one graph through the autocast boundary
    (dynamo cannot trace an autocast context object held across calls).

    Args:
        dtype (str | torch.dtype): autocast dtype, ``'bfloat16'`` (default) or ``'float16'``.
        autocast_modules (Sequence[str]): names of the model's submodules to autocast.
        **kwargs: passed to :class:`mmengine.optim.OptimWrapper`.

    Raises:
        ValueError: for a dtype other than bfloat16 and float16.
        TorchVersionError: for float16 on a torch whose CPU autocast lacks it (torch 2.1).

    Example:
        >>> optim_wrapper = dict(type='CPUAmpOptimWrapper',
        ...                      optimizer=dict(type='SGD', lr=0.01))
    """

    def __init__(self, dtype: str | torch.dtype = 'bfloat16',
                 autocast_modules: Sequence[str] = ('backbone', 'neck'), **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            if dtype not in ('bfloat16', 'float16'):
                raise ValueError(f"CPUAmpOptimWrapper dtype must be 'bfloat16' or 'float16', "
                                 f'got {dtype!r}')
            dtype = getattr(torch, dtype)
        if not cpu_autocast_supports(dtype):
            raise TorchVersionError(f'CPUAmpOptimWrapper(dtype={dtype}): the CPU autocast of '
                                    f'torch {torch.__version__} does not support {dtype} (torch '
                                    "2.1 has bfloat16 only): use dtype='bfloat16' or a newer torch")
        self.cast_dtype = dtype
        self.autocast_modules = tuple(autocast_modules)
        # autocast state (enabled, dtype, cache enabled) saved by each open pre-hook
        self._saved: List[Tuple[bool, torch.dtype, bool]] = []

    def _targets(self, model: nn.Module) -> List[nn.Module]:
        model = getattr(model, 'module', model)  # unwrap DDP-like wrappers
        found = [getattr(model, n) for n in self.autocast_modules
                 if isinstance(getattr(model, n, None), nn.Module)]
        return found or [model]

    def _enter(self, module: nn.Module, args: Any) -> None:
        """Forward pre-hook: turn CPU autocast on (as ``torch.autocast.__enter__``)."""
        self._saved.append((*get_cpu_autocast(), torch.is_autocast_cache_enabled()))
        set_cpu_autocast(True, self.cast_dtype)
        torch.autocast_increment_nesting()
        torch.set_autocast_cache_enabled(True)

    def _leave(self) -> None:
        """Restore the autocast state of the matching :meth:`_enter`."""
        enabled, dtype, cache = self._saved.pop()
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()  # cached casts of parameters go stale after a step
        set_cpu_autocast(enabled, dtype)
        torch.set_autocast_cache_enabled(cache)

    def _exit(self, module: nn.Module, args: Any, output: Any) -> Any:
        """Forward hook: restore autocast, hand float32 outputs on."""
        self._leave()
        return _to_float32(output)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """Enter the parent context (gradient accumulation) with autocast hooks installed."""
        handles = []
        for target in self._targets(model):
            handles.append(target.register_forward_pre_hook(self._enter))
            handles.append(target.register_forward_hook(self._exit))
        try:
            with super().optim_context(model):
                yield
        finally:
            for handle in handles:
                handle.remove()
            while self._saved:  # a forward that raised left its autocast on
                self._leave()
