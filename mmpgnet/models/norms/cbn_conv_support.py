"""Which convolutions can feed a compensated CBN layer.

CBN's compensation needs the closed-form statistic gradients of a plain 2D convolution
``y_c = W_c . P + b_c`` (see :mod:`.cbn_statistic_grads`); a conv that transforms its weight in
``forward``, or a deformable or transposed one, is not of that form.
"""
from typing import Optional

from torch import nn


def _plain_conv_forwards() -> list:
    """The ``forward`` methods that apply a Conv2d's weight as it is stored.

    Returns:
        list: ``nn.Conv2d.forward`` and, when mmcv is installed, its ``Conv2d`` wrapper's.
    """
    forwards = [nn.Conv2d.forward]
    try:
        from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
        forwards.append(MMCVConv2d.forward)
    except ImportError:  # pragma: no cover - mmcv is a dependency
        pass
    return forwards


def unsupported_conv_reason(conv: nn.Module) -> Optional[str]:
    """Say why a module cannot feed a compensated CBN, or ``None`` if it can.

    Supported: ``nn.Conv2d`` and mmcv's ``Conv2d`` wrapper with numeric padding (any padding mode,
    stride, dilation and groups). Convs that transform their weight in ``forward`` (weight
    standardisation), deformable and transposed convs are not.

    Args:
        conv (nn.Module): candidate module.

    Returns:
        str, optional: the reason, or ``None`` when supported.
    """
    if not isinstance(conv, nn.Conv2d):
        return f'it is fed by a {type(conv).__name__}, not a Conv2d'
    # a subclass that overrides forward or _conv_forward may use another weight than conv.weight
    overrides_forward = type(conv).forward not in _plain_conv_forwards()
    if overrides_forward or type(conv)._conv_forward is not nn.Conv2d._conv_forward:
        return f'{type(conv).__name__} changes its weight in forward'
    if isinstance(conv.padding, str):  # 'same' / 'valid': the patch geometry is not explicit
        return f'string padding {conv.padding!r} is not supported'
    return None
