# PGNet Table 3 norm ablation, Faster R-CNN R50-FPN 1x COCO, norm: SyncBN
# (plain BN when not distributed: MMEngine's Runner reverts it).
# As in the CBN paper's detection setting the backbone keeps its frozen ImageNet BN (norm_eval) and
# the ablated norm goes into the neck and a 4conv1fc box head (Shared4Conv1FCBBoxHead).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg)))
