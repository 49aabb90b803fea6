"""Our ONNX files executed with torch ops: the PyTorch runtime (CUDA, or CPU for tests).

The bundled segmentation and face models are ONNX files exported from our torch port of MediaPipe's
graphs; serving must not need the .tflite sources or mediapipe. So this module runs the ONNX graph
itself: one torch call per node, weights from the file's initializers, and only the operators
our exports contain (anything else is refused at load, naming the operator). Each node keeps its
ONNX semantics exactly, which the tests check against onnxruntime on the real files.

Shapes follow the input: the batch dimension is free even where the file says 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b=None, *, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), auto_pad=b"NOTSET", **_):
    if auto_pad != b"NOTSET":
        raise NotImplementedError(f"Conv auto_pad {auto_pad!r}")
    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        x = F.pad(x, (left, right, top, bottom))
        top, left = 0, 0
    return F.conv2d(x, w, b, tuple(strides), (top, left), tuple(dilations), group)


def _conv_transpose(x, w, b=None, *, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                    output_padding=(0, 0), **_):
    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        raise NotImplementedError("ConvTranspose with asymmetric pads")
    return F.conv_transpose2d(x, w, b, tuple(strides), (top, left), tuple(output_padding), group, tuple(dilations))


def _pad(x, pads, value=None, *, mode=b"constant", **_):
    if mode != b"constant":
        raise NotImplementedError(f"Pad mode {mode!r}")
    rank = x.dim()
    begins, ends = pads[:rank], pads[rank:]
    torch_pads = []
    for axis in reversed(range(rank)):  # F.pad lists the last axis first
        torch_pads += [int(begins[axis]), int(ends[axis])]
    return F.pad(x, torch_pads, value=0.0 if value is None else float(value))


def _average_pool(x, *, kernel_shape, strides=None, pads=(0, 0, 0, 0), ceil_mode=0, count_include_pad=0, **_):
    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        raise NotImplementedError("AveragePool with asymmetric pads")
    # ONNX's default stride is 1 (torch's is the kernel).
    return F.avg_pool2d(x, tuple(kernel_shape), tuple(strides or (1, 1)), (top, left), bool(ceil_mode),
                        bool(count_include_pad))


def _resize(x, roi=None, scales=None, sizes=None, *, mode=b"nearest", coordinate_transformation_mode=b"half_pixel",
            nearest_mode=b"round_prefer_floor", **_):
    if (mode, coordinate_transformation_mode, nearest_mode) == (b"nearest", b"asymmetric", b"floor") and x.dim() == 4:
        return _resize_nearest(x, scales)
    if mode != b"linear" or coordinate_transformation_mode != b"half_pixel" or x.dim() != 4:
        raise NotImplementedError(f"Resize mode {mode!r} / {coordinate_transformation_mode!r}")
    if sizes is not None and len(sizes):
        return F.interpolate(x, size=[int(s) for s in sizes[2:]], mode="bilinear", align_corners=False)
    if [float(s) for s in scales[:2]] != [1.0, 1.0]:
        raise NotImplementedError("Resize over the batch or channel axes")
    factors = tuple(float(s) for s in scales[2:])
    # half_pixel with an explicit scale is torch's align_corners=False with that scale factor.
    return F.interpolate(x, scale_factor=factors, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)


def _resize_nearest(x, scales):
    # ONNX's asymmetric / floor source pixel, floor(out / scale), is torch's "nearest" with the
    # scale kept as given (the exports repeat a [N, C, 1, 1] tensor this way).
    if scales is None or not len(scales) or [float(s) for s in scales[:2]] != [1.0, 1.0]:
        raise NotImplementedError("nearest Resize needs scales, and none over the batch or channel axes")
    factors = tuple(float(s) for s in scales[2:])
    return F.interpolate(x, scale_factor=factors, mode="nearest", recompute_scale_factor=False)


def _max_pool(x, *, kernel_shape, strides=None, pads=(0, 0, 0, 0), ceil_mode=0, dilations=(1, 1), **_):
    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        raise NotImplementedError("MaxPool with asymmetric pads")
    return F.max_pool2d(x, tuple(kernel_shape), tuple(strides or (1, 1)), (top, left), tuple(dilations), bool(ceil_mode))


def _reshape(x, shape, *, allowzero=0, **_):
    # The batch stays free: a file's leading 1 is whatever batch came in.
    shape = [int(d) for d in shape]
    if shape and shape[0] == 1:
        shape[0] = x.shape[0]
    return x.reshape(shape)


def _reduce_mean(x, axes=None, *, keepdims=1, **attrs):
    axes = attrs.get("axes", axes)
    dims = tuple(int(a) for a in axes) if axes is not None else tuple(range(x.dim()))
    return x.mean(dim=dims, keepdim=bool(keepdims))


OPS: dict[str, Callable] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda x, **_: x.mean(dim=(2, 3), keepdim=True),
    "ReduceMean": _reduce_mean,
    "Resize": _resize,
    "Relu": lambda x, **_: F.relu(x),
    "HardSwish": lambda x, **_: F.hardswish(x),
    "Sigmoid": lambda x, **_: torch.sigmoid(x),
    "Add": lambda a, b, **_: a + b,
    "Mul": lambda a, b, **_: a * b,
    "Transpose": lambda x, *, perm, **_: x.permute(*perm),
    "MaxPool": _max_pool,
    "PRelu": lambda x, slope, **_: torch.where(x >= 0, x, x * slope),
    "Reshape": _reshape,
    "Concat": lambda *xs, axis, **_: torch.cat(xs, dim=axis),
    "Flatten": lambda x, *, axis=1, **_: x.flatten(axis) if axis else x.reshape(1, -1),
    "Identity": lambda x, **_: x,
}

# Inputs read as Python values when the graph was built, not as tensors at run time.
_STATIC_INPUTS = {"Pad": {1, 2}, "Resize": {1, 2, 3}, "ReduceMean": {1}, "Reshape": {1}}


class OnnxTorchModule(nn.Module):
    """One ONNX graph as a torch module: `forward(**inputs)` -> dict of outputs, by ONNX name."""

    def __init__(self, model):
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node} - set(OPS) - {"Constant"})
        if unsupported:
            raise NotImplementedError(f"the torch runtime does not implement ONNX {', '.join(unsupported)}")
        arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                arrays[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        self.weights = nn.ParameterDict()  # ONNX names may hold dots: keyed by position
        self._tensor_slots: dict[str, str] = {}
        self._values: dict[str, np.ndarray] = {}
        self._steps: list[tuple[Callable, list, str, dict]] = []  # (op, inputs, output, attributes)
        for node in graph.node:
            if node.op_type == "Constant":
                continue
            if len(node.output) != 1:
                raise NotImplementedError(f"{node.op_type} with {len(node.output)} outputs")
            static = _STATIC_INPUTS.get(node.op_type, set())
            inputs = []
            for i, name in enumerate(node.input):
                if not name:
                    inputs.append(("none", None))
                elif i in static:
                    if name not in arrays:
                        raise NotImplementedError(f"{node.op_type} input {name!r} is computed at run time")
                    inputs.append(("value", arrays[name].tolist()))
                elif name in arrays:
                    inputs.append(("weight", self._weight(name, arrays[name])))
                else:
                    inputs.append(("activation", name))
            self._steps.append((OPS[node.op_type], inputs, node.output[0], _attrs(node)))
        self.input_names = [i.name for i in graph.input if i.name not in arrays]
        self.output_names = [o.name for o in graph.output]
        self.eval().requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path) -> "OnnxTorchModule":
        import onnx

        return cls(onnx.load(str(path)))

    def _weight(self, name: str, array: np.ndarray) -> str:
        if name not in self._tensor_slots:
            slot = f"w{len(self._tensor_slots)}"
            self.weights[slot] = nn.Parameter(torch.from_numpy(array.copy()), requires_grad=False)
            self._tensor_slots[name] = slot
        return self._tensor_slots[name]

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"missing inputs: {', '.join(sorted(missing))}")
        values = dict(inputs)
        for op, args, output, attributes in self._steps:
            resolved = []
            for kind, ref in args:
                if kind == "activation":
                    resolved.append(values[ref])
                elif kind == "weight":
                    resolved.append(self.weights[ref])
                else:
                    resolved.append(ref)
            values[output] = op(*resolved, **attributes)
        return {name: values[name] for name in self.output_names}
