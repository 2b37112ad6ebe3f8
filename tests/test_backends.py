"""SSR-Net on Keras' PyTorch and JAX backends: the same model file gives the same ages, and it trains.

The model and its layer use `keras.ops` only, so a `.keras` file saved with
TensorFlow loads and runs under PyTorch and JAX. Each backend runs in a
subprocess, because Keras picks its backend once per process, and is
skipped when its package is not installed.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ssr_lib import data, pretrained

BACKEND_SCRIPT = """
import json, sys
import numpy as np
import keras
import ssr_lib.model  # registers SoftStagewiseRegression, so the file can be loaded
faces = np.load(sys.argv[2])
network = keras.saving.load_model(sys.argv[1], safe_mode=True)
predicted = network.predict(faces["images"], verbose=0).reshape(-1)
network.compile(optimizer=keras.optimizers.Adam(0.002), loss="mae")
losses = network.fit(faces["images"], faces["ages"], batch_size=16, epochs=3, verbose=0).history["loss"]
print(json.dumps({"backend": keras.backend.backend(), "predicted": predicted.tolist(), "losses": losses}))
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_model_file_runs_and_trains_on_backend(backend, shared, small_utkface, tmp_path):
    pytest.importorskip(backend, reason=f"{backend} is not installed: pip install {backend}")
    images = np.stack([data.load_face(small_utkface / name) for name in sorted(os.listdir(small_utkface))])
    ages = np.array([int(name.split("_")[0]) for name in sorted(os.listdir(small_utkface))], np.float32)
    faces = tmp_path / "faces.npz"
    np.savez(faces, images=images.astype(np.float32), ages=ages)

    # The authors' IMDB weights, so that the ages compared are real predictions.
    name = pretrained.RELEASED_SSRNET
    network = pretrained.load_model(shared / "pretrained" / "imdb" / name / f"{name}.h5")
    path = tmp_path / "ssrnet.keras"
    network.save(path)
    expected = network.predict(images.astype(np.float32), verbose=0).reshape(-1)

    result = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, str(path), str(faces)],
                            capture_output=True, text=True, env=dict(os.environ, KERAS_BACKEND=backend))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    np.testing.assert_allclose(report["predicted"], expected, atol=1e-2)
    assert report["losses"][-1] < report["losses"][0]
