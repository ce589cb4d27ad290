"""Let ``torch.load(weights_only=True)`` read MMEngine checkpoints, and nothing more.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, and MMEngine 0.10.7 calls it
without the argument (mmengine issue #1655). A full MMEngine checkpoint holds, besides tensors,
the message hub's :class:`~mmengine.logging.HistoryBuffer` objects (numpy arrays and numpy
scalars inside) and, through ``HistoryBuffer._statistics_methods``, references to the unbound
methods ``HistoryBuffer.min/max/current/mean``, which pickle writes as
``builtins.getattr(HistoryBuffer, 'min')``. So ``--resume``, ``load_from`` and ``tools/test.py``
fail on this torch.

Instead of turning ``weights_only`` off (which would let any checkpoint run arbitrary code),
importing :mod:`mmpgnet` adds exactly these globals to torch's allowlist:

* numpy arrays, dtypes and scalars (data only, no code);
* ``mmengine.logging.history_buffer.HistoryBuffer`` (plain data attributes);
* ``builtins.getattr`` *replaced by* :func:`restricted_getattr`, which only returns the
  statistics methods of ``HistoryBuffer`` and raises for anything else, so a crafted checkpoint
  cannot use ``getattr`` to reach other callables.
"""
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

#: the attributes a checkpoint may fetch with getattr: HistoryBuffer's statistics methods
ALLOWED_GETATTR = {HistoryBuffer: frozenset({'min', 'max', 'current', 'mean'})}


def restricted_getattr(obj: Any, name: str) -> Any:
    """``getattr`` for unpickling that allows only ``HistoryBuffer``'s statistics methods.

    Args:
        obj (Any): the object the pickle asks an attribute of.
        name (str): the attribute name.

    Returns:
        Any: ``getattr(obj, name)`` when allowed.

    Raises:
        pickle.UnpicklingError: for any other object or attribute.
    """
    import pickle
    allowed = ALLOWED_GETATTR.get(obj if isinstance(obj, type) else type(obj), frozenset())
    if name not in allowed:
        raise pickle.UnpicklingError(
            f'checkpoint asks for getattr({obj!r}, {name!r}), which mmpgnet does not allow '
            'under weights_only=True (only HistoryBuffer statistics methods are allowed)')
    return getattr(obj, name)


def _numpy_globals() -> List[Any]:
    """numpy classes and functions that pickled arrays, dtypes and scalars refer to.

    numpy 2 moved ``numpy.core`` to ``numpy._core`` (the old name warns); a checkpoint names the
    module of the numpy that wrote it, so both names are allowed for the two functions.
    """
    multiarray = getattr(getattr(np, '_core', None), 'multiarray', None) or np.core.multiarray
    items: List[Any] = [np.ndarray, np.dtype]
    for func in (multiarray._reconstruct, multiarray.scalar):
        items += [(func, f'numpy.{core}.multiarray.{func.__name__}')
                  for core in ('core', '_core')]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25 pickles dtype classes by name
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return items


def mmengine_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The globals that MMEngine checkpoints need beyond torch's default allowlist.

    Returns:
        list: items for :func:`torch.serialization.add_safe_globals`.
    """
    return [*_numpy_globals(), HistoryBuffer, (restricted_getattr, 'builtins.getattr')]


def allow_mmengine_checkpoints() -> None:
    """Add :func:`mmengine_safe_globals` to torch's ``weights_only`` allowlist (idempotent).

    torch < 2.4 has no allowlist (``add_safe_globals``) and loads full pickles by default, which
    MMEngine's checkpoints need; nothing is added there.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals(mmengine_safe_globals())


allow_mmengine_checkpoints()
