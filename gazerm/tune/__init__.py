"""Hyper-parameter search over the training job (Ray Tune) and selection of the model it found."""
