rule fit_attacker:
    """A network attack's attacker (nasr, whitebox), fitted on the shadow models once per data
    set and seed: it depends on nothing else, and every target of that seed attacked with the
    shadow models (all of them under dense references, else the dense targets) reuses it.
    """
    input:
        shadow=shadow_files,
    output:
        results("{dataset}/split{split}/attackers/seed{seed}/{attack}.safetensors"),
    log:
        results("logs/fit_attacker/{dataset}_split{split}_{attack}_seed{seed}.log"),
    benchmark:
        results(
            "benchmarks/fit_attacker/{dataset}_split{split}_{attack}_seed{seed}.tsv"
        )
    wildcard_constraints:
        attack="|".join(specs.NETWORK_ATTACKS),
    # with the training jobs: started last, it held up the dense target's attack and the tables
    priority: 1
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        shadows=shadow_dirs,
    shell:
        "python -m safecompress.steps.fit_attackers --attack {wildcards.attack}"
        " --shadows {params.shadows} --seed {wildcards.seed} --out {output} > {log} 2>&1"


rule train_references:
    """The K reference models of one recipe (method x density x variant), trained by that
    recipe on the attacker's K draws of its pool, in one job, and the network attacks'
    attackers fitted on them once: what the recipe's targets (every seed) are attacked with
    under `evaluation.references: matched`."""
    input:
        split=results("{dataset}/split{split}/split.csv"),
        teachers=shadow_models,
    output:
        table=results(
            "{dataset}/split{split}/references/{method}/density{density}/references.csv"
        ),
        attackers=recipe_attackers(
            results("{dataset}/split{split}/references/{method}/density{density}")
        ),
    log:
        results(
            "logs/train_references/{dataset}_split{split}_{method}_density{density}.log"
        ),
    benchmark:
        results(
            "benchmarks/train_references/{dataset}_split{split}_{method}_density{density}.tsv"
        )
    wildcard_constraints:
        method=COMPRESSED,
    priority: 1
    conda:
        ENV
    threads: config["resources"]["threads"]
    resources:
        **TRAINING_RESOURCES,
    params:
        shadows=shadow_dirs,
        config=lambda w: dataset_json(w.dataset, "model", "train"),
        sections=lambda w: method_sections(w.method),
        method=lambda w: compressor(w.method)[0],
        variant=lambda w: compressor(w.method)[1],
        attackers=network_attacks(),
    shell:
        "python -m safecompress.steps.references --dataset {wildcards.dataset}"
        " --split {input.split} --method {params.method} --variant {params.variant}"
        " --density {wildcards.density} --shadows {params.shadows}"
        " --attackers {params.attackers}"
        " --out-dir $(dirname {output.table}) --data {params.config[data]:q}"
        " --model {params.config[model]:q} --train {params.config[train]:q}"
        " {params.sections} > {log} 2>&1"


rule attack:
    """Every evaluation attack on one target model; the attacker knows only its own pool and
    the reference models trained on it (its recipe's, or the dense shadow models)."""
    input:
        split=results("{dataset}/split{split}/split.csv"),
        model=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/model.safetensors"
        ),
        references=reference_files,
        adversaries=adversary_files,
    output:
        table=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/attacks.csv"
        ),
        signals=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/signals.csv"
        ),
        scores=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/scores.csv"
        ),
    log:
        results(
            "logs/attack/{dataset}_split{split}_{method}_density{density}_seed{seed}.log"
        ),
    benchmark:
        results(
            "benchmarks/attack/{dataset}_split{split}_{method}_density{density}_seed{seed}.tsv"
        )
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        references=reference_dirs,
        kind=lambda w: "matched" if matched(w) else "dense",
        data=lambda w: dataset_json(w.dataset)["data"],
        evaluation=as_json(specs.select(specs.EvaluationSpec, config["evaluation"])),
    shell:
        "python -m safecompress.steps.attack --dataset {wildcards.dataset} --split {input.split}"
        " --model {input.model} --shadows {params.references} --references {params.kind}"
        " --split-seed {wildcards.split} --seed {wildcards.seed}"
        " --adversaries {input.adversaries}"
        " --out-dir $(dirname {output.table}) --data {params.data:q}"
        " --evaluation {params.evaluation:q} > {log} 2>&1"


