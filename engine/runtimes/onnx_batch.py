"""A model's batch dimension made symbolic, so one graph serves 1..max_batch sessions at once
(onnxruntime when batching sessions, TensorRT plans built by `camfx export engines`)."""

from __future__ import annotations

BATCH_DIM = "batch"


def symbolic_batch(model, source: str = "model"):
    """`model` (an onnx ModelProto, changed in place) with the batch dimension of every input and
    output made symbolic; returns it and {"inputs"|"outputs": {name: shape at batch 1}}."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {"inputs": {}, "outputs": {}}
    initializers = {i.name for i in model.graph.initializer}
    for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        for value in values:
            if value.name in initializers:
                continue
            dims = value.type.tensor_type.shape.dim
            rest = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
            if not dims or None in rest or any(v <= 0 for v in rest):
                raise ValueError(f"{source}: {value.name} needs fixed dimensions after the batch, got {list(dims)}")
            first = dims[0]
            if first.HasField("dim_value") and first.dim_value != 1:
                raise ValueError(f"{source}: {value.name} has batch {first.dim_value}; export at batch 1")
            first.ClearField("dim_value")
            first.dim_param = BATCH_DIM
            shapes[kind][value.name] = (1, *rest)
    # Shapes inferred for inner values were for batch 1: drop them, runtimes infer their own.
    del model.graph.value_info[:]
    return model, shapes
