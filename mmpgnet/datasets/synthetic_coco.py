"""A generator of COCO-format person data: articulated figures with the 17 COCO key points.

Each image holds 1 to ``max_people`` people drawn as articulated figures (head with eyes, nose and
ears, torso, upper and lower arms, hands, thighs, shins, feet) in varied poses, scales, aspects,
positions and colours, on a textured background with distractor shapes, some of which are drawn
*over* the people. Body parts have darker outlines (the contours and shading that make an arm
in front of a same-coloured torso visible in a photograph). Visibility flags are set honestly from
the rendered pixels:

* ``v=2`` the key point's pixel belongs to one of the body parts that meet at it;
* ``v=1`` it lies inside the image but is covered (by another person, by another part of the same
  person, e.g. an elbow behind the torso, or by a foreground distractor), and enough of a body
  part that meets at it is still visible to infer where it is (``min_part_visible``);
* ``v=0`` it lies outside the image, or it is covered together with (nearly) all of its parts,
  e.g. a whole forearm hidden behind another person: COCO's annotators leave such points
  unlabelled because nothing in the image tells where they are. Its coordinates are written as 0,
  as COCO does.

The output is a COCO keypoint dataset that MMPose's and MMDetection's ``CocoDataset`` read as it
is::

    <out_dir>/annotations/person_keypoints_train.json
    <out_dir>/annotations/person_keypoints_val.json
    <out_dir>/train/000000000001.jpg ...
    <out_dir>/val/000000000001.jpg ...

Boxes are the tight boxes of each person's whole silhouette (occluded parts included, clipped to
the image); ``area`` and ``segmentation`` (polygons) describe the visible part. Every image is drawn
from its own random generator seeded by ``(seed, split, index)``, so a dataset is deterministic by
seed and growing a split keeps its first images unchanged.
"""
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

COCO_KEYPOINT_NAMES: Tuple[str, ...] = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder',
    'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
    'right_knee', 'left_ankle', 'right_ankle')
#: COCO's skeleton, 1-based key-point indices as in the official annotation files.
COCO_SKELETON: Tuple[Tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)
SPLIT_OFFSETS = {'train': 0, 'val': 1, 'test': 2}

# body parts: name -> (key points that meet at the part, thickness as a fraction of body height).
# Human proportions: COCO's OKS takes a person's segmentation area as its scale, so figures as
# full as real people (area / box about 0.4) keep OKS as strict as it is on real data.
_LIMBS: Dict[str, Tuple[Tuple[int, int], float]] = {
    'l_upper_arm': ((5, 7), 0.08), 'l_forearm': ((7, 9), 0.065),
    'r_upper_arm': ((6, 8), 0.08), 'r_forearm': ((8, 10), 0.065),
    'l_thigh': ((11, 13), 0.11), 'l_shin': ((13, 15), 0.085),
    'r_thigh': ((12, 14), 0.11), 'r_shin': ((14, 16), 0.085),
}
_PART_IDS = {name: i for i, name in enumerate(['head', 'torso', *_LIMBS])}
# the parts each key point belongs to (its pixel is "visible" when one of them owns it)
_KEYPOINT_PARTS: Dict[int, Tuple[int, ...]] = {k: (_PART_IDS['head'], ) for k in range(5)}
for _k in (5, 6, 11, 12):
    _KEYPOINT_PARTS[_k] = (_PART_IDS['torso'], )
for _name, ((_a, _b), _) in _LIMBS.items():
    for _k in (_a, _b):
        _KEYPOINT_PARTS[_k] = _KEYPOINT_PARTS.get(_k, ()) + (_PART_IDS[_name], )
_PARTS_PER_PERSON = 16  # owner code = 1 + person * 16 + part; 0 = background, -1 = distractor


