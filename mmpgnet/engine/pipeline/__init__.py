"""Pipeline-parallelism helpers: model blocks, partitioning, stages, process groups.

``TopdownHeatmapAdapter`` (MMPose top-down models as pipeline blocks) is loaded only where
``mmpose.models`` imports; the rest needs torch alone.
"""
from mmpgnet.utils.optional_packages import missing_component_getattr, package_available
from .blocks import (BlockGraph, PipelineBlock, StageModule, cut_aliases, live_keys, sent_keys,
                     stage_ranges)
from .partition import PartitionReport, balance, choose_cuts, profile_blocks, resolve_split_points
from .process_groups import (PipelineLayout, build_groups, check_layout, check_model_device,
                             collective_device)
from .step_stats import PipelineStepStats, ideal_bubble
from .timed_stage import ChunkTimer, TimedPipelineStage

__all__ = [
    'BlockGraph', 'PipelineBlock', 'StageModule', 'cut_aliases', 'live_keys', 'sent_keys',
    'stage_ranges', 'PartitionReport',
    'balance', 'choose_cuts', 'profile_blocks', 'resolve_split_points',
    'PipelineLayout', 'build_groups', 'check_layout', 'check_model_device',
    'collective_device', 'PipelineStepStats', 'ideal_bubble', 'ChunkTimer', 'TimedPipelineStage'
]

if package_available('mmpose'):
    from .pose_adapter import TopdownHeatmapAdapter
    __all__ += ['TopdownHeatmapAdapter']
else:
    __getattr__ = missing_component_getattr(__name__, 'mmpose', ['TopdownHeatmapAdapter'])
