rule train_dense:
    """The uncompressed target model, trained on the members (target_train, known_members)."""
    input:
        split=results("{dataset}/split{split}/split.csv"),
    output:
        model=results(
            "{dataset}/split{split}/dense/density1.0/seed{seed}/model.safetensors"
        ),
        history=results(
            "{dataset}/split{split}/dense/density1.0/seed{seed}/history.csv"
        ),
    log:
        results("logs/train_dense/{dataset}_split{split}_seed{seed}.log"),
    benchmark:
        results("benchmarks/train_dense/{dataset}_split{split}_seed{seed}.tsv")
    conda:
        ENV
    threads: config["resources"]["threads"]
    resources:
        **TRAINING_RESOURCES,
    params:
        config=lambda w: dataset_json(w.dataset, "model", "train"),
    shell:
        "python -m safecompress.steps.train --dataset {wildcards.dataset} --split {input.split} --role target"
        " --seed {wildcards.seed} --out-dir $(dirname {output.model})"
        " --data {params.config[data]:q} --model {params.config[model]:q}"
        " --train {params.config[train]:q} > {log} 2>&1"


rule train_shadow:
    """Shadow model k: the attacker's imitation of the target, trained on its own data; also
    its reference model (signals on its own pool, logits on the queried samples)."""
    input:
        split=results("{dataset}/split{split}/split.csv"),
    output:
        model=results("{dataset}/split{split}/shadow/{shadow}/model.safetensors"),
        history=results("{dataset}/split{split}/shadow/{shadow}/history.csv"),
        signals=results("{dataset}/split{split}/shadow/{shadow}/signals.csv"),
        features=results("{dataset}/split{split}/shadow/{shadow}/features.npy"),
        queries=results("{dataset}/split{split}/shadow/{shadow}/queries.csv"),
    log:
        results("logs/train_shadow/{dataset}_split{split}_{shadow}.log"),
    benchmark:
        results("benchmarks/train_shadow/{dataset}_split{split}_{shadow}.tsv")
    conda:
        ENV
    threads: config["resources"]["threads"]
    resources:
        **TRAINING_RESOURCES,
    params:
        config=lambda w: dataset_json(w.dataset, "model", "train"),
    shell:
        "python -m safecompress.steps.train --dataset {wildcards.dataset} --split {input.split} --role shadow"
        " --seed {wildcards.shadow} --out-dir $(dirname {output.model})"
        " --data {params.config[data]:q} --model {params.config[model]:q}"
        " --train {params.config[train]:q} > {log} 2>&1"
