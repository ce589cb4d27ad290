"""What mmpgnet needs of torch, feature by feature (torch >= 2.1 is supported).

The core components (CFFM, CBN, the box losses, guidance, the single-process pose estimator and
its tools) use nothing newer than torch 2.1, the release MMPose 1.3 and MMDetection 3.3 were
made for and the last one with prebuilt mmcv 2.1.0 wheels. A few features need more:

* pipeline parallelism (``PipelineParallelWrapper``, ``PipelineParallelRunner``,
  ``TimedPipelineStage``) runs on ``torch.distributed.pipelining``: torch >= 2.4. On older torch
  they stay registered and raise :class:`TorchVersionError` when built.
* ``torch.compile`` of the models (MMEngine's ``compile=True``): torch >= 2.4. The dynamo of
  torch 2.1 stops on the PGNet train step with an internal error (``super(type, obj)``) and
  cannot trace CBN's autograd function or the autocast hooks; compiled runs were checked on torch
  2.11 and 2.14. ``tools/train.py`` refuses ``compile`` on older torch.
* the checkpoint allowlist (:mod:`mmpgnet.utils.checkpoint_safety`) uses
  ``torch.serialization.add_safe_globals``: torch >= 2.4. It is only needed from torch 2.6, where
  ``torch.load`` starts to default to ``weights_only=True``; older torch skips it.

Everything else is registered and imports on every supported torch; a feature is refused only
when it is used, with one line that names it, the torch it needs and the torch installed.
"""
from typing import Tuple

import torch
from mmengine.utils import digit_version

#: the oldest torch mmpgnet supports (setup.cfg's ``install_requires`` says the same)
MIN_TORCH = '2.1'
#: ``torch.distributed.pipelining`` (and its ``PipelineStage`` / schedules) appeared in torch 2.4
PIPELINING_MIN_TORCH = '2.4'
#: the pipeline-parallel feature, as :func:`require_torch` names it
PIPELINING_FEATURE = 'pipeline parallelism (PipelineParallelWrapper / PipelineParallelRunner)'
#: ``compile=True`` (torch.compile of the model); see the module docstring
COMPILE_MIN_TORCH = '2.4'
COMPILE_FEATURE = 'compile=True (torch.compile of the model)'


class TorchVersionError(RuntimeError):
    """Raised when a feature that needs a newer torch than the installed one is used."""


def torch_version() -> Tuple[int, ...]:
    """The installed torch's version as comparable digits (local tags such as ``+cpu`` dropped).

    Returns:
        tuple[int, ...]: :func:`mmengine.utils.digit_version` of ``torch.__version__``.
    """
    return digit_version(torch.__version__.split('+')[0])


def torch_at_least(version: str) -> bool:
    """Whether the installed torch is ``version`` or newer.

    Args:
        version (str): e.g. ``'2.4'``.

    Returns:
        bool: ``True`` for torch >= ``version``.
    """
    return torch_version() >= digit_version(version)


def require_torch(feature: str, version: str) -> None:
    """Refuse ``feature`` on a torch older than ``version``, in one line.

    Args:
        feature (str): what the user asked for, as they would name it.
        version (str): the oldest torch that has it.

    Raises:
        TorchVersionError: on an older torch, naming the feature and both versions.
    """
    if not torch_at_least(version):
        raise TorchVersionError(f'{feature} needs torch>={version}; this is torch '
                                f'{torch.__version__} (pip install "torch>={version}")')


def is_compiling() -> bool:
    """Whether the caller runs inside a ``torch.compile`` trace.

    ``torch.compiler.is_compiling`` appeared in torch 2.3; torch 2.1 and 2.2 have the same
    answer in ``torch._dynamo.is_compiling``.

    Returns:
        bool: ``True`` while dynamo traces the caller.
    """
    compiler_is_compiling = getattr(torch.compiler, 'is_compiling', None)
    if compiler_is_compiling is None:
        from torch._dynamo import is_compiling as compiler_is_compiling
    return compiler_is_compiling()


def cpu_autocast_supports(dtype: torch.dtype) -> bool:
    """Whether this torch's CPU autocast runs in ``dtype`` (torch 2.1 knows only bfloat16).

    Args:
        dtype (torch.dtype): the autocast dtype.

    Returns:
        bool: ``True`` when ``torch.autocast('cpu', dtype=dtype)`` can be entered.
    """
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch 2.1 warns, then refuses in __enter__
            with torch.autocast('cpu', dtype=dtype):
                return True
    except RuntimeError:
        return False


def _has_device_typed_autocast_state() -> bool:
    """Whether ``torch.is_autocast_enabled`` takes a device type (newer torch; not 2.1)."""
    try:
        torch.is_autocast_enabled('cpu')
    except TypeError:
        return False
    return True


if _has_device_typed_autocast_state():

    def get_cpu_autocast() -> Tuple[bool, torch.dtype]:
        """The CPU autocast state.

        Returns:
            tuple[bool, torch.dtype]: whether CPU autocast is on, and its dtype.
        """
        return torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu')

    def set_cpu_autocast(enabled: bool, dtype: torch.dtype) -> None:
        """Set the CPU autocast state (as ``torch.autocast('cpu').__enter__`` does).

        Args:
            enabled (bool): turn CPU autocast on or off.
            dtype (torch.dtype): its dtype.
        """
        torch.set_autocast_enabled('cpu', enabled)
        torch.set_autocast_dtype('cpu', dtype)

else:  # torch < 2.4 names the CPU state in its own functions

    def get_cpu_autocast() -> Tuple[bool, torch.dtype]:  # noqa: D103 (documented above)
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()

    def set_cpu_autocast(enabled: bool, dtype: torch.dtype) -> None:  # noqa: D103
        torch.set_autocast_cpu_enabled(enabled)
        torch.set_autocast_cpu_dtype(dtype)
