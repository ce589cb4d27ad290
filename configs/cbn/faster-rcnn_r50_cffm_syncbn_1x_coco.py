# PGNet Table 3 norm ablation, Faster R-CNN R50-CFFM ("ResNet50 + proposed") 1x COCO, norm: syncbn.
# The CFFM neck and a 4conv1fc box head get the ablated norm; the backbone keeps frozen BN.
_base_ = ['../cffm/faster-rcnn_r50_cffm_1x_coco.py']

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    neck=dict(norm_cfg=dict(_delete_=True, **norm_cfg)),  # replace the base's norm
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg)))
