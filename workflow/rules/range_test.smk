rule range_test:
    input:
        unpack(_range_inputs),
    output:
        history=f"{R}/range_test/{{range_job}}/history.csv",
        bounds=f"{R}/range_test/{{range_job}}/bounds.json",
        metrics=f"{R}/range_test/{{range_job}}/metrics.json",
    log:
        f"{R}/logs/range_test/{{range_job}}/run.log",
    params:
        out=lambda wc: PLAN.range_tests[wc.range_job].out_dir,
        gpus=lambda wc: PLAN.range_tests[wc.range_job].gpus,
        per_device=lambda wc: PLAN.range_tests[wc.range_job].per_device,
    threads: TRAIN_THREADS
    resources:
        gpu=lambda wc: PLAN.range_tests[wc.range_job].gpu_seats,
    conda:
        "../../environment.yml"
    shell:
        "python -m onecycle.dag.gpu_slots -n {params.gpus} --per-device {params.per_device} -- "
        "onecycle range-test --config {input.spec:q} --out {params.out:q} --threads {threads} --set-aside-stale "
        "> {log:q} 2>&1"


rule combine_bounds:
    input:
        lambda wc: [job.out_dir / "bounds.json" for job in PLAN.experiment_range_tests(wc.experiment)],
    output:
        f"{R}/range_test/{{experiment}}/bounds.json",
    log:
        f"{R}/logs/range_test/{{experiment}}/combine_bounds.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle combine-bounds --out {output:q} {input:q} > {log:q} 2>&1"
