"""Write the EfficientNet-Lite0 encoder as a TFLite flatbuffer, without TensorFlow.

The graph is built straight from the BN-folded ONNX encoder (same weights, same
order): CONV_2D / DEPTHWISE_CONV_2D with padding SAME (TFLite's SAME is
TensorFlow's SAME, which is exactly the Conv2dStaticSamePadding of the source
model: the odd padding pixel goes bottom/right) and fused RELU6, ADD for the
residuals, MEAN over H,W for the global average pool. Input `image` NHWC
[1,224,224,3] f32 (normalised (u8-127)/128, RGB), output `latent` [1,1280] f32.

The int8 encoder (`onnx_qdq_to_tflite`) is translated from the recipe's QDQ
ONNX (encoder-int8.onnx), reusing its quantization exactly: int8 weights
per output channel (zero point 0), int32 biases at input_scale*weight_scale,
int8 activations per tensor with the ONNX QuantizeLinear scale and zero
point. Each QDQ pair becomes the int8 tensor between two TFLite int8 ops; a
Clip that the quantizer folded into a Conv's output range becomes a fused
RELU6; QUANTIZE/DEQUANTIZE at the ends keep `image` and `latent` f32, as in
the ONNX file. Convs that the recipe keeps in float (nodes_to_exclude: the stem
and the first block, whose weights are plain f32 initializers) stay f32
CONV_2D / DEPTHWISE_CONV_2D (with their Clip fused as RELU6), and a QUANTIZE
op is inserted where the ONNX graph first quantizes a float activation.

Uses the `tflite` package (generated flatbuffers bindings of the TFLite schema)
and `flatbuffers`. Pure serialisation, so the output is bit-reproducible.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import onnx
from onnx import numpy_helper
import tflite as T  # generated TFLite schema bindings; names are re-exported at package level


class _Graph:
    def __init__(self):
        self.buffers: list[bytes | None] = [None]  # buffer 0 is the empty sentinel
        # name, shape, type, buffer, quantization (scales, zero points, axis) or None
        self.tensors: list[tuple[str, list[int], int, int, tuple | None]] = []
        self.ops: list[tuple[int, list[int], list[int], int, tuple]] = []
        self.opcodes: list[int] = []
        self.versions: dict[int, int] = {}  # builtin code -> operator version

    def tensor(self, name, shape, ttype=T.TensorType.FLOAT32, data: np.ndarray | None = None,
               quant: tuple | None = None):
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append((name, list(shape), ttype, buf, quant))
        return len(self.tensors) - 1

    def const(self, name, arr: np.ndarray, quant: tuple | None = None):
        arr = np.ascontiguousarray(arr)
        ttype = {np.dtype("<f4"): T.TensorType.FLOAT32,
                 np.dtype("<i4"): T.TensorType.INT32,
                 np.dtype("i1"): T.TensorType.INT8}[arr.dtype]
        return self.tensor(name, arr.shape, ttype, arr.astype(arr.dtype.newbyteorder("<")), quant)

    def op(self, code, inputs, outputs, opt_type, opt, version=1):
        if code not in self.opcodes:
            self.opcodes.append(code)
        # One OperatorCode per builtin, so every use must agree on the version.
        assert self.versions.setdefault(code, version) == version, (code, version)
        self.ops.append((self.opcodes.index(code), inputs, outputs, opt_type, opt))


def _vec_i32(b, start, vals):
    start(b, len(vals))
    for v in reversed(vals):
        b.PrependInt32(v)
    return b.EndVector()


def _vec_off(b, start, offs):
    start(b, len(offs))
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _bytes_aligned(b, data: bytes, align=16):
    b.StartVector(1, len(data), align)
    b.head = b.Head() - len(data)
    b.Bytes[b.Head():b.Head() + len(data)] = data
    return b.EndVector()


def _serialise(g: _Graph, description: str) -> bytes:
    b = flatbuffers.Builder(16 << 20)
    # buffers (data first, so the big blobs sit at the end of the file)
    buf_offs = []
    for data in g.buffers:
        d = _bytes_aligned(b, data) if data else None
        T.BufferStart(b)
        if d is not None:
            T.BufferAddData(b, d)
        buf_offs.append(T.BufferEnd(b))
    # tensors
    t_offs = []
    for name, shape, ttype, buf, quant in g.tensors:
        q = _quantization(b, *quant) if quant is not None else None
        n = b.CreateString(name)
        s = _vec_i32(b, T.TensorStartShapeVector, shape)
        T.TensorStart(b)
        T.TensorAddShape(b, s)
        T.TensorAddType(b, ttype)
        T.TensorAddBuffer(b, buf)
        T.TensorAddName(b, n)
        if q is not None:
            T.TensorAddQuantization(b, q)
        t_offs.append(T.TensorEnd(b))
    # operators
    o_offs = []
    for opcode_index, ins, outs, opt_type, opt in g.ops:
        opt_off = _options(b, opt_type, opt)
        i = _vec_i32(b, T.OperatorStartInputsVector, ins)
        o = _vec_i32(b, T.OperatorStartOutputsVector, outs)
        T.OperatorStart(b)
        T.OperatorAddOpcodeIndex(b, opcode_index)
        T.OperatorAddInputs(b, i)
        T.OperatorAddOutputs(b, o)
        T.OperatorAddBuiltinOptionsType(b, opt_type)
        T.OperatorAddBuiltinOptions(b, opt_off)
        o_offs.append(T.OperatorEnd(b))
    tv = _vec_off(b, T.SubGraphStartTensorsVector, t_offs)
    iv = _vec_i32(b, T.SubGraphStartInputsVector, [0])
    ov = _vec_i32(b, T.SubGraphStartOutputsVector, [g.output])
    opv = _vec_off(b, T.SubGraphStartOperatorsVector, o_offs)
    sgname = b.CreateString("main")
    T.SubGraphStart(b)
    T.SubGraphAddTensors(b, tv)
    T.SubGraphAddInputs(b, iv)
    T.SubGraphAddOutputs(b, ov)
    T.SubGraphAddOperators(b, opv)
    T.SubGraphAddName(b, sgname)
    sg = T.SubGraphEnd(b)
    oc_offs = []
    for code in g.opcodes:
        T.OperatorCodeStart(b)
        T.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        T.OperatorCodeAddBuiltinCode(b, code)
        T.OperatorCodeAddVersion(b, g.versions[code])
        oc_offs.append(T.OperatorCodeEnd(b))
    ocv = _vec_off(b, T.ModelStartOperatorCodesVector, oc_offs)
    sgv = _vec_off(b, T.ModelStartSubgraphsVector, [sg])
    bv = _vec_off(b, T.ModelStartBuffersVector, buf_offs)
    desc = b.CreateString(description)
    T.ModelStart(b)
    T.ModelAddVersion(b, 3)
    T.ModelAddOperatorCodes(b, ocv)
    T.ModelAddSubgraphs(b, sgv)
    T.ModelAddDescription(b, desc)
    T.ModelAddBuffers(b, bv)
    m = T.ModelEnd(b)
    b.Finish(m, file_identifier=b"TFL3")
    return bytes(b.Output())


def _quantization(b, scales, zero_points, axis):
    scales = [float(v) for v in np.asarray(scales, dtype=np.float32).ravel()]
    zero_points = [int(v) for v in np.asarray(zero_points).ravel()]
    assert len(scales) == len(zero_points)
    T.QuantizationParametersStartScaleVector(b, len(scales))
    for v in reversed(scales):
        b.PrependFloat32(v)
    sv = b.EndVector()
    T.QuantizationParametersStartZeroPointVector(b, len(zero_points))
    for v in reversed(zero_points):
        b.PrependInt64(v)
    zv = b.EndVector()
    T.QuantizationParametersStart(b)
    T.QuantizationParametersAddScale(b, sv)
    T.QuantizationParametersAddZeroPoint(b, zv)
    T.QuantizationParametersAddQuantizedDimension(b, axis)
    return T.QuantizationParametersEnd(b)


def _options(b, opt_type, opt):
    kind = opt[0]
    if kind == "conv":
        _, stride, act = opt
        T.Conv2DOptionsStart(b)
        T.Conv2DOptionsAddPadding(b, T.Padding.SAME)
        T.Conv2DOptionsAddStrideW(b, stride)
        T.Conv2DOptionsAddStrideH(b, stride)
        T.Conv2DOptionsAddFusedActivationFunction(b, act)
        T.Conv2DOptionsAddDilationWFactor(b, 1)
        T.Conv2DOptionsAddDilationHFactor(b, 1)
        return T.Conv2DOptionsEnd(b)
    if kind == "dw":
        _, stride, act = opt
        T.DepthwiseConv2DOptionsStart(b)
        T.DepthwiseConv2DOptionsAddPadding(b, T.Padding.SAME)
        T.DepthwiseConv2DOptionsAddStrideW(b, stride)
        T.DepthwiseConv2DOptionsAddStrideH(b, stride)
        T.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        T.DepthwiseConv2DOptionsAddFusedActivationFunction(b, act)
        T.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        T.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        return T.DepthwiseConv2DOptionsEnd(b)
    if kind == "add":
        T.AddOptionsStart(b)
        T.AddOptionsAddFusedActivationFunction(b, T.ActivationFunctionType.NONE)
        return T.AddOptionsEnd(b)
    if kind == "mean":
        T.ReducerOptionsStart(b)
        T.ReducerOptionsAddKeepDims(b, False)
        return T.ReducerOptionsEnd(b)
    if kind == "quantize":
        T.QuantizeOptionsStart(b)
        return T.QuantizeOptionsEnd(b)
    if kind == "dequantize":
        T.DequantizeOptionsStart(b)
        return T.DequantizeOptionsEnd(b)
    raise ValueError(kind)


def onnx_to_tflite(model: onnx.ModelProto, description: str) -> bytes:
    """Translate the recipe's own fp32 ONNX encoder (Conv/Clip/Add/GlobalAveragePool/Flatten)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    g = _Graph()
    g.tensor("image", [1, 224, 224, 3])
    shapes = {"image": (224, 224, 3)}  # H, W, C of each activation
    ids = {"image": 0}
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    k = 0
    while k < len(nodes):
        n = nodes[k]
        if n.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            w, bias = inits[n.input[1]], inits[n.input[2]]
            stride = attrs["strides"][0]
            h, wd, c = shapes[n.input[0]]
            oh, ow = -(-h // stride), -(-wd // stride)
            # The recipe emits SAME padding only; make sure that is what this node has.
            kk = attrs["kernel_shape"][0]
            tot = max((oh - 1) * stride + kk - h, 0)
            assert list(attrs["pads"]) == [tot // 2, tot // 2, tot - tot // 2, tot - tot // 2], n.name
            out_name = n.output[0]
            act = T.ActivationFunctionType.NONE
            nxt = consumers.get(out_name, [])
            if len(nxt) == 1 and nxt[0].op_type == "Clip":
                lo, hi = inits[nxt[0].input[1]].item(), inits[nxt[0].input[2]].item()
                assert (lo, hi) == (0.0, 6.0)
                act = T.ActivationFunctionType.RELU6
                out_name = nxt[0].output[0]
                k += 1
                assert nodes[k] is nxt[0]
            depthwise = attrs.get("group", 1) > 1
            cout = w.shape[0]
            if depthwise:
                assert attrs["group"] == cout == c and w.shape[1] == 1
                wt = g.const(f"{n.name}.weight", w[:, 0].transpose(1, 2, 0)[None].astype("<f4"))
            else:
                wt = g.const(f"{n.name}.weight", w.transpose(0, 2, 3, 1).astype("<f4"))
            bt = g.const(f"{n.name}.bias", bias.astype("<f4"))
            ot = g.tensor(out_name, [1, oh, ow, cout])
            ids[out_name] = ot
            shapes[out_name] = (oh, ow, cout)
            if depthwise:
                g.op(T.BuiltinOperator.DEPTHWISE_CONV_2D, [ids[n.input[0]], wt, bt], [ot],
                     T.BuiltinOptions.DepthwiseConv2DOptions, ("dw", stride, act))
            else:
                g.op(T.BuiltinOperator.CONV_2D, [ids[n.input[0]], wt, bt], [ot],
                     T.BuiltinOptions.Conv2DOptions, ("conv", stride, act))
        elif n.op_type == "Add":
            a, c2 = n.input
            assert shapes[a] == shapes[c2]
            ot = g.tensor(n.output[0], [1, *shapes[a]])
            ids[n.output[0]] = ot
            shapes[n.output[0]] = shapes[a]
            g.op(T.BuiltinOperator.ADD, [ids[a], ids[c2]], [ot], T.BuiltinOptions.AddOptions, ("add",))
        elif n.op_type == "GlobalAveragePool":
            assert nodes[k + 1].op_type == "Flatten" and nodes[k + 1].input[0] == n.output[0]
            h, wd, c = shapes[n.input[0]]
            axes = g.const("mean_axes", np.array([1, 2], dtype="<i4"))
            ot = g.tensor("latent", [1, c])
            g.op(T.BuiltinOperator.MEAN, [ids[n.input[0]], axes], [ot],
                 T.BuiltinOptions.ReducerOptions, ("mean",))
            g.output = ot
            k += 1
        else:
            raise ValueError(f"unsupported op {n.op_type}")
        k += 1
    return _serialise(g, description)


# Operator versions for int8 kernels, as TensorFlow's converter assigns them
# (tensorflow/lite/tools/versioning/op_version.cc): per-channel int8 CONV_2D and
# DEPTHWISE_CONV_2D are version 3, int8 ADD/MEAN/QUANTIZE/DEQUANTIZE version 2.
# One OperatorCode serves each builtin, so the f32 convs of the float prefix share
# version 3 (a minimum kernel version; the f32 kernels are in every version).
_INT8_VERSIONS = {"conv": 3, "dw": 3, "add": 2, "mean": 2, "quantize": 2, "dequantize": 2}


def onnx_qdq_to_tflite(model: onnx.ModelProto, description: str) -> bytes:
    """Translate the recipe's QDQ int8 ONNX encoder (QuantizeLinear/DequantizeLinear
    around Conv/Add/GlobalAveragePool/Flatten, as onnxruntime.quantization writes it)
    into a fully int8 TFLite graph with f32 `image` in and f32 `latent` out."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = list(model.graph.node)
    const_dq = {}   # DequantizeLinear output -> (quantized array, scales, zero points, axis)
    act_q = {}      # float activation -> (scale, zero point) of its QuantizeLinear
    q_source = {}   # QuantizeLinear output -> the float activation it quantizes
    act_of = {}     # DequantizeLinear output -> the float activation it restores
    compute = []
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            q, scale, zp = (inits[i] for i in n.input)
            const_dq[n.output[0]] = (q, scale, zp, attrs.get("axis", 1))
        elif n.op_type == "QuantizeLinear":
            scale, zp = inits[n.input[1]], inits[n.input[2]]
            assert scale.shape == () and zp.dtype == np.int8, n.name
            params = (float(scale), int(zp))
            assert act_q.setdefault(n.input[0], params) == params, f"{n.input[0]} quantized twice"
            q_source[n.output[0]] = n.input[0]
        elif n.op_type == "DequantizeLinear" and n.input[0] not in q_source:
            # A float (excluded) op consumes this weight/bias only through a DQ: not
            # written by the quantizer, which leaves excluded nodes' initializers f32.
            raise ValueError(f"unexpected DequantizeLinear {n.name}")
        elif n.op_type == "DequantizeLinear":
            src = q_source[n.input[0]]
            assert (float(inits[n.input[1]]), int(inits[n.input[2]])) == act_q[src], n.name
            act_of[n.output[0]] = src
        else:
            compute.append((n, attrs))

    g = _Graph()
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "image" and graph_output.name == "latent"
    shapes = {"image": (224, 224, 3)}  # H, W, C of each activation
    g.tensor("image", [1, 224, 224, 3])  # f32, tensor 0 = subgraph input
    ids = {}

    def act_tensor(name, hwc):
        scale, zp = act_q[name]
        shape = [1, *hwc] if len(hwc) == 3 else [1, hwc[0]]
        ids[name] = g.tensor(name, shape, T.TensorType.INT8, quant=([scale], [zp], 0))
        shapes[name] = hwc
        return ids[name]

    def op(code, ins, outs, opt_type, opt):
        g.op(code, ins, outs, opt_type, opt, version=_INT8_VERSIONS[opt[0]])

    f32_ids = {"image": 0}  # float activations (the graph input, outputs of float ops)

    def produced_f32(name, hwc, tid):
        # A float activation; if the ONNX graph quantizes it, QUANTIZE it right away.
        f32_ids[name] = tid
        shapes[name] = hwc
        if name in act_q:
            op(T.BuiltinOperator.QUANTIZE, [tid], [act_tensor(name, hwc)],
               T.BuiltinOptions.QuantizeOptions, ("quantize",))

    produced_f32("image", (224, 224, 3), 0)

    latent_int8 = None
    consumed = set()
    for k, (n, attrs) in enumerate(compute):
        if id(n) in consumed:
            continue
        if n.op_type == "Conv" and n.input[1] in inits:
            # Kept in float by the recipe: f32 weights and bias, f32 in and out.
            x = n.input[0]
            assert x in f32_ids, f"float conv {n.name} needs a float input"
            w, bias = inits[n.input[1]], inits[n.input[2]]
            assert w.dtype == np.float32 and bias.dtype == np.float32, n.name
            stride = attrs["strides"][0]
            h, wd, c = shapes[x]
            oh, ow = -(-h // stride), -(-wd // stride)
            kk = attrs["kernel_shape"][0]
            tot = max((oh - 1) * stride + kk - h, 0)
            assert list(attrs["pads"]) == [tot // 2, tot // 2, tot - tot // 2, tot - tot // 2], n.name
            out = n.output[0]
            act = T.ActivationFunctionType.NONE
            nxt = [m for m, _ in compute[k + 1:] if out in m.input]
            if len(nxt) == 1 and nxt[0].op_type == "Clip":
                lo, hi = inits[nxt[0].input[1]].item(), inits[nxt[0].input[2]].item()
                assert (lo, hi) == (0.0, 6.0), nxt[0].name
                act = T.ActivationFunctionType.RELU6
                out = nxt[0].output[0]
                consumed.add(id(nxt[0]))
            depthwise = attrs.get("group", 1) > 1
            cout = w.shape[0]
            if depthwise:
                assert attrs["group"] == cout == c and w.shape[1] == 1
                wt = g.const(f"{n.name}.weight", w[:, 0].transpose(1, 2, 0)[None].astype("<f4"))
            else:
                wt = g.const(f"{n.name}.weight", w.transpose(0, 2, 3, 1).astype("<f4"))
            bt = g.const(f"{n.name}.bias", bias.astype("<f4"))
            ot = g.tensor(out, [1, oh, ow, cout])
            if depthwise:
                op(T.BuiltinOperator.DEPTHWISE_CONV_2D, [f32_ids[x], wt, bt], [ot],
                   T.BuiltinOptions.DepthwiseConv2DOptions, ("dw", stride, act))
            else:
                op(T.BuiltinOperator.CONV_2D, [f32_ids[x], wt, bt], [ot],
                   T.BuiltinOptions.Conv2DOptions, ("conv", stride, act))
            produced_f32(out, (oh, ow, cout), ot)
        elif n.op_type == "Conv":
            x = act_of[n.input[0]]
            wq, ws, wz, waxis = const_dq[n.input[1]]
            bq, bs, bz, baxis = const_dq[n.input[2]]
            assert wq.dtype == np.int8 and not wz.any() and waxis == 0, n.name
            assert bq.dtype == np.int32 and not bz.any() and baxis == 0, n.name
            # TFLite requires bias_scale == input_scale * weight_scale (it checks to 1e-6).
            expected = np.float64(act_q[x][0]) * ws.astype(np.float64)
            assert np.allclose(bs, expected, rtol=1e-6, atol=0), n.name
            stride = attrs["strides"][0]
            h, wd, c = shapes[x]
            oh, ow = -(-h // stride), -(-wd // stride)
            kk = attrs["kernel_shape"][0]
            tot = max((oh - 1) * stride + kk - h, 0)
            assert list(attrs["pads"]) == [tot // 2, tot // 2, tot - tot // 2, tot - tot // 2], n.name
            out = n.output[0]
            # The quantizer drops Clip(0, 6) when the output range already lies in
            # [0, 6]; TFLite clamps to both, so the fused RELU6 changes nothing and
            # says what the float graph does.
            if out.endswith(".relu6"):
                scale, zp = act_q[out]
                assert zp == -128 and scale * 255 <= 6.0 + 1e-6, (out, scale, zp)
                act = T.ActivationFunctionType.RELU6
            else:
                act = T.ActivationFunctionType.NONE
            depthwise = attrs.get("group", 1) > 1
            cout = wq.shape[0]
            if depthwise:
                assert attrs["group"] == cout == c and wq.shape[1] == 1
                wt = g.const(f"{n.name}.weight", wq[:, 0].transpose(1, 2, 0)[None],
                             quant=(ws, np.zeros(cout, np.int64), 3))
            else:
                wt = g.const(f"{n.name}.weight", wq.transpose(0, 2, 3, 1),
                             quant=(ws, np.zeros(cout, np.int64), 0))
            bt = g.const(f"{n.name}.bias", bq.astype("<i4"), quant=(bs, np.zeros(cout, np.int64), 0))
            ot = act_tensor(out, (oh, ow, cout))
            if depthwise:
                op(T.BuiltinOperator.DEPTHWISE_CONV_2D, [ids[x], wt, bt], [ot],
                   T.BuiltinOptions.DepthwiseConv2DOptions, ("dw", stride, act))
            else:
                op(T.BuiltinOperator.CONV_2D, [ids[x], wt, bt], [ot],
                   T.BuiltinOptions.Conv2DOptions, ("conv", stride, act))
        elif n.op_type == "Add":
            a, c2 = (act_of[i] for i in n.input)
            assert shapes[a] == shapes[c2]
            ot = act_tensor(n.output[0], shapes[a])
            op(T.BuiltinOperator.ADD, [ids[a], ids[c2]], [ot], T.BuiltinOptions.AddOptions, ("add",))
        elif n.op_type == "GlobalAveragePool":
            x = act_of[n.input[0]]
            axes = g.const("mean_axes", np.array([1, 2], dtype="<i4"))
            ot = act_tensor(n.output[0], (shapes[x][2],))
            op(T.BuiltinOperator.MEAN, [ids[x], axes], [ot], T.BuiltinOptions.ReducerOptions, ("mean",))
        elif n.op_type == "Flatten":
            # [1, C, 1, 1] -> [1, C]: MEAN without keep_dims already gave [1, C].
            # The quantizer re-quantizes with the same parameters, so it is the same tensor.
            x = act_of[n.input[0]]
            assert act_q[n.output[0]] == act_q[x], n.name
            ids[n.output[0]] = ids[x]
            shapes[n.output[0]] = shapes[x]
            latent_int8 = n.output[0]
        else:
            raise ValueError(f"unsupported op {n.op_type}")
    assert latent_int8 is not None
    ot = g.tensor("latent", [1, shapes[latent_int8][0]])
    op(T.BuiltinOperator.DEQUANTIZE, [ids[latent_int8]], [ot],
       T.BuiltinOptions.DequantizeOptions, ("dequantize",))
    g.output = ot
    return _serialise(g, description)
