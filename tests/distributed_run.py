"""One training process for test_distribute.py: run alone, or as one worker of a local cluster.

It trains SSR-Net with `train.train` on the first `--faces` UTKFace
training faces and the first 64 validation faces, then saves every weight
and the number of optimizer steps to `--weights` (worker N adds `.N`).
"""

import argparse
import os
import signal

import keras
import numpy as np

from ssr_lib import data, distribute, model, train


class KillAtStep(keras.callbacks.Callback):
    """Kill this process with SIGKILL after the optimizer's `step`-th update, as a crash would."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--faces", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32, help="batch per replica")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--no-dropout", action="store_true")
    parser.add_argument("--kill-at-step", type=int)
    args = parser.parse_args()

    splits = data.load_utkface(verbose=False)
    splits = {"train": data.Split(*(a[:args.faces] for a in (splits["train"].images, splits["train"].ages,
                                                                 splits["train"].files))),
              "val": data.Split(*(a[:64] for a in (splits["val"].images, splits["val"].ages, splits["val"].files)))}
    strategy = distribute.get_strategy(args.strategy)
    keras.utils.set_random_seed(0)
    network = model.build_ssrnet()
    if args.no_dropout:
        # Each replica draws its own dropout masks, which one device cannot repeat.
        for layer in network.layers:
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
    trained, history = train.train(network, splits, args.output, profile="quick", verbose=0,
                                   strategy=None if args.strategy == "default" else strategy,
                                   epochs=args.epochs, batch_size=args.batch, learning_rate=args.learning_rate,
                                   optimizer=args.optimizer, decay_epochs=(), augment=False,
                                   callbacks=[KillAtStep(args.kill_at_step)] if args.kill_at_step else ())
    weights = np.concatenate([w.ravel() for w in trained.get_weights()])
    task = distribute.local_worker_index()
    steps = int(history["steps"].iloc[-1])
    np.savez(args.weights + ("" if task is None else f".{task}"), weights=weights, steps=steps)
    print("steps", steps, flush=True)


if __name__ == "__main__":
    main()
