# RetinaNet R50 with the CFFM neck instead of FPN, 1x schedule, COCO.
# As RetinaNet's FPN: C3..C5 (start_level=1) fused by CFFM, P6/P7 from stride-2 convs on C5
# ('on_input'; depthwise-separable here). 256 channels, one cascade, GN (see the Faster R-CNN
# config for why).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

model = dict(
    neck=dict(
        _delete_=True,
        type='CFFM',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        num_cascades=1,
        out_mode='pyramid',
        start_level=1,
        add_extra_convs='on_input',
        num_outs=5,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        act_cfg=dict(type='ReLU')))
