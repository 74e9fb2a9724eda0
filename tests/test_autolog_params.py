"""What a user's own fit logs as params and datasets: the lecture's notebook cells under
`mlflow_dl.autolog()` and with MlflowCallback by hand, against what stock `mlflow.keras.autolog()` logs."""

import hashlib

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

import mlflow_dl
from conftest import all_runs
from mlflow_dl.fit import fit_datasets, fit_params


def lecture_data(rows=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype("float32")
    return x, (x[:, 0] - x[:, 1] > 0).astype("float32")


def lecture_model():
    """The lecture's cell: L1 on the hidden layers, Dropout(0.4) after the first, a sigmoid output."""
    keras.utils.set_random_seed(0)
    l1 = keras.regularizers.l1(0.01)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(32, activation="relu", kernel_regularizer=l1),
        keras.layers.Dropout(0.4),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=l1),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def lecture_callbacks(tmp_path):
    return [keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=0.005, patience=5, restore_best_weights=True),
            keras.callbacks.ModelCheckpoint(str(tmp_path / "best_model.keras"), monitor="val_loss", save_best_only=True)]


def lecture_fit(model, tmp_path, **kwargs):
    x, y = lecture_data()
    return model.fit(x, y, validation_split=0.25, epochs=2, batch_size=16, verbose=0,
                     callbacks=lecture_callbacks(tmp_path), **kwargs)


def blake2b_digest(x, y) -> str:
    """The digest fit_datasets documents, written out with hashlib alone: blake2b of 8 bytes (16 hex digits)
    over x then y, each after its place in (x, y): an array's shape and dtype then all its raw bytes; a
    DataFrame's (a Series as a one-column frame) column names, dtypes and shape, then each column's raw bytes."""
    h = hashlib.blake2b(digest_size=8)
    for place, part in (("/0", x), ("/1", y)):
        h.update(place.encode())
        part = part.to_frame() if isinstance(part, pd.Series) else part
        if isinstance(part, pd.DataFrame):
            h.update(repr(([str(c) for c in part.columns], [str(t) for t in part.dtypes], part.shape)).encode())
            for column in part.columns:
                h.update(part[column].to_numpy().tobytes())
        else:
            h.update(repr((part.shape, str(part.dtype))).encode())
            h.update(part.tobytes())
    return h.hexdigest()


@pytest.fixture
def autologged():
    mlflow_dl.autolog(log_model=False)
    yield
    mlflow_dl.autolog(disable=True)


def inputs_of(run) -> dict[str, tuple[str, str]]:
    """{context: (dataset name, digest)} as the MLflow UI lists a run's datasets."""
    out = {}
    for given in run.inputs.dataset_inputs:
        context = {t.key: t.value for t in given.tags}["mlflow.data.context"]
        out[context] = (given.dataset.name, given.dataset.digest)
    return out


