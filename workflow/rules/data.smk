rule split:
    """One seeded split into disjoint member / non-member sets, checked before any training."""
    output:
        results("{dataset}/split{split}/split.csv"),
    log:
        results("logs/split/{dataset}_split{split}.log"),
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        data=lambda w: dataset_json(w.dataset)["data"],
        evaluation=as_json(specs.select(specs.CanarySpec, config["evaluation"])),
    shell:
        "python -m safecompress.steps.split --dataset {wildcards.dataset} --split-seed {wildcards.split}"
        " --data {params.data:q} --evaluation {params.evaluation:q} --out {output} > {log} 2>&1"
