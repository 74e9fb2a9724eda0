import pytest

from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec, parse_list
from mlflow_dl.errors import ConfigError


@pytest.mark.parametrize("kwargs, field, accepted", [
    ({"dropout": 1.0}, "dropout=1.0", "[0, 1)"),
    ({"dropout": -0.1}, "dropout=-0.1", "[0, 1)"),
    ({"l1": -1e-3}, "l1=-0.001", ">= 0"),
    ({"l2": -1.0}, "l2=-1.0", ">= 0"),
    ({"hidden": ""}, "hidden=''", "positive layer sizes"),
    ({"hidden": "64,0"}, "hidden='64,0'", "positive layer sizes"),
    ({"hidden": "a,b"}, "hidden='a,b'", "int"),
    ({"reg_layers": "some"}, "reg_layers='some'", "all or widest"),
])
def test_model_spec_rejects_bad_values_naming_field_value_and_range(kwargs, field, accepted):
    with pytest.raises(ConfigError) as err:
        ModelSpec(**kwargs)
    message = str(err.value)
    assert field in message and accepted in message and "\n" not in message


@pytest.mark.parametrize("kwargs, field", [
    ({"lr": -0.1}, "lr=-0.1"), ({"lr": 0.0}, "lr=0.0"), ({"epochs": 0}, "epochs=0"),
    ({"patience": -1}, "patience=-1"), ({"min_delta": -1.0}, "min_delta=-1.0"),
])
def test_fit_spec_rejects_bad_values(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        FitSpec(**kwargs)


def test_data_spec_rejects_splits_that_leave_no_training_rows():
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        DataSpec(val_fraction=0.5, test_fraction=0.5)


def test_params_are_flat_strings_with_section_prefixes():
    params = TrialSpec(model=ModelSpec(hidden="16,8", l1=0.01)).params()
    assert params["model.hidden"] == "16,8"
    assert params["model.l1"] == "0.01"
    assert params["fit.patience"] == "10"
    assert params["data.dataset"] == "breast_cancer"
    assert all(isinstance(v, str) for v in params.values())


def test_parse_list_casts_and_skips_blanks():
    assert parse_list("1e-3, 0.1,", float) == (0.001, 0.1)
    assert parse_list("128,64", int) == (128, 64)
