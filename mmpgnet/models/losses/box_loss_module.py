# Copyright (c) mmpgnet contributors. All rights reserved.
"""The MMDetection loss interface that mmpgnet's box losses share."""
from typing import Callable, Dict, Optional

import torch.nn as nn
from torch import Tensor

from .iou_loss_function import check_boxes
from .loss_utils import (check_reduction, has_no_positive, prepare_weight, resolve_reduction,
                         zero_loss)


class BoxLossModule(nn.Module):
    """Base of :class:`GIoULoss` and :class:`CDIoULoss`: MMDetection's box-loss interface.

    A subclass names its ``weighted_loss`` function in :meth:`loss_function` and any extra
    keyword arguments in :meth:`loss_kwargs`; this class handles the shape checks, ``weight``
    ((n,) or (n, 4)), ``avg_factor``, ``reduction`` / ``reduction_override``, the zero loss that
    keeps the graph when every weight is zero or the input is empty, and ``loss_weight``.

    Args:
        eps (float): numerical floor passed to the loss function.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight (float): factor on the loss.
    """

    def __init__(self, eps: float = 1e-6, reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        check_reduction(reduction)
        self.eps = eps
        self.reduction = reduction
        self.loss_weight = loss_weight

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
        check_boxes(pred, target, check_finite=False)  # the functional form checks values
        reduction = resolve_reduction(self.reduction, reduction_override)
        if has_no_positive(weight):
            prepare_weight(pred, weight)
            return zero_loss(pred, weight)
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
            **self.loss_kwargs(),
            **kwargs)
