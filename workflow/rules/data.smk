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


# Caffe's data layer on ImageNet folders reads every image squashed once to 256x256 (a uint8
# cache, as convert_imageset's LMDB) and the training images' mean: a job of their own squashes
# every split (one decoding pass, with progress lines in its log) and sums the mean, after the
# data's job and before any training's, which then only read them.
rule caffe_cache:
    input:
        lambda wc: [PLAN.data_record(*source) for source in PLAN.data_sources().values()
                    if source[0] == wc.cache_dataset],
    output:
        f"{R}/data/{{cache_dataset}}.caffe_cache.json",
    log:
        f"{R}/logs/data/{{cache_dataset}}.caffe_cache.log",
    params:
        splits=lambda wc: json.dumps(PLAN.caffe_caches(wc.cache_dataset)),
    threads: TRAIN_THREADS
    conda:
        "../../environment.yml"
    shell:
        "onecycle caffe-cache --dataset {wildcards.cache_dataset:q} --splits {params.splits:q} "
        "--record {output:q} > {log:q} 2>&1"
