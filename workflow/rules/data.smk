rule workflow_config:
    output:
        f"{R}/workflow_config.json",
    log:
        f"{R}/logs/workflow_config.log",
    params:
        config=config,
    conda:
        "../../environment.yml"
    run:
        io.write_json(output[0], params.config)


# Data is prepared (downloaded once, checksums verified) by its own job, never inside training:
# one job per root the trainings read (a dataset's default root, or each `data.root` of a
# config), so the record names and vouches for the very files trained on (Plan.data_sources).
# `skip_checksums: [mnist, ...]` in the config accepts a user's own copy without the official md5s.
rule prepare_data:
    output:
        f"{R}/data/{{dataset}}.json",
    log:
        f"{R}/logs/data/{{dataset}}.log",
    params:
        dataset=lambda wc: PLAN.data_sources()[wc.dataset][0],
        # Pre-quoted, as the option is absent for the default root.
        root=lambda wc: ("--root " + shlex.quote(PLAN.data_sources()[wc.dataset][1])
                         if PLAN.data_sources()[wc.dataset][1] is not None else ""),
        verify=lambda wc: "--no-verify" if PLAN.data_sources()[wc.dataset][0] in PLAN.workflow.skip_checksums else "",
    conda:
        "../../environment.yml"
    shell:
        "onecycle prepare-data --dataset {params.dataset:q} {params.root} --record {output:q} {params.verify} "
        "> {log:q} 2>&1"


# The Caffe mean images of ImageNet folders (a pass over every training image) get a job of
# their own, after the data's and before any training's, which then only reads the cache.
rule caffe_mean_image:
    input:
        lambda wc: [PLAN.data_record(*source) for source in PLAN.data_sources().values()
                    if source[0] == wc.mean_dataset],
    output:
        f"{R}/data/{{mean_dataset}}.caffe_mean.json",
    log:
        f"{R}/logs/data/{{mean_dataset}}.caffe_mean.log",
    params:
        splits=lambda wc: json.dumps(PLAN.caffe_mean_images(wc.mean_dataset)),
    threads: TRAIN_THREADS
    conda:
        "../../environment.yml"
    shell:
        "onecycle caffe-mean --dataset {wildcards.mean_dataset:q} --splits {params.splits:q} "
        "--record {output:q} > {log:q} 2>&1"
