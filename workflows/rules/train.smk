# Tokenize the pretraining genomes' train and val splits into token stores, pretrain on them,
# and finetune the species classifier on the manifest.tsv that `data split` wrote (held-out
# chromosomes for val/test). A run folder left by a failed attempt is resumed from its last
# checkpoint (--resume), otherwise replaced (--force).


def pretrain_fasta(split):
    """The <name>.<split>.fa files of the genomes chosen by pretrain.genomes (null: all)."""
    chosen = config["pretrain"].get("genomes")
    files = split_fasta(split)
    if chosen is None:
        return files
    unknown = sorted(set(chosen) - set(FILES))
    if unknown:
        raise ValueError(f"pretrain.genomes {unknown} are not in {MANIFEST} ({sorted(FILES)})")
    return [f for f in files if Path(f).name[: -len(f".{split}.fa")] in chosen]


PRETRAIN_SPLITS = [split for split in ("train", "val") if pretrain_fasta(split)]
RESUME_OR_FORCE = "$([ -f {run}/checkpoints/last.ckpt ] && echo --resume || echo --force)"


rule tokenize:
    input:
        lambda wildcards: pretrain_fasta(wildcards.split),
    output:
        f"{RUN}/tokens/{{split}}/index.parquet",
    params:
        store=lambda wildcards: f"{RUN}/tokens/{wildcards.split}",
    wildcard_constraints:
        split="train|val",
    log:
        f"{RUN}/logs/tokenize.{{split}}.log",
    shell:
        "{MAMBADNA} tokenize {input} -o {params.store} --force > {log} 2>&1"


rule pretrain:
    input:
        stores=[f"{RUN}/tokens/{split}/index.parquet" for split in PRETRAIN_SPLITS],
    output:
        model=f"{RUN}/pretrain/model/config.json",
        metrics=f"{RUN}/pretrain/metrics.csv",
    params:
        run=f"{RUN}/pretrain",
        start=RESUME_OR_FORCE.format(run=f"{RUN}/pretrain"),
        options=" ".join([
            f"--store {RUN}/tokens/train",
            f"--val-store {RUN}/tokens/val" if "val" in PRETRAIN_SPLITS else "",
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
        "{MAMBADNA} pretrain -o {params.run} {params.start} {params.options} > {log} 2>&1"


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
        start=RESUME_OR_FORCE.format(run=f"{RUN}/finetune"),
        model=finetune_start(),
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
        "{MAMBADNA} finetune --manifest {input.table} {params.model} -o {params.run} "
        "{params.start} {params.options} > {log} 2>&1"
