"""Seeded ablation runner: each (variant, seed) of a spec trained by tools/train.py, then a summary.

A spec is a small config file (read with MMEngine's ``Config``; see ``configs/ablations/`` and
``docs/ablations.md``) naming a base config, the variants (another config file and / or
``cfg_options``), the baseline variant, the seeds, the metric and an optional shorter schedule.

Each run is ``tools/train.py`` in a subprocess (the code users run) on the variant's merged
config (dumped to ``<work_root>/<variant>/config.py``) with ``randomness.seed=S``: MMEngine's seed
fixes the weight initialisation, the data order (the ``DefaultSampler`` of the train dataloader
takes the Runner's seed) and the augmentation draws. Its work dir is
``<work_root>/<variant>/seed<S>``; the final metric is the last validation record of its
``vis_data/scalars.json`` (MMEngine validates the last epoch whatever ``val_interval`` is). Every
run appends one JSON line to ``<work_root>/results.jsonl``; a run whose (variant, seed, variant
hash) is already there with ``status='ok'`` is skipped, so an interrupted ablation resumes. A
failed run is recorded with the tail of its log, the others still run, and the tool exits
non-zero at the end naming the failures.

The summary (``summary.md``, ``summary.png`` in the work root, or ``<summary_name>.md`` / ``.png``;
``--summarize-only`` writes just these) gives per variant n, mean and sample std of the metric,
and against the baseline the mean of the paired differences over the seeds both have, with its
95 % Student-t confidence interval.

Example::

    python tools/analysis/ablate.py configs/ablations/pgnet_demo_guidance.py
    python tools/analysis/ablate.py configs/ablations/pgnet_demo_guidance.py --summarize-only
"""
import argparse
import copy
import functools
import glob
import hashlib
import json
import logging
import math
import os
import os.path as osp
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN_SCRIPT = osp.join(REPO_ROOT, 'tools', 'train.py')
# fallback only: an installed mmpgnet comes first (its mmpose:: / mmdet:: paths)
sys.path.append(REPO_ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import analysis_utils  # noqa: E402

#: keys of a spec file: required ones, and the optional ones with their defaults
REQUIRED_KEYS = ('base_config', 'variants', 'baseline', 'seeds')
OPTIONAL_KEYS = dict(
    metric='coco/AP', cfg_options=None, schedule=None, synthetic_data=None, work_root=None,
    amp=False, deterministic=False, complexity_input=None, summary_name='summary')
VARIANT_KEYS = ('config', 'cfg_options')
SCHEDULE_KEYS = ('max_epochs', 'val_interval')
#: characters of a variant name (it names a folder)
NAME_PATTERN = re.compile(r'^[A-Za-z0-9_.+-]+$')
#: characters of ``summary_name`` (the summary files are ``<name>.md`` and ``<name>.png``)
SUMMARY_NAME_PATTERN = re.compile(r'^[A-Za-z0-9_+-]+$')
#: characters of a failed run's log kept in its record
LOG_TAIL_CHARS = 3000


class SpecError(ValueError):
    """A spec file that cannot be run; the message names the spec and the problem."""


@dataclass
class Variant:
    """One arm of the ablation.

    Args:
        name (str): its name (a folder name).
        config (str): the config file it trains (the spec's ``base_config`` unless given).
        cfg_options (dict): options merged after the spec's common ones.
    """
    name: str
    config: str
    cfg_options: dict = field(default_factory=dict)


@dataclass
class Spec:
    """A validated ablation spec (see :func:`load_spec`)."""
    path: str
    base_config: str
    variants: Dict[str, Variant]
    baseline: str
    seeds: List[int]
    metric: str = 'coco/AP'
    cfg_options: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=dict)
    synthetic_data: Optional[str] = None
    work_root: str = ''
    amp: bool = False
    deterministic: bool = False
    complexity_input: Optional[Tuple[int, int, int]] = None
    summary_name: str = 'summary'


@dataclass
class Job:
    """One training run: a variant with one seed."""
    variant: str
    seed: int
    config_file: str
    work_dir: str
    variant_hash: str


