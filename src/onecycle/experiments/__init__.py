"""From a workflow config to a plan of jobs: the step between a YAML file and Snakemake.

- loading: reads config files strictly (repeated keys, aliases and size bombs refused, naming
  file, line and key);
- config: the typed model of one job (a training run or a range test), validated before work;
  advise_config: a run config with `onecycle advise`'s blocks;
- workflow: the typed model of a workflow config (experiments, groups, claims, bounds studies);
- expansion: `expand(config) -> Plan`, every experiment x group x seed as a validated Job with
  fixed paths; bounds_study turns a study block into groups, scale shrinks any config to tiny;
- identity: a run's config digest, and whether a run folder holds a run of the planned config;
- cost: `onecycle plan`, what a config costs before it runs; schema: the JSON Schema export.
"""
