"""One process of a training run, for the multi-process tests: a small
`decoder_lm` trained with SGD + momentum through `keras_attn.distribution`
and `keras_attn.training.standard_callbacks` (BackupAndRestore and the best
checkpoint), the way an example script does.

    python -m tests.distribution.multi_process_worker OUTPUT_DIR \\
        --distribution data --epochs 2 [--stop-after-epoch 1]

The cluster comes from the environment, as in a real launch: `TF_CONFIG`
(TensorFlow) or `KERAS_DISTRIBUTION_*` (JAX). `--virtual-devices N` gives
the process N virtual CPU devices (JAX: XLA_FLAGS; TensorFlow: logical
CPUs). The global batch is the same whatever the replica count, so runs
with different counts train the same steps. The first run to find no
`initial.weights.h5` in OUTPUT_DIR writes its initial weights there; later
runs start from them. The chief writes `final.npz` (the trained weights).
Every process prints one JSON line: its history and what it wrote.
"""

import argparse
import json
import os
import sys

GLOBAL_BATCH = 8
BATCHES = 4  # per epoch
SEQUENCE_LENGTH = 8
VOCABULARY = 64


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stop-after-epoch", type=int, default=None,
                        help="raise after this epoch's checkpoint (a crash)")
    parser.add_argument("--virtual-devices", type=int, default=1)
    from keras_attn import distribution  # noqa: F401 (after XLA_FLAGS)

    distribution.add_arguments(parser)
    return parser.parse_args()


def main():
    devices = 1
    if "--virtual-devices" in sys.argv:
        devices = int(sys.argv[sys.argv.index("--virtual-devices") + 1])
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={devices}"
    )
    args = parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from keras_attn import distribution
    from keras_attn import models
    from keras_attn import training

    if keras.backend.backend() == "tensorflow" and devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices
        )
    keras.utils.set_random_seed(0)
    dist = distribution.setup(args)

    model = dist.build(
        models.decoder_lm, vocabulary_size=VOCABULARY,
        sequence_length=SEQUENCE_LENGTH, num_layers=1, hidden_dim=16,
        num_heads=4, intermediate_dim=32, dropout=0.0,
    )
    with dist.scope():
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=dist.jit_compile,
        )
    initial = os.path.join(args.output_dir, "initial.weights.h5")
    if os.path.exists(initial):
        model.load_weights(initial)
    elif dist.is_chief:
        os.makedirs(args.output_dir, exist_ok=True)
        with dist.on_this_process():
            model.save_weights(initial)

    rng = np.random.default_rng(0)
    tokens = rng.integers(
        1, VOCABULARY, size=(GLOBAL_BATCH * BATCHES, SEQUENCE_LENGTH + 1)
    ).astype("int32")
    if GLOBAL_BATCH % dist.num_replicas:
        raise ValueError(f"{dist.num_replicas} replicas do not divide "
                         f"the global batch {GLOBAL_BATCH}")
    batch = dist.global_batch_size(GLOBAL_BATCH // dist.num_replicas)
    data = tf.data.Dataset.from_tensor_slices(
        (tokens[:, :-1], tokens[:, 1:])
    ).batch(batch, drop_remainder=dist.drop_remainder)

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if args.stop_after_epoch == epoch + 1:
                raise SystemExit(3)

    callbacks = dist.callbacks(training.standard_callbacks(
        args.output_dir, monitor="loss", tensorboard=False))
    report = {
        "process_id": dist.process_id,
        "num_processes": dist.num_processes,
        "replicas": dist.num_replicas,
        # OnThisProcess wraps every callback under JAX multi-process.
        "callbacks": [type(getattr(c, "callback", c)).__name__
                      for c in callbacks],
    }
    try:
        history = model.fit(data, epochs=args.epochs, verbose=0,
                            callbacks=callbacks + [Stop()])
    except SystemExit:
        print(json.dumps({**report, "stopped": True}), flush=True)
        raise
    report["epochs"] = history.epoch
    report["loss"] = history.history["loss"]
    if not dist.finish():
        print(json.dumps(report), flush=True)
        return
    # The chief alone: the best checkpoint and greedy tokens from it.
    best = keras.saving.load_model(
        os.path.join(args.output_dir, "best.keras"))
    report["tokens"] = models.generate(best, [[5, 9, 3]], 3)[0].tolist()
    weights = {v.path: np.asarray(v.numpy()) for v in model.weights}
    tmp = os.path.join(args.output_dir, f".tmp-{os.getpid()}.npz")
    np.savez(tmp, **weights)
    os.replace(tmp, os.path.join(args.output_dir, "final.npz"))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
