# Copyright (c) mmpgnet contributors. All rights reserved.
"""The MMDetection loss interface that mmpgnet's box losses share."""
from typing import Callable, Dict, Optional

import torch.nn as nn
from torch import Tensor

from .iou_loss_function import check_boxes, value_checks_enabled
from .loss_utils import check_reduction, prepare_weight, resolve_reduction, zero_loss


class BoxLossModule(nn.Module):
    """Base of :class:`GIoULoss` and :class:`CDIoULoss`: MMDetection's box-loss interface.

    A subclass names its ``weighted_loss`` function in :meth:`loss_function` and any extra
    keyword arguments in :meth:`loss_kwargs`; this class handles the shape checks, ``weight``
    ((n,) or (n, 4)), ``avg_factor``, ``reduction`` / ``reduction_override``, the zero loss that
    keeps the graph when the input is empty, and ``loss_weight``.

    A training step never reads a tensor on the host (no GPU sync, no ``torch.compile`` graph
    break). MMDetection's losses return early when no weight is positive, which needs such a
    read (``if not torch.any(weight > 0)``); here pairs with a zero weight are masked on the device
    instead: they add exactly 0 to the loss and send no gradient back, even for degenerate boxes,
    so the value is the same as mmdet's. One difference follows: with ``reduction='none'`` and
    only zero weights the result is ``(n,)`` zeros (mmdet returns a scalar 0), and
    ``avg_factor`` with ``'sum'`` is refused whatever the weights (mmdet refuses it only when
    some weight is positive). Value checks of the boxes (NaN / Inf) are opt-in, see
    ``check_inputs``.

    Args:
        eps (float): numerical floor passed to the loss function.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight (float): factor on the loss.
        check_inputs (bool, optional): also reject non-finite box coordinates, a host read of the
            boxes at every call (a GPU sync); for debugging. None follows the environment
            variable ``MMPGNET_CHECK_INPUTS=1``. Shapes are always checked. Defaults to None.
    """

    def __init__(self, eps: float = 1e-6, reduction: str = 'mean', loss_weight: float = 1.0,
                 check_inputs: Optional[bool] = None) -> None:
        super().__init__()
        check_reduction(reduction)
        self.eps = eps
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.check_inputs = check_inputs

    def loss_function(self) -> Callable[..., Tensor]:
        """The ``weighted_loss``-decorated function this module applies."""
        raise NotImplementedError

    def loss_kwargs(self) -> Dict:
        """Extra keyword arguments of :meth:`loss_function` (none by default)."""
        return {}

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        """Compute the loss.

        Args:
            pred (Tensor): predicted boxes ``(x1, y1, x2, y2)``, shape ``(n, 4)``.
            target (Tensor): target boxes, shape ``(n, 4)``.
            weight (Tensor, optional): ``(n,)`` or ``(n, 4)`` weight. Defaults to None.
            avg_factor (float, optional): divisor of the summed loss for ``'mean'``.
            reduction_override (str, optional): replaces ``self.reduction`` for this call.

        Returns:
            Tensor: the loss (scalar, or ``(n,)`` for ``'none'``).
        """
        check_finite = value_checks_enabled(self.check_inputs)
        check_boxes(pred, target, check_finite=check_finite)
        reduction = resolve_reduction(self.reduction, reduction_override)
        weight = prepare_weight(pred, weight)
        if pred.size(0) == 0 and reduction != 'none':
            return zero_loss(pred, None)
        return self.loss_weight * self.loss_function()(
            pred,
            target,
            weight,
            eps=self.eps,
            reduction=reduction,
            avg_factor=avg_factor,
            mask=None if weight is None else weight > 0,
            check_finite=False,  # checked above
            **self.loss_kwargs(),
            **kwargs)
