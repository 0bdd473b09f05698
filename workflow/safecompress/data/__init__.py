"""Layer 2, data: where data sets come from (`sources`, `pretrained`), the seeded split into
members, non-members and the attacker's pool (`splits`), and training batches (`batches`)."""
