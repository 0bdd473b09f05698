"""Layer 4, training: models and their files, devices, the training loop and its callbacks,
checkpoints, and the provenance written beside every model."""
