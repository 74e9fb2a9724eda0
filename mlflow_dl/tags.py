"""The tags one layer writes and another reads (registry and refine read what fits and sweeps write).

Named once here, so the registry can read them without importing the code that writes them (and tensorflow).
"""

KEY_TAG = "mlflow_dl.comparability_key"  # which runs may be ranked together (fit/comparability.py)
PART_PREFIX = "mlflow_dl.comparability."  # the key's parts, one tag each
DATASET_TAG = PART_PREFIX + "dataset"
DIGEST_PART_TAG = PART_PREFIX + "digest"  # "unhashed:..." for data that was not in memory (fit/fit_datasets.py)
MODEL_SKIPPED_TAG = "mlflow_dl.model_skipped"  # why a run has no servable model
NONFINITE_TAG = "mlflow_dl.nonfinite_weights"  # why the logged weights are no candidate (NaN / infinity)
PRUNED_TAG = "mlflow_dl.pruned_at_epoch"  # a trial the pruner stopped, and the epoch it stopped at
PRUNED_REASON_TAG = "mlflow_dl.pruned_reason"
REFINES_TAG = "mlflow_dl.refines"  # a refined sweep's parent names the coarse sweep it refines
