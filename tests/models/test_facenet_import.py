"""Pretrained facenet weights: facenet-pytorch state dicts and facenet TF1 checkpoints / frozen graphs."""
from __future__ import annotations

import hashlib
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.core.errors import UserError
from tfface.importers import import_file
from tfface.models import import_facenet_pytorch, import_facenet_tf1_checkpoint
from tfface.models.facenet_import import facenet_pytorch_model_class
from tfface.models.inception_resnet_v1 import InceptionResnetV1

BATCH = 3


def _images(size: int = 160) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(BATCH, size, size, 3)).astype(np.float32)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- facenet-pytorch


@pytest.fixture(scope="module")
def torch_reference():
    """A randomly initialised facenet-pytorch InceptionResnetV1 (eval mode, random BN
    statistics and affine parameters, a 7-class ``logits`` layer), its state dict and its
    output on ``_images()``."""
    torch = pytest.importorskip("torch")
    try:
        reference_class = facenet_pytorch_model_class()
    except ImportError as error:
        pytest.skip(f"facenet-pytorch unavailable: {error}")
    torch.manual_seed(0)
    net = reference_class(classify=True, num_classes=7).eval()
    net.classify = False  # keep the logits weights in the state dict, compare embeddings
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        nchw = torch.from_numpy(_images().transpose(0, 3, 1, 2).copy())
        normalised = net(nchw).numpy()
        features = net.last_bn(net.last_linear(torch.flatten(net.avgpool_1a(_trunk(net, nchw)), 1))).numpy()
    state = net.state_dict()
    assert any(name.startswith("logits.") for name in state)
    return state, normalised, features


def _trunk(net, x):
    for name in ["conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                 "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8"]:
        x = getattr(net, name)(x)
    return x


def test_facenet_pytorch_import_matches_reference(torch_reference, tmp_path):
    import torch

    state, normalised, features = torch_reference
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(state, path)
    model = import_facenet_pytorch(path)
    assert model.bn_scale and model.embedding_size == 512
    ours = model(_images(), training=False).numpy()
    # facenet-pytorch's forward L2-normalises; our backbone returns the raw embedding.
    np.testing.assert_allclose(_l2(ours), normalised, atol=1e-4)
    np.testing.assert_allclose(ours, features, rtol=1e-3, atol=1e-3 * np.abs(features).max())
    assert np.abs(features).std() > 0.1  # a non-degenerate network: the comparison means something

    # the same file as an export source (python -m tfface.export --import ...pt): pixels in, facenet's standardization
    imported = import_file(os.fspath(path))
    pixels = _images() * 128.0 + 127.5
    np.testing.assert_allclose(_l2(imported.embedder(pixels, training=False).numpy()), normalised, atol=1e-4)
    assert imported.alignment == {"align": "facenet_crop", "image_size": [160, 160], "margin": 32.0}
    assert imported.source["format"] == "facenet_pytorch" and imported.source["licence"].startswith("MIT")
    assert imported.source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(UserError, match="--arch: facenet_pytorch files hold inception_resnet_v1, got 'sphereface20'"):
        import_file(os.fspath(path), arch="sphereface20")


def test_facenet_pytorch_import_from_npz_and_dataparallel_names(torch_reference, tmp_path):
    state, normalised, _ = torch_reference
    path = tmp_path / "weights.npz"
    np.savez(path, **{f"module.{name}": value.numpy() for name, value in state.items()})
    model = import_facenet_pytorch(os.fspath(path), input_shape=(160, 160, 3))
    np.testing.assert_allclose(_l2(model(_images(), training=False).numpy()), normalised, atol=1e-4)


def test_facenet_pytorch_import_rejects_foreign_state_dicts(torch_reference):
    state = {name: value.numpy() for name, value in torch_reference[0].items()}
    with pytest.raises(ValueError, match="unexpected entries.*repeat_1.0.extra.weight"):
        import_facenet_pytorch({**state, "repeat_1.0.extra.weight": np.zeros(3, np.float32)})
    incomplete = {name: value for name, value in state.items() if name != "mixed_7a.branch2.1.bn.running_var"}
    with pytest.raises(KeyError, match="mixed_7a.branch2.1.bn.running_var"):
        import_facenet_pytorch(incomplete)
    with pytest.raises(ValueError, match="last_linear.weight"):
        import_facenet_pytorch({"fc.weight": np.zeros((2, 2), np.float32)})


# --------------------------------------------------------------------------- facenet TF1

# facenet's variable scopes (davidsandberg/facenet src/models/inception_resnet_v1.py), written
# out independently of tfface.models.facenet_import: Keras layer name -> TF-slim variable names.
_SLIM_STEM = {"1a": "Conv2d_1a_3x3", "2a": "Conv2d_2a_3x3", "2b": "Conv2d_2b_3x3",
              "3b": "Conv2d_3b_1x1", "4a": "Conv2d_4a_3x3", "4b": "Conv2d_4b_3x3"}
_SLIM_BRANCHES = {
    "block35": ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3",
                "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3"],
    "block17": ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1"],
    "block8": ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x3", "Branch_1/Conv2d_0c_3x1"],
    "Mixed_6a": ["Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3", "Branch_1/Conv2d_1a_3x3"],
    "Mixed_7a": ["Branch_0/Conv2d_0a_1x1", "Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_1a_3x3",
                 "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_1a_3x3"],
}
# Keras branch names in the order of the lists above.
_KERAS_BRANCHES = {
    "block35": ["branch0", "branch1_0", "branch1_1", "branch2_0", "branch2_1", "branch2_2"],
    "block17": ["branch0", "branch1_0", "branch1_1", "branch1_2"],
    "block8": ["branch0", "branch1_0", "branch1_1", "branch1_2"],
    "Mixed_6a": ["branch0", "branch1_0", "branch1_1", "branch1_2"],
    "Mixed_7a": ["branch0_0", "branch0_1", "branch1_0", "branch1_1", "branch2_0", "branch2_1", "branch2_2"],
}