rule summarize:
    """summary.csv (every model x attack) and the paper-style tables."""
    input:
        attack_tables,
    output:
        summary=report(
            results("tables/summary.csv"),
            caption="../report/summary.rst",
            category="Tables",
        ),
        paper=results("tables/paper_table.csv"),
        markdown=report(
            results("tables/paper_table.md"),
            caption="../report/paper_table.rst",
            category="Tables",
        ),
    log:
        results("logs/summarize.log"),
    # first of the jobs the last attack makes ready: the figures wait for it
    priority: 1
    conda:
        ENV
    resources:
        **RESOURCES,
    shell:
        "python -m safecompress.steps.summarize --inputs {input} --summary {output.summary}"
        " --paper-table {output.paper} --markdown {output.markdown} > {log} 2>&1"


rule paired:
    """paired.csv: every method against DST and SafeCompress on the same samples, differences
    with bootstrap intervals (a job of its own: no figure waits for its resamples)."""
    input:
        attack_tables,
    output:
        report(
            results("tables/paired.csv"),
            caption="../report/paired.rst",
            category="Tables",
        ),
    log:
        results("logs/paired.log"),
    # first of the jobs the last attack makes ready: the longest of them
    priority: 1
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        bootstrap=config["evaluation"]["bootstrap"],
    shell:
        "python -m safecompress.steps.summarize --inputs {input} --paired {output}"
        " --bootstrap {params.bootstrap} > {log} 2>&1"


rule frontier:
    """The frontier as a table: every model point per density, its Pareto status and which
    methods' points dominate it (under the trade-off attack, as figures/tradeoff)."""
    input:
        results("tables/paper_table.csv"),
    output:
        report(
            results("tables/frontier.csv"),
            caption="../report/frontier.rst",
            category="Tables",
        ),
    log:
        results("logs/frontier.log"),
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        attack=config["evaluation"]["tradeoff_attack"],
    shell:
        "python -m safecompress.steps.frontier --paper-table {input} --attack {params.attack}"
        " --out {output} > {log} 2>&1"


rule summarize_ablation:
    """SafeCompress variants at the ablation density: lambda, N and strategy-set sweeps, and
    each variant paired with DST and SafeCompress on the same samples."""
    input:
        variants=ablation_tables,
        baselines=ablation_baseline_tables,
    output:
        table=report(
            results("tables/ablation.csv"),
            caption="../report/ablation_table.rst",
            category="Tables",
        ),
        paired=results("tables/ablation_paired.csv"),
    log:
        results("logs/summarize_ablation.log"),
    # off the path to the tables: run while attacks queue, not after them
    priority: 1
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        bootstrap=config["evaluation"]["bootstrap"],
    shell:
        "python -m safecompress.steps.summarize --inputs {input.variants} --summary {output.table}"
        " --baselines {input.baselines} --paired {output.paired}"
        " --bootstrap {params.bootstrap} > {log} 2>&1"


rule attack_candidates:
    """Every candidate a SafeCompress model's safety test scored, attacked by the evaluation's
    loss, LiRA and RMIA attacks on the model's own references (validity of the test)."""
    input:
        split=results("{dataset}/split{split}/split.csv"),
        updates=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/updates.csv"
        ),
        candidates=results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/candidates.npz"
        ),
        references=reference_files,
    output:
        results(
            "{dataset}/split{split}/{method}/density{density}/seed{seed}/candidate_attacks.csv"
        ),
    log:
        results(
            "logs/attack_candidates/{dataset}_split{split}_{method}_density{density}_seed{seed}.log"
        ),
    # off the path to the tables: run while attacks queue, not after them
    priority: 1
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        references=reference_dirs,
    shell:
        "python -m safecompress.steps.validity candidates --dataset {wildcards.dataset}"
        " --split {input.split} --model-dir $(dirname {output}) --shadows {params.references}"
        " --method {wildcards.method} --density {wildcards.density}"
        " --split-seed {wildcards.split} --seed {wildcards.seed} > {log} 2>&1"


rule validity:
    """Does the safety test predict the judge: per update, the rank correlation between the
    candidates' safety leakage and their evaluation AUC, pooled with a bootstrap interval.
    """
    input:
        candidate_attack_tables,
    output:
        table=report(
            results("tables/validity.csv"),
            caption="../report/validity_table.rst",
            category="Tables",
        ),
        updates=results("tables/validity_updates.csv"),
        candidates=results("tables/validity_candidates.csv"),
    log:
        results("logs/validity.log"),
    # off the path to the tables: run while attacks queue, not after them
    priority: 1
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        bootstrap=config["evaluation"]["bootstrap"],
    shell:
        "python -m safecompress.steps.validity table --inputs {input}"
        " --bootstrap {params.bootstrap} --out-dir $(dirname {output.table}) > {log} 2>&1"
