"""mmpgnet necks."""
from .cffm import CFFM
from .cffm_fusion_node import CFFMFusionNode

__all__ = ['CFFM', 'CFFMFusionNode']
