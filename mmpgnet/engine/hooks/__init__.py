"""mmpgnet hooks."""
from .cbn_hook import CBNHook
from .channels_last_hook import ChannelsLastHook
from .guidance_scale_hook import GUIDANCE_DECAYS, GuidanceScaleHook, guidance_scale_at
from .pipeline_parallel_timing_hook import PipelineParallelTimingHook

__all__ = [
    'CBNHook', 'ChannelsLastHook', 'GUIDANCE_DECAYS', 'GuidanceScaleHook', 'guidance_scale_at',
    'PipelineParallelTimingHook'
]
