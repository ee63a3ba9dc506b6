"""On a device: keras_attn_runtime, and the one-file zipapp built from
it, run in a process where TensorFlow, Keras, keras-hub and keras_attn
cannot be imported, and give Keras's probabilities and greedy tokens."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np

from keras_attn import cli as keras_attn_cli
from keras_attn import models
from tests.references import softmax
from tests.runtime.helpers import BLOCKED
from tests.runtime.helpers import CLASS_NAMES
from tests.runtime.helpers import CLASSIFIER_LENGTH
from tests.runtime.helpers import keras_hub_ids
from tests.runtime.helpers import needs_tensorflow
from tests.runtime.helpers import run_without_tensorflow

pytestmark = needs_tensorflow

NEW_TOKENS = 32
PROMPT = "Self-driving cars!"

LOADED = ("loaded=sorted(m for m in sys.modules "
          "if m.split('.')[0] in BLOCKED), preloaded=PRELOADED")


def test_importing_the_runtime_imports_no_tensorflow():
    code = ("import sys, json\nimport keras_attn_runtime\n"
            "from keras_attn_runtime import cli, bundle\n"
            f"BLOCKED = {BLOCKED!r}\n"
            "print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in BLOCKED)))")
    process = subprocess.run([sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout) == []


def test_runtime_without_tensorflow_matches_keras(exported, tweets,
                                                 vocabulary):
    texts = tweets[:24]
    args = dict(texts=texts, prompt=PROMPT, new_tokens=NEW_TOKENS,
                class_names=CLASS_NAMES,
                **{k: exported[k] for k in
                   ("classifier_path", "lm_path", "vocabulary",
                    "classifier_meta", "lm_meta")})
    process = run_without_tensorflow(f"""
        import contextlib, io, json
        from keras_attn_runtime import Classifier, Generator, cli

        ARGS = json.loads(sys.argv[1])
        classifier = Classifier(ARGS["classifier_path"], ARGS["vocabulary"],
                                ARGS["class_names"])
        generator = Generator(ARGS["lm_path"], ARGS["vocabulary"])
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            cli.main(["classify", ARGS["classifier_meta"], ARGS["texts"][0],
                      "--class-names", "a,b,c", "--no-timings"])
            cli.main(["generate", ARGS["lm_meta"], "--prompt",
                      ARGS["prompt"], "--max-new-tokens", "5", "--no-stop",
                      "--sampler", "greedy", "--repetition-penalty", "1",
                      "--no-timings"])
        print(json.dumps(dict(
            {LOADED},
            probabilities=classifier.predict(ARGS["texts"]).tolist(),
            label=classifier.classify(ARGS["texts"][0]),
            greedy=generator.generate(ARGS["prompt"], ARGS["new_tokens"]),
            cli=stdout.getvalue().splitlines(),
        )))
    """, [json.dumps(args)])
    assert process.returncode == 0, process.stderr[-3000:]
    out = json.loads(process.stdout.splitlines()[-1])
    assert out["preloaded"] == [] and out["loaded"] == []

    token_ids = np.array(
        keras_hub_ids(vocabulary, texts, sequence_length=CLASSIFIER_LENGTH)
    )
    logits = keras.ops.convert_to_numpy(exported["classifier"](token_ids))
    expected = softmax(logits.astype("float64"))
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    best = int(expected[0].argmax())
    assert out["label"][0] == CLASS_NAMES[best]
    assert abs(out["label"][1] - expected[0, best]) < 1e-5

    prompt = [vocabulary.index("[BOS]")] + keras_hub_ids(vocabulary,
                                                          [PROMPT])[0]
    keras_tokens = models.generate(exported["lm"], [prompt], NEW_TOKENS)
    assert out["greedy"] == keras_tokens[0].tolist()

    classified, generated = out["cli"]
    assert classified.split("\t")[0] == "abc"[best]
    words = [vocabulary[i] for i in out["greedy"][:5]]
    assert generated == PROMPT + "".join(
        w[2:] if w.startswith("##") else " " + w for w in words)


def test_zipapp_runs_without_tensorflow(exported, tmp_path, capsys):
    path = str(tmp_path / "keras_attn_runtime.pyz")
    assert keras_attn_cli.main(["bundle-runtime", path]) == 0
    assert path in capsys.readouterr().out
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
    assert "__main__.py" in names
    assert "keras_attn_runtime/cli.py" in names
    assert all(n == "__main__.py" or n.startswith("keras_attn_runtime/")
               for n in names)
    assert os.access(path, os.X_OK)
    # Built twice, the same bytes.
    again = str(tmp_path / "again.pyz")
    keras_attn_cli.main(["bundle-runtime", again])
    assert open(path, "rb").read() == open(again, "rb").read()

    capsys.readouterr()
    from keras_attn_runtime import cli

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for command in (
        ["classify", exported["classifier_meta"], "great ride",
         "awful traffic", "--no-timings"],
        ["generate", exported["lm_meta"], "--prompt", PROMPT,
         "--sampler", "greedy", "--max-new-tokens", "8", "--no-timings"],
        ["generate", exported["translator_meta"], "--source",
         "der hund bellt", "--no-timings"],
    ):
        process = run_without_tensorflow(f"""
            import json, runpy
            sys.argv = sys.argv[1:]
            try:
                runpy.run_path(sys.argv[0], run_name="__main__")
            except SystemExit as stop:
                status = stop.code
            import keras_attn_runtime
            print(json.dumps(dict({LOADED}, status=status,
                                  file=keras_attn_runtime.__file__)))
        """, [path, *command], cwd=str(tmp_path), env=env)
        assert process.returncode == 0, process.stderr[-3000:]
        *lines, last = process.stdout.splitlines()
        out = json.loads(last)
        assert out["status"] == 0 and out["loaded"] == []
        assert out["file"].startswith(path)  # the zipapp's own copy
        # The same lines as the installed runtime prints.
        assert cli.main(command) == 0
        assert lines == capsys.readouterr().out.splitlines()
        assert lines
