"""The optional downstream packages: mmpgnet's mmdet / mmpose parts load only where they import.

``import mmpgnet`` needs torch, mmengine and mmcv's Python parts (``mmcv-lite`` is enough for
CFFM, CBN and the losses). MMDetection and MMPose are optional: where ``import mmdet.models`` /
``import mmpose.models`` works, mmpgnet registers its models in their ``MODELS`` registries and
loads the components built on their classes (``PGNetPoseEstimator``, the pipeline adapter,
wrapper and runner); where it does not, those are left out and the rest works as before.

A package that is not installed is left out silently. One that is installed but fails to import
(for instance mmdet on an ``mmcv-lite`` without compiled ops) is left out with a warning naming
the error, since its configs would otherwise fail later with a less telling "not in the
registry".
"""
import importlib
import importlib.util
import warnings
from typing import Dict, Iterable, Optional

#: package -> the module whose import mmpgnet's parts for that package need
PROBE_MODULES: Dict[str, str] = dict(mmdet='mmdet.models', mmpose='mmpose.models')

_reasons: Dict[str, Optional[str]] = {}


def _installed(package: str) -> bool:
    """Whether an import system finder knows ``package`` (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _probe(package: str) -> Optional[str]:
    """Import the package's probe module; return ``None`` or why it failed."""
    module = PROBE_MODULES[package]
    try:
        importlib.import_module(module)
    except ImportError as err:
        reason = f'`import {module}` failed: {type(err).__name__}: {err}'
        if _installed(package):
            warnings.warn(f'{package} is installed but {reason}; mmpgnet leaves out its '
                          f'{package} components')
        return reason
    return None


def package_unavailable_reason(package: str) -> Optional[str]:
    """Say why mmpgnet's components for ``package`` are left out, or ``None`` if they load.

    The import is tried once per process; the answer is remembered.

    Args:
        package (str): ``'mmdet'`` or ``'mmpose'``.

    Returns:
        str, optional: the import error, or ``None`` when the package imports.

    Raises:
        ValueError: for a package that is not one of :data:`PROBE_MODULES`.
    """
    if package not in PROBE_MODULES:
        raise ValueError(f'unknown optional package {package!r}; expected one of '
                         f'{tuple(PROBE_MODULES)}')
    if package not in _reasons:
        _reasons[package] = _probe(package)
    return _reasons[package]


def package_available(package: str) -> bool:
    """Whether ``import <package>.models`` works here (``'mmdet'`` or ``'mmpose'``).

    Args:
        package (str): ``'mmdet'`` or ``'mmpose'``.

    Returns:
        bool: ``True`` when mmpgnet's components for that package are loaded.
    """
    return package_unavailable_reason(package) is None


def unavailable_packages() -> Dict[str, str]:
    """The optional packages that do not import here, with the reason of each.

    Returns:
        dict[str, str]: package -> import error (empty when both import).
    """
    return {p: r for p in PROBE_MODULES if (r := package_unavailable_reason(p)) is not None}


class MissingPackageError(ImportError):
    """Raised on access to a component whose downstream package does not import."""


def missing_component_getattr(module: str, package: str, names: Iterable[str]):
    """A module-level ``__getattr__`` naming the missing package for left-out components.

    Args:
        module (str): the module's ``__name__``.
        package (str): the package the left-out components need.
        names (Iterable[str]): the left-out names.

    Returns:
        Callable[[str], Any]: raises :class:`MissingPackageError` for ``names`` and
        ``AttributeError`` for any other name.
    """
    left_out = frozenset(names)

    def __getattr__(name: str):
        if name in left_out:
            raise MissingPackageError(
                f'{module}.{name} needs {package}, which mmpgnet could not import here: '
                f'{package_unavailable_reason(package)}')
        raise AttributeError(f'module {module!r} has no attribute {name!r}')

    return __getattr__
