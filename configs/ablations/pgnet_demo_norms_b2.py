# pgnet_demo_norms_b16.py at a per-device batch of 2: the learning rate scaled by
# sqrt(2 / 16) (AdamW), CBN's window 7 past iterations.
#
#   python tools/analysis/ablate.py configs/ablations/pgnet_demo_norms_b2.py
_base_ = ['./pgnet_demo_norms_b16.py']

cfg_options = {'train_dataloader.batch_size': 2, 'optim_wrapper.optimizer.lr': 2e-2 * 0.125**0.5}
variants = {
    'CBN': dict(cfg_options={'model.backbone.norm_cfg': dict(buffer_num=7),
                             'model.neck.norm_cfg': dict(buffer_num=7)}),
    'CBN-diff': dict(cfg_options={'model.backbone.norm_cfg': dict(buffer_num=7),
                                  'model.neck.norm_cfg': dict(buffer_num=7)}),
}
work_root = 'work_dirs/ablations/pgnet_demo_norms_b2'
