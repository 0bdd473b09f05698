"""Layer 5, privacy: what a membership inference attack sees of a model (`signals`,
`features`), the attacks themselves (`attacks/`), their metrics, the bootstrap of every
interval, and paired comparisons between methods."""
