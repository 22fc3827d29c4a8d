from onecycle.training.processes import launch_prefix


rule train:
    input:
        unpack(_train_inputs),
    output:
        metrics=f"{R}/train/{{train_job}}/metrics.json",
        history=f"{R}/train/{{train_job}}/history.csv",
        log_csv=f"{R}/train/{{train_job}}/train_log.csv",
        config=f"{R}/train/{{train_job}}/config.json",
    log:
        f"{R}/logs/train/{{train_job}}/run.log",
    params:
        out=lambda wc: PLAN.trains[wc.train_job].out_dir,
        # Pre-quoted: the only values here that are not formatted with :q below.
        bounds=lambda wc, input: f"--bounds {shlex.quote(input.bounds)}" if "bounds" in input.keys() else "",
        # `onecycle train`, or for N > 1 processes `torchrun --standalone --nproc_per_node N -m
        # onecycle.cli train`: data-parallel, one process per GPU (onecycle.training.distributed),
        # or per `gpus` of the experiment on CPU at tiny scale.
        launcher=lambda wc: launch_prefix(PLAN.trains[wc.train_job].processes, "train"),
        # The workflow's gpus_per_job, or the experiment's own `gpus`; sharing: see common.smk.
        gpus=lambda wc: PLAN.trains[wc.train_job].gpus,
        per_device=lambda wc: PLAN.trains[wc.train_job].per_device,
    threads: TRAIN_THREADS
    resources:
        gpu=lambda wc: PLAN.trains[wc.train_job].gpu_seats,
    conda:
        "../../environment.yml"
    shell:
        # The exec wrapper claims distinct GPUs (Snakemake only counts them, snakemake#281)
        # before torchrun starts one process per claimed GPU; a killed job resumes from its
        # checkpoint when run again, and a checkpoint of another config is moved aside.
        "python -m onecycle.dag.gpu_slots -n {params.gpus} --per-device {params.per_device} -- "
        "{params.launcher} --config {input.spec:q} --out {params.out:q} {params.bounds} --threads {threads} "
        "--set-aside-stale "
        "> {log:q} 2>&1"
