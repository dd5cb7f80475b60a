# Tokenize each split into a token store, pretrain on the train split, finetune the species
# classifier on the manifest.tsv that `data split` wrote (held-out chromosomes for val/test).


rule tokenize:
    input:
        lambda wildcards: split_fasta(wildcards.split),
    output:
        f"{RUN}/tokens/{{split}}/index.parquet",
    params:
        store=lambda wildcards: f"{RUN}/tokens/{wildcards.split}",
    wildcard_constraints:
        split="train|val|test",
    log:
        f"{RUN}/logs/tokenize.{{split}}.log",
    shell:
        "{MAMBADNA} tokenize {input} -o {params.store} --force > {log} 2>&1"


def pretrain_fasta():
    chosen = config["pretrain"].get("genomes")
    files = split_fasta("train")
    if chosen is None:
        return files
    unknown = sorted(set(chosen) - set(FILES))
    if unknown:
        raise ValueError(f"pretrain.genomes {unknown} are not in {MANIFEST} ({sorted(FILES)})")
    return [f for f in files if Path(f).name[: -len(".train.fa")] in chosen]


rule pretrain:
    input:
        fasta=pretrain_fasta(),
    output:
        model=f"{RUN}/pretrain/model/config.json",
        metrics=f"{RUN}/pretrain/metrics.csv",
    params:
        run=f"{RUN}/pretrain",
        options=" ".join([
            option("--preset", config["pretrain"].get("preset")),
            option("--seq-len", config["pretrain"].get("seq_len")),
            option("--batch-size", config["pretrain"].get("batch_size")),
            option("--max-steps", config["pretrain"].get("max_steps")),
            option("--devices", config["pretrain"].get("devices")),
            config["pretrain"].get("extra_args", ""),
        ]),
    threads: config["pretrain"].get("resources", {}).get("threads", 1)
    resources:
        **rule_resources("pretrain"),
    log:
        f"{RUN}/logs/pretrain.log",
    shell:
        "{MAMBADNA} pretrain --genome {input.fasta} -o {params.run} {params.options} "
        "> {log} 2>&1"


def finetune_start():
    if config["finetune"].get("from_pretrained", True):
        return f"--from {RUN}/pretrain/model"
    return option("--preset", config["finetune"].get("preset"))


rule finetune:
    input:
        table=f"{RUN}/splits/manifest.tsv",
        pretrained=[f"{RUN}/pretrain/model/config.json"]
        if config["finetune"].get("from_pretrained", True) else [],
    output:
        model=f"{RUN}/finetune/model/config.json",
        metrics=f"{RUN}/finetune/metrics.csv",
    params:
        run=f"{RUN}/finetune",
        start=finetune_start(),
        options=" ".join([
            option("--seq-len", config["finetune"].get("seq_len")),
            option("--batch-size", config["finetune"].get("batch_size")),
            option("--max-steps", config["finetune"].get("max_steps")),
            option("--devices", config["finetune"].get("devices")),
            config["finetune"].get("extra_args", ""),
        ]),
    threads: config["finetune"].get("resources", {}).get("threads", 1)
    resources:
        **rule_resources("finetune"),
    log:
        f"{RUN}/logs/finetune.log",
    shell:
        "{MAMBADNA} finetune --manifest {input.table} {params.start} -o {params.run} "
        "{params.options} > {log} 2>&1"
