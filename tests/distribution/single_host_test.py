"""A few SGD steps distributed over virtual devices give the loss and the
weights of one device (within 1e-5), for the three builders, data- and
model-parallel; the variables sit where docs/scaling.md says; cached
generation on the distributed (model-parallel: split) weights equals a
full-recompute greedy decode on one device.

Each backend runs in its own process (tests/distribution/
single_host_worker.py): the number of devices is fixed when the backend
starts. JAX: 4 virtual CPU devices; TensorFlow: 2 logical CPUs under
`MirroredStrategy`. The default run trains one model per backend; the full
matrix is `large`.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.distribution.expected_layouts import expected
from tests.distribution.expected_layouts import mismatches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
TOLERANCE = 1e-5


def run_worker(backend, keys=()):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(
                   [ROOT, os.environ.get("PYTHONPATH", "")]))
    if backend == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    done = subprocess.run(
        [sys.executable, "-m", "tests.distribution.single_host_worker",
         *keys],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def check_run(key, run):
    name, mode, *mesh = key.split("/")
    assert run["max_loss_diff"] <= TOLERANCE, (key, run["losses"],
                                               run["reference_losses"])
    assert run["max_weight_diff"] <= TOLERANCE, key
    # The steps really trained: equality is not the absence of updates.
    assert run["max_weight_change"] > 100 * TOLERANCE, key
    if "generation" in run:
        generation = run["generation"]
        assert generation["tokens"] == generation["expected"], key
    if "shardings" in run:
        batch, size = map(int, mesh[0].split(",")) if mesh else (4, 1)
        table = expected(name, size) if mode == "model" else {}
        assert mismatches(run["shardings"], table) == [], key
        assert run["replicas"] == batch


def test_jax_model_parallel_on_a_data_by_model_mesh_equals_one_device():
    """decoder_lm on a 2 x 2 mesh: batches split over 2 replicas, weights
    split over 2 devices each; generation on the split weights."""
    key = "decoder_lm/model/2,2"
    check_run(key, run_worker("jax", [key])[key])


def test_tensorflow_mirrored_strategy_equals_one_device():
    key = "encoder_classifier/data"
    results = run_worker("tensorflow", [key])
    check_run(key, results[key])
    assert results[key]["replicas"] == 2
    assert "KERAS_BACKEND=jax" in results["model_mode_error"]


@pytest.mark.large
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_every_builder_and_mode_equals_one_device(backend):
    results = run_worker(backend)
    keys = [k for k in results if "/" in k]
    builders = {k.split("/")[0] for k in keys}
    assert builders == {"encoder_classifier", "decoder_lm", "seq2seq"}
    modes = {k.split("/")[1] for k in keys}
    assert modes == ({"data", "model"} if backend == "jax" else {"data"})
    for key in keys:
        check_run(key, results[key])
