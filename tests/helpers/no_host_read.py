"""A dispatch mode that fails on any read of a tensor's value by the host.

On a GPU every such read (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``if t.any():``,
a boolean-mask index whose result size depends on the data, ``torch.nonzero``) stalls the CPU
until the GPU queue drains. Under :class:`NoHostReads` the same code runs on the CPU with real
values, and each of those operations raises :class:`HostReadError` naming the operator, so a test
proves a training step sync-free without a GPU. ``Tensor.tolist()`` reads memory without going
through the dispatcher and is not seen here; ``meta`` tensors catch it (they have no values).
"""
from typing import Any, Dict, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

#: Operators that hand a tensor's value to the host, or whose output shape depends on the data.
HOST_READ_OPS = {
    aten._local_scalar_dense.default,  # .item(), float(), int(), bool(), .tolist()
    aten.is_nonzero.default,  # bool(t) / `if t:` on a one-element tensor
    aten.nonzero.default,  # torch.nonzero, boolean-mask indexing
    aten.masked_select.default,  # t[mask]
    aten.equal.default,  # torch.equal returns a Python bool
}


class HostReadError(RuntimeError):
    """A tensor's value was read by the host inside a :class:`NoHostReads` block."""


class NoHostReads(TorchDispatchMode):
    """Raise :class:`HostReadError` on every host read of a tensor value (see module doc)."""

    def __torch_dispatch__(self, func: Any, types: Tuple, args: Tuple = (),
                           kwargs: Dict = None) -> Any:
        if func in HOST_READ_OPS or (func is aten.index.Tensor and _has_bool_index(args)):
            raise HostReadError(f'host read of a tensor value: {func}')
        return func(*args, **(kwargs or {}))


def _has_bool_index(args: Tuple) -> bool:
    """Whether an ``aten.index`` call indexes with a boolean mask (a data-dependent size)."""
    indices = args[1] if len(args) > 1 else ()
    return any(i is not None and i.dtype == torch.bool for i in indices)
