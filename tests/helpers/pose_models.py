"""A tiny PGNet pose model (ResNet-18 + CFFM + heatmap head at 64x48) and a batch for it."""
import copy
import itertools

import torch
from mmengine.registry import DefaultScope
from mmpose.registry import MODELS
from mmpose.testing import get_packed_inputs

_SCOPES = itertools.count()

CODEC = dict(type='MSRAHeatmap', input_size=(48, 64), heatmap_size=(12, 16), sigma=2)
GUIDANCE = dict(in_levels=[1, 2, 3], weights=[0.5, 0.5, 0.5], feedback_weight=0.25, cascade=0)


def tiny_pose_cfg(guidance=GUIDANCE, type='PGNetPoseEstimator', compute_acc=False) -> dict:
    """A small ResNet-18 + CFFM + heatmap head model at 64x48 input (same layout as PGNet)."""
    cfg = dict(
        type=type,
        data_preprocessor=dict(type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                      out_indices=(0, 1, 2, 3)),
        neck=dict(type='CFFM', in_channels=[8, 16, 32, 64], out_channels=16, num_cascades=2,
                  out_mode='single', single_level=1),
        head=dict(type='HeatmapHead', in_channels=16, out_channels=17,
                  deconv_out_channels=(16, ), deconv_kernel_sizes=(4, ), conv_out_channels=None,
                  conv_kernel_sizes=None,
                  loss=dict(type='KeypointMSELoss', use_target_weight=True), decoder=CODEC),
        train_cfg=dict(compute_acc=compute_acc),
        test_cfg=dict(flip_test=False))
    if type == 'PGNetPoseEstimator':
        cfg['guidance_cfg'] = copy.deepcopy(guidance)
    return cfg


def build_tiny(seed: int = 0, **kwargs) -> torch.nn.Module:
    """Build :func:`tiny_pose_cfg` with a fixed seed, in train mode."""
    DefaultScope.get_instance(f'pgs-test-{next(_SCOPES)}', scope_name='mmpose')
    torch.manual_seed(seed)
    model = MODELS.build(tiny_pose_cfg(**kwargs))
    model.train()
    return model


def tiny_batch(batch_size: int = 8) -> dict:
    """A packed batch for the tiny model (random images and heatmaps, fixed seed)."""
    return get_packed_inputs(batch_size, img_shape=(64, 48), input_size=(48, 64),
                             heatmap_size=(12, 16), with_simcc_label=False, with_reg_label=False)
