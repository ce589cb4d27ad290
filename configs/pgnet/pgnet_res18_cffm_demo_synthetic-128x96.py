# The demo: a CPU-sized PGNet (ResNet-18 + CFFM + PGS guidance + "Deconv + 1x1 conv" head, 128x96
# input) trained from scratch on the synthetic COCO people of
# tools/dataset_converters/generate_synthetic_coco.py. `make demo` generates the data, trains this
# config with tools/train.py --amp (bfloat16 autocast of backbone and neck on CPU) and evaluates
# COCO key-point AP on the synthetic val split with ground-truth boxes. Only what differs from the
# PGNet R50 guidance config is stated here: a half-width ResNet-18 without pretrained weights, a
# smaller input and codec with DARK decoding, a schedule that fits a 2-core machine in minutes, and
# the synthetic data paths.
_base_ = ['./pgnet_res50_cffm_guidance_8xb64-210e_coco-256x192.py']

data_root = 'data/synthetic_coco/'
neck_channels = 64
max_epochs = 12

train_cfg = dict(max_epochs=max_epochs, val_interval=3)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=100, start_factor=0.01, by_epoch=False),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, T_max=max_epochs, eta_min=2e-5,
         by_epoch=True, convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=32)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best='coco/AP', rule='greater'))

codec = dict(type='MSRAHeatmap', input_size=(96, 128), heatmap_size=(24, 32), sigma=2,
             unbiased=True)
model = dict(
    # a half-width ResNet-18 (stem and base channels 32): 3.0M parameters, 4x fewer FLOPs
    backbone=dict(depth=18, stem_channels=32, base_channels=32, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=neck_channels),
    head=dict(in_channels=neck_channels, deconv_out_channels=(neck_channels, ), decoder=codec))

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomBBoxTransform', rotate_factor=30),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs')
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs')
]
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/person_keypoints_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/person_keypoints_val.json',
        bbox_file=None,
        data_prefix=dict(img='val/'),
        pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/person_keypoints_val.json')
test_evaluator = val_evaluator
