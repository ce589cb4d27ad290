"""Pipeline parallelism helpers: model blocks, partitioning, stages, process groups."""
from .blocks import (BlockGraph, PipelineBlock, StageModule, cut_aliases, live_keys, sent_keys,
                     stage_ranges)
from .partition import (PartitionReport, balance, choose_cuts, profile_blocks,
                        resolve_split_points)
from .pose_adapter import TopdownHeatmapAdapter
from .process_groups import PipelineLayout, build_groups, check_layout
from .timed_stage import TimedPipelineStage

__all__ = [
    'BlockGraph', 'PipelineBlock', 'StageModule', 'cut_aliases', 'live_keys', 'sent_keys',
    'stage_ranges', 'PartitionReport',
    'balance', 'choose_cuts', 'profile_blocks', 'resolve_split_points', 'TopdownHeatmapAdapter',
    'PipelineLayout', 'build_groups', 'check_layout', 'TimedPipelineStage'
]
