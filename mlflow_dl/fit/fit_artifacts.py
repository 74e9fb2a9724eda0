"""The files a tracked fit leaves, and how its servable model is staged while it trains.

The architecture (model_summary.txt, plots/model.png) and the staging of the pyfunc model need only
the built model, so MlflowCallback starts them on background threads at the start of fit; the
checkpoint and the learning curves need the final weights and history, so they come at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import Future

import keras
import numpy as np
import pandas as pd

from mlflow_dl.data.preprocessing import Preprocessing
from mlflow_dl.fit import model_logging, plots, tensor_inputs

INSTALL_GRAPHVIZ = ("Graphviz's `dot` is not installed; install it (apt-get install graphviz, brew install graphviz "
                    "or conda install graphviz) and later runs draw it")
NO_INPUTS = ("the model's inputs cannot be told (a subclassed model whose call takes several arrays); "
             "MlflowCallback(preprocessing=...) says what it takes; the weights are in checkpoints/best.keras")
_SAID_NO_GRAPHVIZ = False  # the missing-diagram note is printed once per process


def in_background(fn, *args) -> Future:
    """fn(*args) on a daemon thread, which never holds up the interpreter's exit; the Future has its outcome."""
    future: Future = Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="mlflow-dl-prepare", daemon=True).start()
    return future


def log_architecture(client, run_id: str, model) -> None:
    """model.summary() as model_summary.txt; the graph as plots/model.png where pydot and graphviz are."""
    global _SAID_NO_GRAPHVIZ
    lines: list[str] = []
    model.summary(line_length=120, print_fn=lambda text, *_, **__: lines.append(text))
    client.log_text(run_id, "\n".join(lines), "model_summary.txt")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.png")
        try:
            keras.utils.plot_model(model, to_file=path, show_shapes=True, show_layer_names=True, dpi=72)
        except Exception as exc:  # pydot or graphviz's `dot` missing or broken: the diagram is a nicety
            if not _SAID_NO_GRAPHVIZ:
                reason = INSTALL_GRAPHVIZ if shutil.which("dot") is None else exc
                print(f"mlflow-dl: no model diagram (plots/model.png): {reason}", file=sys.stderr)
                _SAID_NO_GRAPHVIZ = True
            return
        client.log_artifact(run_id, path, "plots")


def render_curves(epochs: dict[int, dict[str, float]], history: dict, best_epoch: int | None, tmp: str) -> str:
    """plots/learning_curves.png: every metric by epoch (gaps where validation_freq skipped one)."""
    path = os.path.join(tmp, "learning_curves.png")
    steps = range(min(epochs), max(epochs) + 1)
    aligned = {key: [epochs.get(e, {}).get(key, math.nan) for e in steps] for key in history}
    fig = plots.learning_curves(aligned, best_epoch)
    fig.savefig(path)
    plots.close(fig)
    return path


def save_checkpoint(model, best_weights, log_best: bool, restore: bool, nonfinite: bool, tmp: str
                    ) -> tuple[str, str | None]:
    """Write best.keras (the best epoch's weights); return it and the file the logged model uses:
    best.keras, or final.keras (the weights fit ended with) when log_best is off; None when those
    are not finite. The model ends with the best epoch's weights only when `restore`; otherwise with
    the very values fit left it, so a tracked fit computes what an untracked one does."""
    final = model.get_weights()
    model.set_weights(best_weights)
    best_path = os.path.join(tmp, "best.keras")
    model.save(best_path)
    model.set_weights(final)
    logged = best_path
    if not log_best:
        logged = None if nonfinite else os.path.join(tmp, "final.keras")
        if logged:
            model.save(logged)
    elif nonfinite:
        logged = None
    if restore:
        model.set_weights(best_weights)
    return best_path, logged


def stage(run_id: str, model, preprocessing: Preprocessing | None, input_example: pd.DataFrame | None
          ) -> Future | str:
    """Start staging the servable model on a background thread; or say why there is none.

    Rows of columns (the preprocessing given, or one 2-D input): the raw-row pyfunc, with an input
    example and the signature of the model's output on it. Anything else (several inputs, sequences,
    images): named tensors (tensor_inputs)."""
    prep, example = preprocessing, input_example
    if prep is None:
        inputs = tensor_inputs.model_inputs(model)
        if inputs is None:
            return NO_INPUTS
        if not tensor_inputs.is_table(inputs):
            x = tensor_inputs.example(inputs)
            signature = tensor_inputs.signature(inputs, _output_like(model, x), getattr(model, "output_names", None))
            return in_background(model_logging.stage_tensor_model, run_id, signature, x,
                                 tensor_inputs.keyed(model), model_logging.custom_objects(model))
        n = int(inputs[0].shape[-1])
        prep = Preprocessing(columns=tuple(f"f{i}" for i in range(n)), x_scale=(1.0,) * n,
                             x_offset=(0.0,) * n, task="raw", target="output")
    if example is None:
        example = pd.DataFrame(np.zeros((1, len(prep.columns))), columns=list(prep.columns))
    example = example.head(5 + prep.window)  # a time-series model needs `window` rows per prediction
    output = prep.outputs(_output_like(model, prep.transform(example)))
    return in_background(model_logging.stage_pipeline_model, run_id, prep, example,
                         model_logging.output_signature(example, output), model_logging.custom_objects(model))


def _output_like(model, x):
    """Zeros shaped and typed like the model's output on `x`: the signature needs the output's
    columns and types, not its values, and an eager call at the start of fit is not free. A model
    without one static output (subclassed, several outputs) is called directly."""
    try:
        (out,) = model.outputs
        shape = tuple(out.shape[1:])
    except (AttributeError, ValueError, TypeError):  # no static outputs, or several
        shape = (None,)
    if None in shape:
        return keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))
    rows = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    return np.zeros((rows, *shape), dtype=out.dtype)