def test_the_lecture_cell_under_autolog_shows_every_knob_and_at_least_what_stock_logs(tmp_path):
    # stock first, in its own run, while mlflow-dl's autolog is off
    mlflow.keras.autolog(log_models=False, silent=True)
    try:
        with mlflow.start_run(run_name="stock") as stock_run:
            lecture_fit(lecture_model(), tmp_path)
    finally:
        mlflow.keras.autolog(disable=True)
    stock = mlflow.get_run(stock_run.info.run_id)

    mlflow_dl.autolog(log_model=False)
    try:
        lecture_fit(lecture_model(), tmp_path)
    finally:
        mlflow_dl.autolog(disable=True)
    (ours,) = [r for r in all_runs() if r.info.run_id != stock.info.run_id]
    params = ours.data.params
    assert ours.info.status == "FINISHED"

    # stock parity: every key stock logs, under the same name
    assert set(stock.data.params) - set(params) == set()
    assert params["optimizer_learning_rate"] == "0.001" and params["optimizer_name"].startswith("adam")  # adam_1 ...
    # fit's arguments (batch size given; validation split)
    assert {k: params[k] for k in ("epochs", "batch_size", "validation_split", "shuffle", "initial_epoch",
                                   "validation_freq", "class_weight")} == {
        "epochs": "2", "batch_size": "16", "validation_split": "0.25", "shuffle": "True", "initial_epoch": "0",
        "validation_freq": "1", "class_weight": "None"}
    assert params["compile.loss"] == "binary_crossentropy" and params["compile.metrics"] == "accuracy"
    # the callbacks' knobs
    assert params["callbacks"] == "EarlyStopping,ModelCheckpoint"
    assert {k: v for k, v in params.items() if k.startswith("early_stopping.")} == {
        "early_stopping.monitor": "val_loss", "early_stopping.min_delta": "0.005", "early_stopping.patience": "5",
        "early_stopping.baseline": "None", "early_stopping.restore_best_weights": "True",
        "early_stopping.mode": "auto", "early_stopping.start_from_epoch": "0"}
    assert params["model_checkpoint.monitor"] == "val_loss" and params["model_checkpoint.save_best_only"] == "True"
    assert params["model_checkpoint.mode"] == "auto"
    # each layer's, and the summaries that line up with the families' columns
    assert {k: v for k, v in params.items() if k.startswith("layer.")} == {
        "layer.00.type": "Dense", "layer.00.units": "32", "layer.00.activation": "relu",
        "layer.00.kernel_regularizer.l1": "0.01",
        "layer.01.type": "Dropout", "layer.01.rate": "0.4",
        "layer.02.type": "Dense", "layer.02.units": "16", "layer.02.activation": "relu",
        "layer.02.kernel_regularizer.l1": "0.01",
        "layer.03.type": "Dense", "layer.03.units": "1", "layer.03.activation": "sigmoid"}
    assert {k: v for k, v in params.items() if k.startswith("model.") and k != "model.total_params"} == {
        "model.layers": "4", "model.hidden": "32,16", "model.activation": "relu", "model.dropout": "0.4",
        "model.l1": "0.01", "model.l2": "0.0"}
    # the data: training and validation parts (the tail validation_split cut), their digests tagged
    data = inputs_of(ours)
    assert set(data) == {"training", "validation"} and data["training"][1] != data["validation"][1]
    assert ours.data.tags["mlflow_dl.data_digest"] == data["training"][1]
    assert ours.data.tags["mlflow_dl.validation_digest"] == data["validation"][1]
    assert set(inputs_of(stock)) == {"train"}  # stock: the whole x, without the validation part
    x, y = lecture_data()
    assert data["training"][1] == blake2b_digest(x[:48], y[:48])  # validation_split=0.25 of 64 rows: the last 16
    assert data["validation"][1] == blake2b_digest(x[48:], y[48:])


def test_the_logged_digests_follow_the_values_and_the_roles(autologged):
    """What the runs show across fits: the same values (other array objects) the same datasets and key; one
    changed training value another training digest, the validation one kept; training and validation swapped
    the digests swapped and another comparability key."""
    x, y = lecture_data()
    xv, yv = lecture_data(rows=16, seed=1)

    def fit(train, validation):
        lecture_model().fit(*train, validation_data=validation, epochs=1, batch_size=16, verbose=0)
        run = mlflow.last_active_run()
        return inputs_of(run), run.data.tags["mlflow_dl.comparability_key"]

    base, base_key = fit((x, y), (xv, yv))
    assert base == {"training": ("training", blake2b_digest(x, y)),
                    "validation": ("validation", blake2b_digest(xv, yv))}
    assert fit((x.copy(), y.copy()), (xv.copy(), yv.copy())) == (base, base_key)
    changed = x.copy()
    changed[-1, -1] += 1.0  # the last value of the training rows
    edited, edited_key = fit((changed, y), (xv, yv))
    assert edited["training"] != base["training"] and edited["validation"] == base["validation"]
    assert edited_key != base_key
    swapped, swapped_key = fit((xv, yv), (x, y))
    assert swapped["training"][1] == base["validation"][1] and swapped["validation"][1] == base["training"][1]
    assert swapped_key != base_key