# ----------------------------------------------------------------------------- spec
def _check(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise SpecError(f'spec {path}: {message}')


def _check_config_file(config: str, path: str, where: str) -> None:
    from mmpgnet.utils.launch import resolve_config_path
    _check(isinstance(config, str) and bool(config), path, f'{where} must be a config path')
    try:
        resolve_config_path(config)
    except FileNotFoundError as error:
        raise SpecError(f'spec {path}: {where}: {error}') from None


def _check_options(options, path: str, where: str) -> dict:
    if options is None:
        return {}
    _check(isinstance(options, dict), path, f'{where} must be a dict of key: value overrides, '
           f'got {type(options).__name__}')
    return copy.deepcopy(dict(options))


def _parse_variants(raw, base_config: str, path: str) -> Dict[str, Variant]:
    _check(isinstance(raw, dict) and len(raw) > 0, path,
           'variants must be a non-empty dict {name: dict(config=..., cfg_options=...)}')
    variants = {}
    for name, body in raw.items():
        _check(NAME_PATTERN.match(str(name)) is not None, path,
               f'variant name {name!r} may only use letters, digits and _ . + -')
        body = {} if body is None else body
        _check(isinstance(body, dict), path, f'variants.{name} must be a dict')
        unknown = sorted(set(body) - set(VARIANT_KEYS))
        _check(not unknown, path, f'variants.{name} has unknown keys {unknown} '
               f'(known: {list(VARIANT_KEYS)})')
        config = body.get('config') or base_config
        _check_config_file(config, path, f'variants.{name}.config')
        variants[name] = Variant(str(name), config,
                                 _check_options(body.get('cfg_options'), path,
                                                f'variants.{name}.cfg_options'))
    return variants


def _parse_seeds(seeds, path: str) -> List[int]:
    _check(isinstance(seeds, (list, tuple)) and len(seeds) > 0, path,
           'seeds must be a non-empty list of integers')
    _check(all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds), path,
           f'seeds must be integers >= 0, got {list(seeds)}')
    _check(len(set(seeds)) == len(seeds), path, f'seeds repeat a value: {list(seeds)}')
    return list(seeds)


def _parse_schedule(schedule, path: str) -> dict:
    schedule = _check_options(schedule, path, 'schedule')
    unknown = sorted(set(schedule) - set(SCHEDULE_KEYS))
    _check(not unknown, path, f'schedule has unknown keys {unknown} (known: {list(SCHEDULE_KEYS)})')
    for key, value in schedule.items():
        _check(isinstance(value, int) and value >= 1, path,
               f'schedule.{key} must be an integer >= 1, got {value!r}')
    return schedule


def spec_from_dict(raw: dict, path: str) -> Spec:
    """Validate the contents of a spec file.

    Args:
        raw (dict): the spec's top-level variables.
        path (str): the spec file (named in errors; its stem names the default work root).

    Returns:
        Spec: the validated spec.

    Raises:
        SpecError: for a missing or unknown key, an unknown baseline, empty or repeated seeds,
            a missing config file or a bad option dict, naming the spec and the key.
    """
    raw = {k: v for k, v in raw.items() if not k.startswith('_')}  # the spec's own helpers
    unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    _check(not unknown, path, f'unknown keys {unknown} (known: '
           f'{sorted(REQUIRED_KEYS + tuple(OPTIONAL_KEYS))})')
    missing = [k for k in REQUIRED_KEYS if raw.get(k) is None]
    _check(not missing, path, f'missing keys {missing}')
    opts = {k: raw.get(k, default) for k, default in OPTIONAL_KEYS.items()}
    _check_config_file(raw['base_config'], path, 'base_config')
    variants = _parse_variants(raw['variants'], raw['base_config'], path)
    _check(raw['baseline'] in variants, path,
           f'baseline {raw["baseline"]!r} is not a variant (variants: {list(variants)})')
    _check(isinstance(opts['metric'], str) and bool(opts['metric']), path,
           'metric must be a metric key such as coco/AP')
    _check(opts['synthetic_data'] is None or isinstance(opts['synthetic_data'], str), path,
           'synthetic_data must be the folder of a synthetic dataset')
    shape = opts['complexity_input']
    _check(shape is None or (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(
        isinstance(v, int) and v > 0 for v in shape)), path,
        f'complexity_input must be (channels, height, width) of one input, got {shape!r}')
    name = opts['summary_name']
    _check(isinstance(name, str) and bool(SUMMARY_NAME_PATTERN.match(name)), path,
           'summary_name must be a file name without a folder or suffix (letters, digits, _ + -), '
           f'got {name!r}')
    work_root = opts['work_root'] or osp.join(
        'work_dirs', 'ablations', osp.splitext(osp.basename(path))[0])
    return Spec(
        path=path, base_config=raw['base_config'], variants=variants, baseline=raw['baseline'],
        seeds=_parse_seeds(raw['seeds'], path), metric=opts['metric'],
        cfg_options=_check_options(opts['cfg_options'], path, 'cfg_options'),
        schedule=_parse_schedule(opts['schedule'], path), synthetic_data=opts['synthetic_data'],
        work_root=work_root, amp=bool(opts['amp']), deterministic=bool(opts['deterministic']),
        complexity_input=None if shape is None else tuple(shape), summary_name=name)


def load_spec(path: str) -> Spec:
    """Read and validate a spec file (``.py``, ``.yaml`` or ``.json``, read by ``Config``).

    Args:
        path (str): the spec file.

    Returns:
        Spec: the validated spec.

    Raises:
        SpecError: if the file is missing or invalid (see :func:`spec_from_dict`).
    """
    from mmengine.config import Config
    if not osp.isfile(path):
        raise SpecError(f'spec file {path} does not exist')
    raw = Config.fromfile(path, import_custom_modules=False).to_dict()
    return spec_from_dict(raw, path)


