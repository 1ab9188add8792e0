"""Model files: .pnxmodel round trip and atomic save; foreign Keras files loaded safely or refused."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import zipfile

import numpy as np
import pytest

from napari_pneumoseg.model import ModelLoadError, load_model, save_model
from napari_pneumoseg.model.bundle import CONFIG_NAME, WEIGHTS_NAME


def _x(shape=(2, 64, 64, 1), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _predict(model, x):
    return np.asarray(model.predict_on_batch(x))


@pytest.fixture(scope="module")
def saved_small(small_bundle, tmp_path_factory):
    return save_model(small_bundle, tmp_path_factory.mktemp("saved") / "small.pnxmodel")


# ---------------------------------------------------------------- our format


def test_round_trip_gives_identical_outputs_and_config(small_bundle, saved_small):
    loaded = load_model(saved_small)
    x = _x()
    np.testing.assert_array_equal(_predict(loaded.model, x), _predict(small_bundle.model, x))
    assert loaded.architecture == small_bundle.architecture
    assert loaded.preprocessing == {"method": "window", "hu_min": -1100.0, "hu_max": 300.0}
    assert loaded.threshold == 0.5 and loaded.provenance == {"purpose": "tests"}
    assert loaded.source == saved_small and loaded.warnings == []


def test_file_is_one_zip_with_config_and_weights(saved_small):
    with zipfile.ZipFile(saved_small) as zf:
        assert sorted(zf.namelist()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
        config = json.loads(zf.read(CONFIG_NAME))
    assert config["format"] == "napari-pneumoseg-model" and config["schema_version"] == 1
    assert config["architecture"]["backbone"] == "resnet18"
    assert "keras" in config["software"]


def test_non_default_settings_survive_the_round_trip(small_bundle, tmp_path):
    bundle = dataclasses.replace(
        small_bundle,
        preprocessing={"method": "minmax"},
        threshold=0.35,
        provenance={"epochs": np.int64(12), "metrics": {"dice": np.float32(0.5)}, "split": ["p1", "p2"]},
    )
    loaded = load_model(save_model(bundle, tmp_path / "m.pnxmodel"))
    assert loaded.preprocessing == {"method": "minmax"} and loaded.threshold == 0.35
    assert loaded.provenance == {"epochs": 12, "metrics": {"dice": 0.5}, "split": ["p1", "p2"]}


def test_save_is_atomic_and_refuses_to_overwrite(small_bundle, tmp_path):
    path = save_model(small_bundle, tmp_path / "m.pnxmodel")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pnxmodel"]  # no temp files left
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(small_bundle, path)
    assert path.read_bytes() == before
    save_model(dataclasses.replace(small_bundle, threshold=0.4), path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pnxmodel"]
    assert load_model(path).threshold == 0.4


def test_failed_save_leaves_nothing_behind(small_bundle, tmp_path, monkeypatch):
    import napari_pneumoseg.model.bundle as bundle_module

    def disk_full(model, path):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(bundle_module, "_save_layer_weights", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_model(small_bundle, tmp_path / "m.pnxmodel")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_saved_model_gets_the_umask_permissions(small_bundle, tmp_path, umask):
    """A model is shared with colleagues: not the private 0600 of its temp file."""
    old = os.umask(umask)
    try:
        path = save_model(small_bundle, tmp_path / "m.pnxmodel")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["m.pnxmodel"]


def test_save_does_not_clobber_a_file_that_appears_meanwhile(small_bundle, tmp_path, monkeypatch):
    import napari_pneumoseg.model.bundle as bundle_module

    path = tmp_path / "m.pnxmodel"
    real = bundle_module._save_layer_weights

    def racing(model, weights):
        real(model, weights)
        path.write_bytes(b"someone else's model")

    monkeypatch.setattr(bundle_module, "_save_layer_weights", racing)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(small_bundle, path)
    assert path.read_bytes() == b"someone else's model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pnxmodel"]


def test_save_wants_the_pnxmodel_suffix(small_bundle, tmp_path):
    with pytest.raises(ValueError, match=r"\.pnxmodel"):
        save_model(small_bundle, tmp_path / "m.h5")


def _rewrite(src, dst, config_change=None, drop=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name == drop:
                continue
            data = zin.read(name)
            if name == CONFIG_NAME and config_change:
                config = json.loads(data)
                config_change(config)
                data = json.dumps(config).encode()
            zout.writestr(name, data)
    return dst


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["architecture"].update(backbone="resnet9000"), "unknown backbone 'resnet9000'"),
        (lambda c: c.update(schema_version=99), "schema_version 99 is newer"),
        (lambda c: c.update(preprocessing={"method": "zscore"}), "unknown preprocessing method 'zscore'"),
        (lambda c: c.update(threshold=1.5), "threshold"),
        (lambda c: c.update(format="something-else"), "not a napari-pneumoseg-model config"),
    ],
)
def test_invalid_config_is_refused_naming_the_file(saved_small, tmp_path, change, message):
    bad = _rewrite(saved_small, tmp_path / "bad.pnxmodel", change)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(bad)
    assert "bad.pnxmodel" in str(info.value)


def test_weights_not_matching_the_config_are_refused(saved_small, tmp_path):
    bad = _rewrite(saved_small, tmp_path / "liar.pnxmodel", lambda c: c["architecture"].update(backbone="resnet34"))
    with pytest.raises(ModelLoadError, match="liar.pnxmodel.*do not match"):
        load_model(bad)


def test_broken_files_are_refused(saved_small, tmp_path):
    no_weights = _rewrite(saved_small, tmp_path / "empty.pnxmodel", drop=WEIGHTS_NAME)
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(no_weights)
    junk = tmp_path / "junk.pnxmodel"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="junk.pnxmodel.*not a zip"):
        load_model(junk)
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="unsupported"):
        load_model(tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.pnxmodel")


# ---------------------------------------------------------------- foreign Keras files


def _tiny_net(keras, middle=None):
    inp = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    if middle is not None:
        x = middle(x)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inp, out)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_plain_keras_model_loads_with_assumed_paper_preprocessing(keras, tmp_path, suffix):
    net = _tiny_net(keras)
    path = tmp_path / f"theirs{suffix}"
    net.save(path)
    with pytest.warns(UserWarning, match="assuming the seed paper's per-volume min-max"):
        bundle = load_model(path)
    assert bundle.preprocessing == {"method": "minmax"} and bundle.threshold == 0.5
    assert bundle.warnings and bundle.input_channels == 1
    x = _x((1, 32, 32, 1))
    np.testing.assert_allclose(_predict(bundle.model, x), _predict(net, x), rtol=1e-6)
    with pytest.raises(ValueError, match="cannot save"):
        save_model(bundle, tmp_path / "again.pnxmodel")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_model_is_refused_without_running_its_code(keras, tmp_path, suffix):
    marker = tmp_path / "lambda-ran.txt"
    evil = eval(f"lambda x: (open({str(marker)!r}, 'w').write('pwned'), x)[1]")  # noqa: S307
    path = tmp_path / f"evil{suffix}"
    _tiny_net(keras, keras.layers.Lambda(evil)).save(path)
    marker.unlink()  # building the model ran it once; start clean

    with pytest.raises(ModelLoadError, match="Lambda layer") as info:
        load_model(path)
    assert f"evil{suffix}" in str(info.value)
    assert not marker.exists()

    # The file really is live: unsafe loading runs the stored code.
    keras.saving.load_model(path, safe_mode=False, compile=False)
    assert marker.exists()


def test_lambda_is_refused_even_when_keras_safe_mode_would_allow_it(keras, tmp_path):
    """A Lambda naming a Keras function has no stored bytecode, so safe_mode lets it through; we do not."""
    path = tmp_path / "named.keras"
    _tiny_net(keras, keras.layers.Lambda(keras.activations.relu)).save(path)
    keras.saving.load_model(path, safe_mode=True, compile=False)  # Keras alone accepts it
    with pytest.raises(ModelLoadError, match="Lambda layer"):
        load_model(path)


def _custom_layer(keras, registered):
    if registered:

        @keras.saving.register_keras_serializable(package="pnxtest")
        class Doubler(keras.layers.Layer):
            def call(self, x):
                return x * 2

        return Doubler

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    return Doubler


@pytest.mark.parametrize("registered", [True, False], ids=["registered", "unregistered"])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unknown_custom_objects_are_refused(keras, tmp_path, suffix, registered):
    layer_cls = _custom_layer(keras, registered)
    path = tmp_path / f"custom{suffix}"
    _tiny_net(keras, layer_cls()).save(path)
    with pytest.raises(ModelLoadError, match="unknown custom object '(pnxtest>)?Doubler'") as info:
        load_model(path)
    assert f"custom{suffix}" in str(info.value)


def test_papers_weights_only_h5_loads_into_the_paper_architecture(paper_model, tmp_path):
    """The paper saved weights-only .h5 checkpoints (Keras 2 layout); also accept Keras 3 .weights.h5."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # writes what Keras 2 save_weights("x.h5") wrote

    legacy = tmp_path / "best_model.h5"
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, paper_model)
    v3 = tmp_path / "paper.weights.h5"
    paper_model.save_weights(v3)

    x = _x((1, 64, 64, 1))
    want = _predict(paper_model, x)
    for path in (legacy, v3):
        with pytest.warns(UserWarning, match="min-max"):
            bundle = load_model(path)
        assert bundle.architecture["backbone"] == "resnet50" and bundle.preprocessing == {"method": "minmax"}
        np.testing.assert_array_equal(_predict(bundle.model, x), want)


