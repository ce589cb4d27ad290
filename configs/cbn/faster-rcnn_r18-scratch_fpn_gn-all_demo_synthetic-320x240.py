# Table 3 at CPU scale: a Faster R-CNN that trains from scratch in minutes on the people's boxes of
# tools/dataset_converters/generate_synthetic_coco.py (320x240 images, one class), evaluated with
# MMDetection's COCO box AP. It inherits MMDetection's from-scratch recipe (GN in backbone, FPN
# and a 4conv1fc box head: one `norm_cfg` threaded through all three) and states only what
# differs: a half-width ResNet-18, narrow neck and heads, fewer sampled proposals, the synthetic
# data at its own size, and a short AdamW schedule. The ablation grid over necks, norms and box
# losses is configs/ablations/faster-rcnn_demo_table3.py; `make demo-det` trains this config.
_base_ = ['mmdet::scratch/faster-rcnn_r50-scratch_fpn_gn-all_6x_coco.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

data_root = 'data/synthetic_coco/'
channels = 64
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)
max_epochs = 4

model = dict(
    # a half-width ResNet-18 (stages of 32, 64, 128, 256 channels), no pretrained weights
    backbone=dict(depth=18, stem_channels=32, base_channels=32, norm_cfg=norm_cfg,
                  norm_eval=False),  # from scratch: BN and CBN variants train their statistics
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=channels, norm_cfg=norm_cfg),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        # 2x2 samples per bin instead of an adaptive count: mmcv's CPU RoIAlign (forward and
        # backward) was 40 % of a training step with sampling_ratio=0
        bbox_roi_extractor=dict(out_channels=channels, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=channels, conv_out_channels=channels, fc_out_channels=256,
                       num_classes=1, norm_cfg=norm_cfg)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

metainfo = dict(classes=('person', ), palette=[(220, 20, 60)])
img_scale = (320, 240)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/person_keypoints_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/person_keypoints_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/person_keypoints_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, T_max=max_epochs, eta_min=1e-5,
         by_epoch=True, convert_to_iter_based=True)
]
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(
    logger=dict(interval=20), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
