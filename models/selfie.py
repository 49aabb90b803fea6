"""PyTorch port of MediaPipe's selfie segmentation models, built from their .tflite files.

The port is generic over the graph rather than a hand-written architecture: every TFLite op
becomes one torch module, named after the tensor it produces, and `forward` runs them in file
order. Weights come straight from the .tflite (fp16, widened to fp32), so the port is exactly
the network MediaPipe ships. Internally it runs NCHW; the public layout is the tflite one:
float32 NHWC RGB in [0, 1] in, [N, H, W, 1] sigmoid probability out.

Rewrites make the exported graph cheaper on onnxruntime's CPU provider without changing what
it computes (only the order of float sums; outputs move by ~1e-4): the first conv reads the
NHWC image directly (no layout Transpose); a 1x1 conv that follows a bilinear upsample runs
before it, at a quarter of the pixels; the squeeze-and-excitation blocks (a mean over H and
W, a per-channel Mul) use ops that stay in onnxruntime's blocked NCHWc layout, so it does not
convert the tensors out of it and back around each of them; and in the decoder, the mean of a
sum with an upsampled tensor is taken before the upsample, without the full-size Add.

Shapes are static (resize targets and "SAME" pads are fixed at build time), so each instance
accepts only its model's input size, as the .tflite does.
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

from .tflite_graph import Op, TfliteGraph, read_tflite

# variant -> file under mediapipe/modules/selfie_segmentation/ in mediapipe 0.10.14 to 0.10.21.
TFLITE_FILES = {
    "general": "selfie_segmentation.tflite",  # 256 x 256
    "landscape": "selfie_segmentation_landscape.tflite",  # 144 high x 256 wide
}
_WHEEL_DIR = "mediapipe/modules/selfie_segmentation"
_WHEEL_ENV = "CAMFX_MEDIAPIPE_WHEEL"


def find_selfie_tflite(variant: str, wheel: str | Path | None = None) -> Path:
    """Locate the .tflite for `variant`.

    Looks in, in order: the mediapipe wheel `wheel`, the wheel named by $CAMFX_MEDIAPIPE_WHEEL
    (the file is extracted to a cache folder), then an installed mediapipe package (found
    without importing it: mediapipe's __init__ pulls in its whole solutions API).
    """
    if variant not in TFLITE_FILES:
        raise ValueError(f"unknown selfie variant {variant!r}; valid: {', '.join(TFLITE_FILES)}")
    name = TFLITE_FILES[variant]
    wheel = wheel or os.environ.get(_WHEEL_ENV)
    if wheel:
        return _extract_from_wheel(Path(wheel), name)
    spec = importlib.util.find_spec("mediapipe")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root, "modules", "selfie_segmentation", name)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{name} not found. Install a mediapipe that ships it "
        "(pip install --no-deps mediapipe==0.10.21), or point "
        f"${_WHEEL_ENV} / --wheel at a mediapipe 0.10.14-0.10.21 wheel file."
    )


def _extract_from_wheel(wheel: Path, name: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "camfx", wheel.stem)
    target = cache / name
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(f"{_WHEEL_DIR}/{name}")
        except KeyError:
            raise FileNotFoundError(
                f"{wheel} has no {_WHEEL_DIR}/{name}; use a mediapipe 0.10.14-0.10.21 wheel "
                "(pip install --no-deps mediapipe==0.10.21)"
            ) from None
    if not target.is_file() or target.read_bytes() != data:
        cache.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return target


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


class Mul(nn.Module):
    def forward(self, a, b):
        return a * b


class ChannelScale(nn.Module):
    """`picture * weights` where `weights` is one value per channel ([N, C, 1, 1]) and `picture`
    is [N, C, H, W], with the weights first repeated to H x W (nearest upsample, exact). The
    product is the same; the export gains a same-shape Mul that onnxruntime keeps in its blocked
    NCHWc layout, where a broadcast Mul makes it convert both operands out and the result back."""

    def __init__(self, weights_input: int, height: int, width: int):
        super().__init__()
        self.weights_input = weights_input  # 0 or 1: which operand holds the per-channel weights
        self.scale = (float(height), float(width))  # a constant scale exports with static shapes

    def forward(self, a, b):
        picture, weights = (b, a) if self.weights_input == 0 else (a, b)
        return picture * F.interpolate(weights, scale_factor=self.scale, mode="nearest")

    def extra_repr(self) -> str:
        return f"weights_input={self.weights_input}, scale={self.scale}"


class ZeroPad(nn.Module):
    """Zero padding (left, right, top, bottom) that exports as one ONNX Pad with constant pads."""

    def __init__(self, left: int, right: int, top: int, bottom: int):
        super().__init__()
        self.pads = (left, right, top, bottom)

    def forward(self, x):
        return _ConstantPad.apply(x, self.pads)

    def extra_repr(self) -> str:
        return f"pads={self.pads}"


class _ConstantPad(torch.autograd.Function):
    # The stock opset >= 11 export of F.pad computes the pads at run time through a reversing
    # Slice that the exporter cannot constant-fold, leaving ~10 shape nodes per pad; this emits
    # the Pad node with its pads as a constant instead.
    @staticmethod
    def forward(ctx, x, pads):
        return F.pad(x, pads)

    @staticmethod
    def symbolic(g, x, pads):
        left, right, top, bottom = pads
        onnx_pads = torch.tensor([0, 0, top, left, 0, 0, bottom, right], dtype=torch.int64)
        return g.op("Pad", x, g.op("Constant", value_t=onnx_pads), mode_s="constant")


class NhwcConv(nn.Module):
    """A conv read straight from an NHWC image: each image row is seen as one channel of W * C
    values, the kernel widened to kw * C and the horizontal stride to sw * C. It sums the same
    products as the NCHW conv, without a layout Transpose in front of it."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int], height: int, width: int):
        super().__init__()
        out, channels, kh, kw = conv.weight.shape
        (sh, sw), left, right, top, bottom = conv.stride, *pads
        self.rows = (height, width * channels)  # constants: the export keeps a static Reshape
        self.pad = ZeroPad(left * channels, right * channels, top, bottom)
        self.conv = nn.Conv2d(1, out, (kh, kw * channels), (sh, sw * channels))
        self.conv.weight.data.copy_(conv.weight.data.permute(0, 2, 3, 1).reshape(out, 1, kh, kw * channels))
        self.conv.bias.data.copy_(conv.bias.data)

    def forward(self, image):
        x = image.reshape(-1, 1, *self.rows)
        return self.conv(self.pad(x) if any(self.pad.pads) else x)


class Mean(nn.Module):
    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.mean(dim=self.dims, keepdim=True)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


def _two_stage_mean(height: int, width: int) -> nn.Module:
    """The mean over H and W as pools onnxruntime runs in its blocked layout (a ReduceMean makes
    it convert out and back): block means, then their mean, equal to the plain mean. Two stages
    because its pooling sums in one float accumulator: a global pool over thousands of pixels
    moves the model's output by up to ~1e-3, blocks of ~sqrt(H * W) keep it at float noise."""
    block = 1
    while height % (2 * block) == 0 and width % (2 * block) == 0 and (2 * block) ** 2 <= (height * width) ** 0.5:
        block *= 2
    if block == 1:
        return nn.AdaptiveAvgPool2d(1)  # exports as GlobalAveragePool
    return nn.Sequential(nn.AvgPool2d(block), nn.AdaptiveAvgPool2d(1))


class SumOfMeans(nn.Module):
    """mean(a) + mean(b), each over H and W."""

    def __init__(self, mean_a: nn.Module, mean_b: nn.Module):
        super().__init__()
        self.mean_a, self.mean_b = mean_a, mean_b

    def forward(self, a, b):
        return self.mean_a(a) + self.mean_b(b)


def _is_upsample2x(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.Upsample) and layer.mode == "bilinear" and not layer.align_corners
            and layer.scale_factor == (2.0, 2.0))


