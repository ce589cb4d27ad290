# PGNet pose model with the guidance of PGS (Pipeline Guidance Strategy), training only:
# auxiliary heatmap heads on the levels of CFFM's first (intermediate) cascade at strides 8, 16 and
# 32, supervised by the ground-truth heatmaps max-pooled to their stride. The guidance weights
# follow a cosine decay to 10% over training (GuidanceScaleHook). At test time the model is the
# plain PGNet model: the guidance heads are not run, and `PGNetPoseEstimator.strip_guidance` /
# tools/misc/export_inference_checkpoint.py drop their weights from a checkpoint.
#
# The weights (the paper gives none): 0.1 per level and no deep -> shallow feedback
# (`feedback_weight`, which trains the guidance heads towards the main head's detached
# prediction). At 0.5 the three guidance losses are up to 8x the main loss early in training (a
# max-pooled target is dense at strides 16 and 32), and Adam's per-weight step normalisation then
# shrinks the main task's steps in the shared backbone and neck. Measured on the synthetic demo
# (5-epoch probes, docs/pgs.md "Guidance weights"): 0.5 + feedback 0.5 cost 0.12 AP against no
# guidance; 0.1 without feedback cost nothing measurable (0.575 vs 0.577); 0.1 with feedback 0.1
# ended 0.03-0.04 below no guidance. Not measured on COCO (no COCO or GPUs here).
_base_ = ['./pgnet_res50_cffm_8xb64-210e_coco-256x192.py']

model = dict(
    type='PGNetPoseEstimator',
    guidance_cfg=dict(
        cascade=0,  # the first of CFFM's two cascades
        in_levels=[1, 2, 3],  # strides 8, 16, 32 (0 = C2's stride 4)
        weights=[0.1, 0.1, 0.1],
        feedback_weight=0.0,  # the deep -> shallow feedback is off (see above)
        target_resize='max'))  # the loss is the main head's (KeypointMSELoss)

custom_hooks = [
    dict(type='SyncBuffersHook'),
    dict(type='GuidanceScaleHook', decay='cosine', end_factor=0.1),
]
