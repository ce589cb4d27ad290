"""Pose estimators of mmpgnet (PGNet with PGS guidance)."""
from .heatmap_guidance import HeatmapGuidance, resize_heatmaps
from .pgnet_pose_estimator import (PGNetPoseEstimator, cffm_levels_and_outputs,
                                   heatmap_head_loss, pack_heatmap_targets)

__all__ = [
    'HeatmapGuidance', 'PGNetPoseEstimator', 'cffm_levels_and_outputs', 'heatmap_head_loss',
    'pack_heatmap_targets', 'resize_heatmaps'
]
