# The demo: a CPU-sized PGNet (ResNet-18 + CFFM + PGS guidance + "Deconv + 1x1 conv" head, 128x96
# input) trained from scratch on the synthetic COCO people of
# tools/dataset_converters/generate_synthetic_coco.py. `make demo` generates the data, trains this
# config with tools/train.py --amp (bfloat16 autocast of backbone and neck on CPU) and evaluates
# COCO key-point AP on the synthetic val split with ground-truth boxes. Only what differs from the
# PGNet R50 guidance config is stated here: a half-width ResNet-18 without pretrained weights, a
# smaller input and codec with DARK decoding, a schedule that fits a 2-core machine in minutes, and
# the synthetic data paths.
#
# Speed on 2 cores (measured with 4-epoch runs, tools/train.py --amp, same data):
#   * ChannelsLastHook: NHWC convs, 0.29 -> 0.20 s per training step (batch 32);
#   * num_workers=0: a loader process takes a core from the two OpenMP threads and made a step
#     0.32 s; loading in the main process (2.3 ms per sample) gives 0.28 s;
#   * milder augmentation (scale 0.8-1.2, rotation 15 degrees, small shifts) than COCO's: the
#     generator already varies pose, size, lean and position, and in a budget of minutes the
#     heavy COCO augmentation slows learning (AP 0.157 -> 0.205 after 4 epochs).
#
# Schedule and guidance, chosen by 5-epoch probes (docs/pgs.md, "Guidance weights"; one run
# each on the default synthetic set: `tools/train.py CONFIG --amp --synthetic-data DATA
# --cfg-options train_cfg.max_epochs=5 train_cfg.val_interval=5 param_scheduler.1.end=5
# param_scheduler.1.T_max=5 ...`):
#   * the guidance weights of the base config (0.1, no feedback): with 0.5 and feedback 0.5 the
#     AP after 5 epochs was 0.394, without guidance 0.516 (lr 5e-3, batch 32);
#   * batch 16: twice the updates per epoch for 13 % more time per epoch (lr 1e-2, without
#     guidance: 0.577 -> 0.615); batch 8 gave 0.662 but 1.33x the time per epoch of batch 16;
#   * AdamW lr 2e-2 (batch 16, with the guidance: 0.640; lr 1e-2 at batch 16 was run without
#     guidance, 0.615, and with it at batch 32, 0.575 = no guidance's 0.577; at batch 32 lr 1e-2
#     beat 5e-3 by 0.06); a wider ResNet (48 base channels: +0.026 at 1.3x the
#     time), a stride-2 heatmap (64x48: 0.400 vs 0.394 at 1.5x the time) and the UDP codec
#     (0.388 vs 0.394) did not pay;
#   * 16 epochs with a val every 4: `make demo` took 13 min 59 s on a fresh clone (AP 0.738).
_base_ = ['./pgnet_res50_cffm_guidance_8xb64-210e_coco-256x192.py']

data_root = 'data/synthetic_coco/'
neck_channels = 64
max_epochs = 16

train_cfg = dict(max_epochs=max_epochs, val_interval=4)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-2, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=100, start_factor=0.01, by_epoch=False),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, T_max=max_epochs, eta_min=5e-5,
         by_epoch=True, convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
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
    dict(type='RandomBBoxTransform', scale_factor=(0.8, 1.2), rotate_factor=15, shift_factor=0.08),
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
custom_hooks = [
    dict(type='SyncBuffersHook'),
    dict(type='GuidanceScaleHook', decay='cosine', end_factor=0.1),
    dict(type='ChannelsLastHook'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/person_keypoints_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/person_keypoints_val.json',
        bbox_file=None,
        data_prefix=dict(img='val/'),
        pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/person_keypoints_val.json')
test_evaluator = val_evaluator