# ----------------------------------------------------------------------------- configs
def apply_schedule(cfg, schedule: dict) -> None:
    """Shorten (or lengthen) an epoch-based schedule keeping its shape, as tools/demo.sh does.

    ``max_epochs=E`` sets ``train_cfg.max_epochs``; every epoch-based param scheduler that ends
    at the old last epoch or after ``E`` then ends at ``E`` (a cosine ``T_max`` equal to its old
    length follows); a checkpoint interval over ``E`` becomes ``E``. Iteration-based schedulers
    (warm-up) and step milestones are left as they are. ``val_interval`` sets
    ``train_cfg.val_interval`` (the last epoch is validated anyway).

    Args:
        cfg (Config): the config; modified in place.
        schedule (dict): ``max_epochs`` and / or ``val_interval``.

    Raises:
        ValueError: if ``max_epochs`` is given for a config without ``train_cfg.max_epochs``.
    """
    if 'max_epochs' in schedule:
        epochs = schedule['max_epochs']
        old = cfg.get('train_cfg', {}).get('max_epochs')
        if old is None:
            raise ValueError('schedule.max_epochs needs an epoch-based train_cfg (max_epochs); '
                             'set iteration schedules with cfg_options')
        cfg.train_cfg.max_epochs = epochs
        schedulers = cfg.get('param_scheduler') or []
        for sched in (schedulers if isinstance(schedulers, list) else [schedulers]):
            end = sched.get('end')
            if not sched.get('by_epoch', True) or end is None or (end != old and end <= epochs):
                continue
            length = end - sched.get('begin', 0)
            sched.end = epochs
            if sched.get('T_max') == length:
                sched.T_max = epochs - sched.get('begin', 0)
        checkpoint = cfg.get('default_hooks', {}).get('checkpoint')
        if checkpoint and checkpoint.get('interval', 1) > epochs:
            checkpoint.interval = epochs
    if 'val_interval' in schedule:
        cfg.train_cfg.val_interval = schedule['val_interval']


def variant_config(spec: Spec, name: str):
    """The merged config of a variant: its file, the schedule, common then own options.

    Args:
        spec (Spec): the spec.
        name (str): the variant.

    Returns:
        Config: the config (without seed or work dir: each run sets those).
    """
    variant = spec.variants[name]
    cfg = analysis_utils.load_config(variant.config)
    apply_schedule(cfg, spec.schedule)
    for options in (spec.cfg_options, variant.cfg_options):
        cfg.merge_from_dict(copy.deepcopy(options))  # merging pops `_delete_` from the dicts
    cfg.pop('work_dir', None)
    return cfg


def variant_hash(cfg, spec: Spec) -> str:
    """A short hash of what a variant's runs depend on besides the seed and the code.

    Args:
        cfg (Config): the variant's merged config.
        spec (Spec): the spec (its data folder and training flags count too).

    Returns:
        str: 12 hex digits of a SHA-256.
    """
    payload = dict(config=cfg.to_dict(), synthetic_data=spec.synthetic_data, amp=spec.amp,
                   deterministic=spec.deterministic, metric=spec.metric)
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def model_complexity(cfg, input_shape: Sequence[int]) -> dict:
    """Parameters and FLOPs of a config's model.

    The model is built in its config's default scope and run once in eval mode on one random
    input (``mode='tensor'``: the test-time network, without training-only parts such as
    guidance heads); FLOPs are MMEngine's ``get_model_complexity_info`` count (one multiply-add
    is one FLOP; like fvcore it skips norms, resizes and pooling, a few percent here).
    Parameters count every parameter of the model (training-only ones too).

    Args:
        cfg (Config): the merged config.
        input_shape (Sequence[int]): (channels, height, width) of one input.

    Returns:
        dict: ``params_m`` (millions) and ``gflops``.
    """
    import torch
    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger

    import mmpgnet  # noqa: F401  (registers the project's modules)
    scope = analysis_utils.config_scope(cfg)
    model = analysis_utils.build_in_scope(copy.deepcopy(cfg.model), scope)
    model.eval()
    samples = None  # top-down pose models need none in tensor mode
    if scope == 'mmdet':  # detectors read the image shape from the samples
        from mmdet.structures import DetDataSample
        hw = tuple(input_shape[1:])
        samples = [DetDataSample(metainfo=dict(img_shape=hw, ori_shape=hw, pad_shape=hw,
                                               batch_input_shape=hw, scale_factor=(1.0, 1.0)))]
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)  # one warning per op the counter skips (norms, resizes)
    try:
        with torch.no_grad():
            # the samples bound, not traced (as mmdet's get_flops tool does)
            model.forward = functools.partial(model.forward, data_samples=samples)
            info = get_model_complexity_info(model, inputs=(torch.randn(1, *input_shape), ),
                                             show_table=False, show_arch=False)
    finally:
        logger.setLevel(level)
    return dict(params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                gflops=info['flops'] / 1e9)


