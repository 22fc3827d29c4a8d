"""What the Snakemake DAG needs beyond its rules, kept in the package so it is tested.

- run_specs: each job's spec.json, written as the DAG is built, and the finished runs a DAG run
  redoes, moved aside first;
- gpu_slots: each GPU job claims its own devices (Snakemake counts GPUs but never says which);
- gpu_check: a local run whose jobs claim GPUs this machine lacks stops before any job, in one line;
- stale_locks: Snakemake's lock after a SIGKILL, removed when no run of the workflow is alive;
- snakemake_report: the report directives that embed figures in Snakemake's HTML report.
"""
