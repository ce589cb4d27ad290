"""What the analysis tools share: timing loops, Markdown tables, figures, configs, COCO AP.

Only the standard library is imported at module level: ``gpu_report.py`` runs where torch is the
only third-party package, so torch, matplotlib and the OpenMMLab packages are imported inside
the functions that need them.

A tool imports this module after putting its own folder first on ``sys.path``::

    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    import analysis_utils  # noqa: E402
"""
import contextlib
import copy
import io
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

#: Markdown separator cell of each alignment letter of :func:`format_markdown_table`
_SEPARATORS = {'l': '---', 'r': '---:', 'c': ':---:'}


# ----------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Wall times of the timed calls of one function.

    Attributes:
        seconds (list[float]): wall time of each timed call, in call order.
        last (Any): what the last timed call returned (``None`` from :func:`time_round_robin`,
            which keeps no result).
        first_s (float, optional): wall time of the first warm-up call (lazy initialisation,
            compilation); ``None`` without warm-up.
    """

    seconds: List[float] = field(default_factory=list)
    last: Any = None
    first_s: Optional[float] = None

    @property
    def median_s(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(self.seconds)

    @property
    def median_ms(self) -> float:
        """Median wall time in milliseconds."""
        return 1000 * self.median_s


def device_sync(device) -> Optional[Callable[[], None]]:
    """The synchronisation to time work on ``device``: CUDA's, or ``None`` on the CPU.

    Args:
        device (str | torch.device): the device the timed work runs on.

    Returns:
        Callable, optional: ``torch.cuda.synchronize(device)`` for a CUDA device, else ``None``.
    """
    import torch
    device = torch.device(device)
    if device.type != 'cuda':
        return None
    return lambda: torch.cuda.synchronize(device)


def timed_call(fn: Callable[[], Any],
               sync: Optional[Callable[[], None]] = None) -> Tuple[float, Any]:
    """Call ``fn`` once, between two calls of ``sync`` when given.

    Args:
        fn (Callable[[], Any]): the work.
        sync (Callable[[], None], optional): waits for queued work (e.g. CUDA kernels); called
            before the clock starts and before it stops.

    Returns:
        tuple[float, Any]: the wall time in seconds and what ``fn`` returned.
    """
    if sync is not None:
        sync()
    start = time.perf_counter()
    result = fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start, result


def warm_up(fn: Callable[[], Any], runs: int, sync: Optional[Callable[[], None]] = None,
            before: Optional[Callable[[], None]] = None) -> Tuple[Optional[float], Any]:
    """Call ``fn`` ``runs`` times untimed, except the first call, whose time is returned.

    Args:
        fn (Callable[[], Any]): the work.
        runs (int): number of calls (0: none).
        sync (Callable[[], None], optional): see :func:`timed_call` (first call only).
        before (Callable[[], None], optional): called before every call, outside the timing
            (e.g. a ``torch.distributed`` barrier).

    Returns:
        tuple[float | None, Any]: the wall time of the first call (``None`` for no run) and
        what the last call returned.
    """
    first_s, result = None, None
    for i in range(runs):
        if before is not None:
            before()
        if i == 0:
            first_s, result = timed_call(fn, sync)
        else:
            result = fn()
    return first_s, result


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 0,
               sync: Optional[Callable[[], None]] = None,
               before: Optional[Callable[[], None]] = None,
               each: Optional[Callable[[Any], None]] = None) -> Timing:
    """Warm up, then time ``repeats`` calls of ``fn`` one after the other.

    Args:
        fn (Callable[[], Any]): the work.
        repeats (int): timed calls.
        warmup (int): untimed calls first (see :func:`warm_up`).
        sync (Callable[[], None], optional): around every timed call (see :func:`timed_call`),
            e.g. :func:`device_sync`'s.
        before (Callable[[], None], optional): called before every call, warm-up included,
            outside the timing.
        each (Callable[[Any], None], optional): called with what every timed call returned,
            after its timing.

    Returns:
        Timing: the times, the last result and the first warm-up call's time.
    """
    first_s, result = warm_up(fn, warmup, sync, before)
    seconds = []
    for _ in range(repeats):
        if before is not None:
            before()
        elapsed, result = timed_call(fn, sync)
        seconds.append(elapsed)
        if each is not None:
            each(result)
    return Timing(seconds, result, first_s)


def time_round_robin(fns: Sequence[Callable[[], Any]], repeats: int, warmup: int = 0,
                     sync: Optional[Callable[[], None]] = None) -> List[Timing]:
    """Time several functions in turn, one call of each per round.

    A slow phase of a shared machine then hits all of them alike instead of biasing one. The
    results of the calls are dropped at once (a large output is not kept during the next call).

    Args:
        fns (Sequence[Callable[[], Any]]): the work to compare.
        repeats (int): timed rounds.
        warmup (int): untimed rounds first.
        sync (Callable[[], None], optional): around every call (see :func:`timed_call`).

    Returns:
        list[Timing]: the timing of each function (``last`` and ``first_s`` are ``None``).
    """
    seconds: List[List[float]] = [[] for _ in fns]
    for round_idx in range(warmup + repeats):
        for times, fn in zip(seconds, fns):
            elapsed = timed_call(fn, sync)[0]
            if round_idx >= warmup:
                times.append(elapsed)
    return [Timing(times) for times in seconds]


# ----------------------------------------------------------------------------- tables
def _separator_cell(align: str, width: int) -> str:
    """A separator cell ``width`` characters wide: dashes, with the colons of ``align``."""
    left = ':' if align == 'c' else ''
    right = ':' if align in 'rc' else ''
    return left + '-' * (width - len(left) - len(right)) + right


def format_markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], align: str = '',
                          padded: bool = False) -> str:
    """A Markdown table: the header row, the separator row and one row per item of ``rows``.

    Args:
        header (Sequence): the column titles.
        rows (Iterable[Sequence]): the cells of each row (``str()`` of each).
        align (str): one letter per column, ``'l'`` (plain ``---``), ``'r'`` (``---:``) or
            ``'c'`` (``:---:``); columns past its end are ``'l'``.
        padded (bool): pad every cell to its column's width (left-justified, right-justified
            in ``'r'`` columns, centred in ``'c'`` ones) and draw the separator as wide as the
            column, spaces included.

    Returns:
        str: the lines of the table, without a final newline.
    """
    table = [[str(cell) for cell in row] for row in [header, *rows]]
    align = align.ljust(len(table[0]), 'l')
    if padded:
        widths = [max(len(row[i]) for row in table) for i in range(len(align))]
        justify = dict(l=str.ljust, r=str.rjust, c=str.center)
        table = [[justify[a](cell, w) for a, cell, w in zip(align, row, widths)] for row in table]
        separator = '|' + '|'.join(_separator_cell(a, w + 2) for a, w in zip(align, widths)) + '|'
    else:
        separator = '| ' + ' | '.join(_SEPARATORS[a] for a in align) + ' |'
    lines = ['| ' + ' | '.join(row) + ' |' for row in table]
    return '\n'.join([lines[0], separator] + lines[1:])


# ----------------------------------------------------------------------------- figures
def pyplot():
    """matplotlib's ``pyplot`` on the file-only ``Agg`` backend (no display needed).

    Returns:
        module: ``matplotlib.pyplot``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str, dpi: int = 110) -> None:
    """Lay out ``fig``, save it to ``path`` and close it.

    Args:
        fig (matplotlib.figure.Figure): the figure.
        path (str): the image file (its extension names the format).
        dpi (int): resolution.
    """
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


