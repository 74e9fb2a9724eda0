"""Tracking: the one Keras callback every fit goes through, its plots and the logged model."""
