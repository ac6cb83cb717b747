"""`export --any-size`: an ONNX file that takes the decoded photo as it is, (H, W, 3) uint8 of
any size, and does headstart's resize and centre crop in its graph, so a client in any
language needs a plain decoder and nothing else.

The graph is the model's own export with a preprocessing graph in front (ONNX's
`compose.merge_models`): the short side is resized to floor(crop side / crop_pct) and the long
side to floor(that x long / short) (integer arithmetic, as torchvision's Resize), by opset 18's
`Resize` with antialiasing (Pillow's filters are antialiased too: without it a large photo
aliases badly), then the centre crop is sliced out at offsets rounded half to even, as Python
rounds them. Size and aspect limits are the caller's to check: the graph resizes whatever it
is given.
"""

from __future__ import annotations

import math

import numpy as np

from headstart.errors import HeadstartError
from headstart.export.runtime import ANY_SIZE_INPUT as INPUT

_MODES = {"bicubic": "cubic", "bilinear": "linear", "nearest": "nearest"}
_CUBIC_A = -0.5  # Pillow's bicubic kernel


def with_any_size_input(model, preprocessing):
    """The ONNX model (uint8 `pixels` (N, h, w, 3) in) behind a graph that makes those
    pixels from one photo of any size; metadata kept."""
    import onnx

    if preprocessing.interpolation not in _MODES:
        raise HeadstartError(
            f"--any-size: ONNX's Resize has no {preprocessing.interpolation} filter "
            f"(this backbone's); it has {', '.join(_MODES)}"
        )
    front = _preprocessing_graph(preprocessing)
    front.ir_version = model.ir_version
    onnx.checker.check_model(front)
    merged = onnx.compose.merge_models(front, model, io_map=[("network_pixels", "pixels")])
    del merged.metadata_props[:]
    merged.metadata_props.extend(model.metadata_props)
    merged.metadata_props.add(key="headstart.input", value=INPUT)
    return merged


def _preprocessing_graph(preprocessing):
    from onnx import TensorProto, helper

    out_h, out_w = preprocessing.input_size
    nodes = [
        _constant("crop", [out_h, out_w]),
        _constant("zero", [0]),
        _constant("two", [2]),
        _constant("batch_and_channels", [1, 3]),
        _constant("spatial_axes", [2, 3]),
        _constant("halve", np.float32(2.0)),
        _constant("darkest", np.float32(0.0)),
        _constant("brightest", np.float32(255.0)),
        *_resized_size(preprocessing),
        helper.make_node("Concat", ["batch_and_channels", "resized_hw"], ["sizes"], axis=0),
        helper.make_node("Cast", [INPUT], ["image_float"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_float"], ["channels_first"], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["channels_first", "zero"], ["batch"]),
        helper.make_node(
            "Resize",
            ["batch", "", "", "sizes"],
            ["resized"],
            mode=_MODES[preprocessing.interpolation],
            antialias=1,
            cubic_coeff_a=_CUBIC_A,
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Sub", ["resized_hw", "crop"], ["margin"]),
        helper.make_node("Cast", ["margin"], ["margin_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["margin_float", "halve"], ["offset_float"]),
        helper.make_node("Round", ["offset_float"], ["offset_rounded"]),  # half to even
        helper.make_node("Cast", ["offset_rounded"], ["starts"], to=TensorProto.INT64),
        helper.make_node("Add", ["starts", "crop"], ["ends"]),
        helper.make_node("Slice", ["resized", "starts", "ends", "spatial_axes"], ["cropped"]),
        helper.make_node("Round", ["cropped"], ["levels"]),
        helper.make_node("Clip", ["levels", "darkest", "brightest"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["bytes"], to=TensorProto.UINT8),
        helper.make_node("Transpose", ["bytes"], ["network_pixels"], perm=[0, 2, 3, 1]),
    ]
    photo = helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["height", "width", 3])
    pixels = helper.make_tensor_value_info(
        "network_pixels", TensorProto.UINT8, [1, out_h, out_w, 3]
    )
    graph = helper.make_graph(nodes, "any_size_preprocessing", [photo], [pixels])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _resized_size(preprocessing) -> list:
    """Nodes giving `resized_hw`: the size before the crop, as Preprocessing.scaled_size."""
    from onnx import helper

    out_h, out_w = preprocessing.input_size
    if preprocessing.crop_mode == "squash":
        squashed = [
            math.floor(out_h / preprocessing.crop_pct),
            math.floor(out_w / preprocessing.crop_pct),
        ]
        return [_constant("resized_hw", squashed)]
    short = math.floor(min(out_h, out_w) / preprocessing.crop_pct)
    return [
        _constant("short_side", [short]),
        helper.make_node("Shape", [INPUT], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "two"], ["photo_hw"]),
        helper.make_node("ReduceMin", ["photo_hw"], ["photo_short"], keepdims=1),
        helper.make_node("Mul", ["photo_hw", "short_side"], ["scaled_up"]),
        helper.make_node("Div", ["scaled_up", "photo_short"], ["resized_hw"]),  # floors
    ]


def _constant(name: str, values) -> object:
    from onnx import helper, numpy_helper

    array = np.asarray(values, np.int64 if not isinstance(values, np.floating) else np.float32)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))
