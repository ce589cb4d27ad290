# Faster R-CNN R50 with the CFFM neck instead of FPN, 1x schedule, COCO.
# CFFM: 256 channels (the RPN / RoI heads stay as in the FPN config), one cascade of top-down +
# bottom-up fusion with depthwise-separable nodes: ~0.38x FPN's FLOPs on an 800x1333 image
# (tools/analysis/neck_complexity.py). GN keeps the neck's norm independent of the 2-image batch;
# the Table 3 ablation swaps it for SyncBN / CBN through `norm_cfg`.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

model = dict(
    neck=dict(
        _delete_=True,
        type='CFFM',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        num_cascades=1,
        out_mode='pyramid',
        num_outs=5,  # P2..P5 + max-pooled P6, as FPN
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        act_cfg=dict(type='ReLU')))
