"""Registries of mmpgnet and the rule that makes its components visible from mmdet and mmpose.

The naming rule (also in the README):

* Every component lives in an ``mmpgnet`` child of MMEngine's root registries, so a config of any
  scope reaches it with the scope prefix: ``type='mmpgnet.CFFM'``, ``type='mmpgnet.GIoULoss'``.
* Models (necks, heads, losses, detectors) are also registered under their bare name in the
  ``MODELS`` registries of ``mmdet`` and ``mmpose``, *unless that scope already has the name*
  (mmdet has its own ``GIoULoss``; ours is then only ``mmpgnet.GIoULoss`` there, never a silent
  replacement of mmdet's). A downstream package that does not import here (see
  :mod:`mmpgnet.utils.optional_packages`) is skipped: mmpgnet works on torch, mmengine and
  ``mmcv-lite`` alone, through the ``mmpgnet.`` names.
* Norm layers, hooks, model and optimizer wrappers and runners are registered in MMEngine's
  *root* registries under their bare name as well, because that is where mmcv's
  ``build_norm_layer`` and MMEngine's ``Runner`` look them up from every scope
  (``norm_cfg=dict(type='CBN')``, ``custom_hooks=[dict(type='CBNHook')]``,
  ``runner_type='PipelineParallelRunner'``). A bare name that the root already holds is refused
  with an error instead of being overwritten.

Only the registries that mmpgnet registers something in are declared here. Use
:func:`register_model`, :func:`register_norm_layer`, :func:`register_hook`,
:func:`register_model_wrapper`, :func:`register_optim_wrapper` and :func:`register_runner` as
class decorators; ``import mmpgnet`` runs them all.
"""
from typing import Callable, Iterable, Optional, Type

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import Registry

from mmpgnet.utils.optional_packages import package_available

#: Downstream scopes whose MODELS registries receive our models under their bare names.
DOWNSTREAM_SCOPES = ('mmdet', 'mmpose')

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmpgnet', locations=['mmpgnet.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmpgnet', locations=['mmpgnet.engine'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='mmpgnet', locations=['mmpgnet.engine'])
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='mmpgnet', locations=['mmpgnet.engine'])
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope='mmpgnet', locations=['mmpgnet.engine'])


def downstream_models_registry(scope: str) -> Registry:
    """Return the ``MODELS`` registry of a downstream OpenMMLab scope.

    Args:
        scope (str): ``'mmdet'`` or ``'mmpose'``.

    Returns:
        Registry: that package's ``MODELS`` registry.
    """
    if scope == 'mmdet':
        from mmdet.registry import MODELS as registry
    elif scope == 'mmpose':
        from mmpose.registry import MODELS as registry
    else:
        raise ValueError(f'unknown downstream scope {scope!r}; expected one of {DOWNSTREAM_SCOPES}')
    return registry


def _register_bare(registry: Registry, cls: type, name: str, strict: bool) -> bool:
    """Register ``cls`` as ``name`` in ``registry`` unless the name is taken there.

    Args:
        registry (Registry): target registry.
        cls (type): the class to register.
        name (str): the bare name.
        strict (bool): raise ``KeyError`` if the name is taken by another class.

    Returns:
        bool: whether ``cls`` is reachable as ``name`` in ``registry`` afterwards.
    """
    existing = registry.module_dict.get(name)
    if existing is cls:
        return True
    if existing is not None:
        if strict:
            raise KeyError(f'{name!r} is already registered in the '
                           f'{registry.scope}::{registry.name} registry by '
                           f'{existing.__module__}; mmpgnet will not replace it')
        return False
    registry.register_module(name=name, module=cls)
    return True


def register_model(name: Optional[str] = None,
                   scopes: Iterable[str] = DOWNSTREAM_SCOPES) -> Callable[[Type], Type]:
    """Class decorator for models: ``mmpgnet.<name>`` everywhere, bare ``<name>`` in mmdet/mmpose.

    Args:
        name (str, optional): registered name; the class name by default.
        scopes (Iterable[str]): downstream scopes that also get the bare name when it is free
            (those that do not import here are skipped).

    Returns:
        Callable: the decorator, which returns the class unchanged.
    """

    def decorator(cls: Type) -> Type:
        key = name or cls.__name__
        MODELS.register_module(name=key, module=cls)
        for scope in scopes:
            if scope in DOWNSTREAM_SCOPES and not package_available(scope):
                continue  # not importable here: reachable as mmpgnet.<name> only
            _register_bare(downstream_models_registry(scope), cls, key, strict=False)
        return cls

    return decorator


def _register_in_root(ours: Registry, root: Registry,
                      name: Optional[str]) -> Callable[[Type], Type]:
    """Decorator registering a class in our registry and, bare, in MMEngine's root one."""

    def decorator(cls: Type) -> Type:
        key = name or cls.__name__
        ours.register_module(name=key, module=cls)
        _register_bare(root, cls, key, strict=True)
        return cls

    return decorator


def _root_registrar(ours: Registry, root: Registry,
                    what: str) -> Callable[[Optional[str]], Callable[[Type], Type]]:
    """Make the ``register_*`` class decorator of one kind of component (see the module doc)."""

    def register(name: Optional[str] = None) -> Callable[[Type], Type]:
        return _register_in_root(ours, root, name)

    register.__doc__ = f"""Class decorator for {what}: bare name in MMEngine's root ``{root.name}``
    registry, and ``mmpgnet.<name>``.

    Args:
        name (str, optional): registered name; the class name by default.

    Returns:
        Callable: the decorator.
    """
    return register


#: mmcv's ``build_norm_layer`` resolves ``norm_cfg['type']`` in the current scope's registry and
#: then its parents, so the root registry is the one place visible from mmdet and mmpose alike
register_norm_layer = _root_registrar(MODELS, MMENGINE_MODELS, 'norm layers')
register_hook = _root_registrar(HOOKS, MMENGINE_HOOKS, 'hooks')
register_model_wrapper = _root_registrar(MODEL_WRAPPERS, MMENGINE_MODEL_WRAPPERS, 'model wrappers')
register_optim_wrapper = _root_registrar(OPTIM_WRAPPERS, MMENGINE_OPTIM_WRAPPERS,
                                         'optimizer wrappers')
#: MMEngine builds ``runner_type`` from the root ``RUNNERS``
register_runner = _root_registrar(RUNNERS, MMENGINE_RUNNERS, 'runners')
