# pgnet_demo_norms_b16.py at a per-device batch of 4: the learning rate scaled by
# sqrt(4 / 16) (AdamW), CBN's window 3 past iterations.
#
#   python tools/analysis/ablate.py configs/ablations/pgnet_demo_norms_b4.py
_base_ = ['./pgnet_demo_norms_b16.py']

cfg_options = {'train_dataloader.batch_size': 4, 'optim_wrapper.optimizer.lr': 2e-2 * 0.5}
variants = {
    'CBN': dict(cfg_options={'model.backbone.norm_cfg': dict(buffer_num=3),
                             'model.neck.norm_cfg': dict(buffer_num=3)}),
    'CBN-diff': dict(cfg_options={'model.backbone.norm_cfg': dict(buffer_num=3),
                                  'model.neck.norm_cfg': dict(buffer_num=3)}),
}
work_root = 'work_dirs/ablations/pgnet_demo_norms_b4'
