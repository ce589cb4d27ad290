"""Pose estimators of mmpgnet (PGNet with PGS guidance).

``PGNetPoseEstimator`` subclasses MMPose's ``TopdownPoseEstimator`` and is loaded only where
``mmpose.models`` imports.
"""
from mmpgnet.utils.optional_packages import missing_component_getattr, package_available

_MMPOSE_NAMES = ['PGNetPoseEstimator', 'heatmap_head_loss', 'pack_heatmap_targets']
__all__ = []

if package_available('mmpose'):
    from .pgnet_pose_estimator import (PGNetPoseEstimator, heatmap_head_loss,  # noqa: F401
                                       pack_heatmap_targets)
    __all__ += _MMPOSE_NAMES
else:
    __getattr__ = missing_component_getattr(__name__, 'mmpose', _MMPOSE_NAMES)
