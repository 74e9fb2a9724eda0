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
        m = result.metrics
        echo(f"{title}: run {result.run_id} best_val_loss={m['best_val_loss']:.4g} at epoch {m['best_epoch']}")
        done[title] = result.run_id
    # last step: the best breast-cancer model becomes the registered champion, ready to serve
    from mlflow_dl.registry import promote
    from mlflow_dl.serving import ServeSpec, shell_command
    from mlflow_dl.tracking.runs import DEFAULT_EXPERIMENT

    promotion = promote(experiment or DEFAULT_EXPERIMENT, "mlflow-dl-breast-cancer", dataset="breast_cancer")
    echo(f"promote: {promotion.message}")
    echo(f"Serve it with:  {shell_command(ServeSpec('mlflow-dl-breast-cancer'))}")
    echo(f"\nTracking store: {mlflow.get_tracking_uri()}")
    echo("Open it with:  mlflow ui --backend-store-uri sqlite:///mlflow.db   (then http://127.0.0.1:5000)")
    return done
