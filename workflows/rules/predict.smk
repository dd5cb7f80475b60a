# Classify every species' held-out test chromosomes (one predictions file per true label, with a
# row per window for the confusion matrix) and embed them to Parquet.


rule classify:
    input:
        model=f"{RUN}/finetune/model/config.json",
        fasta=f"{RUN}/splits/{{label}}.test.fa",
    output:
        f"{RUN}/predictions/{{label}}.tsv",
    params:
        model=f"{RUN}/finetune/model",
        options=" ".join([
            option("--window", config["classify"].get("window")),
            option("--stride", config["classify"].get("stride")),
            option("--batch-size", config["classify"].get("batch_size")),
            config["classify"].get("extra_args", ""),
        ]),
    threads: config["classify"].get("resources", {}).get("threads", 1)
    resources:
        **rule_resources("classify"),
    log:
        f"{RUN}/logs/classify.{{label}}.log",
    shell:
        "{MAMBADNA} classify --model {params.model} {input.fasta} -o {output} --per-window "
        "--quiet {params.options} > {log} 2>&1"


def embedding_model():
    """The finetuned model when there are labels, else the pretrained one."""
    return f"{RUN}/finetune/model" if LABELS else f"{RUN}/pretrain/model"


rule embed:
    input:
        model=f"{embedding_model()}/config.json",
        fasta=f"{RUN}/splits/{{name}}.{{split}}.fa",
    output:
        f"{RUN}/embeddings/{{name}}.{{split}}.parquet",
    params:
        model=embedding_model(),
        options=" ".join([
            option("--window", config["embed"].get("window")),
            option("--stride", config["embed"].get("stride")),
            option("--pool", config["embed"].get("pool")),
            option("--batch-size", config["embed"].get("batch_size")),
            config["embed"].get("extra_args", ""),
        ]),
    threads: config["embed"].get("resources", {}).get("threads", 1)
    resources:
        **rule_resources("embed"),
    log:
        f"{RUN}/logs/embed.{{name}}.{{split}}.log",
    shell:
        "{MAMBADNA} embed --model {params.model} {input.fasta} -o {output} --quiet "
        "{params.options} > {log} 2>&1"