# ----------------------------------------------------------------------------- configs
def load_config(config: str, init_scope: bool = False, default_scope: str = 'mmpose'):
    """Read a config file or a ``mmpose::`` / ``mmdet::`` name.

    Args:
        config (str): a config path, or ``<package>::<path in its .mim/configs>``.
        init_scope (bool): also make the config's default scope (see :func:`config_scope`) the
            current one for the rest of the process (MMEngine's ``init_default_scope``).
        default_scope (str): the scope of a config without ``default_scope``.

    Returns:
        mmengine.Config: the config.

    Raises:
        FileNotFoundError: if the file does not exist.
    """
    from mmengine.config import Config

    from mmpgnet.utils.launch import resolve_config_path
    cfg = Config.fromfile(resolve_config_path(config))
    if init_scope:
        from mmengine.registry import init_default_scope
        init_default_scope(config_scope(cfg, default_scope))
    return cfg


def config_scope(cfg, default: str = 'mmpose') -> str:
    """The registry scope a config's modules are built in: its ``default_scope``.

    Args:
        cfg (mmengine.Config): the config.
        default (str): the scope when the config names none.

    Returns:
        str: the scope.
    """
    return cfg.get('default_scope', default)


def build_in_scope(cfg: dict, scope: str, registry=None):
    """Build ``cfg`` from ``registry`` with ``scope`` as the default scope while building.

    Args:
        cfg (dict): the module's config (e.g. a config's ``model``).
        scope (str): the default scope, e.g. :func:`config_scope`'s.
        registry (mmengine.Registry, optional): MMEngine's root ``MODELS`` by default (it
            builds from the child registry of ``scope``).

    Returns:
        Any: the built object.
    """
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        return (registry or MODELS).build(cfg)


# ----------------------------------------------------------------------------- COCO evaluation
def coco_keypoint_ap(gt_file: str, results: List[Dict]) -> Dict[str, float]:
    """COCO key-point AP of results, with pycocotools' printing silenced.

    Args:
        gt_file (str): the ground-truth annotation file.
        results (list[dict]): COCO key-point results (``image_id``, ``category_id``,
            ``keypoints``, ``score``); not modified.

    Returns:
        dict: ``AP``, ``AP50``, ``AP75`` and ``AR`` (``stats[0, 1, 2, 5]`` of ``COCOeval``).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(gt_file)
        evaluation = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), 'keypoints')
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return dict(AP=stats[0], AP50=stats[1], AP75=stats[2], AR=stats[5])
