# PGNet pose model with the guidance of PGS (Pipeline Guidance Strategy), training only:
# auxiliary heatmap heads on the levels of CFFM's first (intermediate) cascade at strides 8, 16 and
# 32, supervised by the ground-truth heatmaps max-pooled to their stride and by the main head's
# prediction (detached) as deep -> shallow feedback. The guidance weights follow a cosine decay to
# 10% over training (PipelineGuidanceHook). At test time the model is the plain PGNet model: the
# guidance heads are not run, and `PGNetPoseEstimator.strip_guidance` /
# tools/misc/export_inference_checkpoint.py drop their weights from a checkpoint.
_base_ = ['./pgnet_res50_cffm_8xb64-210e_coco-256x192.py']

model = dict(
    type='PGNetPoseEstimator',
    guidance_cfg=dict(
        cascade=0,  # the first of CFFM's two cascades
        in_levels=[1, 2, 3],  # strides 8, 16, 32 (0 = C2's stride 4)
        weights=[0.5, 0.5, 0.5],
        feedback_weight=0.5,
        target_resize='max',
        loss=dict(type='KeypointMSELoss', use_target_weight=True)))

custom_hooks = [
    dict(type='SyncBuffersHook'),
    dict(type='PipelineGuidanceHook', schedule='cosine', end_factor=0.1),
]
