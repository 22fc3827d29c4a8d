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


# Data is prepared (downloaded once, checksums verified) by its own job, never inside training.
# `skip_checksums: [mnist, ...]` in the config accepts a user's own copy without the official md5s.
rule prepare_data:
    output:
        f"{R}/data/{{dataset}}.json",
    log:
        f"{R}/logs/data/{{dataset}}.log",
    params:
        verify=lambda wc: "--no-verify" if wc.dataset in PLAN.workflow.skip_checksums else "",
    conda:
        "../../environment.yml"
    shell:
        "onecycle prepare-data --dataset {wildcards.dataset:q} --record {output:q} {params.verify} > {log:q} 2>&1"


# The Caffe mean images of ImageNet folders (a pass over every training image) get a job of
# their own, after the data's and before any training's, which then only reads the cache.
rule caffe_mean_image:
    input:
        f"{R}/data/{{mean_dataset}}.json",
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
