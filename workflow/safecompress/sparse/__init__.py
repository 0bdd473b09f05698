"""Layer 3, sparsity: the engine that owns a model's masks, its layer-wise densities and the
prune and grow criteria of a mask update (`engine`)."""