def test_weights_only_h5_of_another_network_is_refused(small_bundle, tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    path = tmp_path / "resnet18_weights.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, small_bundle.model)
    with pytest.raises(ModelLoadError, match="resnet18_weights.h5.*do not fit the seed paper's Unet-ResNet50"):
        load_model(path)


def test_a_trained_model_is_saved_without_optimizer_state(tmp_path):
    """After compile+fit the optimizer holds ~2x the weights; the bundle keeps layers only."""
    import zipfile

    import h5py
    import numpy as np

    from napari_pneumoseg.model import ModelBundle, load_model, save_model
    from napari_pneumoseg.model._backend import keras_modules

    k = keras_modules()
    bundle = ModelBundle.build("resnet18")
    bundle.model.compile(optimizer=k.keras.optimizers.Adam(1e-4), loss=k.sm.losses.bce_jaccard_loss)
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    bundle.model.fit(x, (x > 0.5).astype(np.float32), epochs=1, verbose=0)
    path = save_model(bundle, tmp_path / "t.pnxmodel")
    with zipfile.ZipFile(path) as zf:
        zf.extract("model.weights.h5", tmp_path)
    names = []
    with h5py.File(tmp_path / "model.weights.h5") as f:
        f.visititems(lambda n, v: names.append(n) if isinstance(v, h5py.Dataset) else None)
    assert names and not any(n.startswith("optimizer") for n in names)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.model.predict_on_batch(x), bundle.model.predict_on_batch(x))