@dataclass
class SyntheticCocoConfig:
    """Settings of the generator.

    Args:
        img_size (tuple[int, int]): image ``(width, height)``.
        max_people (int): at most this many people per image (at least one).
        min_height (float): smallest person height, as a fraction of the image height.
        max_height (float): largest person height, as a fraction of the image height.
        num_distractors (tuple[int, int]): range of background distractor shapes per image.
        occluder_prob (float): probability that a foreground occluder is drawn over the people.
        jpeg_quality (int): JPEG quality of the written images.
        min_part_visible (float): a covered key point is labelled (``v=1``) only if at least this
            fraction of the pixels of one of the body parts that meet at it is visible; otherwise
            it is unlabelled (``v=0``). 0 labels every covered point inside the image.
    """
    img_size: Tuple[int, int] = (320, 240)
    max_people: int = 4
    min_height: float = 0.45
    max_height: float = 0.95
    num_distractors: Tuple[int, int] = (2, 8)
    occluder_prob: float = 0.3
    jpeg_quality: int = 92
    min_part_visible: float = 0.25

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range."""
        w, h = self.img_size
        if w < 32 or h < 32:
            raise ValueError(f'img_size must be at least 32x32, got {self.img_size}')
        if self.max_people < 1:
            raise ValueError(f'max_people must be >= 1, got {self.max_people}')
        if not 0 < self.min_height <= self.max_height:
            raise ValueError('need 0 < min_height <= max_height, got '
                             f'{self.min_height} and {self.max_height}')
        if not 0 <= self.occluder_prob <= 1:
            raise ValueError(f'occluder_prob must lie in [0, 1], got {self.occluder_prob}')
        if not 0 <= self.min_part_visible <= 1:
            raise ValueError(f'min_part_visible must lie in [0, 1], got {self.min_part_visible}')


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    """Rotate 2-d vector(s) ``v`` by ``deg`` degrees (image coordinates, y down)."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return v @ np.array([[c, s], [-s, c]])


def sample_skeleton(rng: np.random.Generator, height: float,
                    center: Tuple[float, float]) -> Tuple[np.ndarray, Dict[str, float]]:
    """Sample an articulated pose and return its 17 key points in image coordinates.

    The person faces the viewer, so their left side appears on the image's right. Joint angles
    are drawn from ranges that cover standing, walking, reaching, waving, kicking and crouching;
    the body may lean, turn sideways (narrower shoulders and face) and, rarely, tilt strongly.

    Args:
        rng (np.random.Generator): the image's random generator.
        height (float): standing body height in pixels.
        center (tuple[float, float]): pelvis position ``(x, y)`` in pixels.

    Returns:
        tuple: ``(keypoints, shape)``, ``keypoints`` of shape (17, 2) and ``shape`` a dict of the
        sizes the renderer needs (``head_radius``, ``turn``, ``yaw``).
    """
    H = height
    up = np.array([0.0, -1.0])
    lean = float(np.clip(rng.normal(0, 12), -40, 40))
    if rng.random() < 0.08:  # a strongly tilted body (bending, falling, lying)
        lean += float(rng.choice([-1, 1]) * rng.uniform(45, 90))
    turn = float(rng.uniform(0.45, 1.0))  # 1 = facing the viewer, smaller = turned sideways
    yaw = float(rng.uniform(-1, 1)) * (1 - turn + 0.25)
    torso_dir = _rot(up, lean)
    side = _rot(torso_dir, -90)  # points to the person's left = image right when upright
    pelvis = np.asarray(center, dtype=np.float64)
    neck = pelvis + torso_dir * 0.30 * H * rng.uniform(0.9, 1.1)
    sw = 0.22 * H * turn * rng.uniform(0.85, 1.15)
    hw = 0.15 * H * turn * rng.uniform(0.85, 1.15)
    head_r = 0.065 * H * rng.uniform(0.9, 1.1)
    head = neck + torso_dir * (0.05 * H + head_r)

    kpt = np.zeros((NUM_KEYPOINTS, 2))
    face_shift = side * yaw * head_r * 0.5
    kpt[0] = head - torso_dir * 0.15 * head_r + face_shift * 1.3  # nose
    for k, sgn in ((1, 1), (2, -1)):  # eyes
        kpt[k] = head + torso_dir * 0.25 * head_r + side * sgn * 0.42 * head_r * turn + face_shift
    for k, sgn in ((3, 1), (4, -1)):  # ears
        kpt[k] = head + torso_dir * 0.1 * head_r + side * sgn * 0.95 * head_r * turn \
            + face_shift * 0.3
    kpt[5], kpt[6] = neck + side * sw / 2, neck - side * sw / 2
    kpt[11], kpt[12] = pelvis + side * hw / 2, pelvis - side * hw / 2

    down = -torso_dir
    for sgn, (sh, el, wr) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        raise_deg = rng.uniform(-25, 170) if rng.random() < 0.6 else rng.uniform(-10, 40)
        upper = _rot(down, sgn * raise_deg) * 0.17 * H * rng.uniform(0.9, 1.1)
        bend = rng.uniform(0, 150) * rng.choice([-1, 1])
        fore = _rot(upper / np.linalg.norm(upper), bend) * 0.15 * H * rng.uniform(0.9, 1.1)
        kpt[el] = kpt[sh] + upper
        kpt[wr] = kpt[el] + fore
    for sgn, (hp, kn, an) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
        spread = rng.uniform(-15, 45) if rng.random() < 0.75 else rng.uniform(40, 100)
        thigh = _rot(down, sgn * spread) * 0.24 * H * rng.uniform(0.9, 1.1)
        bend = rng.uniform(0, 110) * (-sgn if rng.random() < 0.7 else sgn)
        shin = _rot(thigh / np.linalg.norm(thigh), bend) * 0.23 * H * rng.uniform(0.9, 1.1)
        kpt[kn] = kpt[hp] + thigh
        kpt[an] = kpt[kn] + shin
    return kpt, dict(head_radius=head_r, turn=turn, yaw=yaw, lean=lean)


