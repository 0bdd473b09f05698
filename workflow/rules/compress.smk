rule compress:
    """One sparse model per method x density x seed."""
    input:
        split=results("{dataset}/split{split}/split.csv"),
        dense=dense_model_if_pruned,
    output:
        model=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/model.safetensors"
        ),
        history=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/history.csv"
        ),
        updates=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/updates.csv"
        ),
    log:
        results(
            "logs/compress/{dataset}_split{split}_{method}_density{density}_seed{seed}.log"
        ),
    benchmark:
        results(
            "benchmarks/compress/{dataset}_split{split}_{method}_density{density}_seed{seed}.tsv"
        )
    wildcard_constraints:
        method=compressed([m for m in METHODS if m not in LOGGED]),
    # before the attack jobs: a long compression job started last would hold up the tables
    priority: 1
    conda:
        ENV
    threads: config["resources"]["threads"]
    resources:
        **TRAINING_RESOURCES,
    params:
        dense=lambda w, input: f"--dense {input.dense}" if input.dense else "",
        config=lambda w: dataset_json(w.dataset, "model", "train"),
        sections=lambda w: method_sections(w.method, w.method in LOGGED),
        method=lambda w: compressor(w.method)[0],
        variant=lambda w: compressor(w.method)[1],
    shell:
        "python -m safecompress.steps.compress --dataset {wildcards.dataset} --split {input.split}"
        " --method {params.method} --variant {params.variant} --density {wildcards.density}"
        " --seed {wildcards.seed} {params.dense} --out-dir $(dirname {output.model})"
        " --data {params.config[data]:q} --model {params.config[model]:q}"
        " --train {params.config[train]:q} {params.sections} > {log} 2>&1"


# The selecting methods' jobs with safecompress.log_candidates: their logged candidates too
# (no job at all without such methods).
use rule compress as compress_logged with:
    output:
        model=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/model.safetensors"
        ),
        history=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/history.csv"
        ),
        updates=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/updates.csv"
        ),
        candidates=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/candidates.npz"
        ),
    wildcard_constraints:
        method="|".join(LOGGED) or "(?!)",
    conda:
        ENV
