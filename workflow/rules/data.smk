rule split:
    """One seeded split into disjoint member / non-member sets, checked before any training."""
    output:
        results("{dataset}/split.csv"),
    log:
        results("logs/split/{dataset}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        data=lambda w: section_json(dataset=w.dataset)["data"],
    shell:
        "python -m safecompress.split --dataset {wildcards.dataset} --data {params.data:q} --out {output} > {log} 2>&1"