def prepare_jobs(spec: Spec, write: bool = True) -> List[Job]:
    """Merge every variant's config (dumped to ``<work_root>/<variant>/config.py``) and list runs.

    Args:
        spec (Spec): the spec.
        write (bool): dump the configs (False: only compute the hashes).

    Returns:
        list[Job]: the runs, variant by variant in the spec's order, seeds in its order.

    Raises:
        SpecError: if a variant's config cannot be merged (e.g. a bad option).
    """
    jobs = []
    for name in spec.variants:
        try:
            cfg = variant_config(spec, name)
        except (KeyError, TypeError, ValueError) as error:
            raise SpecError(f'spec {spec.path}: variant {name}: {error}') from None
        vdir = osp.join(spec.work_root, name)
        config_file = osp.join(vdir, 'config.py')
        if write:
            os.makedirs(vdir, exist_ok=True)
            cfg.dump(config_file)
        digest = variant_hash(cfg, spec)
        jobs += [Job(name, s, config_file, osp.join(vdir, f'seed{s}'), digest) for s in spec.seeds]
    return jobs


# ----------------------------------------------------------------------------- runs
def train_command(job: Job, spec: Spec, python: str = sys.executable) -> List[str]:
    """The tools/train.py command line of a run.

    Args:
        job (Job): the run.
        spec (Spec): the spec.
        python (str): the interpreter.

    Returns:
        list[str]: the command.
    """
    cmd = [python, TRAIN_SCRIPT, job.config_file, '--work-dir', job.work_dir]
    if spec.synthetic_data:
        cmd += ['--synthetic-data', spec.synthetic_data]
    if spec.amp:
        cmd.append('--amp')
    return cmd + ['--cfg-options', f'randomness.seed={job.seed}',
                  f'randomness.deterministic={spec.deterministic}']


def read_final_metrics(work_dir: str, metric: str) -> dict:
    """The final metrics of the newest run in an MMEngine work dir.

    Args:
        work_dir (str): the work dir (``<timestamp>/vis_data/scalars.json`` inside).
        metric (str): the metric key that a validation record must hold.

    Returns:
        dict: ``metrics`` (the last validation record holding ``metric``, without ``step`` and
        timings), ``best`` (the highest ``metric`` of the run) and ``train_loss`` (``loss`` of
        the last training record; None without one).

    Raises:
        FileNotFoundError: if there is no scalars.json.
        KeyError: if no record holds ``metric`` (the message lists the keys there are).
    """
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(f'no <timestamp>/vis_data/scalars.json under {work_dir} (the '
                                "config's visualizer needs a LocalVisBackend)")
    with open(files[-1]) as f:  # timestamps sort: the newest run
        records = [json.loads(line) for line in f if line.strip()]
    vals = [r for r in records if metric in r]
    if not vals:
        keys = sorted({k for r in records if 'loss' not in r for k in r} - {'step'})
        raise KeyError(f'metric {metric!r} not in the validation records of {files[-1]} '
                       f'(keys: {keys})')
    last = {k: v for k, v in vals[-1].items() if k not in ('step', 'time', 'data_time')}
    losses = [r['loss'] for r in records if 'loss' in r]
    return dict(metrics=last, best=max(r[metric] for r in vals),
                train_loss=losses[-1] if losses else None, step_s=median_step_time(records))


def median_step_time(records: Sequence[dict]) -> Optional[float]:
    """Median seconds per training iteration over a run's logged training records.

    MMEngine logs ``time`` (seconds per iteration, data loading included, averaged over the
    logging interval) with every training record; the first record (warm-up) is left out when
    there are others.

    Args:
        records (Sequence[dict]): the lines of ``scalars.json``.

    Returns:
        float, optional: the median, ``None`` when no training record has a time.
    """
    times = [r['time'] for r in records if 'loss' in r and 'time' in r]
    if len(times) > 1:
        times = times[1:]
    return statistics.median(times) if times else None


def _logged_step_time(work_dir: str) -> Optional[float]:
    """:func:`median_step_time` of the newest ``scalars.json`` under ``work_dir`` (or ``None``)."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        return None
    with open(files[-1]) as f:
        return median_step_time([json.loads(line) for line in f if line.strip()])


def git_commit() -> str:
    """The repository's commit, ``-dirty`` when tracked files differ from it ('' if unknown)."""
    try:
        commit = subprocess.run(['git', '-C', REPO_ROOT, 'rev-parse', 'HEAD'], text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', REPO_ROOT, 'status', '--porcelain',
                                '--untracked-files=no'], text=True, capture_output=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ''
    return commit + ('-dirty' if dirty else '')


