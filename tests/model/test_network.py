"""The network: the paper's exact Unet-ResNet50, small backbones, ImageNet weights, lazy TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_pneumoseg.model import WeightsDownloadError, build_unet
from napari_pneumoseg.model.network import count_parameters


def test_paper_unet_resnet50_has_the_papers_parameter_counts(paper_model):
    assert count_parameters(paper_model) == (32_554_836, 32_507_282)
    assert paper_model.input_shape == (None, None, None, 1)
    assert paper_model.output_shape == (None, None, None, 1)


def test_paper_unet_is_fully_convolutional_with_sigmoid_output(paper_model):
    x = np.random.default_rng(0).random((1, 64, 96, 1), dtype=np.float32)
    y = np.asarray(paper_model.predict_on_batch(x))
    assert y.shape == (1, 64, 96, 1)
    assert 0.0 <= y.min() and y.max() <= 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "resnet9000"}, "unknown backbone"),
        ({"backbone": "densenet121"}, "unknown backbone"),  # does not build under Keras 3
        ({"input_channels": 0}, "input_channels"),
        ({"input_channels": 1.5}, "input_channels"),
        ({"encoder_weights": "noisy-student"}, "encoder_weights"),
    ],
)
def test_bad_arguments_are_refused_before_building(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_unet(**kwargs)


def test_imagenet_download_failure_says_to_use_no_weights(monkeypatch, keras):
    from napari_pneumoseg.model._backend import keras_modules

    def offline(*args, **kwargs):  # what keras.utils.get_file raises without network
        raise Exception("URL fetch failure on https://github.com/...: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras_modules().sm._KERAS_UTILS, "get_file", offline)
    with pytest.raises(WeightsDownloadError, match="cannot be downloaded.*encoder_weights=None"):
        build_unet("resnet18", 1, encoder_weights="imagenet")


def test_imagenet_rgb_weights_are_adapted_to_one_channel(monkeypatch, tmp_path, keras):
    """sm alone cannot put 3-channel ImageNet weights into a 1-channel net; build_unet adapts them."""
    import h5py
    from classification_models.tfkeras import Classifiers
    from keras.src.legacy.saving import legacy_h5_format  # the format of the published weight files

    from napari_pneumoseg.model._backend import keras_modules

    rng = np.random.default_rng(1)
    resnet18, _ = Classifiers.get("resnet18")
    encoder = resnet18(input_shape=(None, None, 3), weights=None, include_top=False)
    bn = encoder.get_layer("bn_data")
    bn.set_weights([rng.random(w.shape).astype(np.float32) + 0.5 for w in bn.get_weights()])
    fake = tmp_path / "resnet18_imagenet_1000_no_top.h5"
    with h5py.File(fake, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, encoder)
    monkeypatch.setattr(keras_modules().sm._KERAS_UTILS, "get_file", lambda *a, **k: str(fake))

    model = build_unet("resnet18", 1, encoder_weights="imagenet")

    rgb_kernel = encoder.get_layer("conv0").get_weights()[0]
    got_kernel = model.get_layer("conv0").get_weights()[0]
    np.testing.assert_allclose(got_kernel, rgb_kernel.sum(axis=2, keepdims=True), rtol=1e-5)
    for got, rgb in zip(model.get_layer("bn_data").get_weights(), bn.get_weights()):
        np.testing.assert_allclose(got, [rgb.mean()], rtol=1e-6)
    for name in ("stage1_unit1_conv1", "stage4_unit2_conv2"):
        for got, want in zip(model.get_layer(name).get_weights(), encoder.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)


def test_importing_the_model_package_does_not_import_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        import napari_pneumoseg, napari_pneumoseg.model
        from napari_pneumoseg.model import build_unet, segment, load_model, save_model, preprocess
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "segmentation_models"))
        print(heavy)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
