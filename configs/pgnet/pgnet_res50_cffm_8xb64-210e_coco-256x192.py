# PGNet top-down pose model: ResNet-50 + CFFM (single map) + "Deconv + 1x1 conv" heatmap head
# (PGNet paper, Table 1), COCO 256x192, flip test. Everything else (data, schedule, codec,
# optimizer, pretrained backbone) is MMPose's SimpleBaseline R50 config.
#
# How "one deconv + 1x1 conv" fits the heatmap size (48x64 = stride 4 of 192x256):
# CFFM fuses C2..C5 (strides 4..32) in two cascades and merges them into one map at stride 8
# (`single_level=1`); the head's single 4x4 stride-2 deconv brings it to stride 4 and a 1x1 conv
# predicts the 17 heatmaps. Why stride 8 and not the finest stride 4:
#   * the deconv then does a learned 2x upsampling, the decoder that SimpleBaseline showed to work,
#     instead of being a stride-1 conv in disguise;
#   * the merge node and the deconv run on 4x fewer positions: with the second cascade skipping the
#     stride-4 level (`finest_level_cascades=1`, see below) the model has 0.72x SimpleBaseline
#     R50's parameters and 0.86x its FLOPs; with the NHWC fusion (`channels_last`) its CPU
#     latency is 0.81x at batch 1 and 0.96x at batch 32 (docs/cffm.md);
#   * C2's stride-4 detail is still fused: it enters both passes of the first cascade and is
#     max-pooled into the stride-8 merge.
# 128 channels: the depthwise-separable nodes are cheap, and 128 keeps 2 cascades within budget.
# The second cascade refines strides 8-32 only: the paper notes that the shallow layers cost much
# computation for little gain, and at stride 4 one node costs as much as all the others.
_base_ = ['mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

neck_channels = 128

model = dict(
    backbone=dict(out_indices=(0, 1, 2, 3)),  # C2..C5 (mmpose's ResNet returns only C5 by default)
    neck=dict(
        type='CFFM',
        in_channels=[256, 512, 1024, 2048],
        out_channels=neck_channels,
        num_cascades=2,
        out_mode='single',
        single_level=1,  # stride 8; the head's deconv brings it to stride 4
        finest_level_cascades=1,  # C2 (stride 4) is fused by the first cascade only
        channels_last=True,  # NHWC fusion: oneDNN / cuDNN depthwise convs are faster on it
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='ReLU')),
    head=dict(
        in_channels=neck_channels,
        deconv_out_channels=(neck_channels, ),
        deconv_kernel_sizes=(4, ),
        conv_out_channels=None,  # then HeatmapHead's final 1x1 conv to 17 channels
        conv_kernel_sizes=None))
