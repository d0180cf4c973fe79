# dermflow: HAM10000 → hair removal → image cache → split → (GAN, classifiers, report).
# Run: snakemake --cores 8 --resources gpu=2          (real HAM10000, config.yaml)
#      snakemake --profile profiles/demo               (embedded demo dataset, CPU)
from snakemake.utils import min_version

min_version("8.20")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/report.smk"


# The report opens on the answer: a page the report rule writes from the results.
report: report_description()


rule all:
    input:
        final_targets(),
    default_target: True
