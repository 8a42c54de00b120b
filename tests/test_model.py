"""pneumo.model.networks: parameter tables, shapes, names, freezing, weights files, save/load."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src.utils.naming import to_snake_case

from pneumo.model import networks as pm
from pneumo.errors import InputError
from pneumo.model.losses import get_loss, get_metrics

ROOT = Path(__file__).resolve().parents[1]


def _n_trainable(m: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in m.trainable_weights)


def _predict(m: keras.Model, x: np.ndarray) -> np.ndarray:
    """Inference without tracing a predict function (much faster for one tiny batch on CPU)."""
    return np.asarray(m(x, training=False))


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def blog256():
    return pm.build_model("blog", 256, encoder_weights=None, freeze_encoder=True)


@pytest.fixture(scope="module")
def blog_code256():
    return pm.build_model("blog-code", 256, encoder_weights=None, freeze_encoder=True)


@pytest.fixture(scope="module")
def unet64():
    return pm.build_model("unet", 64, encoder_weights=None)


# --------------------------------------------------------------------------- parameter tables
def test_blog_variant_matches_the_blogs_printed_table(blog256):
    assert blog256.count_params() == 7_790_929
    assert _n_trainable(blog256) == 155_665
    assert blog256.get_layer("block4_pool").output.shape[1:] == (16, 16, 512)
    assert "block5_conv1" not in [layer.name for layer in blog256.layers]
    decoder = [(layer.name, layer.filters) for layer in blog256.layers
               if isinstance(layer, keras.layers.Conv2D) and not layer.name.startswith("block")]
    assert [f for _, f in decoder] == [32, 16, 16, 8, 1]


def test_blog_code_variant_matches_the_blogs_code(blog_code256):
    assert blog_code256.count_params() == 15_043_233
    assert _n_trainable(blog_code256) == 328_545
    assert blog_code256.get_layer("block5_pool").output.shape[1:] == (8, 8, 512)


def test_random_weights_default_to_a_trainable_encoder(unet64):
    assert all(layer.trainable for layer in pm.encoder_layers(unet64))
    assert _n_trainable(unet64) > 14_714_688  # the whole VGG16 conv base plus the decoder


# --------------------------------------------------------------------------- shapes, dtypes
@pytest.mark.parametrize("variant", pm.VARIANTS)
@pytest.mark.parametrize("size", [64, 256])
def test_output_shape_and_range(variant, size):
    m = pm.build_model(variant, size, encoder_weights=None)
    assert m.input_shape == (None, size, size, 1)
    assert m.output_shape == (None, size, size, 1)
    p = _predict(m, _images(1, size))
    assert p.shape == (1, size, size, 1) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))


def test_uint8_and_float_inputs_give_the_same_prediction(unet64):
    x = _images(2, 64, seed=3)
    p_u8 = _predict(unet64, x)
    p_f32 = _predict(unet64, x.astype(np.float32))
    np.testing.assert_allclose(p_u8, p_f32, rtol=0, atol=1e-6)
    assert unet64.get_layer("cast_float32").output.dtype == "float32"


def test_blog_scales_to_0_1_without_vgg_preprocessing(blog256):
    head = keras.Model(blog256.input, blog256.get_layer("gray_to_3ch").output)
    x = np.zeros((1, 256, 256, 1), np.uint8)
    x[0, 0, 0, 0], x[0, 0, 1, 0] = 255, 51
    out = _predict(head, x)
    assert out.shape == (1, 256, 256, 3)
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[0, 0, 1], [0.2, 0.2, 0.2], atol=1e-6)
    assert out[0, 5, 5].tolist() == [0.0, 0.0, 0.0]


def test_unet_uses_vgg_caffe_preprocessing(unet64):
    head = keras.Model(unet64.input, unet64.get_layer("vgg_caffe_preprocess").output)
    x = np.zeros((1, 64, 64, 1), np.uint8)
    x[0, 0, 0, 0] = 200
    out = _predict(head, x)
    # BGR order, ImageNet means subtracted: what keras.applications.vgg16.preprocess_input does.
    np.testing.assert_allclose(out[0, 5, 5], [-103.939, -116.779, -123.68], atol=1e-3)
    ref = keras.applications.vgg16.preprocess_input(np.full((1, 1, 1, 3), 200.0, np.float32))
    np.testing.assert_allclose(out[0, 0, 0], np.asarray(ref)[0, 0, 0], atol=1e-3)


def test_unet_skips_come_from_the_named_encoder_layers(unet64):
    for stage, skip in enumerate(pm.SKIP_LAYERS):
        concat = unet64.get_layer(f"decoder_stage{stage}_concat")
        inbound = [t._keras_history.operation.name for t in concat._inbound_nodes[0].input_tensors]
        assert inbound == [f"decoder_stage{stage}_upsample", skip]


def test_output_stays_float32_under_mixed_precision():
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        m = pm.build_model("unet", 64, encoder_weights=None)
    finally:
        keras.config.set_dtype_policy(before)
    assert m.get_layer("block1_conv1").compute_dtype == "float16"
    assert m.get_layer("vgg_caffe_preprocess").compute_dtype == "float32"
    assert m.output.dtype == "float32"
    p = _predict(m, _images(1, 64))
    assert p.dtype == np.float32 and np.all(np.isfinite(p))


# --------------------------------------------------------------------------- names
def _default_name_pattern(layer) -> str:
    return rf"{to_snake_case(type(layer).__name__)}(_\d+)?"


@pytest.mark.parametrize("variant", pm.VARIANTS)
def test_every_layer_has_a_chosen_name(variant, unet64, blog256, blog_code256):
    m = {"unet": unet64, "blog": blog256, "blog-code": blog_code256}.get(variant)
    if m is None:
        m = pm.build_model(variant, 64, encoder_weights=None, width=0.25)
    names = [layer.name for layer in m.layers]
    assert len(names) == len(set(names))
    for layer in m.layers:
        assert not re.fullmatch(_default_name_pattern(layer), layer.name), layer.name
    assert names[0] == "image" and names[-1] == "mask"
    vgg = [n for n in names if n.startswith("block")]
    assert vgg[0] == "block1_conv1"


def test_the_default_name_check_would_catch_an_auto_name():
    layer = keras.layers.Conv2D(3, 3)
    assert re.fullmatch(_default_name_pattern(layer), layer.name)


# --------------------------------------------------------------------------- freezing
def _train_one_step(m: keras.Model, size: int) -> None:
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss=get_loss("bce+dice"), run_eagerly=True)
    x = _images(2, size, seed=1)
    y = np.zeros((2, size, size, 1), np.float32)
    y[:, : size // 2] = 1.0
    m.train_on_batch(x, y)


@pytest.mark.parametrize("variant", ["blog", "unet"])
def test_frozen_encoder_does_not_change_and_decoder_does(variant):
    m = pm.build_model(variant, 64, encoder_weights=None, freeze_encoder=True)
    enc = {w.path: np.array(w) for layer in pm.encoder_layers(m) for w in layer.weights}
    dec = {w.path: np.array(w) for w in m.trainable_weights}
    assert enc and dec and not set(enc) & set(dec)
    _train_one_step(m, 64)
    for layer in pm.encoder_layers(m):
        for w in layer.weights:
            np.testing.assert_array_equal(np.array(w), enc[w.path], err_msg=w.path)
    unchanged = [w.path for w in m.trainable_weights if np.array_equal(np.array(w), dec[w.path])]
    assert unchanged == []


def test_set_encoder_trainable_flips_the_trainable_count():
    m = pm.build_model("blog", 64, encoder_weights=None, freeze_encoder=True)
    assert _n_trainable(m) == 155_665
    assert len(pm.encoder_layers(m)) == 14  # block1_conv1 .. block4_pool
    pm.set_encoder_trainable(m, True)
    assert _n_trainable(m) == 7_790_929
    pm.set_encoder_trainable(m, False)
    assert _n_trainable(m) == 155_665


def test_unfrozen_encoder_trains_after_set_encoder_trainable():
    m = pm.build_model("blog", 64, encoder_weights=None, freeze_encoder=True)
    pm.set_encoder_trainable(m, True)
    before = np.array(m.get_layer("block1_conv1").kernel)
    _train_one_step(m, 64)  # compile after the flip, as the docstring says
    assert not np.array_equal(before, np.array(m.get_layer("block1_conv1").kernel))


# --------------------------------------------------------------------------- weights files
def _save_keras_notop_h5(vgg: keras.Model, path) -> None:
    """Write ``vgg``'s weights in the layout of Keras' ImageNet no-top file (legacy HDF5).

    Written with h5py, as the 2017 file was: a ``layer_names`` attribute listing every layer,
    one group per layer whose ``weight_names`` attribute orders its datasets (empty for
    the input and pooling layers). Keras loads such a file topologically, by weight order.
    """
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in vgg.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.0.8"
        for layer in vgg.layers:
            g = f.create_group(layer.name)
            names = [f"{layer.name}_{'W' if i == 0 else 'b'}_1:0" for i in range(len(layer.weights))]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, layer.weights):
                g.create_dataset(n, data=np.asarray(w))


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """A random VGG16 no-top saved in both formats: Keras 3 and the layout of the ImageNet file.

    Built at 32 px to be quick: VGG16's weights do not depend on the input size.
    """
    d = tmp_path_factory.mktemp("weights")
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    vgg.save_weights(d / "vgg.weights.h5")
    _save_keras_notop_h5(vgg, d / pm.IMAGENET_NOTOP_FILE)
    kernels = {layer.name: [np.array(w) for w in layer.weights] for layer in vgg.layers}
    return d, kernels


def _assert_encoder_equals(m: keras.Model, kernels: dict) -> None:
    layers_ = pm.encoder_layers(m)
    # VGG16's 13 convolutions, 10 of them in "blog" (cut at block4_pool)
    assert sum(len(layer.weights) for layer in layers_) in (20, 26)
    for layer in layers_:
        for got, want in zip(layer.weights, kernels[layer.name], strict=True):
            np.testing.assert_array_equal(np.array(got), want, err_msg=layer.name)


@pytest.mark.parametrize("fname", ["vgg.weights.h5", pm.IMAGENET_NOTOP_FILE])
def test_local_weights_file_is_loaded_and_frozen(vgg_weights, fname):
    d, kernels = vgg_weights
    m = pm.build_model("blog", 64, encoder_weights=str(d / fname))
    _assert_encoder_equals(m, kernels)
    assert not any(layer.trainable for layer in pm.encoder_layers(m))  # pretrained -> frozen
    m2 = pm.build_model("unet", 32, encoder_weights=d / fname, freeze_encoder=False)
    _assert_encoder_equals(m2, kernels)
    assert all(layer.trainable for layer in pm.encoder_layers(m2))


def test_one_training_step_starts_from_the_weights_file(vgg_weights, tmp_path):
    """The real path of ``--encoder-weights FILE``: pneumo.train.loop builds, trains and saves."""
    from conftest import write_test_pack
    from pneumo.config import TrainConfig
    from pneumo.store.config_file import load_config
    from pneumo.train.loop import train

    d, kernels = vgg_weights
    pack = write_test_pack(tmp_path / "p32.h5", counts=(8, 4, 4), size=32)
    cfg = TrainConfig(pack=str(pack), variant="blog", encoder_weights=str(d / pm.IMAGENET_NOTOP_FILE),
                      epochs=1, steps_per_epoch=1, validation_steps=1, batch_size=4, lr=1e-2, seed=0)
    run = tmp_path / "run"
    summary = train(cfg, run, verbose=0)
    assert summary["state"] == "finished" and summary["epochs_done"] == 1
    assert load_config(TrainConfig, run / "config.json").encoder_weights == str(d / pm.IMAGENET_NOTOP_FILE)
    trained = pm.load_model(run / "last.keras", compile=False)
    _assert_encoder_equals(trained, kernels)  # frozen: still exactly the file's values
    fresh = pm.build_model("blog", 32, encoder_weights=None)
    moved = [layer.name for layer in trained.layers if layer.name.startswith("blog_conv") and layer.weights
             and not np.array_equal(np.array(layer.weights[1]), np.array(fresh.get_layer(layer.name).weights[1]))]
    assert moved  # the decoder's biases (zero at initialisation) took a step


def test_weights_file_that_does_not_fit_is_an_input_error(tmp_path):
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="dense")])
    other.save_weights(tmp_path / "other.weights.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    for bad in ["other.weights.h5", "junk.h5"]:
        with pytest.raises(InputError, match=re.escape(str(tmp_path / bad))):
            pm.build_model("blog", 64, encoder_weights=str(tmp_path / bad))
    with pytest.raises(InputError, match="not found"):
        pm.build_model("blog", 64, encoder_weights=str(tmp_path / "missing.h5"))


def test_a_partial_or_nan_weights_file_is_an_input_error(vgg_weights, tmp_path):
    """Judged by the weights loaded, not by Keras' wording: a file must set every encoder weight."""
    d, kernels = vgg_weights
    partial = tmp_path / "partial.weights.h5"
    partial.write_bytes((d / "vgg.weights.h5").read_bytes())
    with h5py.File(partial, "a") as f:
        biases = [k for k in _h5_datasets(f) if k.endswith("/vars/1")]  # Keras 3 names by class
        assert len(biases) == 13
        del f[biases[-1]]  # one convolution's bias missing
    nan = tmp_path / pm.IMAGENET_NOTOP_FILE
    nan.write_bytes((d / pm.IMAGENET_NOTOP_FILE).read_bytes())
    with h5py.File(nan, "a") as f:
        name = f["block3_conv2"].attrs["weight_names"][0]
        f["block3_conv2"][name][0, 0, 0, 0] = np.nan
    for bad in (partial, nan):
        with pytest.raises(InputError, match=re.escape(str(bad)) + ".*does not fit"):
            pm.build_model("blog", 32, encoder_weights=str(bad))