def train_once(job: Job, spec: Spec, python: str = sys.executable,
               timeout: Optional[float] = None) -> dict:
    """Train one run with tools/train.py and return its record (also when it fails).

    Args:
        job (Job): the run.
        spec (Spec): the spec.
        python (str): the interpreter for tools/train.py.
        timeout (float, optional): seconds after which the run is killed and failed.

    Returns:
        dict: ``status`` ('ok' / 'failed'), ``value`` (the metric), ``metrics``, ``best`` and
        ``train_loss`` (:func:`read_final_metrics`), ``wall_s``, ``command``, ``log``; for a
        failure ``error``, ``returncode`` and ``log_tail``.
    """
    os.makedirs(job.work_dir, exist_ok=True)
    log_file = osp.join(job.work_dir, 'train.log')
    cmd = train_command(job, spec, python)
    record = dict(command=' '.join(cmd), log=log_file)
    start = time.time()
    with open(log_file, 'w') as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            returncode, error = proc.returncode, f'tools/train.py exited with {proc.returncode}'
        except subprocess.TimeoutExpired:
            returncode, error = None, f'killed after the timeout of {timeout} s'
    record['wall_s'] = round(time.time() - start, 2)
    if returncode == 0:
        try:
            final = read_final_metrics(job.work_dir, spec.metric)
            value = float(final['metrics'][spec.metric])
            if math.isfinite(value):
                return dict(record, status='ok', value=value, **final)
            error = f'{spec.metric} is {value}'
        except (FileNotFoundError, KeyError) as exc:
            error = str(exc)
    with open(log_file, errors='replace') as f:
        tail = f.read()[-LOG_TAIL_CHARS:]
    return dict(record, status='failed', returncode=returncode, error=error, log_tail=tail)


def load_results(path: str) -> List[dict]:
    """Read a results file (JSON lines; a missing file has no records).

    Args:
        path (str): ``results.jsonl``.

    Returns:
        list[dict]: the records in file order.

    Raises:
        ValueError: for a line that is not JSON (naming the file and the line number).
    """
    if not osp.isfile(path):
        return []
    records = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f'{path}:{i} is not a JSON line ({error})') from None
    return records


def append_result(path: str, record: dict) -> None:
    """Append one record as a JSON line (flushed, so a crash loses at most the run in flight)."""
    with open(path, 'a') as f:
        f.write(json.dumps(record, sort_keys=True, default=repr) + '\n')
        f.flush()
        os.fsync(f.fileno())


def finished_runs(records: Sequence[dict]) -> Dict[Tuple[str, int, str], dict]:
    """The successful records by (variant, seed, variant hash); the latest one wins."""
    return {(r['variant'], r['seed'], r['variant_hash']): r
            for r in records if r.get('status') == 'ok'}


def format_eta(seconds: float) -> str:
    """``hh:mm:ss`` of a number of seconds (``--:--:--`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return '--:--:--'
    seconds = int(round(seconds))
    return f'{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def run_ablation(spec: Spec, jobs: Sequence[Job], run_fn: Optional[Callable] = None,
                 print_fn: Callable = print) -> List[Job]:
    """Run every job not yet finished, one at a time, appending a record per run.

    Args:
        spec (Spec): the spec.
        jobs (list[Job]): the runs (:func:`prepare_jobs`).
        run_fn (Callable, optional): ``run_fn(job, spec) -> record``; default :func:`train_once`.
        print_fn (Callable): where progress lines go.

    Returns:
        list[Job]: the runs that failed.
    """
    run_fn = run_fn or train_once
    results_file = osp.join(spec.work_root, 'results.jsonl')
    os.makedirs(spec.work_root, exist_ok=True)
    done = finished_runs(load_results(results_file))
    todo = [j for j in jobs if (j.variant, j.seed, j.variant_hash) not in done]
    commit = git_commit() if todo else ''
    failed, times, total = [], [], len(jobs)
    for k, job in enumerate(jobs, 1):
        head = f'[{k}/{total}] {job.variant} seed={job.seed}'
        previous = done.get((job.variant, job.seed, job.variant_hash))
        if previous is not None:
            print_fn(f'{head} skipped: done ({spec.metric}={previous["value"]:.4f})')
            continue
        print_fn(f'{head} ...', end='', flush=True)
        record = run_fn(job, spec)
        variant = spec.variants[job.variant]
        record.update(variant=job.variant, seed=job.seed, variant_hash=job.variant_hash,
                      metric=spec.metric, config=variant.config,
                      cfg_options={**spec.cfg_options, **variant.cfg_options},
                      work_dir=job.work_dir, git_commit=commit, spec=spec.path,
                      omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
                      host=platform.node(),
                      finished=time.strftime('%Y-%m-%d %H:%M:%S'))
        append_result(results_file, record)
        times.append(record.get('wall_s', 0.0))
        left = len(todo) - len(times)
        eta = format_eta(sum(times) / len(times) * left)
        if record['status'] == 'ok':
            outcome = f'{spec.metric}={record["value"]:.4f}'
        else:
            failed.append(job)
            outcome = f'FAILED ({record.get("error")}; log {record.get("log")})'
        print_fn(f' {outcome} ({record.get("wall_s", 0.0):.0f} s) ETA {eta}', flush=True)
    return failed


# ----------------------------------------------------------------------------- statistics
def t_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval.

    Args:
        values (Sequence[float]): the sample.
        confidence (float): the interval's level.

    Returns:
        tuple: (mean, half-width ``t(1 - (1 - confidence) / 2, n - 1) * sd / sqrt(n)``, with
        ``sd`` the sample standard deviation); the half-width is NaN for n < 2, the mean NaN
        for n = 0.
    """
    from scipy.stats import t
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean)**2 for v in values) / (n - 1))
    return mean, float(t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); NaN for n < 2."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean)**2 for v in values) / (n - 1))


