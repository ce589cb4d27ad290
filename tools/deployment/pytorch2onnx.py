"""Export the test-time model of a top-down heatmap pose config (PGNet) to ONNX and check it.

Examples::

    # export, then compare onnxruntime with PyTorch and time both on this CPU
    python tools/deployment/pytorch2onnx.py \\
        configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py work_dirs/demo/epoch_16.pth \\
        --out work_dirs/demo/pgnet_demo.onnx --check
    # the check on real crops of the val split instead of random inputs
    python tools/deployment/pytorch2onnx.py CONFIG CKPT --check --val-samples 16 \\
        --synthetic-data data/synthetic_coco

The exported graph is backbone -> neck -> main heatmap head: the PGS guidance heads (training
only) are left out, the checkpoint's ``guidance.*`` weights are dropped, and the data
preprocessor and the codec's decoding stay outside. Its input ``input`` is the preprocessed crop
``(N, 3, H, W)`` (the ``TopdownAffine`` crop, RGB, normalised with the data preprocessor's mean
and std, which are written into the model's metadata with the codec); its output ``heatmaps``
is ``(N, K, H / stride, W / stride)``. The batch axis ``N`` is dynamic. Flip test (the
config's ``test_cfg.flip_test``) is not part of the graph: run the flipped crop as a second
batch item and average the flipped-back heatmaps, as MMPose's ``HeatmapHead.predict`` does.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. torch 2.14 still ships
it (deprecated, with a DeprecationWarning, silenced here; on torch < 2.5, which has no ``dynamo``
argument, it is the only exporter and the default); it needs only ``onnx``, and tracing
suits this model: convolutions, deconvolutions, pooling and interpolation to sizes fixed by the
crop, no data-dependent control flow; the batch axis is made dynamic with ``dynamic_axes``. The
default ``dynamo=True`` route needs the extra ``onnxscript`` package and ``torch.export``'s
symbolic shapes (where an example batch of 1 would be specialised to a constant); it adds
nothing this graph needs, so the tool takes the route with one dependency fewer.

``--check`` runs the ONNX model with onnxruntime (CPU) and PyTorch on the same inputs at every
``--batch-sizes`` and fails (exit status 1) unless the heatmaps agree within ``--atol`` (max
abs difference) and ``--rtol`` (the same, divided by the range of PyTorch's heatmaps) and the
key points decoded from both by the config's codec agree within ``--kpt-tol`` pixels (of the
input crop) wherever PyTorch's heatmap has a well-posed peak (the codec's sub-pixel step stays
within half a heatmap pixel of the arg-max, :func:`well_posed`). At the other key points DARK's
step is unbounded: on ragged maxima (random weights) float32 rounding alone moves them by
pixels, so they are reported, not held to the tolerance (on the demo checkpoint they agree as
closely as the others: docs/deployment.md). It then prints the median latency of PyTorch eager
and onnxruntime (``--runs`` runs after ``--warmup``, the same number of threads) at each batch
size.
"""
import argparse
import inspect
import json
import os
import os.path as osp
import re
import statistics
import sys
import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

