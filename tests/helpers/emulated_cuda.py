"""CUDA tensors that carry real values on a machine without a GPU, for device-placement tests.

:class:`EmulatedCuda` says it lives on ``cuda:0`` (``t.device``, ``t.is_cuda``) and keeps its
values in a CPU tensor; every operation runs on those values and wraps its result again, so a
computation gives the numbers it gives on the CPU, while a real CPU tensor mixed into it fails
as it would on a GPU. :class:`EmulatedCudaMode` turns factory calls that ask for a CUDA device
(``torch.tensor``, ``empty``, ``zeros``, ``arange``, ``x.to('cuda:0')``...) into such tensors.
Device-to-host reads (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``.cpu()``) and
blocking host-to-device copies (``torch.tensor(values, device='cuda')``, ``x.to('cuda')`` of a
CPU tensor, ``cuda_t.copy_(cpu_t)``; torch waits for the stream after each) are allowed, as on
a GPU, and recorded by :func:`record_host_syncs`, so a test can assert that a training step
never waits for the device.

Unlike ``FakeTensorMode`` (shapes only) the values are real, so code that reads a tensor after a
collective (``.tolist()`` of agreed timings) can be checked for numbers. Unlike ``device='meta'``
the device is the one real code tests for (``t.is_cuda``, NCCL's "CUDA tensors only").

Limits: ``EmulatedCudaMode`` replaces ``torch.cuda._lazy_init`` with a no-op while it is active
(torch calls it before creating a CUDA tensor); torch then remembers CUDA as initialised for
the rest of the process, so a later real CUDA call fails with a CUDA error instead of "Found no
NVIDIA driver". Use explicit device indices (``'cuda:0'``): ``x.to('cuda')`` asks the (absent)
driver for the current device. Autograd's backward on these tensors is not supported (the
engine wants a real CUDA device), as with fake CUDA tensors.
"""
import contextlib
from typing import Any, Iterator, List, Optional

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA0 = torch.device('cuda', 0)
_CPU = torch.device('cpu')
aten = torch.ops.aten

# ops that legitimately take CPU tensors of any size together with CUDA ones
_INDEX_OPS = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
              aten._index_put_impl_.default}
_MIXED_DEVICE_OK = {aten.copy_.default, aten._to_copy.default} | _INDEX_OPS
_recorders: List[List[str]] = []


def _no_driver_device_guard() -> None:
    """Without a usable GPU, let torch's CUDA device guard do nothing (as FakeTensorMode does).

    Indexing and other C++ paths set the current CUDA device around an operation on a CUDA
    tensor; without a driver that fails. The no-op guard stays for the rest of the process.
    """
    if not torch.cuda.is_available():
        torch._C._ensureCUDADeviceGuardSet()


@contextlib.contextmanager
def record_host_syncs() -> Iterator[List[str]]:
    """Record every operation in the block that makes the host wait for the (emulated) GPU.

    Yields:
        list[str]: filled with one entry per sync: ``'item'`` (``.item()``, ``float()``,
        ``bool()``), ``'to_cpu'`` (``.cpu()``, ``.tolist()``, ``.to('cpu')``,
        ``cpu_t.copy_(cuda_t)``) or ``'h2d'`` (a blocking copy of CPU values to the device:
        ``cuda_t.copy_(cpu_t)``, indexing with CPU indices or a Python list, and, inside
        :class:`EmulatedCudaMode`, ``torch.tensor(..., device='cuda')`` and ``.to('cuda')``).
    """
    reads: List[str] = []
    _recorders.append(reads)
    try:
        yield reads
    finally:
        _recorders.remove(reads)


def _note_sync(kind: str) -> None:
    for reads in _recorders:
        reads.append(kind)


def _is_cuda_device(device: Any) -> bool:
    return device is not None and torch.device(device).type == 'cuda'


def _unwrap(x: Any) -> Any:
    return x._data if isinstance(x, EmulatedCuda) else x


def _wrap(x: Any) -> Any:
    if isinstance(x, Tensor) and not isinstance(x, EmulatedCuda):
        return EmulatedCuda(x)
    return x


def _check_no_cpu_tensors(func: Any, args: tuple, kwargs: dict) -> None:
    """Raise as CUDA does when a CPU tensor (not a 0-dim scalar) meets a CUDA one."""
    if func in _MIXED_DEVICE_OK:
        return
    for t in tree_flatten((args, kwargs))[0]:
        if isinstance(t, Tensor) and not isinstance(t, EmulatedCuda) and \
                t.device.type == 'cpu' and t.dim() > 0:
            raise RuntimeError('Expected all tensors to be on the same device, but found at '
                               f'least two devices, cuda:0 and cpu! (in {func})')


def _written_inputs(func: Any, args: tuple, kwargs: dict) -> List[Optional[Tensor]]:
    """For each return of ``func``: the input it writes and returns (in-place / out=), or None."""
    schema = func._schema
    written = []
    for ret in schema.returns:
        info = ret.alias_info
        found = None
        if info is not None and info.is_write:
            for i, arg in enumerate(schema.arguments):
                if arg.alias_info is not None and arg.alias_info.before_set == info.before_set:
                    found = args[i] if i < len(args) else kwargs.get(arg.name)
                    break
        written.append(found)
    return written


