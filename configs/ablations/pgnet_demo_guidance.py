# Does PGS guidance help the CPU demo model? An ablation spec for tools/analysis/ablate.py
# (docs/ablations.md): the demo config (half-width ResNet-18 + CFFM + guidance weights 0.1, no
# feedback) against the same model without guidance and with the deep -> shallow feedback, three
# seeds each, on a 5-epoch schedule (the length of the single-seed probes of docs/pgs.md).
#
#   python tools/dataset_converters/generate_synthetic_coco.py data/synthetic_coco \
#       --num-train 2000 --num-val 200 --seed 0   # if missing: the set tools/demo.sh makes
#   python tools/analysis/ablate.py configs/ablations/pgnet_demo_guidance.py
#
# 9 runs of 5 epochs on the demo's synthetic set (2000 train images), not timed yet: `make demo`
# (16 epochs) took 14 min on 2 CPU cores, so expect roughly 4-5 min a run.
base_config = 'configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py'
synthetic_data = 'data/synthetic_coco'  # tools/train.py --synthetic-data
amp = True  # tools/train.py --amp, as tools/demo.sh trains (bfloat16 autocast on CPU)
metric = 'coco/AP'  # read from the last validation record of each run
seeds = [0, 1, 2]
# every epoch-based scheduler ending at the config's last epoch ends at epoch 5 instead
schedule = dict(max_epochs=5, val_interval=5)
baseline = 'guidance'
variants = dict(
    guidance=dict(),  # the config as it is
    no_guidance=dict(cfg_options={'model.guidance_cfg': None}),
    feedback=dict(cfg_options={'model.guidance_cfg.feedback_weight': 0.1}),
)
work_root = 'work_dirs/ablations/pgnet_demo_guidance'