def _h5_datasets(f: h5py.File) -> list[str]:
    out: list[str] = []
    f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return out


def _no_download(*args, **kwargs):
    raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- offline")


@pytest.fixture
def offline(monkeypatch):
    """Keras' downloader replaced by one that fails as it does offline; records its calls."""
    import keras.src.utils.file_utils as file_utils

    calls = []

    def no_download(*args, **kwargs):
        calls.append(args)
        _no_download()

    monkeypatch.setattr(file_utils, "get_file", no_download)
    return calls


def test_imagenet_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch, offline):
    from pneumo.model.imagenet import IMAGENET_NOTOP_URL

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(InputError) as err:
        pm.build_model("blog", 32, encoder_weights="imagenet")
    msg = str(err.value)
    assert f"put it at {tmp_path / 'models' / pm.IMAGENET_NOTOP_FILE}" in msg  # where the file goes
    assert IMAGENET_NOTOP_URL in msg and "offline" in msg and "without ImageNet weights" in msg
    assert len(offline) == 1  # Keras' own download was the one attempt


def test_imagenet_uses_the_cache_file_without_network(tmp_path, monkeypatch, vgg_weights, offline):
    import pneumo.model.imagenet

    d, kernels = vgg_weights
    cache = tmp_path / "models" / pm.IMAGENET_NOTOP_FILE
    cache.parent.mkdir()
    cache.write_bytes((d / pm.IMAGENET_NOTOP_FILE).read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # Keras' md5 of the real file cannot be met by a stand-in: accept the stand-in's md5 instead.
    monkeypatch.setattr(pneumo.model.imagenet, "IMAGENET_NOTOP_MD5", hashlib.md5(cache.read_bytes()).hexdigest())
    m = pm.build_model("blog", 32, encoder_weights="imagenet")
    _assert_encoder_equals(m, kernels)
    assert _n_trainable(m) == 155_665
    assert offline == []


@pytest.mark.parametrize("content", ["garbage", "other weights"])
def test_wrong_cache_file_is_an_input_error_without_network(tmp_path, monkeypatch, vgg_weights, offline, content):
    d, _ = vgg_weights
    cache = tmp_path / "models" / pm.IMAGENET_NOTOP_FILE
    cache.parent.mkdir()
    # garbage: a broken download; other weights: a well-formed file that is not Keras' ImageNet one
    cache.write_bytes(b"\x89HDF half a download" if content == "garbage"
                      else (d / pm.IMAGENET_NOTOP_FILE).read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(InputError) as err:
        pm.build_model("blog", 32, encoder_weights="imagenet")
    msg = str(err.value)
    assert f"{cache} is not Keras' VGG16 ImageNet no-top weights file" in msg and "md5" in msg
    assert "Delete it" in msg and f"put it at {cache}" in msg
    assert offline == []  # named, not silently downloaded again


# --------------------------------------------------------------------------- the variant registry
def test_variant_registry_is_the_vocabulary():
    from pneumo.config import VARIANTS

    assert tuple(pm.VARIANT_BUILDERS) == VARIANTS and all(map(callable, pm.VARIANT_BUILDERS.values()))


def test_build_model_builds_through_the_registry(monkeypatch):
    """build_model checks, looks the builder up by name, then freezes the encoder as asked."""
    calls = []

    def tiny(image, input_size, encoder_weights, width):
        calls.append((tuple(image.shape), input_size, encoder_weights, width))
        x = keras.layers.Conv2D(2, 3, padding="same", name="block1_conv1")(image)
        return keras.Model(image, keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x))

    monkeypatch.setitem(pm.VARIANT_BUILDERS, "blog", tiny)
    m = pm.build_model("blog", 32, encoder_weights=None, freeze_encoder=True)
    assert calls == [((None, 32, 32, 1), 32, None, 1.0)]
    assert not m.get_layer("block1_conv1").trainable and m.get_layer("mask").trainable


def test_a_registry_out_of_step_with_the_vocabulary_stops_the_import():
    """Checked at import: a name in pneumo.config without its builder (or the reverse) is named."""
    code = ("import pneumo.config as C\n"
            "C.VARIANTS += ('resnet',); C.LOSSES += ('focal',)\n"
            "for module in ('pneumo.model.networks', 'pneumo.model.losses'):\n"
            "    try:\n"
            "        __import__(module)\n"
            "    except RuntimeError as e:\n"
            "        print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines == [
        "pneumo.model.networks.VARIANT_BUILDERS does not match its vocabulary (unet, blog, blog-code, unet-bn, "
        "resnet): missing 'resnet'",
        "pneumo.model.losses.LOSS_BUILDERS does not match its vocabulary (bce, dice, bce+dice, bce+batch-dice, "
        "focal): missing 'focal'",
    ], out.stdout + out.stderr[-2000:]


# --------------------------------------------------------------------------- bad options
def test_unknown_variant_lists_the_variants():
    with pytest.raises(InputError, match="unet, blog, blog-code"):
        pm.build_model("resnet", 64, encoder_weights=None)


@pytest.mark.parametrize("size", [100, 0, -32, 64.0, True])
def test_size_must_be_a_positive_multiple_of_32(size):
    with pytest.raises(InputError, match="multiple of 32"):
        pm.build_model("blog", size, encoder_weights=None)


# --------------------------------------------------------------------------- save / load
def test_save_load_round_trip_keeps_predictions_and_training_setup(tmp_path):
    m = pm.build_model("unet", 64, encoder_weights=None, freeze_encoder=True)
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("bce+dice"), metrics=get_metrics(),
              run_eagerly=True)
    x = _images(2, 64, seed=5)
    y = (x > 128).astype(np.float32)
    m.train_on_batch(x, y)  # moves BatchNorm statistics and creates optimizer state
    path = tmp_path / "m.keras"
    m.save(path)
    p = _predict(m, x)

    loaded = pm.load_model(path)
    np.testing.assert_allclose(_predict(loaded, x), p, rtol=0, atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in m.layers]
    assert _n_trainable(loaded) == _n_trainable(m)
    loaded.run_eagerly = True
    logs = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert {"loss", "dice", "iou"} <= set(logs)

    bare = pm.load_model(path, compile=False)
    np.testing.assert_allclose(_predict(bare, x), p, rtol=0, atol=1e-6)


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "none.keras"))):
        pm.load_model(tmp_path / "none.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match=re.escape(str(bad))):
        pm.load_model(bad)


# --------------------------------------------------------------------------- unet-bn (issue 10)
def test_unet_bn_is_the_vgg_unet_scaled_with_batchnorm():
    m = pm.build_model("unet-bn", 64, encoder_weights=None, width=0.25)
    assert m.output_shape == (None, 64, 64, 1)
    assert m.get_layer("block1_conv1").filters == 16 and m.get_layer("block5_conv3").filters == 128
    for name in pm.SKIP_LAYERS:  # same skip table, same names
        assert isinstance(m.get_layer(f"{name}_bn"), keras.layers.BatchNormalization)
    assert m.get_layer("decoder_stage0a_conv").filters == 64  # 256 x 0.25
    assert m.get_layer("decoder_stage4a_conv").filters == 8  # 16 x 0.25 = 4, floored at 8
    assert m.count_params() == pm.build_model("unet-bn", 128, None, width=0.25).count_params()  # size-free
    assert 1_100_000 < m.count_params() < 1_300_000  # the 1.2 M
    assert all(layer.trainable for layer in pm.encoder_layers(m))  # random weights: all train
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in pm.encoder_layers(m))
    p = _predict(m, _images(2, 64))
    assert p.shape == (2, 64, 64, 1) and np.all((p >= 0) & (p <= 1))
    half = pm.build_model("unet-bn", 64, encoder_weights=None, width=0.5)
    assert half.get_layer("block1_conv1").filters == 32 and half.count_params() > m.count_params()


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="unet", width=0.25), "width 0.25 applies to variant 'unet-bn' only"),
    (dict(variant="blog", width=2.0), "applies to variant 'unet-bn' only"),
    (dict(variant="unet-bn", width=0.0), "width 0.0 must be a number in"),
    (dict(variant="unet-bn", width=0.25, encoder_weights="imagenet"), "fit VGG16 at width 1 only"),
    (dict(variant="unet-bn", width=0.5, encoder_weights="/some/w.h5"), "needs encoder_weights=None"),
])
def test_width_rules_are_input_errors_before_any_download(kwargs, message, monkeypatch):
    monkeypatch.setattr(pm, "_vgg16", _no_download)
    with pytest.raises(InputError, match=message):
        pm.build_model(input_size=64, **{"encoder_weights": None, **kwargs})


def test_unet_bn_at_width_1_takes_vgg16_weights(vgg_weights):
    d, kernels = vgg_weights
    m = pm.build_model("unet-bn", 32, encoder_weights=str(d / "vgg.weights.h5"))
    convs = [layer for layer in pm.encoder_layers(m) if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13
    for layer in convs:
        for got, want in zip(layer.weights, kernels[layer.name], strict=True):
            np.testing.assert_array_equal(np.array(got), want, err_msg=layer.name)
    assert not any(layer.trainable for layer in pm.encoder_layers(m))  # pretrained -> frozen


def test_unet_bn_save_load_round_trip(tmp_path):
    m = pm.build_model("unet-bn", 32, encoder_weights=None, width=0.125)
    x = _images(2, 32)
    m.save(tmp_path / "m.keras")
    again = pm.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(_predict(again, x), _predict(m, x), atol=1e-6)
