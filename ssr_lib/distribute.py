"""Training on several devices and machines with `tf.distribute`.

A `tf.distribute` strategy copies the model onto every replica (a GPU, or a
whole machine), gives each replica its share of every batch, adds up the
gradients with collective operations and applies the same update
everywhere. `train.train(..., strategy=...)` uses one:

- `get_strategy("mirrored")`: every GPU of this machine
  (`tf.distribute.MirroredStrategy`);
- `get_strategy("multi-worker")`: one process per machine; the `TF_CONFIG`
  environment variable gives each process the list of workers and its own
  index (`tf.distribute.MultiWorkerMirroredStrategy`).

`local_worker_config` and `launch_local_workers` run a cluster of processes
on this machine, as the tests and notebook 12 do. Introduced in notebook 12,
*Training on GPUs and clusters*.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import replace

import tensorflow as tf
from keras import layers

STRATEGIES = ("default", "mirrored", "multi-worker")


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """TensorFlow's multi-worker strategy, with a `reduce` that Keras 3's `fit` can call.

    Keras 3.15's `fit` calls the strategy's `reduce` on a tuple of values at
    once, and on per-replica scalars along axis 0 (keras-team/keras#20585). The
    multi-worker strategy reduces one value at a time and has no axis 0 in a
    scalar, so `fit` stops before its first step. This subclass reduces each
    value of the structure on its own, and scalars without an axis. The
    gradients are still added up by TensorFlow's collective operations.
    """

    def reduce(self, reduce_op, value, axis=None):
        def reduce_one(per_replica):
            rank = self.experimental_local_results(per_replica)[0].shape.rank
            return super(MultiWorkerMirroredStrategy, self).reduce(reduce_op, per_replica, axis if rank else None)

        return tf.nest.map_structure(reduce_one, value)


def get_strategy(name="default"):
    """Return the strategy named `name`, one of `STRATEGIES`.

    `"default"` is TensorFlow's strategy for one device. `"multi-worker"`
    reads `TF_CONFIG` and waits until every worker it names has started.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "The multi-worker strategy needs TF_CONFIG, which names every worker and this one's index, "
                'such as {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", '
                '"index": 0}}. Set it on every machine; notebook 12 shows how.'
            )
        return MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}. Choose one of: {', '.join(STRATEGIES)}")


def is_chief():
    """Return whether this process writes the run's files.

    It does unless `TF_CONFIG` names another task as the chief: the task
    of type `"chief"`, or else worker 0.
    """
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task")
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return "chief" not in config.get("cluster", {}) and task.get("type") == "worker" and task.get("index") == 0


def local_worker_index():
    """Return this worker's index in `TF_CONFIG`, or `None` when it names no task."""
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task")
    return task.get("index") if task else None


def scale_for_replicas(profile, replicas):
    """Return `profile` with its batch and learning rate multiplied by `replicas`.

    The profile's batch is each replica's share, so the global batch grows
    with the replicas and an epoch takes fewer steps. The learning rate
    grows with the batch (the linear scaling rule of Goyal et al., 2017).
    The decay stays at the same epochs, which are the same passes over the
    data.
    """
    return replace(profile, batch_size=profile.batch_size * replicas,
                   learning_rate=profile.learning_rate * replicas)


def synchronize_batch_norm(model, synchronized=True):
    """Make every BatchNormalization layer use the statistics of the global batch.

    Without it, each replica normalises with the mean and variance of its own
    share of the batch, so the model trains differently on two replicas than
    on one device with the same global batch.
    """
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.synchronized = synchronized
        elif hasattr(layer, "layers"):
            synchronize_batch_norm(layer, synchronized)


def free_ports(count):
    """Return `count` TCP ports on 127.0.0.1 that are free now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def local_worker_config(ports, index):
    """Return the `TF_CONFIG` text of worker `index` in a cluster on 127.0.0.1 `ports`."""
    return json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    })


def launch_local_workers(args, workers=2, timeout=900, threads=None, env=None):
    """Run `python ARGS` as `workers` processes that form one cluster on 127.0.0.1.

    Args:
        args: the arguments after `python`, such as
            `["-m", "ssr_lib", "train", "--strategy", "multi-worker", ...]`.
        workers: processes to start. Defaults to `2`.
        timeout: seconds to wait for all of them. Defaults to `900`.
        threads: CPU threads each process may use for one operation
            (`TF_NUM_INTRAOP_THREADS`). Defaults to TensorFlow's choice.
        env: extra environment variables for every worker.

    Returns:
        A list with each worker's `subprocess.CompletedProcess`, worker 0
        first, with its output as text.

    Raises:
        RuntimeError: if a worker exits with an error; the message has the
            end of its output.
    """
    ports = free_ports(workers)
    # Output goes to files, not pipes: a worker blocked on a full pipe would
    # stall the others at the next collective operation.
    logs = [tempfile.TemporaryFile("w+") for _ in range(workers)]
    processes = []
    for index in range(workers):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": local_worker_config(ports, index)}
        if threads:
            worker_env["TF_NUM_INTRAOP_THREADS"] = str(threads)
        processes.append(subprocess.Popen([sys.executable, *args], env=worker_env, text=True,
                                          stdout=logs[index], stderr=subprocess.STDOUT))
    results = []
    try:
        for process, log in zip(processes, logs):
            process.wait(timeout=timeout)
            log.seek(0)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, log.read()))
    finally:
        for process, log in zip(processes, logs):
            process.kill()
            log.close()
    for index, result in enumerate(results):
        if result.returncode != 0:
            raise RuntimeError(f"Worker {index} of {workers} exited with status {result.returncode}:\n"
                               f"{result.stdout[-3000:]}")
    return results
