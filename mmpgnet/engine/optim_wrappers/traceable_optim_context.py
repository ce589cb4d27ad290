"""An optimizer wrapper's ``optim_context`` in a form that ``torch.compile`` traces."""
from contextlib import contextmanager
from typing import ContextManager, Iterator

import torch
import torch.nn as nn
from mmengine.optim import AmpOptimWrapper, OptimWrapper


@contextmanager
def _amp_context(optim_wrapper: AmpOptimWrapper, model: nn.Module) -> Iterator[None]:
    """What ``AmpOptimWrapper.optim_context`` enters, with ``torch.autocast`` called directly."""
    param = next(model.parameters(), None)
    device_type = 'cuda' if param is None else param.device.type
    with OptimWrapper.optim_context(optim_wrapper, model), \
            torch.autocast(device_type=device_type, dtype=optim_wrapper.cast_dtype):
        yield


def traceable_optim_context(optim_wrapper: OptimWrapper, model: nn.Module) -> ContextManager:
    """Return ``optim_wrapper.optim_context(model)``, or an equivalent dynamo can trace.

    MMEngine's ``AmpOptimWrapper.optim_context`` enters ``mmengine.runner.amp.autocast``, whose
    torch-version checks (``digit_version``, ``packaging.version.parse``) the dynamo of torch
    2.11 fails to trace (``InternalTorchDynamoError: 'UserDefinedExceptionObjectVariable' object
    has no attribute 'call_setattr'``, seen on an H200 with torch 2.11.0+cu130; torch 2.14 traces
    it). A ``train_step`` compiled by MMEngine's ``compile=True`` that enters that context then
    fails at its first step under ``--amp``. For a wrapper whose ``optim_context`` is
    ``AmpOptimWrapper``'s own, this enters the same two contexts directly: the base
    ``OptimWrapper.optim_context`` (``no_sync`` while accumulating gradients) and
    ``torch.autocast`` on the model's device (``cuda`` for a model without parameters) with the
    wrapper's ``cast_dtype`` (``None``: the device's default, float16 on CUDA), as MMEngine's
    helper does on torch >= 1.10. Any other wrapper (``OptimWrapper``, ``CPUAmpOptimWrapper``, a
    subclass with its own ``optim_context``) gives its own context, unchanged.

    Args:
        optim_wrapper (OptimWrapper): the wrapper of the training step.
        model (nn.Module): the model being trained.

    Returns:
        ContextManager: the context to run the forward and loss in.
    """
    if isinstance(optim_wrapper, AmpOptimWrapper) and \
            type(optim_wrapper).optim_context is AmpOptimWrapper.optim_context:
        return _amp_context(optim_wrapper, model)
    return optim_wrapper.optim_context(model)
