"""mmpgnet heads (torch and mmengine only)."""
from .heatmap_guidance import HeatmapGuidance, resize_heatmaps

__all__ = ['HeatmapGuidance', 'resize_heatmaps']
