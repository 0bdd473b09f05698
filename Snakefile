# SafeCompress: test-driven dynamic sparse training with a membership inference attack as the
# safety test (Zhu, Wang, Han, ASE 2022). The experiment grid is the DAG:
#   split (one per split seed) -> dense target + shadow models
#         -> compress (method x density x seed) and each recipe's reference models
#         -> attack every model -> summary tables and figures
from snakemake.utils import min_version

min_version("9.19")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    split=r"\d+",
    method=f"dense|{COMPRESSED}",
    density=r"[0-9.]+",
    seed=r"\d+",
    shadow=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
