"""mmpgnet runners.

``PipelineRunner`` runs the pipeline wrapper, which drives MMPose models: it is loaded only where
``mmpose.models`` imports.
"""
from mmpgnet.utils.optional_packages import missing_component_getattr, package_available

__all__ = []

if package_available('mmpose'):
    from .pipeline_runner import PipelineRunner
    __all__ += ['PipelineRunner']
else:
    __getattr__ = missing_component_getattr(__name__, 'mmpose', ['PipelineRunner'])