def paired_differences(values: Dict[int, float], baseline: Dict[int, float]) -> Dict[int, float]:
    """Per-seed differences ``values[s] - baseline[s]`` over the seeds both have.

    Args:
        values (dict): seed -> metric of a variant.
        baseline (dict): seed -> metric of the baseline.

    Returns:
        dict: seed -> difference, seeds sorted.
    """
    return {s: values[s] - baseline[s] for s in sorted(set(values) & set(baseline))}


def summarize(spec: Spec, jobs: Sequence[Job], records: Sequence[dict]) -> List[dict]:
    """Per variant: the seeds' values, n, mean, std, and the paired difference to the baseline.

    Only successful records with the variant's current hash count (the latest per seed).

    Args:
        spec (Spec): the spec.
        jobs (list[Job]): the runs (their hashes).
        records (list[dict]): the results file's records.

    Returns:
        list[dict]: one row per variant in the spec's order, with ``variant``, ``values``
        (seed -> value), ``n``, ``mean``, ``std``, ``diffs`` (seed -> difference),
        ``diff_mean``, ``diff_half`` (95 % CI half-width), ``ci_half`` (of the mean),
        ``missing`` (spec seeds without a result), ``failed`` (seeds whose latest attempt
        failed) and ``step_s`` (mean over the seeds of the median seconds per iteration, or
        ``None``).
    """
    hashes = {j.variant: j.variant_hash for j in jobs}
    latest = {}
    for r in records:
        if r.get('variant') in hashes and r.get('variant_hash') == hashes[r['variant']]:
            latest[(r['variant'], r['seed'])] = r
    values, failed, step_s = {}, {}, {}
    for name in spec.variants:
        ok = {s: latest[(name, s)] for s in spec.seeds if (name, s) in latest}
        values[name] = {s: float(r['value']) for s, r in ok.items() if r.get('status') == 'ok'}
        failed[name] = [s for s, r in ok.items() if r.get('status') != 'ok']
        times = [r['step_s'] for r in ok.values()
                 if r.get('status') == 'ok' and r.get('step_s') is not None]
        step_s[name] = sum(times) / len(times) if times else None
    rows = summarize_values(values, spec.baseline, spec.seeds)
    for row in rows:
        row.update(failed=failed[row['variant']], step_s=step_s[row['variant']])
    return rows


def summarize_values(values: Dict[str, Dict[int, float]], baseline: str,
                     seeds: Sequence[int]) -> List[dict]:
    """Per variant: n, mean, std, CI of the mean and the paired difference to the baseline.

    Args:
        values (dict): variant -> (seed -> metric), in the order the rows should have.
        baseline (str): the variant the others are paired with.
        seeds (Sequence[int]): the seeds every variant should have.

    Returns:
        list[dict]: :func:`summarize`'s rows (``failed`` empty).
    """
    rows = []
    for name, per_seed in values.items():
        mean, ci_half = t_interval(list(per_seed.values()))
        rows.append(dict(variant=name, values=per_seed, n=len(per_seed), mean=mean,
                         std=sample_std(list(per_seed.values())), ci_half=ci_half,
                         missing=[s for s in seeds if s not in per_seed], failed=[]))
    base = values[baseline]
    for row in rows:
        row['diffs'] = paired_differences(row['values'], base)
        row['diff_mean'], row['diff_half'] = t_interval(list(row['diffs'].values()))
    return rows


#: optional cost columns of the summary: row key, title, format
COST_COLUMNS = (('params_m', 'params (M)', '.2f'), ('gflops', 'GFLOPs', '.3f'),
                ('step_s', 's/iter', '.3f'))


