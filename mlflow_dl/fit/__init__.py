"""What a fit records: MlflowCallback, its epochs and best one, params, datasets, artifacts and the logged model."""
