"""Face detection and landmark geometry around the two networks: anchors, box decoding, weighted
non-maximum suppression, the rotated square each model looks at, and back to image pixels.

The numbers are the short-range detector's published configuration (the full-range one differs
in its input, 192, and anchors, see FULL_RANGE) (MediaPipe's
face_detection_short_range graph): 128 x 128 input letterboxed into [-1, 1]; SSD anchors from
4 layers with strides 8, 16, 16, 16 and one fixed-size anchor per aspect ratio, so 2 per cell on
the 16 x 16 grid and 6 per cell on the 8 x 8 one (896 in all); each anchor regresses a box
(centre x, centre y, width, height) and 6 keypoints (right eye, left eye, nose tip, mouth,
right ear, left ear), offsets in input pixels; a sigmoid score (logits clipped to +-100) above
0.5; overlapping boxes (IoU > 0.3) merged by their score-weighted mean. The landmark model sees
a 192 x 192 square 1.5 times the face's size, rotated so the eyes are level, in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

DETECTOR_SIZE = 128
LANDMARK_SIZE = 192
MIN_SCORE = 0.5
NMS_IOU = 0.3
ROI_SCALE = 1.5
# Landmarks that define a face's roll: the outer eye corners.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


def _anchor_centres(size: int, layers: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Anchor centres in [0, 1], in the network's output order: per (stride, anchors per cell)."""
    rows = []
    for stride, per_cell in layers:
        cells = size // stride
        y, x = np.mgrid[0:cells, 0:cells]
        centres = np.stack([(x + 0.5) / cells, (y + 0.5) / cells], -1).reshape(-1, 1, 2)
        rows.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(rows).astype(np.float32)


@dataclass(frozen=True)
class DetectorSpec:
    """What decoding needs to know of a detector: its input side and its anchors."""

    size: int
    anchors: np.ndarray


# Short range: layers 2-4 share stride 16, 2 anchors each (6 per cell); 896 anchors.
SHORT_RANGE = DetectorSpec(DETECTOR_SIZE, _anchor_centres(DETECTOR_SIZE, ((8, 2), (16, 6))))
# Full range (faces up to ~5 m): 192 x 192 input, one anchor per cell of a 48 x 48 grid.
FULL_RANGE = DetectorSpec(192, _anchor_centres(192, ((4, 1),)))
ANCHORS = SHORT_RANGE.anchors


@dataclass
class Detection:
    """A face in image pixels: its box (x0, y0, x1, y1), score, and 6 keypoints [6, 2]."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray


def letterbox(height: int, width: int, size: int = DETECTOR_SIZE) -> tuple[np.ndarray, float, float, float]:
    """The affine map from the image into the detector's square input (the image centred in a
    square of its long side, zero borders), and the square's (left, top, side) in image pixels."""
    side = max(height, width)
    left, top = (width - side) / 2, (height - side) / 2
    return square_to_input(left + side / 2, top + side / 2, side, 0.0, size), left, top, side


def decode(boxes: np.ndarray, scores: np.ndarray, left: float, top: float, side: float,
           spec: DetectorSpec = SHORT_RANGE) -> list[Detection]:
    """The detector's raw [anchors, 16] offsets and [anchors] logits as faces in image pixels,
    merged."""
    logits = np.clip(scores.reshape(-1), -100, 100)
    keep = logits > math.log(MIN_SCORE / (1 - MIN_SCORE))
    if not keep.any():
        return []
    raw, anchors = boxes.reshape(-1, 16)[keep] / spec.size, spec.anchors[keep]
    score = 1 / (1 + np.exp(-logits[keep]))
    centre = raw[:, :2] + anchors
    half = raw[:, 2:4] / 2
    rel = np.concatenate([centre - half, centre + half], 1)
    points = raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None]
    # Relative to the letterboxed square -> image pixels.
    offset = np.array([left, top], np.float32)
    rel_boxes = rel.reshape(-1, 2, 2) * side + offset
    rel_points = points * side + offset
    return weighted_nms(rel_boxes.reshape(-1, 4), score, rel_points)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box `a` with each row of `b` (x0, y0, x1, y1)."""
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray) -> list[Detection]:
    """Best-first: each remaining box takes every box overlapping it by more than NMS_IOU and
    becomes their score-weighted mean (boxes and keypoints alike), keeping its own score."""
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    faces = []
    remaining = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (iou(boxes[i], boxes) > NMS_IOU)
        group[i] = True
        weights = scores[group] / scores[group].sum()
        faces.append(Detection(
            box=(boxes[group] * weights[:, None]).sum(0),
            score=float(scores[i]),
            keypoints=(keypoints[group] * weights[:, None, None]).sum(0),
        ))
        remaining &= ~group
    return faces


@dataclass
class Roi:
    """A rotated square in image pixels: centre, side, rotation (radians, the eye line's angle
    turned back to level)."""

    cx: float
    cy: float
    side: float
    angle: float


def _level_angle(start: np.ndarray, end: np.ndarray) -> float:
    """The rotation that makes the line start -> end horizontal (image y points down)."""
    angle = -math.atan2(-(end[1] - start[1]), end[0] - start[0])
    return (angle + math.pi) % (2 * math.pi) - math.pi


def roi_from_detection(face: Detection) -> Roi:
    """The landmark model's square from a detection: the box's centre, 1.5 times its long side,
    turned so the eyes (keypoints 0 and 1) are level."""
    x0, y0, x1, y1 = face.box
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * ROI_SCALE,
               _level_angle(face.keypoints[0], face.keypoints[1]))


def roi_from_landmarks(points: np.ndarray) -> Roi:
    """The next frame's square from this frame's landmarks [468, 2]: their bounding box's centre,
    1.5 times its long side, turned so the outer eye corners are level."""
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * ROI_SCALE,
               _level_angle(points[RIGHT_EYE_OUTER], points[LEFT_EYE_OUTER]))


def _corners(cx: float, cy: float, side: float, angle: float) -> np.ndarray:
    """Top-left, top-right, bottom-left corners of the rotated square, image pixels."""
    c, s = math.cos(angle), math.sin(angle)
    half = side / 2
    return np.float32([[cx + c * dx - s * dy, cy + s * dx + c * dy] for dx, dy in
                       ((-half, -half), (half, -half), (-half, half))])


def square_to_input(cx: float, cy: float, side: float, angle: float, size: int) -> np.ndarray:
    """The 2 x 3 affine map from image pixels into a size x size model input: the square's
    corners go to the input's corners."""
    target = np.float32([[0, 0], [size, 0], [0, size]])
    return cv2.getAffineTransform(_corners(cx, cy, side, angle), target)


def roi_to_input(roi: Roi) -> np.ndarray:
    return square_to_input(roi.cx, roi.cy, roi.side, roi.angle, LANDMARK_SIZE)


def landmarks_to_image(raw: np.ndarray, roi: Roi) -> np.ndarray:
    """The landmark model's [1404] output (x, y, z in input pixels) as [468, 2] image pixels."""
    points = raw.reshape(-1, 3)[:, :2] / LANDMARK_SIZE - 0.5
    c, s = math.cos(roi.angle), math.sin(roi.angle)
    x = (c * points[:, 0] - s * points[:, 1]) * roi.side + roi.cx
    y = (s * points[:, 0] + c * points[:, 1]) * roi.side + roi.cy
    return np.stack([x, y], 1).astype(np.float32)