def _slim_names(layer: keras.layers.Layer) -> list[str]:
    """TF-slim names of ``layer``'s variables, in ``layer.weights`` order."""
    name = layer.name
    if name in ("last_linear", "last_bn"):
        scope = "Bottleneck" if name == "last_linear" else "Bottleneck/BatchNorm"
    elif m := re.fullmatch(r"conv2d_(\w\w)_(conv|bn)", name):
        scope = _SLIM_STEM[m[1]] + ("/BatchNorm" if m[2] == "bn" else "")
    else:
        m = re.fullmatch(r"(repeat_(\d)_(\d+)|block8|mixed_6a|mixed_7a)_(conv2d|(branch[\d_]+)_(conv|bn))", name)
        block = m[1]
        if m[2]:
            kind = ["block35", "block17", "block8"][int(m[2]) - 1]
            block_scope = f"{['Repeat', 'Repeat_1', 'Repeat_2'][int(m[2]) - 1]}/{kind}_{int(m[3]) + 1}"
        else:
            kind = {"block8": "block8", "mixed_6a": "Mixed_6a", "mixed_7a": "Mixed_7a"}[block]
            block_scope = {"block8": "Block8", "mixed_6a": "Mixed_6a", "mixed_7a": "Mixed_7a"}[block]
        if m[4] == "conv2d":
            scope = f"{block_scope}/Conv2d_1x1"
        else:
            scope = f"{block_scope}/{_SLIM_BRANCHES[kind][_KERAS_BRANCHES[kind].index(m[5])]}"
            scope += "/BatchNorm" if m[6] == "bn" else ""
    if isinstance(layer, keras.layers.BatchNormalization):
        suffixes = (["gamma"] if layer.scale else []) + ["beta", "moving_mean", "moving_variance"]
    else:
        suffixes = ["weights", "biases"] if layer.use_bias else ["weights"]
    return [f"InceptionResnetV1/{scope}/{suffix}" for suffix in suffixes]


