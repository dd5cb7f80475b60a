# The report: training curves, confusion matrix on the held-out test chromosomes, data and
# embedding summaries (Markdown + HTML with inline SVG; scripts/report.py).


def report_args(inputs):
    args = [f"--title {shlex.quote(config['run_name'])}"]
    if "pretrain" in inputs:
        args += [f"--store {split}={RUN}/tokens/{split}" for split in PRETRAIN_SPLITS]
        args.append(f"--pretrain-run {RUN}/pretrain")
    if "finetune" in inputs:
        args.append(f"--finetune-run {RUN}/finetune")
    args += [f"--predictions {label}={RUN}/predictions/{label}.tsv" for label in LABELS]
    args += [f"--embeddings {path}" for path in inputs.get("embeddings", [])]
    return " ".join(args)


REPORT_INPUTS = report_inputs()


rule report:
    input:
        **REPORT_INPUTS,
    output:
        html=f"{RUN}/report/report.html",
        markdown=f"{RUN}/report/report.md",
        summary=f"{RUN}/report/summary.json",
    params:
        args=report_args(REPORT_INPUTS),
        script=Path(workflow.basedir) / "scripts" / "report.py",
        out=f"{RUN}/report",
    log:
        f"{RUN}/logs/report.log",
    shell:
        "{PYTHON} {params.script} {params.args} --out {params.out} > {log} 2>&1"
