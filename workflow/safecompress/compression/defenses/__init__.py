"""Membership inference defenses, compared with SafeCompress at equal density. Each is a
compression method (a record in `config.methods`): given a `job.Job` and its own config
sections, it returns a `job.Compressed` at the job's density.

advreg:      compress, then defend: magnitude pruning of the dense model, fine-tuned with Nasr
             et al.'s adversarial regularisation (`compression.adversarial`).
dpsgd:       DP-SGD through Opacus inside dynamic sparse training (SET regrowth).
relaxloss:   dynamic sparse training on RelaxLoss's target-loss objective.
miapruning:  MIA-Pruning: ADMM pruning of the dense model, then retraining with fixed masks.
distill:     a sparse student trained by DST on the dense model's soft labels.
"""
