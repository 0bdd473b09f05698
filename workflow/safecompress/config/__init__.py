"""Layer 1, settings: the config schema and its checks, the typed sections each step reads
(`specs`), and the one record per compression method (`methods`). Imports no torch."""
