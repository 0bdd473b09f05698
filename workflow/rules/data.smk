rule split:
    """One seeded split into disjoint member / non-member sets, checked before any training."""
    output:
        results("{dataset}/split.csv"),
    log:
        results("logs/split/{dataset}.log"),
    conda:
        ENV
    resources:
        **RESOURCES,
    params:
        data=lambda w: dataset_json(w.dataset)["data"],
    shell:
        "python -m safecompress.steps.split --dataset {wildcards.dataset} --data {params.data:q} --out {output} > {log} 2>&1"
