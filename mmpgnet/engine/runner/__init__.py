"""mmpgnet runners.

``PipelineParallelRunner`` runs the pipeline-parallel wrapper, which drives MMPose models: it is
loaded only where ``mmpose.models`` imports.
"""
from mmpgnet.utils.optional_packages import missing_component_getattr, package_available

__all__ = []

if package_available('mmpose'):
    from .pipeline_parallel_runner import PipelineParallelRunner
    __all__ += ['PipelineParallelRunner']
else:
    __getattr__ = missing_component_getattr(__name__, 'mmpose', ['PipelineParallelRunner'])
