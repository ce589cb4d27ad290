"""PGNet top-down pose estimator: TopdownPoseEstimator + PGS heatmap guidance (training only)."""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.optim import OptimWrapper
from mmpose.evaluation.functional import pose_pck_accuracy
from mmpose.models.pose_estimators import TopdownPoseEstimator
from mmpose.registry import MODELS as POSE_MODELS
from mmpose.utils.tensor_utils import to_numpy
from torch import Tensor

from mmpgnet.engine.optim_wrappers import traceable_optim_context
from mmpgnet.models.heads import HeatmapGuidance
from mmpgnet.models.necks.cffm import CFFM
from mmpgnet.registry import MODELS, register_model

GUIDANCE_PREFIX = 'guidance.'


def pack_heatmap_targets(data_samples: Sequence) -> Tuple[Tensor, Tensor]:
    """Stack the heatmap targets of a batch of ``PoseDataSample``.

    Args:
        data_samples (Sequence[PoseDataSample]): samples with ``gt_fields.heatmaps`` and
            ``gt_instance_labels.keypoint_weights`` (one instance each, top-down).

    Returns:
        tuple[Tensor, Tensor]: heatmaps ``(N, K, H, W)`` and keypoint weights ``(N, K)``.
    """
    gt_heatmaps = torch.stack([d.gt_fields.heatmaps for d in data_samples])
    keypoint_weights = torch.cat([d.gt_instance_labels.keypoint_weights for d in data_samples])
    return gt_heatmaps, keypoint_weights


def heatmap_head_loss(head: torch.nn.Module, pred: Tensor, gt_heatmaps: Tensor,
                      keypoint_weights: Tensor, train_cfg: dict) -> Dict[str, Tensor]:
    """The losses of MMPose's ``HeatmapHead.loss`` computed from tensors.

    ``HeatmapHead.loss`` runs the head and reads the targets from data samples; the guided
    model needs the heatmaps for the feedback loss too, and the last pipeline-parallel stage has
    tensors, not data samples. This is its tensor form, with the head's own ``loss_module``.

    Args:
        head (nn.Module): a heatmap head with ``loss_module``.
        pred (Tensor): its heatmaps ``(N, K, H, W)``.
        gt_heatmaps (Tensor): targets ``(N, K, H, W)``.
        keypoint_weights (Tensor): ``(N, K)``.
        train_cfg (dict): ``compute_acc`` (default True) adds ``acc_pose``.

    Returns:
        dict[str, Tensor]: ``loss_kpt`` and optionally ``acc_pose``.
    """
    losses = dict(loss_kpt=head.loss_module(pred, gt_heatmaps, keypoint_weights))
    if train_cfg.get('compute_acc', True):
        losses['acc_pose'] = heatmap_accuracy(pred, gt_heatmaps, keypoint_weights)
    return losses


@torch.compiler.disable
def heatmap_accuracy(pred: Tensor, gt_heatmaps: Tensor, keypoint_weights: Tensor) -> Tensor:
    """MMPose's PCK accuracy of heatmaps (``acc_pose``), computed eagerly.

    MMPose computes it with numpy on the host (a GPU sync, as in ``HeatmapHead.loss``; set
    ``train_cfg=dict(compute_acc=False)`` to avoid it). Under ``torch.compile`` it runs eagerly,
    outside the graph, instead of breaking the graph into a dozen pieces at its numpy calls.

    Args:
        pred (Tensor): heatmaps ``(N, K, H, W)``.
        gt_heatmaps (Tensor): targets ``(N, K, H, W)``.
        keypoint_weights (Tensor): ``(N, K)``.

    Returns:
        Tensor: the average accuracy, a 0-dim tensor on the targets' device.
    """
    _, avg_acc, _ = pose_pck_accuracy(
        output=to_numpy(pred), target=to_numpy(gt_heatmaps), mask=to_numpy(keypoint_weights) > 0)
    return torch.tensor(avg_acc, device=gt_heatmaps.device)


@torch.compiler.disable
def _preprocess_eagerly(data_preprocessor: torch.nn.Module, data: Union[dict, tuple, list],
                        training: bool) -> Union[dict, list]:
    """Run a data preprocessor outside ``torch.compile`` (see ``PGNetPoseEstimator.train_step``)."""
    return data_preprocessor(data, training)


