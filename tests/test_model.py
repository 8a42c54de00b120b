"""pneumo.model: parameter tables, shapes, names, freezing, weights files, save/load."""
from __future__ import annotations

import re

import h5py
import keras
import numpy as np
import pytest
from keras.src.utils.naming import to_snake_case

from pneumo import model as pm
from pneumo.errors import InputError
from pneumo.losses import get_loss, get_metrics


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
    m = {"unet": unet64, "blog": blog256, "blog-code": blog_code256}[variant]
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
@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """A random VGG16 no-top saved in both formats: Keras 3 and the legacy one of the ImageNet file."""
    from keras.src.legacy.saving import legacy_h5_format

    d = tmp_path_factory.mktemp("weights")
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    vgg.save_weights(d / "vgg.weights.h5")
    with h5py.File(d / pm.IMAGENET_NOTOP_FILE, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg)
    kernels = {layer.name: [np.array(w) for w in layer.weights] for layer in vgg.layers}
    return d, kernels


def _assert_encoder_equals(m: keras.Model, kernels: dict) -> None:
    for layer in pm.encoder_layers(m):
        for got, want in zip(layer.weights, kernels[layer.name]):
            np.testing.assert_array_equal(np.array(got), want, err_msg=layer.name)


@pytest.mark.parametrize("fname", ["vgg.weights.h5", pm.IMAGENET_NOTOP_FILE])
def test_local_weights_file_is_loaded_and_frozen(vgg_weights, fname):
    d, kernels = vgg_weights
    m = pm.build_model("blog", 64, encoder_weights=str(d / fname))
    _assert_encoder_equals(m, kernels)
    assert not any(layer.trainable for layer in pm.encoder_layers(m))  # pretrained -> frozen
    m2 = pm.build_model("unet", 64, encoder_weights=d / fname, freeze_encoder=False)
    _assert_encoder_equals(m2, kernels)
    assert all(layer.trainable for layer in pm.encoder_layers(m2))


def test_weights_file_that_does_not_fit_is_an_input_error(tmp_path):
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="dense")])
    other.save_weights(tmp_path / "other.weights.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    for bad in ["other.weights.h5", "junk.h5"]:
        with pytest.raises(InputError, match=re.escape(str(tmp_path / bad))):
            pm.build_model("blog", 64, encoder_weights=str(tmp_path / bad))
    with pytest.raises(InputError, match="not found"):
        pm.build_model("blog", 64, encoder_weights=str(tmp_path / "missing.h5"))


def _no_download(*args, **kwargs):
    raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- offline")


def test_imagenet_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch):
    import keras.src.utils.file_utils as file_utils

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", _no_download)
    with pytest.raises(InputError) as err:
        pm.build_model("blog", 64, encoder_weights="imagenet")
    msg = str(err.value)
    assert str(tmp_path / "models" / pm.IMAGENET_NOTOP_FILE) in msg
    assert "encoder_weights=None" in msg and "offline" in msg


def test_imagenet_uses_the_cache_file_without_network(tmp_path, monkeypatch, vgg_weights):
    import keras.src.utils.file_utils as file_utils

    d, kernels = vgg_weights
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / pm.IMAGENET_NOTOP_FILE).write_bytes((d / pm.IMAGENET_NOTOP_FILE).read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", _no_download)
    m = pm.build_model("blog", 64, encoder_weights="imagenet")
    _assert_encoder_equals(m, kernels)
    assert _n_trainable(m) == 155_665


def test_damaged_cache_file_is_an_input_error(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / pm.IMAGENET_NOTOP_FILE).write_bytes(b"\x89HDF half a download")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(InputError, match="Delete it"):
        pm.build_model("blog", 64, encoder_weights="imagenet")


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
