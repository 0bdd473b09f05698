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
        canaries=config["evaluation"].get("canaries", 0),
    shell:
        "python -m safecompress.steps.split --dataset {wildcards.dataset} --split-seed {wildcards.split}"
        " --data {params.data:q} --canaries {params.canaries} --out {output} > {log} 2>&1"
