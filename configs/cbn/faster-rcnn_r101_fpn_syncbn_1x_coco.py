# PGNet Table 3 norm ablation, Faster R-CNN R101-FPN 1x COCO, norm: syncbn; see the R50 config.
_base_ = ['./faster-rcnn_r50_fpn_syncbn_1x_coco.py']

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
