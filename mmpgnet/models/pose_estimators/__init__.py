"""Pose estimators of mmpgnet (PGNet with PGS guidance).

``HeatmapGuidance`` needs torch and mmengine only; ``PGNetPoseEstimator`` subclasses MMPose's
``TopdownPoseEstimator`` and is loaded only where ``mmpose.models`` imports.
"""
from mmpgnet.utils.optional_packages import missing_component_getattr, package_available
from .heatmap_guidance import HeatmapGuidance, resize_heatmaps

_MMPOSE_NAMES = ['PGNetPoseEstimator', 'cffm_levels_and_outputs', 'heatmap_head_loss',
                 'pack_heatmap_targets']
__all__ = ['HeatmapGuidance', 'resize_heatmaps']

if package_available('mmpose'):
    from .pgnet_pose_estimator import (PGNetPoseEstimator, cffm_levels_and_outputs,  # noqa: F401
                                       heatmap_head_loss, pack_heatmap_targets)
    __all__ += _MMPOSE_NAMES
else:
    __getattr__ = missing_component_getattr(__name__, 'mmpose', _MMPOSE_NAMES)
