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
rule prepare_data:
    output:
        f"{R}/data/{{dataset}}.json",
    log:
        f"{R}/logs/data/{{dataset}}.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle prepare-data --dataset {wildcards.dataset:q} --record {output:q} > {log:q} 2>&1"
