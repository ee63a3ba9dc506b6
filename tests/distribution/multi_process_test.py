"""Two processes on loopback train, checkpoint, crash and resume with a
different replica count, and end with the weights of an uninterrupted run
on one device (within 1e-5): `MultiWorkerMirroredStrategy` with `TF_CONFIG`,
and JAX multi-process (`jax.distributed` through
`keras.distribution.initialize`, `KERAS_DISTRIBUTION_*` variables) with
data- and then model-parallel training. Only the chief writes; the other
process restores from the chief's backup. CPU only; slow (`large`).

Each run is tests/distribution/multi_process_worker.py, launched the way
docs/scaling.md tells a user to launch a script.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
TOLERANCE = 1e-5
TIMEOUT = 600
STOPPED = 3  # the worker's exit status after --stop-after-epoch

pytestmark = pytest.mark.large


def free_ports(count):
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(backend, output_dir, args, env=None):
    full = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=os.pathsep.join(
                    [ROOT, os.environ.get("PYTHONPATH", "")]))
    full.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "tests.distribution.multi_process_worker",
         str(output_dir), *args],
        cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def wait(processes, status=0):
    """Each process's JSON report; all must exit with `status`."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    reports = []
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == status, err[-4000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return sorted(reports, key=lambda r: r["process_id"])


# The chief backs up and keeps the best model; every other worker only
# restores. All keep the learning rate a resumed run had reached.
CHIEF_CALLBACKS = ["BackupAndRestore", "KeepLearningRate",
                   "BestModelCheckpoint"]
WORKER_CALLBACKS = ["RestoreOnly", "KeepLearningRate"]


def assert_same_weights(path, reference):
    got, want = np.load(path), np.load(reference)
    assert sorted(got.files) == sorted(want.files)
    for key in want.files:
        np.testing.assert_allclose(got[key], want[key], atol=TOLERANCE,
                                   err_msg=key)


def reference_run(backend, tmp_path):
    """Two epochs on one device, uninterrupted; its initial weights are
    the other runs' starting point."""
    (report,) = wait([launch(backend, tmp_path / "reference",
                             ["--epochs", "2"])])
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tmp_path / "reference" / "initial.weights.h5", run)
    return report, run


def check_finished_run(run, reports, reference, reference_dir):
    chief, other = reports
    assert chief["callbacks"] == CHIEF_CALLBACKS
    assert other["callbacks"] == WORKER_CALLBACKS
    assert chief["epochs"] == other["epochs"] == [1]  # resumed, not redone
    np.testing.assert_allclose(chief["loss"], reference["loss"][1:],
                               atol=TOLERANCE)
    assert chief["tokens"] == reference["tokens"]
    assert_same_weights(run / "final.npz", reference_dir / "final.npz")
    # Written once, by the chief; the backup is gone after training.
    assert sorted(os.listdir(run)) == [
        "best.keras", "best.keras.json", "final.npz", "initial.weights.h5"]


def test_multi_worker_mirrored_strategy_resumes_a_single_device_crash(
        tmp_path):
    """Epoch 1 alone on one device, which dies; epoch 2 on two workers
    (2 replicas) that both restore the backup."""
    reference, run = reference_run("tensorflow", tmp_path)
    (crashed,) = wait([launch("tensorflow", run, [
        "--epochs", "2", "--stop-after-epoch", "1"])], status=STOPPED)
    assert crashed["stopped"]
    assert sorted(os.listdir(run / "backup")) == [
        "latest.weights.h5", "training_metadata.json"]

    ports = free_ports(2)
    workers = [f"localhost:{port}" for port in ports]
    processes = [
        launch("tensorflow", run, ["--distribution", "data", "--epochs", "2"],
               env={"TF_CONFIG": json.dumps({
                   "cluster": {"worker": workers},
                   "task": {"type": "worker", "index": i}})})
        for i in range(2)
    ]
    reports = wait(processes)
    assert [r["replicas"] for r in reports] == [2, 2]
    check_finished_run(run, reports, reference, tmp_path / "reference")


def jax_cluster(run, args, devices):
    (port,) = free_ports(1)
    return [
        launch("jax", run, [*args, "--virtual-devices", str(devices)], env={
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": str(i)})
        for i in range(2)
    ]


def test_jax_multi_process_data_then_model_parallel_resume(tmp_path):
    """Epoch 1 data-parallel on 2 processes x 2 devices (4 replicas), which
    die; epoch 2 model-parallel on the same processes (2 x 2 mesh:
    2 replicas, weights split over each process's 2 devices)."""
    reference, run = reference_run("jax", tmp_path)
    crashed = wait(jax_cluster(run, [
        "--distribution", "data", "--epochs", "2", "--stop-after-epoch",
        "1"], devices=2), status=STOPPED)
    assert [r["replicas"] for r in crashed] == [4, 4]
    assert [r["callbacks"] for r in crashed] == [
        CHIEF_CALLBACKS, WORKER_CALLBACKS]
    assert sorted(os.listdir(run / "backup")) == [
        "latest.weights.h5", "training_metadata.json"]

    reports = wait(jax_cluster(run, [
        "--distribution", "model", "--epochs", "2"], devices=2))
    assert [r["replicas"] for r in reports] == [2, 2]
    check_finished_run(run, reports, reference, tmp_path / "reference")