def _random_colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> Tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, size=3))


def _draw_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A textured background: a colour gradient, blurred noise blobs and stripes."""
    c0, c1 = np.array(_random_colour(rng)), np.array(_random_colour(rng))
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h)
    grad = (c0[None] * (1 - t[:, None]) + c1[None] * t[:, None])
    ramp = grad[None] if len(t) == w else grad[:, None]
    img = np.broadcast_to(ramp, (h, w, 3)).astype(np.float32)
    noise = rng.normal(0, 1, size=(max(h // 8, 2), max(w // 8, 2), 3)).astype(np.float32)
    img = img + cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 40)
    if rng.random() < 0.5:  # stripes (floor tiles, fences)
        period = int(rng.integers(8, 40))
        phase = (np.arange(w)[None, :] + np.arange(h)[:, None] * rng.uniform(-1, 1)) % period
        img += ((phase < period / 2)[..., None] * rng.uniform(-30, 30)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_distractor(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray,
                     scale: float) -> None:
    """Draw one distractor (limb-like bar, disc, box or polygon) onto ``img`` and ``owner``."""
    h, w = img.shape[:2]
    colour = _random_colour(rng)
    kind = rng.integers(4)
    p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    size = max(int(rng.uniform(0.04, 0.2) * scale), 2)
    for target, value in ((img, colour), (owner, -1)):
        if kind == 0:  # a bar that looks like a limb
            q = (int(p[0] + rng.normal(0, size * 2)), int(p[1] + rng.normal(0, size * 2)))
            cv2.line(target, p, q, value, max(size // 3, 2), cv2.LINE_8)
        elif kind == 1:
            cv2.circle(target, p, size, value, -1, cv2.LINE_8)
        elif kind == 2:
            q = (p[0] + size, p[1] + int(size * rng.uniform(0.3, 2)))
            cv2.rectangle(target, p, q, value, -1, cv2.LINE_8)
        else:
            pts = (np.array(p) + rng.normal(0, size, size=(5, 2))).astype(np.int32)
            cv2.fillPoly(target, [pts], value, cv2.LINE_8)


def _shade(colour, factor: float = 0.45) -> Tuple[int, int, int]:
    """A darker version of ``colour`` (the outline of a body part)."""
    return tuple(int(c * factor) for c in colour)


class _PersonPainter:
    """Draws one person onto the image and the owner map, part by part.

    Every part gets a darker outline of ``outline`` pixels, as shading and contours do in
    photographs: without it an arm drawn over a torso of the same colour (sleeve on shirt) or a
    forearm over the face (skin on skin) would vanish, and its key points would be labelled
    visible while nothing in the image shows them. The outline belongs to the part in the owner
    map.
    """

    def __init__(self, img: np.ndarray, owner: np.ndarray, person: int, outline: int) -> None:
        self.img, self.owner, self.person, self.outline = img, owner, person, outline
        #: part id -> number of pixels the part covers as drawn (before anything covers it)
        self.part_area: Dict[int, int] = {}
        self._masks: Dict[int, np.ndarray] = {}

    def code(self, part: str) -> int:
        return 1 + self.person * _PARTS_PER_PERSON + _PART_IDS[part]

    def _mask(self, part: str) -> np.ndarray:
        return self._masks.setdefault(_PART_IDS[part], np.zeros(self.owner.shape, np.uint8))

    def finish(self) -> Dict[int, int]:
        """Return the drawn area of each part (pixels)."""
        self.part_area = {part: int(mask.sum()) for part, mask in self._masks.items()}
        self._masks = {}
        return self.part_area

    def limb(self, part: str, p: np.ndarray, q: np.ndarray, width: float, colour) -> None:
        a, b = tuple(int(round(x)) for x in p), tuple(int(round(x)) for x in q)
        t = max(int(round(width)), 1)
        o = self.outline
        for fill, extra in ((_shade(colour), o), (colour, 0)):  # outline, then the limb
            cv2.line(self.img, a, b, fill, t + 2 * extra, cv2.LINE_AA)
            for c in (a, b):  # round joints
                cv2.circle(self.img, c, max(t // 2, 1) + extra, fill, -1, cv2.LINE_AA)
        for target, value in ((self.owner, self.code(part)), (self._mask(part), 1)):
            cv2.line(target, a, b, value, t + 2 * o, cv2.LINE_8)
            for c in (a, b):
                cv2.circle(target, c, max(t // 2, 1) + o, value, -1, cv2.LINE_8)

    def disc(self, part: str, c: np.ndarray, radius: float, colour, owner: bool = True) -> None:
        """A filled disc; an owned part (head, ear, hand, foot) gets an outline."""
        cc, r = tuple(int(round(x)) for x in c), max(int(round(radius)), 1)
        if owner:
            cv2.circle(self.img, cc, r + self.outline, _shade(colour), -1, cv2.LINE_AA)
            cv2.circle(self.owner, cc, r + self.outline, self.code(part), -1, cv2.LINE_8)
            cv2.circle(self._mask(part), cc, r + self.outline, 1, -1, cv2.LINE_8)
        cv2.circle(self.img, cc, r, colour, -1, cv2.LINE_AA)

    def polygon(self, part: str, pts: np.ndarray, colour) -> None:
        poly = np.round(pts).astype(np.int32)
        cv2.fillPoly(self.img, [poly], colour, cv2.LINE_AA)
        cv2.polylines(self.img, [poly], True, _shade(colour), 2 * self.outline, cv2.LINE_AA)
        for target, value in ((self.owner, self.code(part)), (self._mask(part), 1)):
            cv2.fillPoly(target, [poly], value, cv2.LINE_8)
            cv2.polylines(target, [poly], True, value, 2 * self.outline, cv2.LINE_8)


def _draw_person(rng: np.random.Generator, painter: _PersonPainter, kpt: np.ndarray,
                 shape: Dict[str, float], height: float) -> None:
    """Render a person: far limbs, torso, head with face, near limbs (self-occlusion included)."""
    skin = _random_colour(rng, 60, 250)
    shirt, trousers = _random_colour(rng), _random_colour(rng)
    H = height
    far_side = 'l' if rng.random() < 0.5 else 'r'

    def limbs_of(side: str) -> None:
        for name, ((a, b), frac) in _LIMBS.items():
            if name.startswith(side):
                colour = trousers if 'thigh' in name or 'shin' in name else (
                    shirt if 'upper' in name else skin)
                painter.limb(name, kpt[a], kpt[b], frac * H, colour)
        wrist, ankle = (9, 15) if side == 'l' else (10, 16)
        forearm, shin = f'{side}_forearm', f'{side}_shin'
        painter.disc(forearm, kpt[wrist], 0.035 * H, skin)  # hand
        painter.disc(shin, kpt[ankle], 0.035 * H, tuple(int(c * 0.5) for c in trousers))  # foot

    limbs_of(far_side)
    # torso: a quadrilateral through shoulders and hips, a little wider than the joints
    centre = kpt[[5, 6, 11, 12]].mean(0)
    quad = kpt[[5, 6, 12, 11]]
    painter.polygon('torso', centre + (quad - centre) * 1.3, shirt)
    neck = (kpt[5] + kpt[6]) / 2
    head_centre = (kpt[3] + kpt[4]) / 2
    painter.limb('torso', neck, neck + (head_centre - neck) * 0.4, 0.06 * H, skin)
    painter.disc('head', head_centre, shape['head_radius'], skin)
    r = shape['head_radius']
    for ear in (3, 4):
        painter.disc('head', kpt[ear], 0.28 * r, tuple(int(c * 0.8) for c in skin))
    for eye in (1, 2):
        painter.disc('head', kpt[eye], max(0.16 * r, 1.0), (20, 20, 20), owner=False)
    painter.disc('head', kpt[0], max(0.18 * r, 1.0), (40, 40, 160), owner=False)
    limbs_of('r' if far_side == 'l' else 'l')


def _visibility(kpt: np.ndarray, owner: np.ndarray, person: int,
                part_area: Optional[Dict[int, int]] = None,
                min_part_visible: float = 0.0) -> np.ndarray:
    """COCO visibility of each key point from the final owner map.

    Args:
        kpt (np.ndarray): (17, 2) key points of the person.
        owner (np.ndarray): final owner map (``1 + person * 16 + part``, 0 background, -1
            distractor).
        person (int): the person's index.
        part_area (dict[int, int], optional): drawn area of each part of the person; needed when
            ``min_part_visible > 0``.
        min_part_visible (float): a covered point is labelled (1) only if at least this fraction
            of one of its parts is visible; otherwise it is unlabelled (0).

    Returns:
        np.ndarray: (17,) flags, 0 (outside or unlabelled), 1 (covered), 2 (visible).
    """
    if min_part_visible > 0 and part_area is None:
        raise ValueError('_visibility needs the drawn part areas (part_area) when '
                         f'min_part_visible={min_part_visible} > 0')
    h, w = owner.shape
    vis = np.zeros(NUM_KEYPOINTS, dtype=np.int64)
    base = 1 + person * _PARTS_PER_PERSON
    for k, (x, y) in enumerate(kpt):
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < w and 0 <= yi < h):
            continue
        code = int(owner[yi, xi]) - 1
        mine = code >= 0 and code // _PARTS_PER_PERSON == person and \
            code % _PARTS_PER_PERSON in _KEYPOINT_PARTS[k]
        if mine:
            vis[k] = 2
        elif min_part_visible <= 0:
            vis[k] = 1
        else:
            shown = max((int((owner == base + part).sum()) / part_area[part]
                         for part in _KEYPOINT_PARTS[k] if part_area.get(part)),
                        default=0.0)
            vis[k] = 1 if shown >= min_part_visible else 0
    return vis


def _silhouette_annotation(owner: np.ndarray, full_mask: np.ndarray,
                           person: int) -> Optional[Dict]:
    """Box of the whole silhouette, area and polygons of the visible part; ``None`` if unseen."""
    ys, xs = np.nonzero(full_mask)
    if len(xs) == 0:
        return None
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    codes = owner - 1
    visible = ((codes >= 0) & (codes // _PARTS_PER_PERSON == person)).astype(np.uint8)
    contours, _ = cv2.findContours(visible, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    return dict(
        bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        area=float(visible.sum()),
        segmentation=polys)


def render_image(seed: int, split: str, index: int,
                 cfg: SyntheticCocoConfig) -> Tuple[np.ndarray, List[Dict]]:
    """Render one image and the annotations of its people.

    Args:
        seed (int): dataset seed.
        split (str): ``'train'``, ``'val'`` or ``'test'`` (each split has its own random stream).
        index (int): image index within the split.
        cfg (SyntheticCocoConfig): generator settings.

    Returns:
        tuple: the BGR image (H, W, 3) uint8 and a list of per-person dicts with ``keypoints``
        (17, 3) as ``[x, y, v]``, ``bbox`` ``[x, y, w, h]``, ``area``, ``segmentation`` and
        ``num_keypoints``.
    """
    if split not in SPLIT_OFFSETS:
        raise ValueError(f'unknown split {split!r}; expected one of {sorted(SPLIT_OFFSETS)}')
    rng = np.random.default_rng([seed, SPLIT_OFFSETS[split], index])
    w, h = cfg.img_size
    img = _draw_background(rng, w, h)
    owner = np.zeros((h, w), dtype=np.int32)
    for _ in range(int(rng.integers(cfg.num_distractors[0], cfg.num_distractors[1] + 1))):
        _draw_distractor(rng, img, owner, min(w, h))
    owner[:] = 0  # background distractors never occlude anybody

    num_people = int(rng.integers(1, cfg.max_people + 1))
    people = []
    for person in range(num_people):
        height = rng.uniform(cfg.min_height, cfg.max_height) * h / (1.0 + 0.2 * (num_people > 2))
        centre = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.45, 0.7) * h)
        kpt, shape = sample_skeleton(rng, height, centre)
        before = owner.copy()
        outline = max(1, int(round(0.012 * height)))
        painter = _PersonPainter(img, owner, person, outline)
        _draw_person(rng, painter, kpt, shape, height)
        people.append((kpt, owner != before, painter.finish()))
    if rng.random() < cfg.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            _draw_distractor(rng, img, owner, min(w, h) * 1.5)

    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.normal(0, rng.uniform(2, 8), size=img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)

    annotations = []
    for person, (kpt, full_mask, part_area) in enumerate(people):
        sil = _silhouette_annotation(owner, full_mask, person)
        if sil is None:
            continue
        vis = _visibility(kpt, owner, person, part_area, cfg.min_part_visible)
        kpts = np.concatenate([kpt, vis[:, None]], axis=1)
        kpts[vis == 0, :2] = 0
        sil.update(keypoints=kpts, num_keypoints=int((vis > 0).sum()))
        annotations.append(sil)
    return img, annotations


def coco_categories() -> List[Dict]:
    """The COCO ``categories`` entry of the person class, with key-point names and skeleton."""
    return [
        dict(
            id=1,
            name='person',
            supercategory='person',
            keypoints=list(COCO_KEYPOINT_NAMES),
            skeleton=[list(s) for s in COCO_SKELETON])
    ]


def generate_split(out_dir: str, split: str, num_images: int, seed: int = 0,
                   cfg: Optional[SyntheticCocoConfig] = None, show_progress: bool = True) -> str:
    """Generate one split: its images and its COCO keypoint annotation file.

    Args:
        out_dir (str): dataset root.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        num_images (int): number of images (>= 1).
        seed (int): dataset seed.
        cfg (SyntheticCocoConfig, optional): generator settings.
        show_progress (bool): show a progress bar.

    Returns:
        str: path of the annotation file.
    """
    from mmengine.utils import ProgressBar

    cfg = cfg or SyntheticCocoConfig()
    cfg.validate()
    if num_images < 1:
        raise ValueError(f'num_images of split {split!r} must be >= 1, got {num_images}')
    img_dir = osp.join(out_dir, split)
    ann_dir = osp.join(out_dir, 'annotations')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    images, annotations = [], []
    bar = ProgressBar(num_images) if show_progress else None
    for index in range(num_images):
        img_id = index + 1
        img, people = render_image(seed, split, index, cfg)
        file_name = f'{img_id:012d}.jpg'
        cv2.imwrite(osp.join(img_dir, file_name), img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        images.append(dict(id=img_id, file_name=file_name, width=img.shape[1], height=img.shape[0]))
        for person in people:
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=img_id,
                    category_id=1,
                    iscrowd=0,
                    bbox=person['bbox'],
                    area=person['area'],
                    segmentation=person['segmentation'],
                    num_keypoints=person['num_keypoints'],
                    keypoints=[float(v) if i % 3 != 2 else int(v)
                               for i, v in enumerate(person['keypoints'].reshape(-1))]))
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    ann_file = osp.join(ann_dir, f'person_keypoints_{split}.json')
    coco = dict(
        info=dict(description=f'mmpgnet synthetic people, split {split}, seed {seed}'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=coco_categories())
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    return ann_file


def generate_synthetic_coco(out_dir: str,
                            num_train: int = 200,
                            num_val: int = 50,
                            seed: int = 0,
                            cfg: Optional[SyntheticCocoConfig] = None,
                            show_progress: bool = True,
                            splits: Sequence[str] = ('train', 'val')) -> Dict[str, str]:
    """Generate a COCO-format person key-point dataset with train and val splits.

    Args:
        out_dir (str): dataset root (created if missing).
        num_train (int): number of training images.
        num_val (int): number of validation images.
        seed (int): dataset seed; the same seed gives byte-identical annotation files.
        cfg (SyntheticCocoConfig, optional): generator settings.
        show_progress (bool): show a progress bar per split.
        splits (Sequence[str]): which of ``'train'`` and ``'val'`` to write.

    Returns:
        dict: split name -> annotation file path.

    Example:
        >>> import tempfile
        >>> from pycocotools.coco import COCO
        >>> root = tempfile.mkdtemp()
        >>> files = generate_synthetic_coco(root, 2, 1, show_progress=False)
        >>> len(COCO(files['train']).getImgIds())  # doctest: +SKIP
        2
    """
    sizes = dict(train=num_train, val=num_val)
    return {
        split: generate_split(out_dir, split, sizes[split], seed, cfg, show_progress)
        for split in splits
    }
