# PGNet's Table 1 at small scale: which part of PGNet buys the key-point AP? An ablation spec for
# tools/analysis/ablate.py (docs/ablations.md). The demo model (half-width ResNet-18, 128x96, the
# synthetic people of tools/dataset_converters/generate_synthetic_coco.py), 3 seeds, 5 epochs:
#
#   * simplebaseline: the paper's baseline, a SimpleBaseline-style head on the last stage only
#     (C5, stride 32 -> three 4x4 deconvs of 128 channels -> stride 4 -> 1x1 conv), no neck;
#   * no_guidance: + CFFM (two cascades into stride 8, the demo head's one deconv);
#   * guidance: + PGS guidance (the demo config as it is);
#   * feedback: + the deep -> shallow feedback.
#
# The three CFFM rows are the variants of pgnet_demo_guidance.py and share its work_root, so
# their finished runs are reused (the runner skips a (variant, seed) whose merged config is
# unchanged); only simplebaseline trains.
#
#   python tools/analysis/ablate.py configs/ablations/pgnet_demo_table1.py
_base_ = ['./pgnet_demo_guidance.py']

baseline = 'simplebaseline'
variants = dict(simplebaseline=dict(cfg_options={
    'model.neck': None,
    'model.guidance_cfg': None,
    'model.backbone.out_indices': (3, ),
    'model.head.in_channels': 256,
    'model.head.deconv_out_channels': (128, 128, 128),
    'model.head.deconv_kernel_sizes': (4, 4, 4),
}))
# its own summary files beside pgnet_demo_guidance.py's summary.md in the shared work_root
summary_name = 'summary_table1'
# params (all), GFLOPs (test-time forward of one 128x96 input) and s/iter beside each row
complexity_input = (3, 128, 96)
