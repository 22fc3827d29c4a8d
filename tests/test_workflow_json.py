"""Every JSON the workflow writes from a config reads back, through the reader that reads it, as
what was written, for every job of every shipped config at both scales (issue 12: io.write_json
writes 1e-06, which the YAML 1.1 reader took for a string).

The rules write with io.write_json: workflow_config.json (rule workflow_config), read by
`onecycle report` (load_mapping, then expand); each training's spec.json (written by the Snakefile,
onecycle.dag.run_specs), read by `onecycle train` (load_run_config); each range test's spec.json
(the same), read by `onecycle range-test` (load_range_test_config)."""

import pytest

from conftest import REPO
from onecycle import io
from onecycle.experiments.config import load_range_test_config, load_run_config
from onecycle.experiments.loading import load_mapping, load_workflow_file
from onecycle.experiments.expansion import expand

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("scale", ["full", "tiny"])
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_written_json_reads_back_as_written(tmp_path, path, scale):
    raw = {**load_workflow_file(path), "scale": scale}  # `include:` resolved, as the Snakefile does
    plan = expand(raw, str(path))
    workflow_json = tmp_path / "workflow_config.json"
    io.write_json(workflow_json, raw)
    assert load_mapping(workflow_json) == raw
    again = expand(load_mapping(workflow_json), str(workflow_json))
    assert again.results_dir == plan.results_dir
    assert again.trains == plan.trains and again.range_tests == plan.range_tests
    for readers, jobs in ((load_run_config, plan.trains), (load_range_test_config, plan.range_tests)):
        for job in jobs.values():
            spec = tmp_path / "spec.json"
            io.write_json(spec, job.config)
            assert load_mapping(spec) == job.config, job.job_id
            # Validated as the job's config, and nothing lost or added on the way.
            assert readers(spec).model_dump(mode="json", exclude_defaults=True) == job.config, job.job_id
    assert plan.trains  # every shipped config trains something
