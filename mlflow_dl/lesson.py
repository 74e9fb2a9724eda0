"""The main job: the lesson as far as it is built, one step per family."""

from __future__ import annotations

from mlflow_dl.config import DataSpec, FitSpec, TrialSpec


def run_lesson(epochs: int = 30, experiment: str | None = None, echo=print) -> dict:
    """Train the lecture's MLP on each bundled task; returns {step: run_id}."""
    import mlflow

    from mlflow_dl.families.train import train

    steps = {
        "train breast_cancer (binary)": TrialSpec(data=DataSpec("breast_cancer"), fit=FitSpec(epochs=epochs, patience=5)),
        "train diabetes (regression)": TrialSpec(data=DataSpec("diabetes", scale_y=True),
                                                 fit=FitSpec(epochs=epochs, patience=5)),
        "train digits (multi-class)": TrialSpec(data=DataSpec("digits"), fit=FitSpec(epochs=epochs, patience=5)),
    }
    done = {}
    for title, spec in steps.items():
        result = train(spec, experiment=experiment)
        echo(f"{title}: {result.describe()}")
        done[title] = result.run_id
    # performance management: one small sweep per family, each a parent run with a child per trial
    done.update(_performance_sweeps(epochs, experiment, echo))
    # the Functional API (one branch per feature group) and PCA / t-SNE, on tiny grids
    done.update(_multi_input_and_pca(epochs, experiment, echo))
    done.update(_tune(epochs, experiment, echo))
    done.update(_time_series(epochs, experiment, echo))
    # last step: the best breast-cancer model becomes the registered champion, ready to serve
    from mlflow_dl.registry.promotion import promote
    from mlflow_dl.registry.serving import ServeSpec, shell_command
    from mlflow_dl.delivery import offline_store
    from mlflow_dl.delivery.experiments import DEFAULT_EXPERIMENT

    name, experiment = "mlflow-dl-breast-cancer", experiment or DEFAULT_EXPERIMENT
    if offline_store.active() is not None:  # the server is down: the registry is the server's, promote after sync
        echo(f"promote: not now, the tracking server is down; once `mlflow-dl sync` has run: mlflow-dl promote "
             f"--experiment {experiment} --model-name {name} --dataset breast_cancer")
        return done
    promotion = promote(experiment, name, dataset="breast_cancer")
    echo(f"promote: {promotion.message}")
    echo(f"Serve it with:  {shell_command(ServeSpec(name))}")
    uri = mlflow.get_tracking_uri()
    echo(f"\nTracking store: {uri}")
    if uri.startswith("sqlite:"):  # a server's UI is the server's own address
        echo(f"Open it with:  mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)")
    return done


LESSON_SWEEPS = {
    "regularization": dict(kind="both", strengths="0.0001,0.01,0.3"),
    "dropout": dict(rates="0,0.2,0.5"),
    "capacity": dict(layers="1,2,3", nodes="8,64"),
    "early_stopping": dict(patience="0,5", min_delta="0", restore="on,off"),
    "learning_rate": dict(lrs="0.1,0.01,0.001"),
    "data_size": dict(fractions="0.1,0.5,1"),
}


def _performance_sweeps(epochs: int, experiment: str | None, echo) -> dict:
    """The lecture's performance-management experiments on breast_cancer, small grids."""
    from mlflow_dl.config import ModelSpec
    from mlflow_dl.families import sweep

    done = {}
    for family, grid in LESSON_SWEEPS.items():
        result = sweep(family, data=DataSpec("breast_cancer"), model=ModelSpec(hidden=(32, 16)),
                       fit=FitSpec(epochs=epochs, patience=5), experiment=experiment, progress=False, **grid)
        best = result.best
        echo(f"sweep {family}: parent run {result.parent_run_id}, {len(result.table)} trials, best "
             + (f"{best['trial']} model_val_loss={best['model_val_loss']:.4g}" if best is not None else "none finished"))
        done[f"sweep {family}"] = result.parent_run_id
    return done


def _multi_input_and_pca(epochs: int, experiment: str | None, echo) -> dict:
    """Two small sweeps on breast_cancer: grouped inputs against one input, PCA features against raw."""
    from mlflow_dl.config import ModelSpec
    from mlflow_dl.families import sweep

    grids = {
        "multi_input breast_cancer (mean / worst / error branches vs one input)":
            dict(family="multi_input", groups="mean *;worst *;* error", branch_units="8",
                 model=ModelSpec(hidden=(16,))),
        "pca breast_cancer (2, 10 components vs raw; scree, t-SNE)":
            dict(family="pca", components="2,10,raw", model=ModelSpec(hidden=(64, 32))),
    }
    done = {}
    for title, grid in grids.items():
        result = sweep(data=DataSpec("breast_cancer"), fit=FitSpec(epochs=epochs, patience=5), experiment=experiment,
                       progress=False, **grid)
        best = result.best
        echo(f"{title}: parent run {result.parent_run_id}, best {best['trial']} "
             f"model_val_loss={best['model_val_loss']:.4g}" if best is not None else f"{title}: no trial finished")
        done[title] = result.parent_run_id
    return done


def _tune(epochs: int, experiment: str | None, echo) -> dict:
    """A tiny keras-tuner random search on breast_cancer: 3 trials, each a child run of one parent."""
    import tempfile

    from mlflow_dl.sweeps.tuning import tune

    title = "tune breast_cancer (keras-tuner random search, 3 trials)"
    with tempfile.TemporaryDirectory() as state:  # keras-tuner's own files; the runs hold the results
        result = tune(DataSpec("breast_cancer"), tuner="random", max_trials=3, epochs=min(epochs, 10),
                      experiment=experiment, directory=state, echo=lambda _: None)
    best = result.table.set_index("run_id")["model_val_loss"].get(result.best_run_id, float("nan"))
    echo(f"{title}: parent run {result.parent_run_id}, best run {result.best_run_id} model_val_loss={best:.4g}")
    return {title: result.parent_run_id}


def _time_series(epochs: int, experiment: str | None, echo) -> dict:
    """SimpleRNN vs LSTM on the yearly sunspots, one window length; baselines, SARIMAX and ridge on the parent."""
    from mlflow_dl.data.series import SeriesSpec
    from mlflow_dl.families.rnn_vs_lstm import run
    from mlflow_dl.models.recurrent import RecurrentSpec

    title = "rnn_vs_lstm sunspots (rnn, lstm x 8 years; persistence, SARIMAX, ridge)"
    result = run(SeriesSpec("sunspots", timesteps=8), RecurrentSpec(units=(8,)),
                 FitSpec(epochs=min(epochs, 10), patience=5), cells="rnn,lstm", timesteps="8",
                 experiment=experiment, progress=False)
    top = result.table.iloc[0]
    echo(f"{title}: parent run {result.parent_run_id}, ranked first {top['trial']} test_mae={top['test_mae']:.4g}")
    return {title: result.parent_run_id}
