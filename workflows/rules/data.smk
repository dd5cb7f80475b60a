# Data: (simulate ->) fetch -> split. `data fetch` resumes and verifies; the flag file marks a
# complete, verified download (the genomes folder itself survives failed attempts for resume).

rule simulate:
    output:
        directory(f"{RUN}/simulated"),
    params:
        length=config["simulate"].get("length", 1_000_000),
        seed=config["simulate"].get("seed", 0),
        scale=config["simulate"].get("divergence_scale", 1.0),
        insertions=config["simulate"].get("insertion_rate", 0.45),
    log:
        f"{RUN}/logs/simulate.log",
    shell:
        "{MAMBADNA} simulate -o {output} --length {params.length} --seed {params.seed} "
        "--divergence-scale {params.scale} --insertion-rate {params.insertions} > {log} 2>&1"


def fetch_base_url(wildcards=None):
    if config["data"]["source"] == "simulate":
        return f"{RUN}/simulated"
    return config["data"].get("base_url")


rule fetch:
    input:
        manifest=MANIFEST,
        simulated=[f"{RUN}/simulated"] if config["data"]["source"] == "simulate" else [],
    output:
        touch(f"{RUN}/genomes/.fetched"),
    params:
        dest=f"{RUN}/genomes",
        base=option("--base-url", fetch_base_url()),
        unverified="--allow-unverified" if config["data"].get("allow_unverified") else "",
        retries=config["data"].get("retries", 5),
        only=" ".join(f"--only {shlex.quote(name)}" for name in ONLY),
    resources:
        downloads=1,
    log:
        f"{RUN}/logs/fetch.log",
    shell:
        "{MAMBADNA} data fetch {input.manifest} --dest {params.dest} {params.base} "
        "{params.unverified} --retries {params.retries} {params.only} --quiet > {log} 2>&1"


rule split:
    input:
        manifest=MANIFEST,
        fetched=f"{RUN}/genomes/.fetched",
    output:
        fasta=[f"{RUN}/splits/{name}.{split}.fa" for name, splits in FILES.items()
               for split in splits],
        table=[f"{RUN}/splits/manifest.tsv"] if LABELS else [],
    params:
        dest=f"{RUN}/genomes",
        out=f"{RUN}/splits",
        only=" ".join(f"--only {shlex.quote(name)}" for name in ONLY),
    log:
        f"{RUN}/logs/split.log",
    shell:
        "{MAMBADNA} data split {input.manifest} --dest {params.dest} -o {params.out} "
        "{params.only} --force > {log} 2>&1"