def test_a_second_fit_in_one_run_gets_a_nested_run_and_the_same_arrays_one_dataset(autologged, tmp_path):
    model = lecture_model()
    with mlflow.start_run() as run:
        lecture_fit(model, tmp_path)
        lecture_fit(model, tmp_path, initial_epoch=0, class_weight={0: 1.0, 1: 2.0})  # a param that changed
        assert mlflow.active_run().info.run_id == run.info.run_id
    first = mlflow.get_run(run.info.run_id)
    (second,) = [r for r in all_runs() if r.info.run_id != run.info.run_id]
    assert first.info.status == second.info.status == "FINISHED"
    assert second.data.tags["mlflow.parentRunId"] == run.info.run_id and second.info.run_name == "fit 2"
    assert first.data.params["class_weight"] == "None" and second.data.params["class_weight"] == "{0: 1.0, 1: 2.0}"
    assert len(mlflow.MlflowClient().get_metric_history(second.info.run_id, "val_loss")) == 2
    # the same arrays: one dataset (name and digest) shared by both runs
    assert inputs_of(first) == inputs_of(second)
    x, y = lecture_data(seed=1)  # other rows: another digest
    lecture_model().fit(x, y, validation_split=0.25, epochs=1, verbose=0)
    (third,) = [r for r in all_runs() if r.info.run_id not in (run.info.run_id, second.info.run_id)]
    assert inputs_of(third)["training"][1] != inputs_of(first)["training"][1]


def test_callback_by_hand_reads_fit_from_keras_and_logs_a_pandas_frame(tmp_path):
    """MlflowCallback passed to fit sees fit's arguments through Keras' fit frame (arguments_in_fit)."""
    x, y = lecture_data()
    frame = pd.DataFrame(x, columns=[f"c{i}" for i in range(6)])
    target = pd.Series(y, name="label")
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=1e-5)
    lecture_model().fit(frame[:48], target[:48], validation_data=(frame[48:], target[48:]), epochs=2, verbose=0,
                        callbacks=[plateau, mlflow_dl.MlflowCallback(log_model=False)])
    (run,) = all_runs()
    params = run.data.params
    assert params["batch_size"] == "32" and params["validation_split"] == "0.0"  # Keras' default batch size
    assert params["callbacks"] == "ReduceLROnPlateau"
    assert {k: params[f"reduce_lr_on_plateau.{k}"] for k in ("monitor", "factor", "patience", "min_lr")} == {
        "monitor": "val_loss", "factor": "0.5", "patience": "2", "min_lr": "1e-05"}
    assert params["model.hidden"] == "32,16" and params["optimizer"] == "Adam"
    data = inputs_of(run)
    assert set(data) == {"training", "validation"}
    (training,) = [d.dataset for d in run.inputs.dataset_inputs if d.dataset.name == "training"]
    assert '"label"' in training.schema and '"c0"' in training.schema  # the frame's columns and the target
    assert data["training"][1] == blake2b_digest(frame[:48], target[:48])
    assert data["validation"][1] == blake2b_digest(frame[48:], target[48:])


def test_a_custom_training_loop_logs_what_the_callback_can_see(tmp_path):
    """No model.fit on the stack: no fit arguments nor data, but epochs, optimizer and layers."""
    x, y = lecture_data()
    model = lecture_model()
    callbacks = keras.callbacks.CallbackList([mlflow_dl.MlflowCallback(log_model=False)], model=model, epochs=2,
                                             steps=1)
    callbacks.on_train_begin()
    for epoch in range(2):
        callbacks.on_epoch_begin(epoch)
        logs = model.train_on_batch(x, y, return_dict=True)
        callbacks.on_epoch_end(epoch, {k: float(v) for k, v in logs.items()})
    callbacks.on_train_end()
    (run,) = all_runs()
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["epochs"] == "2" and params["optimizer"] == "Adam" and params["model.l1"] == "0.01"
    assert "batch_size" not in params and "callbacks" not in params
    assert not run.inputs.dataset_inputs and "mlflow_dl.data_digest" not in run.data.tags