@register_model()
class PGNetPoseEstimator(TopdownPoseEstimator):
    """Top-down pose estimator with the guidance of PGNet's Pipeline Guidance Strategy.

    In training, auxiliary heatmap heads on intermediate fused levels of the CFFM neck are
    supervised by the ground truth resized to their stride and by the main head's prediction
    (detached) as deep -> shallow feedback (:class:`HeatmapGuidance`). In ``predict`` and
    ``tensor`` mode the model is exactly a :class:`TopdownPoseEstimator`: the guidance heads are
    not run, and :meth:`strip_guidance` (or building the model with ``guidance_cfg=None``, which
    drops ``guidance.*`` keys on load) gives an inference model without their parameters.

    Args:
        guidance_cfg (dict, optional): None for no guidance, else the config of the guidance
            heads, built through the registry (``type`` defaults to ``'HeatmapGuidance'``; see
            :class:`~mmpgnet.models.heads.HeatmapGuidance` for ``in_levels``, ``weights``,
            ``feedback_weight``, ``target_resize``), plus two keys read here: ``cascade`` (the
            cascade whose levels are guided, default -1 = the last) and ``loss`` (an MMPose loss
            config; default None: the main head's own ``loss_module``).
        **kwargs: the arguments of :class:`TopdownPoseEstimator` (backbone, neck, head,
            train_cfg, test_cfg, data_preprocessor, init_cfg, metainfo).

    Attributes:
        guidance_scale (Tensor): multiplier of every guidance weight, 1 by default; set per
            iteration by :class:`~mmpgnet.engine.hooks.GuidanceScaleHook` (assign a float).
            It is a 0-dim buffer on the model's device, not a Python float, so that a schedule
            that changes it every iteration neither copies it to the GPU in the step nor makes
            ``torch.compile`` recompile (it would guard on a float's value).
    """

    def __init__(self, *args, guidance_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer('_guidance_scale', torch.ones(()), persistent=False)
        self.guidance_cascade: Optional[int] = None
        self.guidance: Optional[HeatmapGuidance] = None
        if guidance_cfg is not None:
            self.guidance = self._build_guidance(dict(guidance_cfg))
        else:
            self._register_load_state_dict_pre_hook(self._drop_guidance_keys)

    def _build_guidance(self, cfg: dict) -> HeatmapGuidance:
        """Check ``guidance_cfg`` against the neck and head and build the guidance heads."""
        if not isinstance(getattr(self, 'neck', None), CFFM):
            raise ValueError('guidance_cfg guides intermediate CFFM levels, but the model neck is '
                             f'{type(getattr(self, "neck", None)).__name__}: use neck=dict('
                             "type='CFFM', ...) or set guidance_cfg=None")
        if not hasattr(getattr(self, 'head', None), 'loss_module'):
            raise ValueError('guidance_cfg needs a heatmap head with a loss_module (e.g. '
                             f'HeatmapHead), got {type(getattr(self, "head", None)).__name__}')
        neck = self.neck
        cascade = int(cfg.pop('cascade', -1))
        if not -neck.num_cascades <= cascade < neck.num_cascades:
            raise ValueError(f'guidance_cfg.cascade={cascade} does not exist: the CFFM neck has '
                             f'{neck.num_cascades} cascade(s), use '
                             f'0..{neck.num_cascades - 1} or -1')
        self.guidance_cascade = cascade % neck.num_cascades
        bad = [i for i in cfg.get('in_levels', []) if not 0 <= i < neck.num_levels]
        if bad:
            raise ValueError(f'guidance_cfg.in_levels {bad} do not exist: the CFFM neck fuses '
                             f'{neck.num_levels} levels, indices 0..{neck.num_levels - 1} '
                             '(0 = finest used backbone level)')
        loss_cfg = cfg.pop('loss', None)
        loss = self.head.loss_module if loss_cfg is None else POSE_MODELS.build(loss_cfg)
        cfg.setdefault('type', 'HeatmapGuidance')
        return MODELS.build(cfg, default_args=dict(
            in_channels=neck.out_channels, num_keypoints=self.head.out_channels, loss=loss))

    @property
    def guidance_scale(self) -> Tensor:
        """Tensor: the guidance-weight multiplier (0-dim, on the model's device)."""
        return self._guidance_scale

    @guidance_scale.setter
    def guidance_scale(self, value: float) -> None:
        """Set the multiplier in place (an asynchronous fill on a GPU)."""
        self._guidance_scale.fill_(value)

    @property
    def with_guidance(self) -> bool:
        """bool: whether the model has guidance heads."""
        return self.guidance is not None

    # ------------------------------------------------------------------ training
    def extract_feat_and_guidance(
            self, inputs: Tensor) -> Tuple[Tuple[Tensor, ...], List[Tensor]]:
        """Backbone + neck features, and the guidance predictions on the guided CFFM levels.

        The guidance heads run right after the cascade they read (as in the pipeline).

        Args:
            inputs (Tensor): images ``(N, C, H, W)``.

        Returns:
            tuple: the neck outputs (as :meth:`extract_feat`) and one guidance prediction per
            level of ``guidance_cfg.in_levels``.
        """
        feats = self.backbone(inputs)
        preds: List[Tensor] = []

        def guide(index: int, levels: List[Tensor]) -> None:
            if index == self.guidance_cascade:
                preds.extend(self.guidance([levels[i] for i in self.guidance.in_levels]))

        return self.neck(feats, on_cascade=guide), preds

    def loss_by_tensors(self, heatmaps: Tensor, guide_preds: Sequence[Tensor],
                        gt_heatmaps: Tensor, keypoint_weights: Tensor) -> Dict[str, Tensor]:
        """All training losses from tensors (also what the last pipeline stage calls).

        Args:
            heatmaps (Tensor): main head prediction ``(N, K, H, W)``.
            guide_preds (Sequence[Tensor]): guidance predictions (empty without guidance).
            gt_heatmaps (Tensor): targets ``(N, K, H, W)``.
            keypoint_weights (Tensor): ``(N, K)``.

        Returns:
            dict[str, Tensor]: ``loss_kpt``, ``acc_pose`` (if computed) and the guidance losses.
        """
        losses = OrderedDict(
            heatmap_head_loss(self.head, heatmaps, gt_heatmaps, keypoint_weights, self.train_cfg))
        if self.with_guidance:
            losses.update(self.guidance.loss(guide_preds, heatmaps, gt_heatmaps,
                                             keypoint_weights, scale=self.guidance_scale))
        return losses

    def loss(self, inputs: Tensor, data_samples: Sequence) -> dict:
        """Losses of a batch; with guidance, also the guidance and feedback losses.

        Args:
            inputs (Tensor): images ``(N, C, H, W)``.
            data_samples (list[PoseDataSample]): the batch's samples.

        Returns:
            dict: the losses.
        """
        if not self.with_guidance:
            return super().loss(inputs, data_samples)
        feats, guide_preds = self.extract_feat_and_guidance(inputs)
        heatmaps = self.head.forward(feats)
        gt_heatmaps, keypoint_weights = pack_heatmap_targets(data_samples)
        return self.loss_by_tensors(heatmaps, guide_preds, gt_heatmaps, keypoint_weights)

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, Tensor]:
        """MMEngine's training step, with the data preprocessing left out of ``torch.compile``.

        MMEngine's ``compile=True`` compiles ``train_step`` as a whole. Its data preprocessing
        deep-copies MMPose's data samples, whose metainfo holds numpy arrays, which dynamo fails
        on (an error, not a graph break); here it runs eagerly, and the model's forward, losses
        and optimizer step are compiled. Otherwise the same as ``BaseModel.train_step``.

        Args:
            data (dict | tuple | list): a batch from the dataloader.
            optim_wrapper (OptimWrapper): the optimizer wrapper.

        Returns:
            dict[str, Tensor]: the logged variables (``loss`` and its parts).
        """
        with traceable_optim_context(optim_wrapper, self):
            data = _preprocess_eagerly(self.data_preprocessor, data, True)
            losses = self._run_forward(data, mode='loss')
        parsed_losses, log_vars = self.parse_losses(losses)
        optim_wrapper.update_params(parsed_losses)
        return log_vars

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def strip_guidance(state_dict: Dict[str, Tensor], prefix: str = '') -> Dict[str, Tensor]:
        """Return ``state_dict`` without the guidance heads' entries (an inference checkpoint).

        Args:
            state_dict (dict): a state dict of this model.
            prefix (str): the model's prefix in ``state_dict``.

        Returns:
            dict: a new dict without the ``{prefix}guidance.*`` keys.
        """
        drop = prefix + GUIDANCE_PREFIX
        return OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith(drop))

    @staticmethod
    def _drop_guidance_keys(state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Load-state-dict pre-hook of a model without guidance: ignore ``guidance.*`` keys."""
        for key in [k for k in state_dict if k.startswith(prefix + GUIDANCE_PREFIX)]:
            del state_dict[key]