@pytest.fixture(scope="module")
def facenet_tf1(tmp_path_factory):
    """facenet-style files holding random weights (128-d bottleneck, like the 2017 models),
    and a model given the same weights directly, layer by layer."""
    rng = np.random.default_rng(2)
    expected = InceptionResnetV1(embedding_size=128)
    tensors = {}
    for layer in expected.layers:
        if not layer.weights:
            continue
        values = []
        for variable, slim_name in zip(layer.weights, _slim_names(layer)):
            shape = tuple(variable.shape)
            if slim_name.endswith("moving_variance"):
                value = rng.uniform(0.5, 2.0, shape)
            elif slim_name.endswith("weights"):
                value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
            else:
                value = rng.uniform(-0.3, 0.3, shape)
            tensors[slim_name] = value.astype(np.float32)
            values.append(tensors[slim_name])
        layer.set_weights(values)
    assert len(tensors) == len(expected.weights) == 6 * 4 + 5 * 26 + 16 + 10 * 18 + 28 + 6 * 18 + 4
    for name in ["InceptionResnetV1/Repeat/block35_5/Branch_2/Conv2d_0c_3x3/BatchNorm/moving_mean",
                 "InceptionResnetV1/Repeat_1/block17_10/Branch_1/Conv2d_0c_7x1/weights",
                 "InceptionResnetV1/Repeat_2/block8_1/Conv2d_1x1/biases",
                 "InceptionResnetV1/Block8/Branch_1/Conv2d_0b_1x3/BatchNorm/beta",
                 "InceptionResnetV1/Mixed_7a/Branch_2/Conv2d_1a_3x3/weights",
                 "InceptionResnetV1/Bottleneck/BatchNorm/moving_variance"]:
        assert name in tensors
    # What facenet's train_softmax saves besides the network, to be ignored.
    extras = {"Logits/weights": np.ones((128, 5), np.float32), "Logits/biases": np.zeros(5, np.float32),
              "centers": np.zeros((5, 128), np.float32), "global_step": np.array(275, np.int64)}
    model_dir = tmp_path_factory.mktemp("20170512-110547")
    prefix = os.fspath(model_dir / "model-20170512-110547.ckpt-250000")
    everything = {**tensors, **extras}
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=list(everything),
        shape_and_slices=[""] * len(everything),
        tensors=[tf.constant(value) for value in everything.values()],
    )
    graph = tf.Graph()
    with graph.as_default():
        for name, value in tensors.items():
            tf.constant(value, name=name)
        tf.constant(np.zeros((BATCH, 128), np.float32), name="embeddings")
    tf.io.write_graph(graph.as_graph_def(), os.fspath(model_dir), "20170512-110547.pb", as_text=False)
    return {"prefix": prefix, "directory": os.fspath(model_dir),
            "frozen": os.fspath(model_dir / "20170512-110547.pb")}, expected(_images(), training=False).numpy()


@pytest.mark.parametrize("source", ["prefix", "directory", "frozen"])
def test_facenet_tf1_import_equals_model_with_same_weights(facenet_tf1, source):
    paths, expected = facenet_tf1
    model = import_facenet_tf1_checkpoint(paths[source])
    assert not model.bn_scale and model.embedding_size == 128
    assert model.count_params() == 23_497_424 - 384 * 1792 - 3 * 384  # 128-d bottleneck
    np.testing.assert_allclose(model(_images(), training=False).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source,fmt", [("frozen", None), ("index", None), ("directory", "facenet_tf1")])
def test_facenet_tf1_files_are_export_sources(facenet_tf1, source, fmt):
    paths, expected = facenet_tf1
    path = paths["prefix"] + ".index" if source == "index" else paths[source]
    imported = import_file(path, fmt)
    got = imported.embedder(_images() * 128.0 + 127.5, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert imported.source["format"] == "facenet_tf1" and len(imported.source["sha256"]) == 64
    assert imported.alignment["align"] == "facenet_crop"


def test_facenet_tf1_import_reports_missing_variables(tmp_path):
    prefix = os.fspath(tmp_path / "model.ckpt-1")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["InceptionResnetV1/Bottleneck/weights"], shape_and_slices=[""],
                      tensors=[tf.zeros((1792, 512))])
    with pytest.raises(KeyError, match="InceptionResnetV1/Conv2d_1a_3x3/weights"):
        import_facenet_tf1_checkpoint(prefix)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected one '\*\.ckpt\*\.index' checkpoint"):
        import_facenet_tf1_checkpoint(empty)
