"""Norm layers of mmpgnet: Cross-Iteration Batch Normalization and its conv linking."""
from .cbn import CBN
from .cbn_conv_support import unsupported_conv_reason
from .cbn_link import CBNLinkReport, link_cbn_layers, named_cbn_layers, trace_cbn_producers

__all__ = [
    'CBN', 'CBNLinkReport', 'link_cbn_layers', 'named_cbn_layers', 'trace_cbn_producers',
    'unsupported_conv_reason'
]
