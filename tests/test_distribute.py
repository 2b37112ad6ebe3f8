"""Training under tf.distribute strategies, and streaming training data from prepared shards."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from ssr_lib import distribute, model, prepare, train

WORKER = str(Path(__file__).with_name("distributed_run.py"))


def test_batch_and_rate_grow_with_replicas():
    profile = train.get_profile("full")
    scaled = distribute.scale_for_replicas(profile, 4)
    assert (scaled.batch_size, scaled.learning_rate) == (200, pytest.approx(0.008))
    assert scaled.decay_epochs == profile.decay_epochs
    assert scaled.epochs == profile.epochs


@pytest.mark.parametrize("config, chief", [
    (None, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
])
def test_only_the_chief_writes(monkeypatch, config, chief):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.is_chief() is chief


def test_multi_worker_without_tf_config_raises(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.get_strategy("multi-worker")
    with pytest.raises(ValueError, match="Choose one of"):
        distribute.get_strategy("tpu")


def run_worker(args, output, env, workers=None):
    """Run distributed_run.py alone, or as `workers` local workers, and return the saved results."""
    args = [WORKER, "--output", str(output), "--weights", str(output) + "-weights", *args]
    if workers is None:
        import subprocess

        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return [np.load(str(output) + "-weights.npz")]
    distribute.launch_local_workers(args + ["--strategy", "multi-worker"], workers=workers, env=env, timeout=600)
    return [np.load(f"{output}-weights.{index}.npz") for index in range(workers)]


@pytest.fixture
def worker_env(shared):
    import os

    return {**os.environ, "SSR_DATA_DIR": str(shared / "data")}


def test_two_workers_equal_one_worker(worker_env, tmp_path):
    """Two workers with 16 faces each per step against one worker with 32.

    Dropout is off: each replica draws its own masks, which one device cannot
    repeat. The optimizer is plain SGD: Adam divides each gradient by its own
    running size, which turns a rounding difference in a gradient that is
    almost zero (a convolution's bias before BatchNorm) into a full step.
    """
    common = ["--faces", "128", "--epochs", "2", "--optimizer", "sgd", "--no-dropout"]
    single, = run_worker(common + ["--batch", "32", "--learning-rate", "0.0001"], tmp_path / "single", worker_env)
    first, second = run_worker(common + ["--batch", "16", "--learning-rate", "0.00005"], tmp_path / "multi",
                               worker_env, workers=2)

    assert int(single["steps"]) == int(first["steps"]) == 8
    np.testing.assert_array_equal(first["weights"], second["weights"])
    keras.utils.set_random_seed(0)
    start = np.concatenate([w.ravel() for w in model.build_ssrnet().get_weights()])
    assert np.abs(single["weights"] - start).max() > 1e-3
    np.testing.assert_allclose(first["weights"], single["weights"], rtol=1e-3, atol=1e-5)
    # Only the chief wrote the run's files.
    assert (tmp_path / "multi" / "model.keras").is_file()
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == ["history.csv", "model.keras", "profile.json"]
    assert json.loads((tmp_path / "multi" / "profile.json").read_text())["replicas"] == 2


def test_killed_run_resumes_to_same_steps(worker_env, tmp_path):
    args = ["--faces", "128", "--epochs", "3", "--batch", "16"]
    with pytest.raises(RuntimeError, match="exited with status -9"):
        run_worker(args + ["--kill-at-step", "6"], tmp_path / "run", worker_env, workers=2)
    backup = json.loads((tmp_path / "run" / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 1
    resumed = run_worker(args, tmp_path / "run", worker_env, workers=2)

    # 128 faces in global batches of 32: 4 steps an epoch, 12 in 3 epochs.
    assert [int(r["steps"]) for r in resumed] == [12, 12]
    history = train.read_history(tmp_path / "run" / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert history["steps"].tolist() == [4, 8, 12]
    assert not (tmp_path / "run" / "backup").exists()


@pytest.fixture(scope="module")
def prepared(utkface_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("prepared")
    prepare.prepare("utkface", utkface_dir.parent, output, workers=1, shard_size=100, limit=500, verbose=False)
    return output


def faces_of(dataset):
    pairs = [(image.numpy(), float(age)) for image, age in dataset]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def test_sharded_splits_match_the_splits_in_memory(prepared):
    in_memory = prepare.load_prepared_splits(prepared, seed=3)
    on_disk = prepare.open_prepared_splits(prepared, seed=3)
    for name in ("train", "val", "test"):
        assert len(on_disk[name]) == len(in_memory[name])
        np.testing.assert_array_equal(on_disk[name].ages, in_memory[name].ages)
        images, ages = faces_of(prepare.stream_faces(on_disk[name]))
        # Interleaving changes the order, not the faces.
        expected = sorted(zip(in_memory[name].images.reshape(len(ages), -1).sum(1), in_memory[name].ages))
        assert sorted(zip(images.reshape(len(ages), -1).sum(1), ages)) == expected


def test_epochs_stream_every_face_once(prepared):
    train_split = prepare.open_prepared_splits(prepared)["train"]
    epochs = [faces_of(prepare.stream_faces(train_split, shuffle=True, seed=0, epoch=e))[1] for e in (0, 0, 1)]
    np.testing.assert_array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], epochs[2])
    np.testing.assert_array_equal(np.sort(epochs[0]), np.sort(epochs[2]))
    np.testing.assert_array_equal(np.sort(epochs[0]), np.sort(train_split.ages))


def test_training_streams_from_shards(prepared, tmp_path):
    splits = prepare.open_prepared_splits(prepared)
    _, history = train.train(model.build_ssrnet(), splits, tmp_path / "run", profile="quick", epochs=2,
                             batch_size=64, verbose=0)
    steps_per_epoch = -(-len(splits["train"]) // 64)
    assert history["steps"].tolist() == [steps_per_epoch, 2 * steps_per_epoch]
    assert np.isfinite(history["val_mae"]).all()


def test_resumed_epochs_keep_their_order(prepared):
    in_memory = prepare.load_prepared_splits(prepared)["train"]
    on_disk = prepare.open_prepared_splits(prepared)["train"]
    for split in (in_memory, on_disk):
        steps = -(-len(split) // 64)
        every_epoch = [ages.numpy() for _, ages in train.training_batches(split, 64, 3)]
        resumed = [ages.numpy() for _, ages in train.training_batches(split, 64, 3, first_epoch=1)]
        assert len(every_epoch) == 3 * steps
        assert len(resumed) == 2 * steps
        for expected, batch in zip(every_epoch[steps:], resumed):
            np.testing.assert_array_equal(batch, expected)
