# Which norm for the demo pose model at a per-device batch of 16? BN, GN, CBN (the paper's) and
# CBN with differentiable compensation, in the backbone and the CFFM neck (MMPose's HeatmapHead
# builds its deconv's BN itself, so that one stays BN in every variant), 3 seeds, 3 epochs of
# 2000 people. An ablation spec for tools/analysis/ablate.py (docs/ablations.md);
# pgnet_demo_norms_b2.py and pgnet_demo_norms_b4.py inherit it for batches 2 and 4. CBN's window
# is 16 / batch - 1 past iterations (at least 1), as in tools/analysis/cbn_small_batch.py, with a
# burn-in of one epoch.
#
#   python tools/analysis/ablate.py configs/ablations/pgnet_demo_norms_b16.py
base_config = 'configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py'
synthetic_data = 'data/synthetic_coco'
amp = True
metric = 'coco/AP'
seeds = [0, 1, 2]
schedule = dict(max_epochs=3, val_interval=3)
# the first 2000 of the 5040 training people (top-down samples): 3 epochs are 375 iterations
# at batch 16 and 3000 at batch 2, whose small steps cost about as much each as batch 16's
cfg_options = {'train_dataloader.dataset.indices': 2000}
baseline = 'BN'
# the demo's hooks, and CBNHook where CBN is used
_hooks = [
    dict(type='SyncBuffersHook'),
    dict(type='GuidanceScaleHook', decay='cosine', end_factor=0.1),
    dict(type='ChannelsLastHook'),
]
_cbn_hooks = _hooks + [dict(type='CBNHook', burnin_epochs=1)]
_gn = dict(type='GN', num_groups=8, requires_grad=True)
_cbn = dict(type='CBN', buffer_num=1, requires_grad=True)
_cbn_diff = dict(type='CBN', buffer_num=1, differentiable_compensation=True, requires_grad=True)
variants = {
    'BN': dict(),  # the config as it is
    'GN': dict(cfg_options={'model.backbone.norm_cfg': _gn, 'model.neck.norm_cfg': _gn}),
    'CBN': dict(cfg_options={'model.backbone.norm_cfg': _cbn, 'model.neck.norm_cfg': _cbn,
                             'custom_hooks': _cbn_hooks}),
    'CBN-diff': dict(cfg_options={'model.backbone.norm_cfg': _cbn_diff,
                                  'model.neck.norm_cfg': _cbn_diff, 'custom_hooks': _cbn_hooks}),
}
work_root = 'work_dirs/ablations/pgnet_demo_norms_b16'