def _num(value: float, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return 'n/a'
    return f'{value:+.4f}' if signed else f'{value:.4f}'


def markdown_table(rows: Sequence[dict], spec: Spec) -> str:
    """The summary as a markdown table with a note on what the interval means.

    Args:
        rows (list[dict]): :func:`summarize`'s rows.
        spec (Spec): the spec.

    Returns:
        str: the markdown text.
    """
    cost = [(key, title, fmt) for key, title, fmt in COST_COLUMNS
            if any(row.get(key) is not None for row in rows)]
    header = ['variant', 'n', f'{spec.metric} mean ± std', f'Δ vs {spec.baseline} (paired)',
              '95 % CI of Δ', 'CI excludes 0'] + [title for _, title, _ in cost] + ['seeds']
    cells = []
    for row in rows:
        seeds = ', '.join(str(s) for s in row['values'])
        if row['missing']:
            seeds += f' (missing {", ".join(str(s) for s in row["missing"])})'
        if row['variant'] == spec.baseline:
            diff, ci, excl, name = '—', '—', '—', f'{row["variant"]} (baseline)'
        else:
            name, m, h = row['variant'], row['diff_mean'], row['diff_half']
            diff = f'{_num(m, True)} (n={len(row["diffs"])})'
            ci = f'[{_num(m - h, True)}, {_num(m + h, True)}]' if math.isfinite(h) else 'n/a'
            excl = 'n/a' if not math.isfinite(h) else ('yes' if abs(m) > h else 'no')
        costs = ['n/a' if row.get(key) is None else f'{row[key]:{fmt}}' for key, _, fmt in cost]
        cells.append([name, row['n'], f'{_num(row["mean"])} ± {_num(row["std"])}', diff, ci, excl,
                      *costs, seeds])
    lines = [analysis_utils.format_markdown_table(header, cells,
                                                  align='lrrrrc' + 'r' * len(cost) + 'l')]
    lines += ['', f'Δ = variant − {spec.baseline} on the same seed (the seeds both have). '
              '95 % CI: mean Δ ± t(0.975, n−1) · sd(Δ) / √n (Student t, sample sd); n/a below 2 '
              'paired seeds. An interval that excludes 0: the variant differs from the baseline '
              'by more than seed-to-seed noise explains (5 % level, this setting only); one that '
              'includes 0: these seeds cannot tell them apart (not: they are equal).']
    if cost:
        lines += ['', 'params: all parameters of the model (training-only heads too); GFLOPs: '
                  'the test-time forward of one input (one multiply-add = one FLOP); s/iter: '
                  'median seconds per training iteration (data loading included) of each run, '
                  'averaged over the seeds, on the machine and threads the runs had.']
    return '\n'.join(lines) + '\n'


def _plot_panel(ax, rows: Sequence[dict], key: str, mean_key: str, half_key: str,
                colors: dict) -> None:
    """Per row: its per-seed points (left of the tick) and the mean with its CI (right)."""
    for x, row in enumerate(rows):
        seeds = list(row[key])
        for i, s in enumerate(seeds):
            dx = 0.2 * (i / (len(seeds) - 1) - 0.5) if len(seeds) > 1 else 0.0
            ax.scatter(x - 0.15 + dx, row[key][s], color=colors[s], s=22, zorder=3,
                       label=f'seed {s}')
        if seeds:
            half = row[half_key] if math.isfinite(row[half_key]) else 0.0
            ax.errorbar(x + 0.15, row[mean_key], yerr=half, fmt='D', color='black', capsize=5,
                        zorder=4, label='mean ± 95 % CI (t)')
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.grid(alpha=0.3, axis='y')


def plot_summary(rows: Sequence[dict], spec: Spec, out_file: str) -> None:
    """Save a PNG: per variant its per-seed values and mean with the 95 % CI; paired differences.

    Args:
        rows (list[dict]): :func:`summarize`'s rows.
        spec (Spec): the spec.
        out_file (str): PNG path.
    """
    plt = analysis_utils.pyplot()
    others = [r for r in rows if r['variant'] != spec.baseline]
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(max(9, 1.6 * (len(rows) + len(others)) + 4), 4.5),
        gridspec_kw=dict(width_ratios=[len(rows), max(1, len(others))]))
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(spec.seeds)}
    _plot_panel(ax1, rows, 'values', 'mean', 'ci_half', colors)
    ax1.set_xticks(range(len(rows)), [
        r['variant'] + ('\n(baseline)' if r['variant'] == spec.baseline else '') for r in rows])
    base = rows[list(spec.variants).index(spec.baseline)]
    if base['values']:
        ax1.axhline(base['mean'], color='gray', ls='--', lw=1, label=f'{spec.baseline} mean')
    ax1.set(ylabel=spec.metric, title=f'{spec.metric}: per seed, mean ± 95 % CI')
    _plot_panel(ax2, others, 'diffs', 'diff_mean', 'diff_half', colors)
    ax2.set_xticks(range(len(others)), [r['variant'] for r in others])
    ax2.axhline(0.0, color='gray', ls='--', lw=1)
    ax2.set(ylabel=f'Δ {spec.metric}', title=f'paired Δ vs {spec.baseline} (same seed)')
    handles, names = ax1.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    ax1.legend(unique.values(), unique.keys(), fontsize=7)
    analysis_utils.save_figure(fig, out_file, dpi=110)


