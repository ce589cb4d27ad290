# PGNet's Table 3 at CPU scale: necks x norms, and box-regression losses, on the small detector
# configs/cbn/faster-rcnn_r18-scratch_fpn_gn-all_demo_synthetic-320x240.py (from scratch, the
# synthetic people's boxes, COCO box AP through MMDetection's metric). An ablation spec for
# tools/analysis/ablate.py (docs/ablations.md), 2 seeds:
#
#   * {FPN, CFFM} x {GN, BN, CBN}: one norm_cfg in backbone, neck and box head (the paper's
#     Table 3 compares GN, SyncBN and CBN; SyncBN is BN on one process); CBN with a window of 3
#     (16 images at batch 4) and a burn-in of one epoch;
#   * box losses on FPN + GN: GIoU in both heads, CDIoU in both, and the cross scheme (RPN CDIoU,
#     RoI GIoU; configs/losses/); the baseline keeps MMDetection's L1 on deltas.
#
#   python tools/dataset_converters/generate_synthetic_coco.py data/synthetic_coco \
#       --num-train 2000 --num-val 200 --seed 0   # if missing: the set tools/demo.sh makes
#   python tools/analysis/ablate.py configs/ablations/faster-rcnn_demo_table3.py
base_config = 'configs/cbn/faster-rcnn_r18-scratch_fpn_gn-all_demo_synthetic-320x240.py'
synthetic_data = 'data/synthetic_coco'
metric = 'coco/bbox_mAP'
seeds = [0, 1]
# 4 epochs of the first 500 training images (500 iterations at batch 4, about 4 min a run; the
# config's own schedule, `make demo-det`, is 4 epochs of all 2000): 18 runs fit in 90 minutes
schedule = dict(max_epochs=4, val_interval=4)
cfg_options = {'train_dataloader.dataset.indices': 500}
baseline = 'fpn_gn'
complexity_input = (3, 240, 320)

_bn = dict(_delete_=True, type='BN', requires_grad=True)
_cbn = dict(_delete_=True, type='CBN', buffer_num=3, requires_grad=True)
_cbn_hooks = [dict(type='CBNHook', burnin_epochs=1)]


def _norm(norm: dict) -> dict:
    """Options that put ``norm`` in the backbone, the neck and the box head."""
    return {'model.backbone.norm_cfg': norm, 'model.neck.norm_cfg': norm,
            'model.roi_head.bbox_head.norm_cfg': norm}


def _cffm(norm: dict) -> dict:
    """Options that replace FPN by CFFM (FPN's outputs: P2-P6) and put ``norm`` everywhere."""
    neck = dict(_delete_=True, type='CFFM', in_channels=[32, 64, 128, 256], out_channels=64,
                num_cascades=1, out_mode='pyramid', num_outs=5, act_cfg=dict(type='ReLU'),
                norm_cfg={k: v for k, v in norm.items() if k != '_delete_'})
    return dict(_norm(norm), **{'model.neck': neck})


def _losses(rpn: str, roi: str) -> dict:
    """Options for decoded-box IoU losses in the RPN and the RoI head."""
    return {'model.rpn_head.reg_decoded_bbox': True,
            'model.rpn_head.loss_bbox': dict(_delete_=True, type=rpn, loss_weight=10.0),
            'model.roi_head.bbox_head.reg_decoded_bbox': True,
            'model.roi_head.bbox_head.loss_bbox': dict(_delete_=True, type=roi, loss_weight=10.0)}


_gn = dict(_delete_=True, type='GN', num_groups=8, requires_grad=True)
variants = {
    'fpn_gn': dict(),  # the config as it is
    'fpn_bn': dict(cfg_options=_norm(_bn)),
    'fpn_cbn': dict(cfg_options=dict(_norm(_cbn), custom_hooks=_cbn_hooks)),
    'cffm_gn': dict(cfg_options=_cffm(_gn)),
    'cffm_bn': dict(cfg_options=_cffm(_bn)),
    'cffm_cbn': dict(cfg_options=dict(_cffm(_cbn), custom_hooks=_cbn_hooks)),
    'giou': dict(cfg_options=_losses('mmpgnet.GIoULoss', 'mmpgnet.GIoULoss')),
    'cdiou': dict(cfg_options=_losses('CDIoULoss', 'CDIoULoss')),
    'cross': dict(cfg_options=_losses('CDIoULoss', 'mmpgnet.GIoULoss')),
}
