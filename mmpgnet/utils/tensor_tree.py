"""Apply a function to every tensor inside nested tuples, lists and dicts."""
from typing import Any, Callable

from torch import Tensor


def map_tensors(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Return ``value`` with ``fn`` applied to every tensor in it.

    Tuples, lists and dicts are rebuilt with the same type and keys; anything else is returned
    as it is.

    Args:
        value (Any): a tensor or a (nested) tuple, list or dict of tensors and other values.
        fn (Callable[[Tensor], Tensor]): applied to each tensor.

    Returns:
        Any: the same structure with the tensors replaced.

    Example:
        >>> import torch
        >>> map_tensors({'a': (torch.ones(1), 'x')}, lambda t: t * 2)
        {'a': (tensor([2.]), 'x')}
    """
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value
