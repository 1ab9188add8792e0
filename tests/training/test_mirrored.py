"""train() on two devices with tf.distribute.MirroredStrategy, run here on two logical CPU devices.

In a subprocess: TensorFlow's logical devices can only be set before it starts, and the
rest of the suite must keep seeing one CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from napari_pneumoseg.model import load_model
from napari_pneumoseg.training import train
from napari_pneumoseg.training.train import training_strategy

rng = np.random.default_rng(0)
cases = []
for c in range(4):
    hu = np.full((6, 64, 64), 40, np.float32)
    hu[:, 8:56, 30:58] = -850
    mask = np.zeros(hu.shape, np.uint8)
    mask[:, 10 + c:22 + c, 30:58] = 1
    hu[mask == 1] = -1000
    hu += rng.normal(0, 15, hu.shape).astype(np.float32)
    cases.append((hu, mask, (2.5, 1.0, 1.0)))

out = {}
out["auto"] = repr(training_strategy(tf))  # no GPU here: one device
try:
    training_strategy(tf, ["/cpu:0", "/cpu:7"])
except ValueError as exc:
    out["unknown"] = str(exc)
strategy = training_strategy(tf, ["/cpu:0", "/cpu:1"])
out["replicas"] = strategy.num_replicas_in_sync
result = train(cases, sys.argv[1], epochs=3, batch_size=4, patch_size=32, backbone="resnet18",
               learning_rate=1e-3, steps_per_epoch=3, devices=["/cpu:0", "/cpu:1"], evaluate=False)
out["losses"] = [h["loss"] for h in result.history]
out["devices"] = load_model(sys.argv[1]).provenance["training"]["devices"]
out["replicas_trained"] = result.replicas
print("RESULT " + json.dumps(out))
"""


@pytest.mark.timeout(600)
def test_training_mirrors_over_two_logical_cpu_devices(tmp_path):
    model = tmp_path / "m.pnxmodel"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(model)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["auto"] == "None"
    assert "'/cpu:7'" in out["unknown"] and "CPU:1" in out["unknown"]
    assert out["replicas"] == 2
    assert [d.rsplit("/", 1)[-1] for d in out["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert out["replicas_trained"] == 2  # the weights were MirroredVariables, one copy per device
    assert len(out["losses"]) == 3 and all(v == v for v in out["losses"])
    assert min(out["losses"][1:]) < out["losses"][0]
