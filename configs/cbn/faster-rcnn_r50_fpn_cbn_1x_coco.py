# PGNet Table 3 norm ablation, Faster R-CNN R50-FPN 1x COCO, norm: CBN, window of 3
# past iterations, burn-in 8 epochs (set by CBNHook), as the CBN authors' detection configs.
# As in the CBN paper's detection setting the backbone keeps its frozen ImageNet BN (norm_eval) and
# the ablated norm goes into the neck and a 4conv1fc box head (Shared4Conv1FCBBoxHead).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

norm_cfg = dict(type='CBN', buffer_num=3, burnin_iters=0, requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg)))
# Links every CBN to its conv before training (one traced forward) and sets the burn-in.
custom_hooks = [dict(type='CBNHook', burnin_epochs=8)]