def test_tf_data_and_recurrent_layers(autologged):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5, 3)).astype("float32"), rng.normal(size=(40, 1)).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(8)
    val = tf.data.Dataset.from_tensor_slices((x[32:], y[32:])).batch(8)
    for _ in range(2):
        model = keras.Sequential([keras.Input((5, 3)), keras.layers.SimpleRNN(8, return_sequences=True),
                                  keras.layers.LSTM(4, dropout=0.2), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(train, validation_data=val, epochs=1, verbose=0)
    first, second = sorted(all_runs(), key=lambda r: r.info.start_time)
    params = first.data.params
    assert params["layer.00.type"] == "SimpleRNN" and params["layer.00.return_sequences"] == "True"
    assert params["layer.01.units"] == "4" and params["layer.01.dropout"] == "0.2"
    assert params["model.hidden"] == "8,4" and params["model.dropout"] == "0.2"
    assert set(inputs_of(first)) == {"training", "validation"}
    assert inputs_of(first) == inputs_of(second)  # the same pipelines: the same datasets


def test_a_deep_model_logs_every_layer(autologged):
    """Well over the 100 params of one log_batch call (MLflow's client splits the call)."""
    x, y = lecture_data()
    model = keras.Sequential([keras.Input((6,))] + [keras.layers.Dense(3, activation="tanh") for _ in range(40)]
                             + [keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    (run,) = all_runs()
    assert len(run.data.params) > 150 and run.data.params["layer.40.units"] == "1"
    assert run.data.params["model.hidden"] == ",".join(["3"] * 40)


def test_values_and_keys_stay_within_mlflow_limits():
    limited = fit_params.within_limits({"k" * 300: "v" * 7000, "short": "ok"})
    assert [len(k) for k in limited] == [250, 5] and len(limited["k" * 250]) == 6000


def test_digest_follows_the_values_and_not_the_object():
    x, y = lecture_data(rows=5000)
    assert fit_datasets.digest((x, y)) == fit_datasets.digest((x.copy(), y.copy()))
    changed = x.copy()
    changed[-1, -1] += 1.0  # the last value: every value is hashed
    assert fit_datasets.digest((changed, y)) != fit_datasets.digest((x, y))
    assert fit_datasets.digest((x, None)) != fit_datasets.digest((x, y))
    assert fit_datasets.digest((iter([x]), y)).startswith(fit_datasets.UNHASHED)  # a generator: not read


def test_keras_tuner_search_of_a_user_build_model_under_autolog(autologged, tmp_path):
    """The lecture's `kt.RandomSearch(build_model, ...).search(...)`: keras-tuner imports tensorboard
    for every trial, so mlflow-dl declares it; each trial completes and is tracked."""
    import keras_tuner as kt

    def build_model(hp):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(hp.Int("units", 4, 16, step=4), activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.Adam(hp.Choice("lr", [1e-2, 1e-3])), loss="binary_crossentropy")
        return model

    x, y = lecture_data()
    tuner = kt.RandomSearch(build_model, objective="val_loss", max_trials=2, seed=0, directory=str(tmp_path),
                            project_name="lecture")
    tuner.search(x, y, validation_split=0.25, epochs=1, verbose=0)
    statuses = [t.status for t in tuner.oracle.trials.values()]
    assert statuses == ["COMPLETED", "COMPLETED"]
    tracked = [r for r in all_runs() if "model.hidden" in r.data.params]
    assert len(tracked) >= 2 and all(r.info.status == "FINISHED" for r in tracked)


def test_custom_losses_regularizers_and_generators_never_break_the_fit(autologged):
    """What fit_params and fit_datasets cannot name or hash is logged as its kind, or left out."""
    x, y = lecture_data()

    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_true - y_pred))

    def batches():
        while True:
            yield x[:16], y[:16]

    model = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(4, kernel_regularizer=lambda w: 0.01 * keras.ops.sum(w ** 2)),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=my_loss)
    model.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0)
    (run,) = all_runs()
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["compile.loss"] == "my_loss" and params["layer.00.kernel_regularizer"] == "function"
    assert params["steps_per_epoch"] == "2" and params["batch_size"] == "None"
    # a generator is not read: its digest and key say so, and no dataset input stands for it
    assert run.data.tags["mlflow_dl.data_digest"].startswith("unhashed:") and not run.inputs.dataset_inputs