class EmulatedCuda(Tensor):
    """A tensor on ``cuda:0`` whose values live in a CPU tensor (see the module docstring).

    Args:
        data (Tensor): the values (a CPU tensor; shared, not copied).
        requires_grad (bool): as for any tensor. Defaults to False.
    """

    _data: Tensor

    @staticmethod
    def __new__(cls, data: Tensor, requires_grad: bool = False) -> 'EmulatedCuda':
        if isinstance(data, EmulatedCuda):
            data = data._data
        if data.device.type != 'cpu':
            raise ValueError(f'EmulatedCuda holds CPU values, got a tensor on {data.device}')
        _no_driver_device_guard()
        out = Tensor._make_wrapper_subclass(
            cls, data.shape, strides=data.stride(), storage_offset=data.storage_offset(),
            dtype=data.dtype, layout=data.layout, device=CUDA0, requires_grad=requires_grad)
        out._data = data
        return out

    def __repr__(self) -> str:  # noqa: D105
        return f'EmulatedCuda({self._data!r})'

    def tolist(self) -> Any:
        """The values as (nested) Python numbers: a device-to-host read, recorded."""
        _note_sync('to_cpu')
        return self._data.tolist()

    def numpy(self, *args: Any, **kwargs: Any) -> Any:
        """Fail as a CUDA tensor does."""
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to "
                        'copy the tensor to host memory first.')

    @property
    def host_values(self) -> Tensor:
        """Tensor: the CPU values, read without counting as a host read (for test asserts)."""
        return self._data

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: tuple = (),
                           kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        _check_no_cpu_tensors(func, args, kwargs)
        if func is aten.copy_.default:
            blocking = not kwargs.get('non_blocking', args[2] if len(args) > 2 else False)
            if not isinstance(args[0], EmulatedCuda):
                _note_sync('to_cpu')  # cpu_tensor.copy_(cuda_tensor)
            elif not isinstance(args[1], EmulatedCuda) and blocking:
                _note_sync('h2d')
        if func in _INDEX_OPS and any(
                isinstance(t, Tensor) and not isinstance(t, EmulatedCuda) and t.dim() > 0
                for t in tree_flatten(args[1:])[0]):
            _note_sync('h2d')  # CUDA copies CPU indices to the device first
        if func is aten._local_scalar_dense.default:
            _note_sync('item')
        if func is aten._to_copy.default:
            dst = kwargs.get('device')
            if dst is not None and torch.device(dst).type == 'cpu':
                _note_sync('to_cpu')
                return func(_unwrap(args[0]), **kwargs)  # a real CPU tensor
        kwargs = {k: (_CPU if k == 'device' and _is_cuda_device(v) else v)
                  for k, v in kwargs.items()}
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        written = _written_inputs(func, args, kwargs)
        if any(w is not None for w in written):
            if len(written) == 1:
                return written[0]
            return tuple(w if w is not None else _wrap(o) for w, o in zip(written, out))
        return tree_map(_wrap, out)


def emulate_cuda(t: Tensor) -> EmulatedCuda:
    """A copy of ``t``'s values "on cuda:0" (an :class:`EmulatedCuda`)."""
    return EmulatedCuda(host_values(t).detach().clone(), requires_grad=t.requires_grad)


def host_values(t: Tensor) -> Tensor:
    """The CPU values of an :class:`EmulatedCuda` (``t`` itself for other tensors)."""
    return t._data if isinstance(t, EmulatedCuda) else t


def module_to_emulated_cuda(module: nn.Module) -> nn.Module:
    """Move a module's parameters and buffers "to cuda:0" in place (EmulatedCuda).

    Args:
        module (nn.Module): the module.

    Returns:
        nn.Module: ``module``.
    """
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and not isinstance(p, EmulatedCuda):
                sub._parameters[name] = nn.Parameter(EmulatedCuda(p.detach().clone()),
                                                     requires_grad=p.requires_grad)
        for name, b in list(sub._buffers.items()):
            if b is not None and not isinstance(b, EmulatedCuda):
                sub._buffers[name] = EmulatedCuda(b.detach().clone())
    return module


class EmulatedCudaMode(TorchDispatchMode):
    """Inside it, tensor factories and copies asked for a CUDA device make EmulatedCuda tensors.

    ``torch.tensor(..., device='cuda:0')``, ``torch.empty/zeros/ones/full/arange(...,
    device='cuda:0')``, ``x.to('cuda:0')``, ``x.cuda(0)`` all give :class:`EmulatedCuda`.
    Other operations run unchanged (and EmulatedCuda ones through its own dispatch).
    """

    def __enter__(self) -> 'EmulatedCudaMode':
        self._saved_lazy_init = torch.cuda._lazy_init
        self._saved_lift = torch._C._only_lift_cpu_tensors()
        torch.cuda._lazy_init = lambda: None  # no driver to initialise
        _no_driver_device_guard()
        # torch.tensor(data, device=cuda) then builds on the CPU and calls .to() under modes
        torch._C._set_only_lift_cpu_tensors(True)
        # ops that choose a cuDNN kernel for CUDA inputs (batch_norm) choose the native one
        self._saved_cudnn = torch.backends.cudnn.enabled
        torch.backends.cudnn.enabled = False
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            torch.cuda._lazy_init = self._saved_lazy_init
            torch._C._set_only_lift_cpu_tensors(self._saved_lift)
            torch.backends.cudnn.enabled = self._saved_cudnn

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        if _is_cuda_device(kwargs.get('device')):
            if func is aten._to_copy.default and not isinstance(args[0], EmulatedCuda) and \
                    not kwargs.get('non_blocking', False):
                _note_sync('h2d')
            kwargs = dict(kwargs, device=_CPU)
            return _wrap(func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs)))
        return func(*args, **kwargs)