def count_stale(records: Sequence[dict], jobs: Sequence[Job]) -> int:
    """Count finished runs of this spec's variants made with another version of their config.

    Records of variants the spec does not name (another spec sharing the ``work_root``, as
    ``pgnet_demo_table1.py`` shares ``pgnet_demo_guidance.py``'s) are not this spec's and are
    not counted.

    Args:
        records (Sequence[dict]): the run records of ``results.jsonl``.
        jobs (Sequence[Job]): this spec's runs.

    Returns:
        int: the number of ``ok`` records of a variant of ``jobs`` whose hash no job has.
    """
    hashes = {job.variant_hash for job in jobs}
    names = {job.variant for job in jobs}
    return sum(1 for r in records if r.get('status') == 'ok' and r.get('variant') in names
               and r.get('variant_hash') not in hashes)


def write_summary(spec: Spec, jobs: Sequence[Job], print_fn: Callable = print) -> List[dict]:
    """Summarise the results file: print the table, write ``summary.md`` and ``summary.png``.

    The files are named after the spec's ``summary_name`` (``summary`` by default), so specs that
    share a ``work_root`` (and its finished runs) keep a summary each.

    Args:
        spec (Spec): the spec.
        jobs (list[Job]): the runs (their hashes).
        print_fn (Callable): where the table goes.

    Returns:
        list[dict]: :func:`summarize`'s rows.
    """
    records = load_results(osp.join(spec.work_root, 'results.jsonl'))
    for record in records:  # runs recorded before step times were: read them from their logs
        if record.get('status') == 'ok' and 'step_s' not in record and record.get('log'):
            record['step_s'] = _logged_step_time(osp.dirname(record['log']))
    rows = summarize(spec, jobs, records)
    if spec.complexity_input:
        for row in rows:
            row.update(model_complexity(variant_config(spec, row['variant']),
                                        spec.complexity_input))
    text = markdown_table(rows, spec)
    stale = count_stale(records, jobs)
    if stale:
        text += (f'\n{stale} finished run(s) of an earlier version of a variant (another hash) '
                 'are not counted.\n')
    os.makedirs(spec.work_root, exist_ok=True)
    out = osp.join(spec.work_root, spec.summary_name)
    with open(f'{out}.md', 'w') as f:
        f.write(f'# Ablation {spec.path}\n\n{text}')
    plot_summary(rows, spec, f'{out}.png')
    print_fn(text + f'\nsaved {out}.md and {spec.summary_name}.png')
    return rows


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        argparse.Namespace: the options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('spec', help='the ablation spec (configs/ablations/*.py)')
    parser.add_argument('--work-root', help="override the spec's work_root")
    parser.add_argument('--summarize-only', action='store_true',
                        help='train nothing: summarise results.jsonl')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the training commands of the runs still to do, run none '
                        '(the merged configs they name are written, so they run as printed)')
    parser.add_argument('--timeout', type=float, default=None,
                        help='seconds after which one run is killed and recorded as failed')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = parse_args(argv)
    spec = load_spec(args.spec)
    if args.work_root:
        spec.work_root = args.work_root
    jobs = prepare_jobs(spec, write=not args.summarize_only)
    if args.dry_run:
        done = finished_runs(load_results(osp.join(spec.work_root, 'results.jsonl')))
        for job in jobs:
            if (job.variant, job.seed, job.variant_hash) not in done:
                print(' '.join(train_command(job, spec)))
        return []
    if not args.summarize_only and spec.synthetic_data and not osp.isdir(spec.synthetic_data):
        raise SpecError(f'spec {spec.path}: synthetic_data: folder {spec.synthetic_data} does '
                        'not exist (make it with tools/dataset_converters/'
                        'generate_synthetic_coco.py)')
    failed = [] if args.summarize_only else run_ablation(
        spec, jobs, run_fn=lambda job, spec: train_once(job, spec, timeout=args.timeout))
    rows = write_summary(spec, jobs)
    if failed:
        sys.exit('error: {} run(s) failed: {}'.format(len(failed), ', '.join(
            f'{j.variant} seed={j.seed} (log {osp.join(j.work_dir, "train.log")})'
            for j in failed)))
    return rows


if __name__ == '__main__':
    try:
        main()
    except SpecError as error:
        sys.exit(f'error: {error}')
