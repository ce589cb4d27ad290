"""mmpgnet losses: ``mmpgnet.GIoULoss`` and ``mmpgnet.CDIoULoss`` (see docs/losses.md)."""
from .cdiou_loss import CDIoULoss, cdiou_loss
from .giou_loss import GIoULoss, giou_loss

__all__ = ['GIoULoss', 'CDIoULoss', 'giou_loss', 'cdiou_loss']
