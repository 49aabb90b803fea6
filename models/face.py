"""PyTorch port of MediaPipe's face detection (short range) and face landmark models, built from
their .tflite files the way models/selfie.py builds the selfie models: every TFLite op becomes one
torch module named after the tensor it produces, run in file order, with the file's own weights.

Public layouts (the tflite ones, NHWC; shapes static):
  detector   "image" float32 [1, 128, 128, 3] RGB in [-1, 1]
             -> "boxes" [1, 896, 16] raw box and keypoint offsets, "scores" [1, 896, 1] logits
  landmarks  "image" float32 [1, 192, 192, 3] RGB in [0, 1]
             -> "landmarks" [1, 1404] (468 x, y, z in input pixels), "presence" [1, 1] logit

Decoding (anchors, boxes, NMS, regions of interest) is not part of the network; it lives in the
engine (camfx.engine.faces.geometry).
"""

from __future__ import annotations

import importlib.util
import os
import re
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .selfie import _NCHW_AXIS, BUILDERS
from .tflite_graph import Op, TfliteGraph, read_tflite

# kind -> (folder under mediapipe/modules/ in the mediapipe 0.10.21 wheel, file, output names)
TFLITE_FILES = {
    "detector": ("face_detection", "face_detection_short_range.tflite", ("boxes", "scores")),
    "landmarks": ("face_landmark", "face_landmark.tflite", ("landmarks", "presence")),
    "detector_full": ("face_detection", "face_detection_full_range_sparse.tflite", ("boxes", "scores")),
}
_WHEEL_ENV = "CAMFX_MEDIAPIPE_WHEEL"


def find_face_tflite(kind: str, wheel: str | Path | None = None) -> Path:
    """Locate the .tflite for `kind` ("detector" or "landmarks"): in the mediapipe wheel `wheel`
    or $CAMFX_MEDIAPIPE_WHEEL (extracted to a cache folder), else in an installed mediapipe."""
    if kind not in TFLITE_FILES:
        raise ValueError(f"unknown face model {kind!r}; valid: {', '.join(TFLITE_FILES)}")
    folder, name, _ = TFLITE_FILES[kind]
    wheel = wheel or os.environ.get(_WHEEL_ENV)
    if wheel:
        wheel = Path(wheel)
        with zipfile.ZipFile(wheel) as zf:
            try:
                data = zf.read(f"mediapipe/modules/{folder}/{name}")
            except KeyError:
                raise FileNotFoundError(f"{wheel} has no mediapipe/modules/{folder}/{name}") from None
        target = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "camfx", wheel.stem, name)
        if not target.is_file() or target.read_bytes() != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return target
    spec = importlib.util.find_spec("mediapipe")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root, "modules", folder, name)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{name} not found. Install a mediapipe that ships it (pip install --no-deps mediapipe==0.10.21), "
        f"or point ${_WHEEL_ENV} / --wheel at the wheel file."
    )


class ConstantPad(nn.Module):
    """Zero padding of an NCHW tensor, any axis (the face models pad channels), exported as one
    ONNX Pad with constant pads."""

    def __init__(self, before: tuple[int, int, int, int], after: tuple[int, int, int, int]):
        super().__init__()
        self.before, self.after = before, after

    def forward(self, x):
        return _Pad.apply(x, self.before, self.after)

    def extra_repr(self) -> str:
        return f"before={self.before}, after={self.after}"


class _Pad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, before, after):
        # F.pad lists (last axis before, after, the one before it, ...).
        pads = [p for axis in reversed(range(4)) for p in (before[axis], after[axis])]
        return F.pad(x, pads)

    @staticmethod
    def symbolic(g, x, before, after):
        pads = torch.tensor([*before, *after], dtype=torch.int64)
        return g.op("Pad", x, g.op("Constant", value_t=pads), mode_s="constant")


