"""Read a single-subgraph .tflite file into plain Python: ops in execution order, constants.

Only what a port needs is kept: each op's name, input/output tensor indices and its options as
a small dict; every tensor's name and shape; and the constant tensors as numpy arrays. fp16
weights behind DEQUANTIZE are folded into fp32 constants (DEQUANTIZE of fp16 is an exact
widening), so the op list holds only real compute. The `tflite` flatbuffer bindings are
imported lazily: they are an export-time dependency, not a serving one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_TENSOR_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
# TfLitePadding in the C API (used by custom-op options) counts from "unknown".
_C_PADDING = {1: "SAME", 2: "VALID"}


@dataclass(frozen=True)
class Op:
    name: str  # builtin name ("CONV_2D") or custom code ("Convolution2DTransposeBias")
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TfliteGraph:
    ops: list[Op]
    constants: dict[int, np.ndarray]  # tensor index -> value, fp16 already widened to fp32
    names: dict[int, str]
    shapes: dict[int, tuple[int, ...]]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _import_tflite():
    try:
        import tflite
    except ImportError as exc:
        raise ImportError(
            "reading .tflite files needs the `tflite` package: pip install 'camfx[export]'"
        ) from exc
    return tflite


def _options(tflite, name: str, op) -> dict:
    """The options of the op kinds the selfie and face models use, as a plain dict."""
    table = op.BuiltinOptions()
    conv_like = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
    }
    if name in conv_like:
        o = conv_like[name]()
        o.Init(table.Bytes, table.Pos)
        opts = {
            "padding": _PADDING[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "activation": _ACTIVATION[o.FusedActivationFunction()],
        }
        if name == "DEPTHWISE_CONV_2D":
            opts["depth_multiplier"] = o.DepthMultiplier()
        return opts
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = tflite.Pool2DOptions()
        o.Init(table.Bytes, table.Pos)
        return {
            "padding": _PADDING[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "filter": (o.FilterHeight(), o.FilterWidth()),
            "activation": _ACTIVATION[o.FusedActivationFunction()],
        }
    if name in ("ADD", "MUL"):
        o = (tflite.AddOptions if name == "ADD" else tflite.MulOptions)()
        o.Init(table.Bytes, table.Pos)
        return {"activation": _ACTIVATION[o.FusedActivationFunction()]}
    if name == "CONCATENATION":
        o = tflite.ConcatenationOptions()
        o.Init(table.Bytes, table.Pos)
        return {"axis": o.Axis(), "activation": _ACTIVATION[o.FusedActivationFunction()]}
    if name == "MEAN":
        o = tflite.ReducerOptions()
        o.Init(table.Bytes, table.Pos)
        return {"keep_dims": bool(o.KeepDims())}
    if name == "RESIZE_BILINEAR":
        o = tflite.ResizeBilinearOptions()
        o.Init(table.Bytes, table.Pos)
        return {"align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
    if name == "DEPTH_TO_SPACE":
        o = tflite.DepthToSpaceOptions()
        o.Init(table.Bytes, table.Pos)
        return {"block_size": o.BlockSize()}
    if name == "Convolution2DTransposeBias":
        # MediaPipe's custom op stores a raw TfLiteTransposeConvParams: {padding, stride_w, stride_h}.
        padding, stride_w, stride_h = op.CustomOptionsAsNumpy().view(np.int32)
        return {"padding": _C_PADDING[int(padding)], "stride": (int(stride_h), int(stride_w))}
    return {}


def _index_vector(tflite, metadata, segments: bool) -> np.ndarray:
    """A CSR dimension's segments or indices, whichever integer width the file chose."""
    kind = metadata.ArraySegmentsType() if segments else metadata.ArrayIndicesType()
    table = metadata.ArraySegments() if segments else metadata.ArrayIndices()
    vector = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}[kind]()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy().astype(np.int64)


def _densified(tflite, sparsity, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A sparse constant (TFLite's sparsity format) as its dense array. Supported: the layout
    the face models use, dimensions in order, no blocks, dense ones first and CSR last."""
    order = sparsity.TraversalOrderAsNumpy()
    formats = [sparsity.DimMetadata(d).Format() for d in range(sparsity.DimMetadataLength())]
    if list(order) != list(range(len(shape))) or sparsity.BlockMapLength() or formats[:-1] != [0] * (len(shape) - 1) \
            or formats[-1] != 1:
        raise NotImplementedError(f"sparse tensor layout {list(order)} {formats}")
    last = sparsity.DimMetadata(len(shape) - 1)
    segments, indices = _index_vector(tflite, last, True), _index_vector(tflite, last, False)
    dense = np.zeros((int(np.prod(shape[:-1])), shape[-1]), values.dtype)
    rows = np.repeat(np.arange(len(segments) - 1), np.diff(segments))
    dense[rows, indices] = values[: len(indices)]
    return dense.reshape(shape)


def read_tflite(path: str | Path) -> TfliteGraph:
    """Parse `path` into a `TfliteGraph` (first subgraph only)."""
    tflite = _import_tflite()
    from tflite.utils import opcode2name

    model = tflite.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"{path}: expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)

    names, shapes, constants = {}, {}, {}
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        names[i] = tensor.Name().decode()
        shapes[i] = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, np.ndarray) and data.size:
            dtype = _TENSOR_DTYPES[tensor.Type()]
            if tensor.Sparsity() is not None:
                constants[i] = _densified(tflite, tensor.Sparsity(), data.view(dtype), shapes[i])
            else:
                constants[i] = data.view(dtype).reshape(shapes[i]).copy()

    ops = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Newer files keep small opcodes in the deprecated int8 field; take whichever is set.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = code.CustomCode().decode() if opcode2name(builtin) == "CUSTOM" else opcode2name(builtin)
        inputs = tuple(int(i) for i in op.InputsAsNumpy())
        outputs = tuple(int(i) for i in op.OutputsAsNumpy())
        if name == "DENSIFY" and inputs[0] in constants:  # the weights were densified when read
            constants[outputs[0]] = constants[inputs[0]]
            continue
        if name == "DEQUANTIZE" and inputs[0] in constants and constants[inputs[0]].dtype == np.float16:
            constants[outputs[0]] = constants[inputs[0]].astype(np.float32)
            continue
        ops.append(Op(name, inputs, outputs, _options(tflite, name, op)))

    return TfliteGraph(
        ops=ops,
        constants=constants,
        names=names,
        shapes=shapes,
        inputs=tuple(int(i) for i in graph.InputsAsNumpy()),
        outputs=tuple(int(i) for i in graph.OutputsAsNumpy()),
    )
