"""tools/deployment/pytorch2onnx.py: ONNX export of the PGNet test-time model, parity, errors."""
import importlib.util
import os.path as osp
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers.tool_runs import REPO_ROOT, run_tool
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint, save_checkpoint
from mmpose.registry import MODELS

DEMO = osp.join(REPO_ROOT, 'configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py')
TOOL = osp.join(REPO_ROOT, 'tools/deployment/pytorch2onnx.py')
SIMCC = 'mmpose::body_2d_keypoint/simcc/coco/simcc_res50_8xb64-210e_coco-256x192.py'
HEIGHT, WIDTH = 64, 48  # a small crop: heatmaps of 16x12
HEATMAP_ATOL = 1e-4  # float32 graph, same weights: rounding only
KPT_TOL_PX = 0.01  # decoded key points (DARK), pixels of the crop


def _tool():
    """The tool as a module (its functions run in this process)."""
    spec = importlib.util.spec_from_file_location('pytorch2onnx', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _demo_model(guidance: bool, calibrate: bool = False):
    """The demo config's model, with or without guidance heads, in eval mode.

    PyTorch's default initialisation (seed 0), not MMPose's ``init_weights``: that one draws the
    last layer with std 0.001 and gives heatmaps of range 2e-6, on which DARK decoding turns
    rounding differences of 1e-12 into 0.01 px. ``calibrate`` sets the BatchNorm statistics
    from one random batch: otherwise (mean 0, var 1) the heatmaps hardly depend on the input
    (their spread across inputs is 1e-4 of their range), and a parity test would prove little.
    Calibrated, they vary with the input as much as across the map; the last layer is then
    scaled so that they span about 1, as the demo checkpoint's do (the tool's default
    tolerances are absolute for the heatmaps).

    Such random heatmaps have ragged maxima: at about 60 % of the key points DARK's sub-pixel
    step leaves the half pixel around the arg-max and moves by pixels for float32 rounding alone
    (the tool's ``well_posed``); the rest are compared to 0.01 px.
    """
    cfg = Config.fromfile(DEMO)
    init_default_scope('mmpose')
    if not guidance:
        cfg.model.pop('guidance_cfg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    if calibrate:
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # the plain average of what it sees
        with torch.no_grad():
            model.head.forward(model.extract_feat(torch.randn(
                16, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(99))))
            model.head.final_layer.weight.mul_(0.25)
            model.head.final_layer.bias.mul_(0.25)
    return model.eval()


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A random-init demo checkpoint (with guidance weights) exported through the tool."""
    root = tmp_path_factory.mktemp('onnx')
    model = _demo_model(guidance=True, calibrate=True)
    assert any(k.startswith('guidance.') for k in model.state_dict())
    ckpt = str(root / 'demo.pth')
    save_checkpoint(dict(meta=dict(epoch=0), state_dict=model.state_dict()), ckpt)
    out = str(root / 'demo.onnx')
    log = run_tool(['deployment/pytorch2onnx.py', DEMO, ckpt, '--out', out, '--input-shape',
                    str(HEIGHT), str(WIDTH), '--check', '--batch-sizes', '1', '3',
                    '--runs', '2', '--warmup', '1'], timeout=300)
    return ckpt, out, log


def test_tool_checks_parity_and_times(exported):
    _, out, log = exported
    assert 'check passed' in log
    for batch in (1, 3):
        assert f'batch {batch}: heatmaps max abs diff' in log
        assert f'batch {batch}: latency (median of 2 after 1 warm-up' in log
    assert 'PyTorch / onnxruntime =' in log
    print(log[log.index('check:'):])


def test_onnx_graph_has_dynamic_batch_and_no_guidance(exported):
    ckpt, out, _ = exported
    proto = onnx.load(out)
    onnx.checker.check_model(proto)
    (inp, ), (outp, ) = proto.graph.input, proto.graph.output
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == \
        ['batch', 3, HEIGHT, WIDTH]
    assert outp.type.tensor_type.shape.dim[0].dim_param == 'batch'
    # the weights are those of backbone, neck and head only (BN folded or not, never guidance)
    names = [i.name for i in proto.graph.initializer]
    assert not any('guidance' in n for n in names)
    stripped = _demo_model(guidance=False)
    n_params = sum(p.numel() for p in stripped.parameters())
    n_onnx = sum(int(np.prod(i.dims)) for i in proto.graph.initializer)
    guide = sum(p.numel() for n, p in _demo_model(guidance=True).named_parameters()
                if n.startswith('guidance.'))
    assert guide > 0 and n_onnx <= n_params + 10 * 1024  # shape constants only besides weights
    # CFFM's 2x2 ceil-mode pooling is one MaxPool with ceil_mode (the tool's own symbolic, which
    # torch 2.1's exporter needs: it cannot pad for ceil mode behind the dynamic upsampling)
    pools = [n for n in proto.graph.node if n.op_type == 'MaxPool' and 'neck' in n.name]
    assert pools and all(
        {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.get('ceil_mode') == 1
        for n in pools)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta['num_keypoints'] == '17' and 'MSRAHeatmap' in meta['codec']
    assert meta['mean'].startswith('[123.675')


@pytest.mark.parametrize('batch', [1, 3])
def test_onnxruntime_matches_pytorch(exported, batch):
    """Heatmaps and the codec's decoded key points of onnxruntime equal PyTorch's."""
    ckpt, out, _ = exported
    model = _demo_model(guidance=False)
    load_checkpoint(model, ckpt, map_location='cpu', strict=True, logger='silent')
    x = torch.randn(batch, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = model.head.forward(model.extract_feat(x)).numpy()
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    got = session.run(['heatmaps'], {'input': x.numpy()})[0]
    assert got.shape == expected.shape == (batch, 17, HEIGHT // 4, WIDTH // 4)
    diff = np.abs(got - expected).max()
    assert diff < HEATMAP_ATOL, diff
    assert diff / (expected.max() - expected.min()) < 1e-3
    tool = _tool()
    kpt_t, score_t = tool.decode(model.head.decoder, expected)
    kpt_o, score_o = tool.decode(model.head.decoder, got)
    assert kpt_t.shape == (batch, 17, 2)
    posed = tool.well_posed(model.head.decoder, expected, kpt_t)
    assert posed.mean() > 0.25  # enough key points to compare (about 40 % on random heatmaps)
    dist = np.linalg.norm(kpt_t - kpt_o, axis=-1)
    assert dist[posed].max() < KPT_TOL_PX, dist[posed].max()
    assert np.abs(score_t - score_o).max() < HEATMAP_ATOL
    # the differences the tool reports are these
    res = tool.compare(expected, got, model.head.decoder)
    assert res['heatmap_max_abs'] == pytest.approx(float(diff))
    assert res['kpt_max_px'] == pytest.approx(float(dist[posed].max()), abs=1e-6)
    assert res['num_well_posed'] == posed.sum() and res['num_kpts'] == batch * 17


def test_well_posed_peaks():
    """A Gaussian peak is well posed (DARK refines it to its centre); a spike beside a broad
    blob is not (the blurred map's maximum lies in the blob, 3.8 heatmap pixels away)."""
    from mmpose.codecs import MSRAHeatmap
    tool = _tool()
    codec = MSRAHeatmap(input_size=(48, 64), heatmap_size=(12, 16), sigma=2, unbiased=True)
    ys, xs = np.mgrid[0:16, 0:12]
    gauss = np.exp(-((xs - 5.3)**2 + (ys - 7.6)**2) / 8)[None, None].astype(np.float32)
    ragged = np.zeros((1, 1, 16, 12), np.float32)
    ragged[..., 5:11, 5:10] = 0.9
    ragged[..., 8, 3] = 1.0  # the arg-max
    heatmaps = np.concatenate([gauss, ragged], axis=1)
    keypoints, _ = tool.decode(codec, heatmaps)
    assert np.allclose(keypoints[0, 0], [5.3 * 4, 7.6 * 4], atol=0.2)
    assert tool.well_posed(codec, heatmaps, keypoints).tolist() == [[True, False]]


def _one_line_error(argv, tmp_path):
    """Run the tool in this process and return its exit message, checked to be one line."""
    with pytest.raises(SystemExit) as info:
        _tool().cli(argv + ['--out', str(tmp_path / 'x.onnx')])
    message = str(info.value.code)
    assert message.startswith('error: ') and '\n' not in message, message
    assert not (tmp_path / 'x.onnx').exists()
    return message


def test_bad_input_one_line_errors(exported, tmp_path):
    ckpt, _, _ = exported
    assert 'missing.pth does not exist' in _one_line_error(
        [DEMO, str(tmp_path / 'missing.pth')], tmp_path)
    assert 'config file nope.py does not exist' in _one_line_error(['nope.py', ckpt], tmp_path)
    # configs whose model has no heatmap head: a detector, SimCC
    msg = _one_line_error(['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', ckpt], tmp_path)
    assert 'has no heatmap head' in msg and 'FasterRCNN' in msg
    msg = _one_line_error([SIMCC, ckpt], tmp_path)
    assert 'SimCCHead' in msg and 'heatmap head' in msg
    # a checkpoint of another model
    other = str(tmp_path / 'other.pth')
    save_checkpoint(dict(state_dict=dict(weight=torch.zeros(3))), other)
    msg = _one_line_error([DEMO, other], tmp_path)
    assert 'does not fit' in msg and 'missing keys' in msg
    # files that are no checkpoint: text, a truncated checkpoint, a bare tensor
    junk = tmp_path / 'junk.pth'
    junk.write_text('not a checkpoint')
    assert f'cannot read checkpoint {junk}' in _one_line_error([DEMO, str(junk)], tmp_path)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(open(ckpt, 'rb').read()[:4096])
    assert f'cannot read checkpoint {truncated}' in _one_line_error([DEMO, str(truncated)],
                                                                    tmp_path)
    tensor = str(tmp_path / 'tensor.pth')
    torch.save(torch.zeros(3), tensor)
    assert 'holds a Tensor, not a state dict' in _one_line_error([DEMO, tensor], tmp_path)


def test_bad_input_exits_nonzero_with_one_line(tmp_path):
    """The real command line: exit status 1 and the error as the last stderr line."""
    proc = subprocess.run([sys.executable, TOOL, DEMO, str(tmp_path / 'missing.pth')],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == \
        f'error: checkpoint {tmp_path / "missing.pth"} does not exist'
    assert 'Traceback' not in proc.stderr