class ToRows(nn.Module):
    """TFLite RESHAPE of an NHWC tensor: ours is NCHW, so back to NHWC first, then reshape."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.permute(0, 2, 3, 1).reshape(self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class DepthToSpace(nn.Module):
    """TFLite DEPTH_TO_SPACE (TensorFlow's order: channel (i * b + j) * C + c goes to pixel
    offset (i, j), channel c), on NCHW."""

    def __init__(self, block: int):
        super().__init__()
        self.block = block

    def forward(self, x):
        n, c, h, w = x.shape
        b = self.block
        x = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(n, c // (b * b), h * b, w * b)

    def extra_repr(self) -> str:
        return f"block={self.block}"


class Fused(nn.Module):
    """An op and its fused activation (TFLite folds a ReLU into the op before it)."""

    def __init__(self, op: nn.Module, activation: nn.Module):
        super().__init__()
        self.op, self.activation = op, activation

    def forward(self, *xs):
        return self.activation(self.op(*xs))


class Concat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs):
        return torch.cat(xs, dim=self.axis)


def _pad(op: Op, graph: TfliteGraph) -> nn.Module:
    pads = graph.constants[op.inputs[1]]  # NHWC rows of (before, after)
    nchw = [pads[a] for a in (0, 3, 1, 2)]
    return ConstantPad(tuple(int(p[0]) for p in nchw), tuple(int(p[1]) for p in nchw))


def _max_pool(op: Op, graph: TfliteGraph) -> nn.Module:
    _, height, width, _ = graph.shapes[op.inputs[0]]
    if op.options["filter"] != op.options["stride"] or height % op.options["stride"][0] or width % op.options["stride"][1]:
        raise NotImplementedError(f"MAX_POOL_2D {op.options} on {height}x{width}")  # would need SAME pads
    return nn.MaxPool2d(op.options["filter"], op.options["stride"])


class ChannelPRelu(nn.Module):
    """PReLU with a slope per channel, written as slope * x + (1 - slope) * relu(x) (the same
    for any slope: x where x > 0, slope * x below). Exported so, it runs as elementwise ops in
    onnxruntime's blocked (NCHWc) layout between the convolutions: 1.5x faster for the face
    landmark model on a CPU than its PRelu op, which leaves that layout and broadcasts slowly."""

    def __init__(self, slope: torch.Tensor):
        super().__init__()
        self.register_buffer("slope", slope.reshape(1, -1, 1, 1))
        self.register_buffer("rest", 1 - slope.reshape(1, -1, 1, 1))

    def forward(self, x):
        return x * self.slope + torch.relu(x) * self.rest


def _prelu(op: Op, graph: TfliteGraph) -> nn.Module:
    return ChannelPRelu(torch.from_numpy(graph.constants[op.inputs[1]].copy()).reshape(-1).float())


def _reshape(op: Op, graph: TfliteGraph) -> nn.Module:
    if len(graph.shapes[op.inputs[0]]) != 4:
        raise NotImplementedError("RESHAPE of a tensor that is not NHWC")
    return ToRows(graph.shapes[op.outputs[0]])


def _concat(op: Op, graph: TfliteGraph) -> nn.Module:
    ranks = {len(graph.shapes[i]) for i in op.inputs}
    axis = op.options["axis"] % max(ranks)
    return Concat(_NCHW_AXIS[axis] if ranks == {4} else axis)


FACE_BUILDERS = {
    **BUILDERS,
    "PAD": _pad,
    "MAX_POOL_2D": _max_pool,
    "PRELU": _prelu,
    "RESHAPE": _reshape,
    "CONCATENATION": _concat,
    "DEPTH_TO_SPACE": lambda op, g: DepthToSpace(op.options["block_size"]),
}
_ACTIVATIONS = {"NONE": None, "RELU": nn.ReLU, "RELU6": nn.ReLU6}


class FaceNet(nn.Module):
    """One MediaPipe face network, executed op by op as in its .tflite; outputs in file order,
    4-D ones back in NHWC and flattened to [N, values] when they are 1 x 1 pixel."""

    def __init__(self, graph: TfliteGraph, output_names: tuple[str, ...]):
        super().__init__()
        if len(graph.inputs) != 1 or len(graph.outputs) != len(output_names):
            raise ValueError(f"expected one input and {len(output_names)} outputs")
        self._input, self._outputs = graph.inputs[0], graph.outputs
        self.output_names = output_names
        _, height, width, _ = graph.shapes[self._input]
        self.input_size = (height, width)
        self.layers = nn.ModuleDict()
        self._steps: list[tuple[str, tuple[int, ...], int]] = []
        available = {self._input}
        for op in graph.ops:
            if op.name not in FACE_BUILDERS:
                raise NotImplementedError(f"tflite op {op.name} is not supported")
            activation = op.options.get("activation", "NONE")
            if activation not in _ACTIVATIONS:
                raise NotImplementedError(f"{op.name} with fused {activation}")
            key = re.sub(r"\W", "_", graph.names[op.outputs[0]])
            if key in self.layers:
                raise ValueError(f"duplicate tensor name {key!r}")
            activations = tuple(i for i in op.inputs if i not in graph.constants)
            if not set(activations) <= available:
                raise ValueError(f"{op.name} -> {key}: reads a tensor no earlier op produced")
            layer = FACE_BUILDERS[op.name](op, graph)
            if _ACTIVATIONS[activation] is not None:
                layer = Fused(layer, _ACTIVATIONS[activation]())
            self.layers[key] = layer
            self._steps.append((key, activations, op.outputs[0]))
            available.add(op.outputs[0])
        self._flat = {i: len(graph.shapes[i]) == 4 and graph.shapes[i][1:3] == (1, 1) for i in self._outputs}
        self._nhwc = {i: len(graph.shapes[i]) == 4 for i in self._outputs}
        self.eval()

    @classmethod
    def from_kind(cls, kind: str, wheel: str | Path | None = None) -> FaceNet:
        return cls(read_tflite(find_face_tflite(kind, wheel)), TFLITE_FILES[kind][2])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image: float32 [N, H, W, 3] -> the outputs named by `output_names`, in that order."""
        values = {self._input: image.permute(0, 3, 1, 2)}
        for key, inputs, output in self._steps:
            values[output] = self.layers[key](*(values[i] for i in inputs))
        outs = []
        for i in self._outputs:
            value = values[i]
            if self._flat[i]:
                value = value.flatten(1)
            elif self._nhwc[i]:
                value = value.permute(0, 2, 3, 1)
            outs.append(value)
        return tuple(outs)
