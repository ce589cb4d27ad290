"""Data-parallel wrapper that works on CPU (gloo) as well as on GPU (nccl)."""
from typing import Any, Optional, Sequence

import torch.nn as nn
from mmengine.model import MMDistributedDataParallel

from mmpgnet.registry import register_model_wrapper


@register_model_wrapper()
class DeviceAgnosticDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` for a module on the CPU.

    MMEngine's ``Runner.wrap_model`` hands ``device_ids=[LOCAL_RANK]`` to every DDP subclass, and
    torch rejects ``device_ids`` for CPU modules, so stock configs cannot train data-parallel on
    CPU processes. This wrapper keeps the GPU behaviour unchanged and, for a module whose
    parameters live on the CPU, lets DDP run with ``device_ids=None`` (gloo). ``tools/train.py``
    selects it automatically for a distributed run without CUDA when the config names no
    ``model_wrapper_cfg``.

    Args:
        module (nn.Module): the model to wrap.
        device_ids (Sequence[int], optional): GPU ids; ignored for CPU modules.
        **kwargs: passed to :class:`MMDistributedDataParallel`.

    Example:
        >>> model_wrapper_cfg = dict(type='DeviceAgnosticDDP', find_unused_parameters=False)
    """

    def __init__(self, module: nn.Module, device_ids: Optional[Sequence[int]] = None,
                 **kwargs: Any) -> None:
        devices = {p.device.type for p in module.parameters()}
        if devices <= {'cpu'}:
            device_ids = None
            kwargs.pop('output_device', None)
        super().__init__(module=module, device_ids=device_ids, **kwargs)