def _is_spatial_mean(layer: nn.Module, height: int, width: int) -> bool:
    """A mean over all of an H x W input, as the squeeze-and-excitation blocks compute it."""
    if isinstance(layer, nn.AvgPool2d):  # the tflite's own pool: its window must be the whole input
        return _pair(layer.kernel_size) == (height, width) and layer.padding == 0
    if isinstance(layer, nn.Sequential):
        return isinstance(layer[-1], nn.AdaptiveAvgPool2d)
    return isinstance(layer, nn.AdaptiveAvgPool2d) and layer.output_size == 1


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


# TFLite NHWC axis -> our NCHW axis.
_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME": output ceil(size / stride); any odd pixel of padding goes after."""
    span = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _conv(op: Op, graph: TfliteGraph, depthwise: bool) -> nn.Module:
    _, height, width, channels = graph.shapes[op.inputs[0]]
    kernel = torch.from_numpy(graph.constants[op.inputs[1]])
    # CONV_2D kernels are [out, kh, kw, in]; DEPTHWISE_CONV_2D ones [1, kh, kw, in * multiplier].
    weight = kernel.permute(3, 0, 1, 2) if depthwise else kernel.permute(0, 3, 1, 2)
    (kh, kw), (sh, sw), (dh, dw) = weight.shape[2:], op.options["stride"], op.options["dilation"]
    groups = channels if depthwise else 1
    conv = nn.Conv2d(channels, weight.shape[0], (kh, kw), (sh, sw), dilation=(dh, dw), groups=groups)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(torch.from_numpy(graph.constants[op.inputs[2]]))
    if op.options["padding"] == "VALID":
        return conv
    top, bottom = _same_pads(height, kh, sh, dh)
    left, right = _same_pads(width, kw, sw, dw)
    if (top, left) == (bottom, right):
        conv.padding = (top, left)
        return conv
    # Asymmetric (stride 2): an explicit Pad keeps the exported Conv a plain symmetric one.
    return nn.Sequential(ZeroPad(left, right, top, bottom), conv)


