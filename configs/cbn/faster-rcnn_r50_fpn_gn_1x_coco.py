# PGNet Table 3 norm ablation, Faster R-CNN R50-FPN 1x COCO, norm: GN.
# As in the CBN paper's detection setting the backbone keeps its frozen ImageNet BN (norm_eval) and
# the ablated norm goes into the neck and a 4conv1fc box head (Shared4Conv1FCBBoxHead).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg)))