# an installed mmpgnet first, else this checkout's
sys.path.append(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from torch import Tensor, nn  # noqa: E402

import mmpgnet  # noqa: E402,F401  (registers components, lets torch.load read checkpoints)

INPUT_NAME = 'input'
OUTPUT_NAME = 'heatmaps'


class ExportError(Exception):
    """Bad input to the tool (a config, checkpoint or option it cannot use); one-line message."""


class CheckFailed(Exception):
    """onnxruntime and PyTorch disagree beyond the stated tolerances."""


class HeatmapModel(nn.Module):
    """The test-time graph of a top-down heatmap estimator: backbone -> neck -> head.

    Args:
        estimator (nn.Module): a ``TopdownPoseEstimator`` (e.g. ``PGNetPoseEstimator``) with a
            heatmap head; its guidance heads, if any, are not called.
    """

    def __init__(self, estimator: nn.Module) -> None:
        super().__init__()
        self.backbone = estimator.backbone
        self.neck = estimator.neck if getattr(estimator, 'with_neck', False) else None
        self.head = estimator.head

    def forward(self, inputs: Tensor) -> Tensor:
        """Heatmaps of preprocessed crops.

        Args:
            inputs (Tensor): ``(N, 3, H, W)``, normalised.

        Returns:
            Tensor: heatmaps ``(N, K, H', W')``.
        """
        feats = self.backbone(inputs)
        if self.neck is not None:
            feats = self.neck(feats)
        return self.head.forward(feats)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (Sequence[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        argparse.Namespace: the arguments.
    """
    parser = argparse.ArgumentParser(
        description='Export a top-down heatmap pose model (PGNet) to ONNX and check it')
    parser.add_argument('config', help='pose config file')
    parser.add_argument('checkpoint', help='checkpoint file (training or inference)')
    parser.add_argument('--out', help='ONNX file (default: the checkpoint path with .onnx)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset version')
    parser.add_argument(
        '--input-shape', type=int, nargs=2, metavar=('H', 'W'),
        help="crop height and width (default: the codec's input_size)")
    parser.add_argument('--check', action='store_true',
                        help='compare onnxruntime with PyTorch and time both')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 16],
                        help='batch sizes of the check and the timing')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='heatmaps: largest allowed max abs difference')
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='heatmaps: largest allowed max abs difference / heatmap range')
    parser.add_argument('--kpt-tol', type=float, default=0.01,
                        help='decoded key points: largest allowed distance in input pixels')
    parser.add_argument('--warmup', type=int, default=5, help='untimed runs before timing')
    parser.add_argument('--runs', type=int, default=20,
                        help='timed runs per batch size (median reported; 0: no timing)')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads of both runtimes (default: torch.get_num_threads())')
    parser.add_argument(
        '--val-samples', type=int, default=0,
        help='check on the first N crops of the config\'s val split (at least the largest '
        'batch size) instead of random inputs')
    parser.add_argument('--synthetic-data', metavar='DIR',
                        help='read the val split from a dataset made by '
                        'tools/dataset_converters/generate_synthetic_coco.py')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random inputs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs')
    args = parser.parse_args(argv)
    for name in ('batch_sizes', 'input_shape'):
        if any(v < 1 for v in getattr(args, name) or []):
            parser.error(f'--{name.replace("_", "-")} must be positive integers')
    if args.runs < 0 or args.warmup < 0 or args.val_samples < 0:
        parser.error('--runs, --warmup and --val-samples must not be negative')
    return args


# ---------------------------------------------------------------------------- model
def load_config(path: str, cfg_options: Optional[dict] = None,
                synthetic_data: Optional[str] = None) -> Config:
    """Load a pose config and check that its model is a top-down heatmap model.

    Args:
        path (str): config file (or ``mmpose::`` name).
        cfg_options (dict, optional): overrides.
        synthetic_data (str, optional): synthetic COCO root for the val split.

    Returns:
        Config: the config.

    Raises:
        ExportError: if the config cannot be read or its model has no heatmap head.
    """
    from mmpgnet.utils.launch import resolve_config_path
    from mmpgnet.utils.synthetic_data import use_synthetic_data
    try:
        cfg = Config.fromfile(resolve_config_path(path))
    except FileNotFoundError as error:
        raise ExportError(str(error)) from None
    except Exception as error:  # a syntax error, a bad _base_, ...
        raise ExportError(f'cannot read config {path}: {type(error).__name__}: '
                          f'{str(error).splitlines()[0] if str(error) else ""}') from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if synthetic_data:
        use_synthetic_data(cfg, synthetic_data)
    model = cfg.get('model')
    if not model:
        raise ExportError(f'config {path} has no model')
    if not model.get('head'):
        raise ExportError(f'config {path} has no heatmap head (its {model.get("type")} model has '
                          'no model.head): this tool exports top-down heatmap models')
    return cfg


def build_model(cfg: Config, checkpoint: str) -> Tuple[nn.Module, HeatmapModel]:
    """Build the config's estimator without guidance heads and load the checkpoint.

    Args:
        cfg (Config): a config accepted by :func:`load_config`.
        checkpoint (str): checkpoint file; ``guidance.*`` entries are ignored.

    Returns:
        tuple: the estimator (eval mode) and its :class:`HeatmapModel`.

    Raises:
        ExportError: if the model cannot be built, is not a top-down heatmap model, or the
            checkpoint does not fit it.
    """
    from mmengine.registry import init_default_scope
    from mmengine.runner import CheckpointLoader, load_state_dict
    from mmpose.models.heads import HeatmapHead
    from mmpose.models.pose_estimators import TopdownPoseEstimator
    from mmpose.registry import MODELS

    if not osp.isfile(checkpoint):
        raise ExportError(f'checkpoint {checkpoint} does not exist')
    init_default_scope(cfg.get('default_scope', 'mmpose'))
    model_cfg = cfg.model.copy()
    model_cfg.pop('guidance_cfg', None)  # PGNetPoseEstimator: no guidance heads, drops their keys
    backbone = model_cfg.get('backbone', {})
    if backbone.get('init_cfg') is not None:  # no pretrained download: the checkpoint has it all
        model_cfg['backbone'] = dict(backbone, init_cfg=None)
    try:
        estimator = MODELS.build(model_cfg)
    except Exception as error:
        raise ExportError(f'cannot build the model of the config: {type(error).__name__}: '
                          f'{str(error).splitlines()[0] if str(error) else ""}') from None
    if not isinstance(estimator, TopdownPoseEstimator) or not isinstance(
            estimator.head, HeatmapHead):
        raise ExportError(f'the model is a {type(estimator).__name__} with a '
                          f'{type(getattr(estimator, "head", None)).__name__}: this tool exports '
                          'top-down estimators with a heatmap head (e.g. HeatmapHead)')
    if getattr(estimator.head, 'decoder', None) is None:
        raise ExportError('the heatmap head has no decoder (model.head.decoder): the check '
                          'decodes key points with it')
    try:
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu', logger='silent')
    except Exception as error:  # not a checkpoint, a truncated file, ...
        raise ExportError(f'cannot read checkpoint {checkpoint}: {type(error).__name__}: '
                          f'{str(error).splitlines()[0] if str(error) else ""}') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ExportError(f'cannot read checkpoint {checkpoint}: it holds a '
                          f'{type(ckpt).__name__}, not a state dict')
    # as mmengine's load_checkpoint: drop the prefix of a wrapped (DDP) model
    state = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in state.items())
    try:
        load_state_dict(estimator, state, strict=True, logger='silent')
    except RuntimeError as error:
        text = ' '.join(str(error).split())
        raise ExportError(f'checkpoint {checkpoint} does not fit the config\'s model: '
                          f'{text[:300]}{"..." if len(text) > 300 else ""}') from None
    estimator.eval()
    return estimator, HeatmapModel(estimator).eval()


def crop_size(cfg: Config, estimator: nn.Module,
              input_shape: Optional[Sequence[int]] = None) -> Tuple[int, int]:
    """The crop size ``(H, W)``: ``input_shape`` or the codec's ``input_size`` (W, H).

    Args:
        cfg (Config): the config.
        estimator (nn.Module): the estimator (its head's decoder has ``input_size``).
        input_shape (Sequence[int], optional): ``(H, W)`` given on the command line.

    Returns:
        tuple[int, int]: height and width.
    """
    if input_shape:
        return int(input_shape[0]), int(input_shape[1])
    width, height = estimator.head.decoder.input_size
    return int(height), int(width)


def onnx_metadata(cfg: Config, estimator: nn.Module) -> Dict[str, str]:
    """What a deployment needs besides the graph: normalisation and codec.

    Args:
        cfg (Config): the config.
        estimator (nn.Module): the estimator.

    Returns:
        dict[str, str]: ONNX ``metadata_props``.
    """
    pre = cfg.model.get('data_preprocessor', {}) or {}
    codec = cfg.model.head.get('decoder') or {}
    return dict(
        producer='mmpgnet tools/deployment/pytorch2onnx.py',
        mean=json.dumps(list(pre.get('mean') or [])),
        std=json.dumps(list(pre.get('std') or [])),
        bgr_to_rgb=json.dumps(bool(pre.get('bgr_to_rgb', False))),
        codec=json.dumps(codec, default=str),
        num_keypoints=str(estimator.head.out_channels))


# ---------------------------------------------------------------------------- export
@contextmanager
def ceil_mode_max_pool(opset: int) -> Iterator[None]:
    """Export ``max_pool2d`` as one ONNX ``MaxPool`` with its ``ceil_mode`` attribute.

    CFFM halves maps by 2x2 max pooling in ceil mode. The TorchScript exporter of torch 2.1
    turns ceil mode into explicit padding, which needs the input's spatial size at export time;
    behind CFFM's upsampling (sizes taken from another map) it is unknown, and the export fails
    (``get_pool_ceil_padding, input size not accessible``). ONNX has had ``ceil_mode`` since
    opset 10, so on every torch this symbolic writes the pooling as it is; torch's own is
    restored on exit.

    Args:
        opset (int): the export's opset (below 10 nothing is changed).

    Yields:
        None: while the symbolic is registered.
    """
    if opset < 10:
        yield
        return
    from torch.onnx import symbolic_helper

    @symbolic_helper.parse_args('v', 'is', 'is', 'is', 'is', 'i')
    def max_pool2d(g, x, kernel_size, stride, padding, dilation, ceil_mode):
        return g.op('MaxPool', x, kernel_shape_i=kernel_size, pads_i=list(padding) * 2,
                    strides_i=stride or kernel_size, dilations_i=dilation, ceil_mode_i=ceil_mode)

    torch.onnx.register_custom_op_symbolic('aten::max_pool2d', max_pool2d, 10)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic('aten::max_pool2d', 10)


def export_onnx(model: HeatmapModel, path: str, height: int, width: int, opset: int,
                metadata: Optional[Dict[str, str]] = None) -> None:
    """Export ``model`` with a dynamic batch axis and check the file with ``onnx.checker``.

    Args:
        model (HeatmapModel): the model, in eval mode.
        path (str): output file.
        height (int): crop height.
        width (int): crop width.
        opset (int): ONNX opset version.
        metadata (dict, optional): ``metadata_props`` to write into the file.
    """
    import onnx
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    dummy = torch.randn(2, 3, height, width)
    # torch >= 2.5 has both exporters (dynamo=True the default from 2.9); older only TorchScript's
    route = dict(dynamo=False) if 'dynamo' in inspect.signature(torch.onnx.export).parameters \
        else {}
    with torch.no_grad(), warnings.catch_warnings(), ceil_mode_max_pool(opset):
        # the deprecation notice of the TorchScript exporter and tracer warnings of size checks
        warnings.simplefilter('ignore')
        torch.onnx.export(
            model, (dummy, ), path, **route, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}},
            do_constant_folding=True)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    if metadata:
        onnx.helper.set_model_props(proto, metadata)
        onnx.save(proto, path)


def ort_session(path: str, threads: int):
    """An onnxruntime CPU session with ``threads`` intra-op threads.

    Args:
        path (str): ONNX file.
        threads (int): intra-op threads.

    Returns:
        onnxruntime.InferenceSession: the session.
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


# ---------------------------------------------------------------------------- check
def check_inputs(cfg: Config, estimator: nn.Module, batch: int, height: int, width: int,
                 val_samples: int, seed: int) -> Tensor:
    """The inputs of the check: random normal crops, or preprocessed crops of the val split.

    Args:
        cfg (Config): the config.
        estimator (nn.Module): the estimator (its data preprocessor).
        batch (int): how many inputs (the largest batch size).
        height (int): crop height.
        width (int): crop width.
        val_samples (int): 0 for random inputs, else the number of val crops to read.
        seed (int): seed of the random inputs.

    Returns:
        Tensor: ``(max(batch, val_samples), 3, H, W)``.

    Raises:
        ExportError: if the val split cannot be read or gives crops of another size.
    """
    if not val_samples:
        return torch.randn(batch, 3, height, width,
                           generator=torch.Generator().manual_seed(seed))
    from mmengine.dataset import pseudo_collate
    from mmpose.registry import DATASETS
    num = max(batch, val_samples)
    try:
        dataset = DATASETS.build(cfg.val_dataloader.dataset)
    except Exception as error:
        raise ExportError(f'cannot build the val split of the config: {type(error).__name__}: '
                          f'{str(error).splitlines()[0] if str(error) else ""}') from None
    if len(dataset) < num:
        raise ExportError(f'the val split has {len(dataset)} crops, the check needs {num}')
    data = pseudo_collate([dataset[i] for i in range(num)])
    with torch.no_grad():
        inputs = estimator.data_preprocessor(data, False)['inputs'].float()
    if tuple(inputs.shape[-2:]) != (height, width):
        raise ExportError(f'the val crops are {tuple(inputs.shape[-2:])}, the model was exported '
                          f'for {(height, width)} (--input-shape)')
    return inputs.contiguous()


def decode(decoder, heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Decode a batch of heatmaps one sample at a time with the codec.

    Args:
        decoder: an MMPose codec (``decode`` of ``(K, H, W)``).
        heatmaps (np.ndarray): ``(N, K, H, W)``.

    Returns:
        tuple[np.ndarray, np.ndarray]: key points ``(N, K, 2)`` in input pixels, scores ``(N, K)``.
    """
    keypoints, scores = zip(*(decoder.decode(hm.copy()) for hm in heatmaps))
    return np.concatenate(keypoints), np.concatenate(scores)


def well_posed(decoder, heatmaps: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Which decoded key points come from a peak that the codec's sub-pixel step can refine.

    DARK (``unbiased=True``) moves the arg-max by ``-H^-1 g`` of the log of the blurred
    heatmap; near a real (Gaussian) peak that is less than half a heatmap pixel. Where it is
    more, the quadratic model failed (a flat or ragged maximum, no person): the offset is not
    bounded, and rounding differences of 1e-5 move such a key point by pixels in PyTorch alone
    (float32 vs float64). Those key points are reported apart, not held to ``--kpt-tol``.

    Args:
        decoder: the codec; without ``scale_factor`` every key point counts as well posed.
        heatmaps (np.ndarray): ``(N, K, H, W)``, the reference (PyTorch) heatmaps.
        keypoints (np.ndarray): ``(N, K, 2)`` decoded from them, in input pixels.

    Returns:
        np.ndarray: bool ``(N, K)``.
    """
    scale = getattr(decoder, 'scale_factor', None)
    if scale is None:
        return np.ones(keypoints.shape[:2], dtype=bool)
    n, k, _, width = heatmaps.shape
    argmax = heatmaps.reshape(n, k, -1).argmax(-1)
    peak = np.stack([argmax % width, argmax // width], axis=-1)
    return np.abs(keypoints / np.asarray(scale, dtype=np.float64) - peak).max(-1) <= 0.5


def compare(torch_out: np.ndarray, ort_out: np.ndarray, decoder) -> Dict[str, float]:
    """Differences between PyTorch's and onnxruntime's heatmaps and decoded key points.

    Args:
        torch_out (np.ndarray): PyTorch heatmaps ``(N, K, H, W)``.
        ort_out (np.ndarray): onnxruntime heatmaps, same shape.
        decoder: the codec.

    Returns:
        dict[str, float]: ``heatmap_max_abs``, ``heatmap_range``, ``heatmap_rel`` (max abs /
        range), ``score_max_abs``, ``num_kpts``, and over the ``num_well_posed`` key points of
        :func:`well_posed` ``kpt_max_px`` and ``kpt_mean_px``, over the others
        ``ill_posed_max_px`` (0 if none).
    """
    diff = float(np.abs(torch_out - ort_out).max())
    hm_range = float(torch_out.max() - torch_out.min())
    kpt_t, score_t = decode(decoder, torch_out)
    kpt_o, score_o = decode(decoder, ort_out)
    dist = np.linalg.norm(kpt_t.astype(np.float64) - kpt_o, axis=-1)
    posed = well_posed(decoder, torch_out, kpt_t)
    return dict(heatmap_max_abs=diff, heatmap_range=hm_range,
                heatmap_rel=diff / hm_range if hm_range > 0 else float('inf'),
                score_max_abs=float(np.abs(score_t - score_o).max()),
                num_kpts=int(dist.size), num_well_posed=int(posed.sum()),
                kpt_max_px=float(dist[posed].max()) if posed.any() else float('nan'),
                kpt_mean_px=float(dist[posed].mean()) if posed.any() else float('nan'),
                ill_posed_max_px=float(dist[~posed].max()) if (~posed).any() else 0.0)


def median_latency(fn: Callable[[], object], warmup: int, runs: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``runs`` calls after ``warmup`` calls.

    Args:
        fn (Callable): the call to time.
        warmup (int): untimed calls first.
        runs (int): timed calls.

    Returns:
        float: the median in ms.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_check(model: HeatmapModel, path: str, inputs: Tensor, batch_sizes: Sequence[int],
              decoder, args: argparse.Namespace) -> List[dict]:
    """Compare onnxruntime with PyTorch at each batch size and time both.

    Args:
        model (HeatmapModel): the PyTorch model (eval).
        path (str): the ONNX file.
        inputs (Tensor): at least ``max(batch_sizes)`` inputs.
        batch_sizes (Sequence[int]): batch sizes.
        decoder: the codec used to decode key points.
        args (argparse.Namespace): tolerances, ``warmup``, ``runs`` and ``threads``.

    Returns:
        list[dict]: per batch size, the differences of :func:`compare` and the latencies.

    Raises:
        CheckFailed: if a difference exceeds its tolerance (after all batch sizes ran).
    """
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    session = ort_session(path, threads)
    results, failures = [], []
    for batch in batch_sizes:
        x = inputs[:batch].contiguous()
        x_np = x.numpy()
        with torch.no_grad():
            torch_out = model(x).numpy()
        ort_out = session.run([OUTPUT_NAME], {INPUT_NAME: x_np})[0]
        if ort_out.shape != torch_out.shape:
            raise CheckFailed(f'batch {batch}: onnxruntime heatmaps {ort_out.shape}, PyTorch '
                              f'{torch_out.shape}')
        res = dict(batch=batch, **compare(torch_out, ort_out, decoder))
        print(f'batch {batch}: heatmaps max abs diff {res["heatmap_max_abs"]:.2e} '
              f'(tol {args.atol:.0e}), / range {res["heatmap_range"]:.3g} = '
              f'{res["heatmap_rel"]:.2e} (tol {args.rtol:.0e}); scores max abs diff '
              f'{res["score_max_abs"]:.2e}; key points max {res["kpt_max_px"]:.2e} px, mean '
              f'{res["kpt_mean_px"]:.2e} px (tol {args.kpt_tol:g} px) over '
              f'{res["num_well_posed"]} of {res["num_kpts"]} well-posed peaks'
              + (f' (the others: max {res["ill_posed_max_px"]:.2e} px, not held to tol)'
                 if res['num_well_posed'] < res['num_kpts'] else ''))
        for key, tol, name in (('heatmap_max_abs', args.atol, 'heatmap max abs diff'),
                               ('heatmap_rel', args.rtol, 'heatmap diff / range'),
                               ('kpt_max_px', args.kpt_tol, 'key point distance (px)')):
            if (key != 'kpt_max_px' or res['num_well_posed']) and not res[key] <= tol:
                failures.append(f'batch {batch}: {name} {res[key]:.3g} > {tol:g}')
        if not res['num_well_posed']:
            failures.append(f'batch {batch}: no key point has a well-posed peak to compare '
                            '(random inputs to a model without peaks? try --val-samples)')
        if args.runs:
            with torch.no_grad():
                res['torch_ms'] = median_latency(lambda: model(x), args.warmup, args.runs)
            res['ort_ms'] = median_latency(
                lambda: session.run([OUTPUT_NAME], {INPUT_NAME: x_np}), args.warmup, args.runs)
            print(f'batch {batch}: latency (median of {args.runs} after {args.warmup} warm-up, '
                  f'{threads} threads) PyTorch eager {res["torch_ms"]:.2f} ms, onnxruntime '
                  f'{res["ort_ms"]:.2f} ms, PyTorch / onnxruntime = '
                  f'{res["torch_ms"] / res["ort_ms"]:.2f}x')
        results.append(res)
    if failures:
        raise CheckFailed('onnxruntime differs from PyTorch: ' + '; '.join(failures))
    return results


# ---------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> Optional[List[dict]]:
    """Export, then optionally check and time.

    Args:
        argv (Sequence[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        list[dict] | None: the check's results with ``--check``.
    """
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise ExportError(f'checkpoint {args.checkpoint} does not exist')
    cfg = load_config(args.config, args.cfg_options, args.synthetic_data)
    estimator, model = build_model(cfg, args.checkpoint)
    height, width = crop_size(cfg, estimator, args.input_shape)
    out = args.out or osp.splitext(args.checkpoint)[0] + '.onnx'
    export_onnx(model, out, height, width, args.opset, onnx_metadata(cfg, estimator))
    print(f'wrote {out}: input {INPUT_NAME} (batch, 3, {height}, {width}), output {OUTPUT_NAME} '
          f'(batch, {estimator.head.out_channels}, ...), opset {args.opset}, dynamic batch')
    if not args.check:
        return None
    inputs = check_inputs(cfg, estimator, max(args.batch_sizes), height, width,
                          args.val_samples, args.seed)
    source = f'{len(inputs)} val crops' if args.val_samples else \
        f'random inputs (seed {args.seed})'
    print(f'check: onnxruntime vs PyTorch on {source}')
    results = run_check(model, out, inputs, args.batch_sizes, estimator.head.decoder, args)
    print('check passed')
    return results


def cli(argv: Optional[Sequence[str]] = None) -> None:
    """Run :func:`main`; bad input and a failed check exit with a one-line message.

    Args:
        argv (Sequence[str], optional): arguments; ``sys.argv[1:]`` by default.
    """
    try:
        main(argv)
    except ExportError as error:
        sys.exit(f'error: {error}')
    except CheckFailed as error:
        sys.exit(f'check failed: {error}')


if __name__ == '__main__':
    cli()
