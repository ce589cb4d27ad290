# Copyright (c) mmpgnet contributors. All rights reserved.
"""Cross-Distance-IoU loss of PGNet's guidance (pipeline) branch: ``mmpgnet.CDIoULoss``."""
from typing import Callable, Dict, Optional

from torch import Tensor

from mmpgnet.registry import register_model
from .box_loss_module import BoxLossModule
from .iou_loss_function import check_boxes, fused_iou_loss, value_checks_enabled
from .loss_utils import masked as _masked
from .loss_utils import weighted_loss

#: Distances understood by :func:`cdiou_loss`.
CDIOU_DISTANCES = ('center', 'corner')


def _check_distance(distance: str) -> None:
    if distance not in CDIOU_DISTANCES:
        raise ValueError(f'distance must be one of {CDIOU_DISTANCES}, got {distance!r}')


@weighted_loss
def cdiou_loss(pred: Tensor,
               target: Tensor,
               eps: float = 1e-7,
               distance: str = 'center',
               mask: Optional[Tensor] = None,
               check_finite: Optional[bool] = None) -> Tensor:
    r"""Cross-Distance-IoU loss (PGNet, Eq. 5).

    ``L = 1 - IoU + rho^2 / D^2``, D the diagonal of the smallest box enclosing both boxes.

    * ``distance='center'`` (the paper): ``rho`` is the distance of the box centres. With
      MMDetection's conventions (``eps`` added to the union and to ``D^2``) this is exactly the
      DIoU loss (Zheng et al., AAAI 2020) and equals ``mmdet.models.losses.diou_loss``.
    * ``distance='corner'``: ``rho^2`` is the mean of the squared distances of the top-left
      corners and of the bottom-right corners. It is never smaller than the centre distance and,
      unlike it, still penalises a size mismatch when the centres coincide.

    Decorated with MMDetection's ``weighted_loss``: it also takes ``weight``, ``reduction`` and
    ``avg_factor``.

    Args:
        pred (Tensor): predicted boxes ``(x1, y1, x2, y2)``, shape ``(n, 4)``.
        target (Tensor): target boxes, shape ``(n, 4)``.
        eps (float): added to the union and to ``D^2``. Defaults to 1e-7.
        distance (str): ``'center'`` or ``'corner'``. Defaults to ``'center'``.
        mask (Tensor, optional): ``(n,)`` bool, False where a pair gets loss 0 and no gradient.
            Defaults to None.
        check_finite (bool, optional): reject NaN / Inf coordinates, as in
            :func:`~.giou_loss.giou_loss`. Defaults to None.

    Returns:
        Tensor: loss of each pair, shape ``(n,)`` (float32 for fp16/bf16 input).

    Raises:
        ValueError: wrong shapes, an unknown ``distance``, or non-finite coordinates when
            checked.
    """
    _check_distance(distance)
    check_boxes(pred, target, check_finite=value_checks_enabled(check_finite))
    return _masked(fused_iou_loss(pred, target, f'cdiou_{distance}', eps), mask)


@register_model()
class CDIoULoss(BoxLossModule):
    """Cross-Distance-IoU loss module with MMDetection's loss interface.

    Registered names (see :mod:`mmpgnet.registry`): ``type='mmpgnet.CDIoULoss'`` from any scope,
    and bare ``type='CDIoULoss'`` in MMDetection and MMPose configs (neither package has that
    name).

    Behaviour follows ``mmdet.models.losses.DIoULoss`` (with ``distance='center'`` the values are
    equal): a ``weight`` of shape ``(n,)`` or ``(n, 4)`` (averaged over the 4 coordinates),
    ``avg_factor`` for the mean, ``reduction_override``; pairs with a zero weight add 0 and
    send no gradient (computed on the device, without mmdet's host-side early exit: see
    :class:`~.box_loss_module.BoxLossModule`). In addition, an empty input gives a zero loss (not
    NaN) that still backpropagates, wrong shapes raise ``ValueError`` (non-finite values too,
    with ``check_inputs``), and it may be called as ``loss(pred, target)`` (MMPose's
    ``YOLOXPoseHead`` and ``RTMOHead`` do so with ``reduction='sum'``).

    Args:
        eps (float): added to the union and to the squared diagonal. Defaults to 1e-6.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to ``'mean'``.
        loss_weight (float): factor on the loss. Defaults to 1.0.
        distance (str): ``'center'`` (paper, = DIoU) or ``'corner'``. Defaults to ``'center'``.
        check_inputs (bool, optional): reject non-finite coordinates (a host read per call, for
            debugging); None follows ``MMPGNET_CHECK_INPUTS``. Defaults to None.
    """

    def __init__(self,
                 eps: float = 1e-6,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 distance: str = 'center',
                 check_inputs: Optional[bool] = None) -> None:
        super().__init__(eps=eps, reduction=reduction, loss_weight=loss_weight,
                         check_inputs=check_inputs)
        _check_distance(distance)
        self.distance = distance

    def loss_function(self) -> Callable[..., Tensor]:
        """:func:`cdiou_loss`."""
        return cdiou_loss

    def loss_kwargs(self) -> Dict:
        """``distance``."""
        return dict(distance=self.distance)
