# Figures: each a PNG for reading and a PDF for papers, one style (safecompress.reporting.figures, steps.figures).
# Summary figures read the paper table: means with 95 % intervals (t over seeds, or one model's
# bootstrap interval).


rule figure_accuracy:
    input:
        table=results("tables/paper_table.csv"),
    output:
        **figure_outputs("accuracy_vs_density", "accuracy_vs_density"),
    log:
        results("logs/figures/accuracy_vs_density.log"),
    conda:
        ENV
    shell:
        "python -m safecompress.steps.figures accuracy --paper-table {input.table} --out {output.png} > {log} 2>&1"


rule figure_attack:
    input:
        table=results("tables/paper_table.csv"),
    output:
        **figure_outputs("{metric}_vs_density", "attack_vs_density"),
    log:
        results("logs/figures/{metric}_vs_density.log"),
    wildcard_constraints:
        metric="auc|tpr",
    conda:
        ENV
    params:
        metric=lambda w: {"auc": "auc", "tpr": "tpr_at_1pct_fpr"}[w.metric],
    shell:
        "python -m safecompress.steps.figures attack --paper-table {input.table} --metric {params.metric}"
        " --out {output.png} > {log} 2>&1"


rule figure_tradeoff:
    input:
        table=results("tables/paper_table.csv"),
        ablation=[results("tables/ablation.csv")] if ablation_variants() else [],
    output:
        **figure_outputs("tradeoff", "tradeoff"),
    log:
        results("logs/figures/tradeoff.log"),
    conda:
        ENV
    params:
        attack=config["evaluation"]["tradeoff_attack"],
        ablation=lambda w, input: (
            f"--ablation {input.ablation}" if input.ablation else ""
        ),
        curves=as_json(curve_lines(list(CURVES.values()), config)),
    shell:
        "python -m safecompress.steps.figures tradeoff --paper-table {input.table} --attack {params.attack}"
        " {params.ablation} --curves {params.curves:q} --out {output.png} > {log} 2>&1"


rule figure_training:
    input:
        lambda w: [
            f"{directory}/history.csv" for directory, *_ in model_labels(w.dataset)
        ],
    output:
        **figure_outputs("{dataset}/training_curves", "training_curves"),
    log:
        results("logs/figures/{dataset}_training_curves.log"),
    # off the path to the tables: run while attacks queue, not after them
    priority: 1
    conda:
        ENV
    params:
        labels=lambda w: [label for *_, label in model_labels(w.dataset)],
    shell:
        "python -m safecompress.steps.figures training --history {input} --label {params.labels:q}"
        " --out {output.png} > {log} 2>&1"


rule figure_roc:
    input:
        lambda w: [
            f"{directory}/scores.csv" for directory, *_ in model_labels(w.dataset)
        ],
    output:
        **figure_outputs("{dataset}/roc", "roc"),
    log:
        results("logs/figures/{dataset}_roc.log"),
    conda:
        ENV
    params:
        methods=lambda w: [m for _, m, *_ in model_labels(w.dataset)],
        densities=lambda w: [d for _, _, d, _ in model_labels(w.dataset)],
        attacks=roc_attacks(),
        bootstrap=config["evaluation"]["bootstrap"],
    shell:
        "python -m safecompress.steps.figures roc --scores {input} --method {params.methods}"
        " --density {params.densities} --attack {params.attacks} --bootstrap {params.bootstrap}"
        " --out {output.png} > {log} 2>&1"


rule figure_layer_density:
    input:
        lambda w: [
            f"{directory}/model.safetensors"
            for directory, *_ in model_labels(w.dataset, dense=False)
        ],
    output:
        **figure_outputs("{dataset}/layer_density", "layer_density"),
    log:
        results("logs/figures/{dataset}_layer_density.log"),
    # off the path to the tables: run while attacks queue, not after them
    priority: 1
    conda:
        ENV
    params:
        labels=lambda w: [label for *_, label in model_labels(w.dataset, dense=False)],
    shell:
        "python -m safecompress.steps.figures layer_density --models {input}"
        " --label {params.labels:q} --out {output.png} > {log} 2>&1"


rule figure_ablation:
    input:
        table=results("tables/ablation.csv"),
    output:
        **figure_outputs("ablation", "ablation"),
    log:
        results("logs/figures/ablation.log"),
    # off the path to the tables: run while attacks queue, not after them
    priority: 1
    conda:
        ENV
    params:
        attack=config["evaluation"]["tradeoff_attack"],
    shell:
        "python -m safecompress.steps.figures ablation --table {input.table}"
        " --attack {params.attack} --out {output.png} > {log} 2>&1"


rule figure_candidates:
    input:
        candidate_log,
    output:
        **figure_outputs("{dataset}/candidates", "candidates"),
    log:
        results("logs/figures/{dataset}_candidates.log"),
    # off the path to the tables: run while attacks queue, not after them
    priority: 1
    conda:
        ENV
    shell:
        "python -m safecompress.steps.figures candidates --updates {input} --out {output.png} > {log} 2>&1"


rule figure_validity:
    input:
        table=results("tables/validity.csv"),
        candidates=results("tables/validity_candidates.csv"),
    output:
        **figure_outputs("validity", "validity"),
    log:
        results("logs/figures/validity.log"),
    # off the path to the tables: run while attacks queue, not after them
    priority: 1
    conda:
        ENV
    shell:
        "python -m safecompress.steps.figures validity --candidates {input.candidates}"
        " --table {input.table} --out {output.png} > {log} 2>&1"
