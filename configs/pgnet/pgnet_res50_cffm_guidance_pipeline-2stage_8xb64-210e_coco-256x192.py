# The PGNet guidance model trained as a 2-stage pipeline (the pipeline-parallel half of PGS):
#   bash tools/dist_train.sh \
#       configs/pgnet/pgnet_res50_cffm_guidance_pipeline-2stage_8xb64-210e_coco-256x192.py 2
# Each process runs one stage (2 x D processes give D data-parallel pipeline replicas); each batch
# of 64 is split into 8 micro-batches run with torch.distributed.pipelining's 1F1B schedule; the
# cut is chosen by measuring every block's forward + backward time on the first batch. With one
# process (tools/train.py) the same micro-batches run through both stages in turn.
# Checkpoints hold the plain model's keys: tools/test.py evaluates them on one process.
_base_ = ['./pgnet_res50_cffm_guidance_8xb64-210e_coco-256x192.py']

runner_type = 'PipelineParallelRunner'  # builds the wrapper in 1-process runs; data per replica
model_wrapper_cfg = dict(
    type='PipelineParallelWrapper',
    num_stages=2,
    num_microbatches=8,
    schedule='1F1B',
    split_points='auto',  # or e.g. ['backbone.layer3.0']
)

# SyncBuffersHook would average BN statistics across *stages* (whose copies of other stages are
# stale): the wrapper broadcasts every stage's buffers from its owner instead.
custom_hooks = [
    dict(type='GuidanceScaleHook', decay='cosine', end_factor=0.1),
    dict(type='PipelineParallelTimingHook'),  # per-stage compute / wait and the bubble in the log
]

# a dead or hung rank ends the job after this many seconds instead of hanging it
env_cfg = dict(dist_cfg=dict(timeout=600))