def _transpose_conv(op: Op, graph: TfliteGraph) -> nn.Module:
    # MediaPipe's Convolution2DTransposeBias: kernel [out, kh, kw, in], bias as third input.
    kernel = torch.from_numpy(graph.constants[op.inputs[1]])
    out_channels, kh, kw, in_channels = kernel.shape
    if (kh, kw) != op.options["stride"]:
        # With kernel == stride every input pixel fills its own output block: no padding either
        # way, so "SAME" and "VALID" agree. Other shapes would need TF's crop rules.
        raise NotImplementedError(f"transpose conv kernel {(kh, kw)} != stride {op.options['stride']}")
    deconv = nn.ConvTranspose2d(in_channels, out_channels, (kh, kw), (kh, kw))
    deconv.weight.data.copy_(kernel.permute(3, 0, 1, 2))
    deconv.bias.data.copy_(torch.from_numpy(graph.constants[op.inputs[2]]))
    return deconv


def _resize(op: Op, graph: TfliteGraph) -> nn.Module:
    if not op.options["half_pixel_centers"] or op.options["align_corners"]:
        raise NotImplementedError(f"RESIZE_BILINEAR with options {op.options}")
    _, height, width, _ = graph.shapes[op.inputs[0]]
    out_height, out_width = (int(s) for s in graph.constants[op.inputs[1]])
    if out_height % height or out_width % width:
        raise NotImplementedError(f"RESIZE_BILINEAR {height}x{width} -> {out_height}x{out_width}")
    # An integer scale (not a size) exports as a Resize with constant scales and static shapes;
    # a size is exported as one computed from Shape at run time.
    scale = (float(out_height // height), float(out_width // width))
    # align_corners=False is TensorFlow's half_pixel_centers mapping.
    return nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)


def _avg_pool(op: Op, graph: TfliteGraph) -> nn.Module:
    if op.options["padding"] != "VALID":  # TFLite's SAME average excludes the padding
        raise NotImplementedError("AVERAGE_POOL_2D with SAME padding")
    return nn.AvgPool2d(op.options["filter"], op.options["stride"])


def _mean(op: Op, graph: TfliteGraph) -> nn.Module:
    if not op.options["keep_dims"]:
        raise NotImplementedError("MEAN without keep_dims")
    return Mean(tuple(sorted(_NCHW_AXIS[int(a)] for a in graph.constants[op.inputs[1]])))


# The op kinds this port knows; the face models (models/face.py) add theirs to these.
BUILDERS = {
    "CONV_2D": lambda op, g: _conv(op, g, depthwise=False),
    "DEPTHWISE_CONV_2D": lambda op, g: _conv(op, g, depthwise=True),
    "Convolution2DTransposeBias": _transpose_conv,
    "RESIZE_BILINEAR": _resize,
    "AVERAGE_POOL_2D": _avg_pool,
    "MEAN": _mean,
    "HARD_SWISH": lambda op, g: nn.Hardswish(),
    "RELU": lambda op, g: nn.ReLU(),
    "LOGISTIC": lambda op, g: nn.Sigmoid(),
    "ADD": lambda op, g: Add(),
    "MUL": lambda op, g: Mul(),
}


class SelfieSegmenter(nn.Module):
    """One MediaPipe selfie segmentation network, executed op by op as in its .tflite."""

    def __init__(self, graph: TfliteGraph, rewrite: bool = True):
        """rewrite=False keeps the ops exactly as the .tflite lists them (the rewrites' reference)."""
        super().__init__()
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ValueError("expected a graph with one input and one output")
        self._input, self._output = graph.inputs[0], graph.outputs[0]
        _, height, width, _ = graph.shapes[self._input]
        self.input_size = (height, width)
        self.layers = nn.ModuleDict()
        self._steps: list[tuple[str, tuple[int, ...], int]] = []  # (layer, activations in, out)
        available = {self._input}
        for op in graph.ops:
            if op.name not in BUILDERS:
                raise NotImplementedError(f"tflite op {op.name} is not supported")
            if op.options.get("activation", "NONE") != "NONE":
                raise NotImplementedError(f"{op.name} with fused {op.options['activation']}")
            key = re.sub(r"\W", "_", graph.names[op.outputs[0]])
            if key in self.layers:
                raise ValueError(f"duplicate tensor name {key!r}")
            activations = tuple(i for i in op.inputs if i not in graph.constants)
            if not set(activations) <= available:
                raise ValueError(f"{op.name} -> {key}: reads a tensor no earlier op produced")
            self.layers[key] = BUILDERS[op.name](op, graph)
            self._steps.append((key, activations, op.outputs[0]))
            available.add(op.outputs[0])
        self._nhwc_input = rewrite and self._read_input_as_nhwc()
        if rewrite:
            self._convs_before_upsamples()
            self._blocked_layout_friendly(graph.shapes)
            self._means_before_upsamples(graph.shapes)
        self.eval()

    def _readers(self, tensor: int) -> list[int]:
        return [i for i, (_, inputs, _) in enumerate(self._steps) if tensor in inputs]

    def _read_input_as_nhwc(self) -> bool:
        """Swap the first conv for an NhwcConv when it is the input's only reader."""
        readers = self._readers(self._input)
        if len(readers) != 1:
            return False
        key = self._steps[readers[0]][0]
        layer = self.layers[key]
        pad, conv = (layer[0], layer[1]) if isinstance(layer, nn.Sequential) else (None, layer)
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.dilation != (1, 1):
            return False
        if pad is not None:
            pads = pad.pads
        else:
            pads = (conv.padding[1], conv.padding[1], conv.padding[0], conv.padding[0])
        self.layers[key] = NhwcConv(conv, pads, *self.input_size)
        return True

    def _blocked_layout_friendly(self, shapes: dict[int, tuple[int, ...]]) -> None:
        """Keep the squeeze-and-excitation blocks in onnxruntime's blocked NCHWc layout: a mean
        over H and W becomes a global average pool, a per-channel Mul a same-shape one."""
        for key, inputs, _ in self._steps:
            layer = self.layers[key]
            if isinstance(layer, Mean) and layer.dims == (2, 3):
                _, height, width, _ = shapes[inputs[0]]
                self.layers[key] = _two_stage_mean(height, width)
            elif isinstance(layer, Mul) and len(inputs) == 2:
                (_, h0, w0, c0), (_, h1, w1, c1) = (shapes[i] for i in inputs)
                if c0 == c1 and (h0, w0) == (1, 1) != (h1, w1):
                    self.layers[key] = ChannelScale(0, h1, w1)
                elif c0 == c1 and (h1, w1) == (1, 1) != (h0, w0):
                    self.layers[key] = ChannelScale(1, h0, w0)

    def _means_before_upsamples(self, shapes: dict[int, tuple[int, ...]]) -> None:
        """mean(a + upsample2x(c)) becomes mean(a) + mean(c) when the sum feeds only that mean
        (the squeeze-and-excitation input of each decoder level): a bilinear x2 upsample with
        TensorFlow's half-pixel centres and clamped edges gives every input pixel a total weight
        of 4, so it keeps the mean. The full-size Add is gone; the extra mean is over 4x fewer
        pixels."""
        while self._fold_one_mean(shapes):
            pass

    def _fold_one_mean(self, shapes: dict[int, tuple[int, ...]]) -> bool:
        producers = {output: i for i, (_, _, output) in enumerate(self._steps)}
        for i, (key, inputs, output) in enumerate(self._steps):
            readers = self._readers(output)
            if (not isinstance(self.layers[key], Add) or len(set(inputs)) != 2 or len(readers) != 1
                    or output == self._output):
                continue
            mean_key, _, mean_output = self._steps[readers[0]]
            mean = self.layers[mean_key]
            _, height, width, _ = shapes[output]
            upsampled = [t for t in inputs
                         if t in producers and _is_upsample2x(self.layers[self._steps[producers[t]][0]])]
            if not _is_spatial_mean(mean, height, width) or len(upsampled) != 1:
                continue
            (other,) = (t for t in inputs if t != upsampled[0])
            _, (small,), _ = self._steps[producers[upsampled[0]]]
            small_mean = (nn.AvgPool2d((height // 2, width // 2)) if isinstance(mean, nn.AvgPool2d)
                          else _two_stage_mean(height // 2, width // 2))
            self.layers[mean_key] = SumOfMeans(mean, small_mean)
            self._steps[readers[0]] = (mean_key, (other, small), mean_output)
            del self._steps[i]
            return True
        return False

    def _convs_before_upsamples(self) -> None:
        """Bilinear upsample -> 1x1 conv becomes 1x1 conv -> upsample. Both are linear, one across
        pixels and one across channels, and each upsampled pixel's weights sum to 1 (so the bias
        passes through): the result is the same, computed on 4x fewer pixels."""
        for i, (key, inputs, output) in enumerate(self._steps):
            readers = self._readers(output)
            if not isinstance(self.layers[key], nn.Upsample) or len(readers) != 1 or output == self._output:
                continue
            conv_key, _, conv_output = self._steps[readers[0]]
            conv = self.layers[conv_key]
            if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                    and conv.padding == (0, 0) and conv.groups == 1):
                continue
            # The conv takes the upsample's place in the order, reading its input; the upsample
            # follows, producing what the conv used to.
            self._steps[i] = (conv_key, inputs, output)
            self._steps[readers[0]] = (key, (output,), conv_output)

    @classmethod
    def from_tflite(cls, path: str | Path, rewrite: bool = True) -> SelfieSegmenter:
        return cls(read_tflite(path), rewrite)

    @classmethod
    def from_variant(cls, variant: str, wheel: str | Path | None = None, rewrite: bool = True) -> SelfieSegmenter:
        return cls.from_tflite(find_selfie_tflite(variant, wheel), rewrite)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: float32 [N, H, W, 3] RGB in [0, 1] -> [N, H, W, 1] foreground probability."""
        values = {self._input: image if self._nhwc_input else image.permute(0, 3, 1, 2)}
        for key, inputs, output in self._steps:
            values[output] = self.layers[key](*(values[i] for i in inputs))
        return values[self._output].permute(0, 2, 3, 1)
