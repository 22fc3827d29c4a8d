"""The real Snakemake DAG, end to end, on a still smaller config than configs/smoke.yaml."""

import base64
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import browser
from conftest import HANG_GUARD_S, REPO, needs_fashion_mnist

pytestmark = [pytest.mark.slow, needs_fashion_mnist]
RESULTS = "results/tiny run; $(touch pwned) & co"


def _tiny_workflow(smoke):
    exp = smoke["experiments"]["fmnist_lenet"]
    exp["base"]["data"]["train_subset"] = 1024
    exp["range_test"].update({"iterations": 24, "eval_every": 4, "eval_subset": 500})
    exp["groups"]["inv_8ep"]["train"] = {"epochs": 4}
    # Two seeds, fewer jobs. Spaces and shell metacharacters in a path that reaches shell
    # commands: rules must quote.
    return {**smoke, "seeds": [0, 1], "results_dir": RESULTS}


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("dag")
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    (work / "tiny.yaml").write_text(yaml.safe_dump(_tiny_workflow(smoke)))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    command = [shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "tiny.yaml"), "--cores", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, command, env


def test_dag_produces_table_figures_and_bounds(dag_run):
    work, _, _ = dag_run
    results = work / RESULTS
    table = pd.read_csv(results / "tables" / "fmnist_lenet.csv")
    assert set(table.group) == {"onecycle_4ep", "inv_8ep"}
    assert (table.n == 2).all()
    # Real training on the full 10k test set: well above chance (10%), below perfect.
    assert table.accuracy_mean.between(30, 100).all(), table
    bounds = json.loads((results / "range_test" / "fmnist_lenet" / "bounds.json").read_text())
    # max_lr is an LR of the ramp, which ends at end_lr 0.3; base_lr its tenth (policy_kind 1cycle).
    assert 0.0 < bounds["max_lr"] <= 0.3 and bounds["base_lr"] == pytest.approx(bounds["max_lr"] / 10)
    onecycle = json.loads((results / "train" / "fmnist_lenet" / "onecycle_4ep" / "seed0" / "metrics.json").read_text())
    assert onecycle["config"]["schedule_resolved"]["params"]["max_lr"] == pytest.approx(bounds["max_lr"])
    assert onecycle["provenance"]["package_version"]
    for figure in ("fmnist_lenet_accuracy", "fmnist_lenet_range_test", "fmnist_lenet_comparison"):
        assert (results / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (results / "figures" / f"{figure}.pdf").read_bytes()[:4] == b"%PDF"
    markdown = (results / "tables" / "fmnist_lenet.md").read_text()
    assert "±" in markdown
    # Every claim of the config gets a verdict, and the suite's scorecard lists it.
    from onecycle.report.claims import VERDICTS, bare_verdict

    claims = pd.read_csv(results / "tables" / "fmnist_lenet_claims.csv")
    assert list(claims.claim_id) == ["budget", "speedup"]
    # "... at this scale" (the config states its departures), or "invalid: <reason>" if a gate failed.
    assert set(claims.verdict.map(bare_verdict)) <= {*VERDICTS, "invalid"} and (claims.n <= 2).all()
    assert (results / "tables" / "fmnist_lenet_validity.csv").exists()
    scorecard = pd.read_csv(results / "tables" / "claims_scorecard.csv")
    assert list(scorecard.claim) == list(claims.claim_id)
    assert (results / "figures" / "claims_scorecard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (work / "pwned").exists() and not (REPO / "pwned").exists()


def test_dag_is_complete_and_report_regenerates_without_training(dag_run):
    work, command, env = dag_run
    dry = subprocess.run([*command, "-n"], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    results = work / RESULTS
    metrics = sorted((results / "train").rglob("metrics.json"))
    before = {p: p.stat().st_mtime_ns for p in metrics}
    table = results / "tables" / "fmnist_lenet.csv"
    table.unlink()
    report = subprocess.run([shutil.which("onecycle", path=env["PATH"]), "report", "--config", "tiny.yaml"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert report.returncode == 0, report.stderr
    assert table.exists()
    assert {p: p.stat().st_mtime_ns for p in metrics} == before


# Snakemake's report as `make report` makes it (Makefile: REPORT_FLAGS, REPORT_RULES).
REPORT_FLAGS = ["--report-stylesheet", str(REPO / "src" / "onecycle" / "report" / "report.css"),
                "--report-metadata", str(REPO / "workflow" / "report" / "metadata.yaml")]
REPORT_RULES = re.findall(r"^rule (\w+):", (REPO / "workflow" / "rules" / "aggregate.smk").read_text(), re.M)


def _report_data(html: str, name: str):
    """A JSON value the report page defines as `var <name> = ...;` (workflow_desc, results, ...);
    the last one, as the libraries inlined before Snakemake's own data define variables too."""
    return json.loads(re.findall(rf"var {name} = (.*?);\n", html, re.S)[-1])


def test_static_report_page_is_a_workflow_output(dag_run):
    work, _, _ = dag_run
    page = (work / RESULTS / "report.html").read_text()
    table = pd.read_csv(work / RESULTS / "tables" / "fmnist_lenet.csv")
    for row in table.itertuples():
        assert f"{row.accuracy_mean:.2f} ± {row.accuracy_std:.2f}" in page
    assert 'src="figures/fmnist_lenet_range_test.png"' in page


def test_snakemake_report_opens_on_the_verdicts_and_figures(dag_run):
    work, command, env = dag_run
    report = work / "report.html"
    result = subprocess.run([*command, "--report", str(report), *REPORT_FLAGS], env=env, capture_output=True,
                            text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Missing metadata" not in result.stdout + result.stderr
    html = report.read_text(errors="replace")
    # The landing text: the claims scorecard and claims table first, then the verdict table, and
    # the figures (scorecard, range test, accuracy, comparison) as embedded images.
    landing = _report_data(html, "workflow_desc")
    table = pd.read_csv(work / RESULTS / "tables" / "fmnist_lenet.csv")
    claims = pd.read_csv(work / RESULTS / "tables" / "fmnist_lenet_claims.csv")
    assert landing.index("claims_scorecard") < landing.index(f"{table.accuracy_mean[0]:.2f} ± ")
    for row in table.itertuples():
        assert f"{row.accuracy_mean:.2f} ± {row.accuracy_std:.2f}" in landing
    from onecycle.report.claims import bare_verdict

    for row in claims.itertuples():
        assert f'<td class="verdict v-{bare_verdict(row.verdict)}">{row.verdict}</td>' in landing
    assert landing.count('src="data:image/png;') == 4
    # Non-empty metadata: the report opens on that landing page, not on the rule graph.
    assert _report_data(html, "metadata")
    # Every result listed once: tables as HTML or CSV shown inline, figures as their PNG only.
    results = {Path(path).name: entry for path, entry in _report_data(html, "results").items()}
    # Each table's caption renders the table itself, not a download link.
    for name in ("fmnist_lenet.html", "fmnist_lenet_paired.csv", "fmnist_lenet_time_to_accuracy.csv",
                 "fmnist_lenet_claims.html"):
        assert "<table" in results[name]["caption"], name
    listed = sorted(results)
    assert listed == sorted(["fmnist_lenet.html", "fmnist_lenet_time_to_accuracy.csv", "fmnist_lenet_paired.csv",
                             "fmnist_lenet_accuracy.png", "fmnist_lenet_range_test.png",
                             "fmnist_lenet_comparison.png", "fmnist_lenet_claims.html", "claims_scorecard.html",
                             "claims_scorecard.png"])
    # The DAG ran here, so Snakemake has every job's times: the Statistics page has them.
    assert {entry["rule"] for entry in _report_data(html, "runtimes_spec")["data"]["values"]} >= {"train", "range_test"}
    if browser.CHROMIUM is not None:
        # The accuracy figure opened in a 1400 px window: its top is on screen (Snakemake's pane
        # centres it vertically, which cut the top off; report.css stops that) and it fits the width.
        opened = browser.render(report, width=1400, height=800, script=(
            "(() => { const p = Object.keys(results).find(k => k.endsWith('fmnist_lenet_accuracy.png'));"
            " app.setView({content: 'img', contentPath: results[p].data_uri}); })()"))
        figure = [i for i in opened.images if i["naturalWidth"] > 1000]
        assert opened.console_errors == [] and len(figure) == 1
        assert figure[0]["top"] >= 0 and figure[0]["right"] <= 1400


def test_snakemake_report_of_a_fresh_clone_warns_of_nothing(dag_run, tmp_path):
    work, command, env = dag_run
    # A clone: the results and the config, no .snakemake/ (Snakemake's records of the runs).
    shutil.copytree(work / RESULTS, tmp_path / RESULTS)
    shutil.copy(work / "tiny.yaml", tmp_path / "tiny.yaml")
    clone = [command[0], "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile",
             str(tmp_path / "tiny.yaml"), "--allowed-rules", *REPORT_RULES]
    rerun = subprocess.run([*clone, "--cores", "1", "--forcerun", *REPORT_RULES], env=env, capture_output=True,
                           text=True, timeout=HANG_GUARD_S)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = subprocess.run([*clone, "--report", str(tmp_path / "report.html"), *REPORT_FLAGS], env=env,
                            capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Missing metadata" not in result.stdout + result.stderr
    html = (tmp_path / "report.html").read_text(errors="replace")
    # Statistics: the report jobs run here; the text says why the training runs are not there.
    # (The tiny config has no bounds study, so the bounds-study rules have no job.)
    ran = {rule for rule in REPORT_RULES if not rule.startswith("bounds_study")}
    assert {entry["rule"] for entry in _report_data(html, "runtimes_spec")["data"]["values"]} == ran
    assert "git does not carry" in _report_data(html, "workflow_desc")
    # Rerunning the report jobs rewrote the tables with the same bytes.
    for name in ("fmnist_lenet.csv", "fmnist_lenet.html", "fmnist_lenet.tex"):
        assert (tmp_path / RESULTS / "tables" / name).read_bytes() == (work / RESULTS / "tables" / name).read_bytes()


@pytest.mark.parametrize("patch, message", [
    ({"seeds": [0, 0]}, "seeds [0, 0] repeat a value: two runs would write the same folder"),
    ({"experiments": {"fmnist_lenet": {"base": {"optim": {"weight_decay": "5e-4"}}}}},
     "'optim.weight_decay' = '5e-4'"),
    # Its claims table would be fmnist_lenet's (the full report died with an AttributeError).
    ({"experiments": {"fmnist_lenet_claims": yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())[
        "experiments"]["fmnist_lenet"]}},
     "its report files fmnist_lenet_claims.* would be experiment 'fmnist_lenet''s too"),
])
def test_bad_workflow_config_fails_before_any_job(tmp_path, patch, message):
    from onecycle.experiments.loading import deep_merge

    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(deep_merge(smoke, patch)))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    result = subprocess.run([shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile", str(tmp_path / "bad.yaml"), "-n", "--cores", "1"],
                            env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode != 0 and message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("edit, message", [
    # Snakemake's loader lets the second `inv_8ep:` replace the first; the Snakefile re-reads strictly.
    (lambda text: text.replace("      inv_8ep:\n", "      inv_8ep:\n        train: {epochs: 1}\n      inv_8ep:\n", 1),
     "key 'experiments.fmnist_lenet.groups.inv_8ep' is repeated"),
    # A list alias bomb passes Snakemake's loader as shared references; the Snakefile refuses it.
    (lambda text: "".join(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9) if i else ', '.join(['0'] * 9)}]\n"
                          for i in range(9)) + text.replace("seeds: [0, 1, 2]", "seeds: *b8"),
     "expands to more than 50000 values through its aliases"),
])
def test_workflow_refuses_what_snakemakes_own_loader_accepts(tmp_path, edit, message):
    text = (REPO / "configs" / "smoke.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(edit(text))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    result = subprocess.run([shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile", str(tmp_path / "bad.yaml"), "-n",
                             "--cores", "1"], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode != 0 and message in result.stdout + result.stderr, result.stderr[-2000:]
    assert "bad.yaml: line " in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_report_names_broken_runs_instead_of_summarising_them(dag_run, tmp_path):
    # A copy of the finished DAG's results, broken in the two ways: a history.csv gone,
    # and a metrics.json that says completed after 10 of the planned iterations.
    work, _, env = dag_run
    shutil.copytree(work / RESULTS, tmp_path / RESULTS)
    shutil.copy(work / "tiny.yaml", tmp_path / "tiny.yaml")
    train = tmp_path / RESULTS / "train" / "fmnist_lenet"
    (train / "onecycle_4ep" / "seed1" / "history.csv").unlink()
    metrics_path = train / "inv_8ep" / "seed0" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    planned = metrics["iterations_planned"]
    metrics_path.write_text(json.dumps({**metrics, "iterations": 10}))
    report = subprocess.run([shutil.which("onecycle", path=env["PATH"]), "report", "--config", "tiny.yaml"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert report.returncode == 0, report.stderr

    tables = tmp_path / RESULTS / "tables"
    table = pd.read_csv(tables / "fmnist_lenet.csv").set_index("group")
    for group, seed, reason in (("onecycle_4ep", 1, "history.csv missing"),
                                ("inv_8ep", 0, f"'completed' after 10 of {planned} planned iterations")):
        row = table.loc[group]
        assert row[["n", "n_completed", "n_diverged", "n_broken"]].tolist() == [2, 1, 0, 1]
        assert row["note"] == f"broken, not counted: seed {seed} ({reason})"
        # The mean is the one sound seed's final accuracy, not a mix with the broken one.
        other = json.loads((train / group / f"seed{1 - seed}" / "metrics.json").read_text())
        assert row["accuracy_mean"] == pytest.approx(100 * other["final"]["test_accuracy"])
    assert "broken, not counted" in (tables / "fmnist_lenet.md").read_text()

    speed = pd.read_csv(tables / "fmnist_lenet_time_to_accuracy.csv")
    # One row per sound candidate seed (seed 0), one per broken run naming why it is not counted
    # (candidate seed 1, baseline seed 0), then the "all" row. The seeds no longer pair (the
    # baseline's seed 0 is broken), so seed 0's target is the one sound baseline seed's accuracy.
    assert speed["seed"].astype(str).tolist() == ["0", "1", "0", "all"]
    assert speed.loc[1, "note"] == "onecycle_4ep seed 1 broken, not counted: history.csv missing"
    assert speed.loc[2, "note"] == (f"inv_8ep seed 0 broken, not counted: 'completed' after 10 of {planned} "
                                    "planned iterations")
    assert speed.loc[0, "note"].startswith("never reached the target") or speed.loc[0, "note"] == \
        "target = mean final accuracy of 1 inv_8ep seed(s) - 0.2 pp (seeds differ)"
    assert speed.loc[3, "note"].endswith("of 1 onecycle_4ep seed(s); speed-up: geometric mean")
    paired = pd.read_csv(tables / "fmnist_lenet_paired.csv")
    # No seed has both runs sound, so the comparison is over each group's one sound seed, which
    # cannot bound a difference (stats.difference_bounds): no bound, and the note says why.
    assert paired.loc[0, ["n_a", "n_b"]].tolist() == [1, 1]
    assert math.isnan(paired.loc[0, "lower_bound_pp"]) and math.isnan(paired.loc[0, "upper_bound_pp"])
    assert "needs at least 2 seeds per group, has 1 and 1" in paired.loc[0, "note"]


def _marked_incomplete(workdir):
    """Output paths Snakemake marks incomplete: `.snakemake/incomplete/<urlsafe base64 of the
    path>`, long names split into '@'-prefixed folders (snakemake.persistence.file)."""
    root = workdir / ".snakemake" / "incomplete"
    marked = set()
    for marker in root.rglob("*"):
        if marker.is_file():
            encoded = "".join(part.removeprefix("@") for part in marker.relative_to(root).parts)
            try:
                marked.add(base64.urlsafe_b64decode(encoded).decode())
            except ValueError:  # Snakemake's own bookkeeping files
                continue
    return marked


def test_sigkilled_dag_recovers_with_the_documented_command(tmp_path):
    # Snakemake and its jobs SIGKILLed together (a lost session, the OOM killer) while a training
    # runs; then the README's recovery command, as `make smoke` gives it: `--rerun-incomplete`.
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    workflow = _tiny_workflow(smoke)
    exp = workflow["experiments"]["fmnist_lenet"]
    workflow.update(seeds=[0], results_dir="results/killed")
    exp["range_test_seeds"] = [0]
    exp["groups"]["inv_8ep"]["train"] = {"epochs": 3}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(workflow))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    command = [shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"), "--directory",
               str(tmp_path), "--configfile", str(tmp_path / "tiny.yaml"), "--cores", "2"]
    results = tmp_path / "results" / "killed"

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + HANG_GUARD_S
    # Kill once a job has finished (its metrics.json written and Snakemake's incomplete marker,
    # made when the job started, removed) and a training is between checkpoints.
    def recorded_finished():
        incomplete = _marked_incomplete(tmp_path)
        return [p for p in results.rglob("metrics.json") if str(p.relative_to(tmp_path)) not in incomplete]

    while first.poll() is None and time.monotonic() < deadline:
        if glob.glob(f"{glob.escape(str(results))}/train/**/checkpoint.pt", recursive=True) and recorded_finished():
            break
        time.sleep(0.1)
    assert first.poll() is None, "the DAG ended before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert list((tmp_path / ".snakemake" / "locks").glob("*.lock")), "the kill left no Snakemake lock"
    # Finished = written and recorded as finished by Snakemake (a job killed between its last
    # write and Snakemake's bookkeeping is incomplete, and rightly rerun).
    finished = {p: p.stat().st_mtime_ns for p in recorded_finished()}
    assert finished, "no job had finished before the kill"
    killed_runs = [p.parent for p in results.glob("train/**/checkpoint.pt")]

    recovery = subprocess.run([*command, "--rerun-incomplete"], env=env, capture_output=True, text=True,
                              timeout=HANG_GUARD_S)
    assert recovery.returncode == 0, recovery.stderr[-3000:]
    assert "LockException" not in recovery.stderr
    # Nothing finished was redone; the killed training finished from its checkpoint.
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    for run in killed_runs:
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
        assert not (run / "checkpoint.pt").exists()
    assert (results / "tables" / "fmnist_lenet.csv").exists()
    assert not list(results.rglob(".*.tmp*"))
    dry = subprocess.run([*command, "-n"], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
