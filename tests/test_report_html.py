"""The static report page (onecycle.report.html) and results/index.html, as a reader opens them.

Nothing trains here: the committed raw results are copied and `onecycle report` writes the tables,
figures and report.html from them, as `make figures` does. The pages are then opened in headless
Chromium (tests/browser.py) at 1280 x 800, as a reader would: the first screen must answer (an
answer box with an effect, its interval, n and a verdict), nothing may scroll sideways, every
figure must load and show something, and every verdict must lead to the files behind it. The
committed pages (results/*/report.html, results/index.html) are checked the same way, as
committed. First screens are kept as test artefacts in build/test-artefacts/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
import yaml

from conftest import REPO
from onecycle.cli import main
from onecycle.errors import ConfigError
from onecycle.report.index import write_index

import browser

ARTEFACTS = REPO / "build" / "test-artefacts"
needs_chromium = pytest.mark.skipif(browser.CHROMIUM is None,
                                    reason="chromium not installed (make test installs Debian's chromium as root)")
COMMITTED = [*sorted((REPO / "results").glob("*/report.html")), REPO / "results" / "index.html"]

# The verdict words of the claims and of the bounds studies' regret (onecycle.report.claims,
# onecycle.report.bounds_study), as the answer box prints them.
VERDICT_WORDS = ("supported", "contradicted", "inconclusive", "invalid", "tiny", "pending", "diverged",
                 "within noise", "below the best", "no claim tested")

# Run in the page once it has loaded: what the first screen shows, every figure's pixel
# variance (through a canvas: 0 for a single colour), and, for every verdict, the files its link
# leads to (the link's target element, on this page or another, and the file links inside it).
FIRST_SCREEN_JS = r"""(() => {
  const rows = Array.from(document.querySelectorAll('section.answers table.answers tbody tr'))
    .filter(r => { const b = r.getBoundingClientRect(); return b.top >= 0 && b.bottom <= innerHeight; })
    .map(r => ({text: r.innerText, verdict: (r.querySelector('td.verdict') || {}).innerText || ''}));
  const load = url => { const r = new XMLHttpRequest(); r.open('GET', url, false); r.send();
                        return new DOMParser().parseFromString(r.responseText, 'text/html'); };
  const here = location.href.split('#')[0], docs = {};
  const verdicts = Array.from(document.querySelectorAll('.verdict')).map(v => {
    const links = Array.from(v.querySelectorAll('a[href]')).map(a => a.href), files = [];
    for (const href of links) {
      const [page, id] = href.split('#');
      const doc = page === here ? document : (docs[page] = docs[page] || load(page));
      const target = id ? doc.getElementById(decodeURIComponent(id)) : null;
      if (!target) { files.push('missing target ' + href); continue; }
      target.querySelectorAll('a[href]').forEach(a => {
        const h = a.getAttribute('href'); if (!h.startsWith('#')) files.push(new URL(h, page).href); });
    }
    return {text: v.innerText, links, files};
  });
  const variance = img => {
    const c = document.createElement('canvas'); c.width = 256; c.height = 256;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0, 256, 256);
    const d = g.getImageData(0, 0, 256, 256).data; let s = 0, s2 = 0; const n = d.length / 4;
    for (let i = 0; i < d.length; i += 4) { const v = d[i] + d[i + 1] + d[i + 2]; s += v; s2 += v * v; }
    return s2 / n - (s / n) ** 2; };
  return {rows, verdicts, variances: Array.from(document.images).map(variance)};
})()"""


def _smoke_copy(root):
    """The committed smoke results (raw runs and range tests only) and the config they were run
    with (their workflow_config.json; configs/smoke.yaml may have moved on), pointing at them,
    with configs/smoke.yaml's departures and claims."""
    results = root / "smoke"
    for part in ("train", "range_test", "data", "logs", "workflow_config.json"):
        source = REPO / "results" / "smoke" / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, results / part)
    config = json.loads((results / "workflow_config.json").read_text())
    config["results_dir"] = str(results)
    current = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["experiments"]
    for name, experiment in config["experiments"].items():
        experiment["departures"] = current[name]["departures"]
        experiment["claims"] = current[name]["claims"]
    (root / "smoke.yaml").write_text(yaml.safe_dump(config))
    return results, root / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    results, config = _smoke_copy(tmp_path_factory.mktemp("report"))
    assert main(["report", "--config", str(config)]) == 0
    return results, config


def test_page_answers_first_then_claims_verdicts_figures_and_runs(smoke_report):
    results, _ = smoke_report
    page = (results / "report.html").read_text()
    order = [page.index(marker) for marker in ('id="answers"', 'id="claims"', 'id="fmnist_lenet"',
                                               "<h3>Verdicts</h3>", "fmnist_lenet_range_test.png", 'id="runs"',
                                               'id="workflow"')]
    assert order == sorted(order)
    # Each figure once as an image, its PDF as a link.
    for figure in ("range_test", "accuracy", "comparison"):
        assert page.count(f'src="figures/fmnist_lenet_{figure}.png"') == 1
        assert page.count(f'href="figures/fmnist_lenet_{figure}.pdf" download') == 1


def test_the_answer_box_states_each_claims_evidence_verdict_and_scale(smoke_report):
    results, _ = smoke_report
    page = (results / "report.html").read_text()
    box = page[page.index('id="answers"'):page.index("</section>", page.index('id="answers"'))]
    claims = pd.read_csv(results / "tables" / "fmnist_lenet_claims.csv")
    summary = pd.read_csv(results / "tables" / "fmnist_lenet.csv").set_index("group")
    for claim in claims.itertuples():
        # The claims table's one statement of evidence and its verdict, beside both groups' accuracy.
        assert claim.evidence.replace("'", "&#x27;") in box and f">{claim.verdict}</a>" in box
        for group in (claim.candidate, claim.baseline):
            row = summary.loc[group]
            assert f"{row.accuracy_mean:.2f} ± {row.accuracy_std:.2f} %" in box
            assert f'href="#runs-fmnist_lenet-{group}"' in box
    assert "<b>At this scale:</b>" in box and "data: Fashion-MNIST, 10 000 of its 60 000 training images" in box
    assert 'href="figures/fmnist_lenet_accuracy.png">figure</a>' in box
    # The same answers, as data, for results/index.html.
    answers = pd.read_csv(results / "tables" / "answers.csv")
    assert answers["id"].tolist() == claims["claim_id"].tolist()


def test_page_states_the_scale_and_the_validity_gates(smoke_report):
    results, _ = smoke_report
    page = (results / "report.html").read_text()
    section = page[page.index('id="fmnist_lenet"'):page.index("<h3>Verdicts</h3>")]
    assert "holds <b>at this scale</b>" in section and "<b>batch</b>: 128 (Part 1: TBS 512)" in section
    gates = pd.read_csv(results / "tables" / "fmnist_lenet_validity.csv")
    assert gates["gate"].tolist() == ["trainings learned", "range tests left chance", "time to accuracy resolved"]
    assert "Validity gates, checked before any verdict" in section and "No verdict" not in section


def test_groups_without_a_published_number_get_no_verdict(smoke_report):
    results, _ = smoke_report
    page = (results / "report.html").read_text()
    verdicts = page[page.index("<h3>Verdicts</h3>"):page.index("<h3>1cycle minus baseline")]
    # "—" in the verdict column (linked to the group's runs), said once in the caption; no empty
    # published / difference columns, and no unused tolerance in the header.
    assert verdicts.count('<a href="#runs-fmnist_lenet-onecycle_4ep">—</a>') == 1
    assert "no published number for the group, so no verdict against the paper" in verdicts
    assert "published (%)" not in verdicts and "tolerance" not in page[:page.index('id="claims"')]
    assert "no published number" not in (results / "tables" / "fmnist_lenet.csv").read_text()


def test_a_tiny_page_says_so_in_its_title(tmp_path):
    results, config = _smoke_copy(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["scale"] = "tiny"
    config.write_text(yaml.safe_dump(data))
    assert main(["report", "--config", str(config), "--only", "html"]) == 0
    # A tiny run writes beside the real one, into <results_dir>-tiny (onecycle.experiments.scale).
    page = (results.parent / f"{results.name}-tiny" / "report.html").read_text()
    assert "<title>onecycle replication report (TINY SCALE: no verdicts):" in page


def test_page_is_offline_and_says_what_produced_it(smoke_report):
    results, _ = smoke_report
    page = (results / "report.html").read_text()
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)
    revision = yaml.safe_load((REPO / "results/smoke/train/fmnist_lenet/inv_8ep/seed0/metrics.json").read_text())[
        "provenance"]["git_revision"]
    assert f"Runs produced at revision <code>{revision[:7]}</code> (8 jobs)" in page
    digest = hashlib.sha256((results / "workflow_config.json").read_bytes()).hexdigest()[:12]
    assert f"sha256 {digest}" in page


def test_runs_link_their_folder_log_and_config_and_range_tests_ended_at_divergence(smoke_report):
    results, _ = smoke_report
    page = (results / "report.html").read_text()
    runs = page[page.index('id="runs"'):page.index('id="workflow"')]
    for href in ("train/fmnist_lenet/inv_8ep/seed0/", "logs/train/fmnist_lenet/inv_8ep/seed0/run.log",
                 "train/fmnist_lenet/inv_8ep/seed0/config.json"):
        assert f'href="{href}"' in runs and (results / href).exists()
    # Both smoke range tests ended as range tests do, at the LR where the loss diverged.
    assert runs.count("ended: loss diverged") == 2 and ">not recorded<" not in runs
    wall = pd.read_csv(results / "tables" / "wall_time.csv").set_index("group")
    assert wall.loc["inv_8ep", ["jobs", "finished", "timed"]].tolist() == [3, 3, 3]
    assert wall.loc["range test", ["jobs", "timed"]].tolist() == [2, 2]


def test_a_run_without_a_recorded_wall_time_says_so_and_is_not_timed(tmp_path):
    # Range tests run before the suite recorded wall_time_s (metrics.json of older revisions).
    results, config = _smoke_copy(tmp_path)
    metrics_path = results / "range_test" / "fmnist_lenet" / "seed0" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["wall_time_s"]
    metrics_path.write_text(json.dumps(metrics))
    assert main(["report", "--config", str(config), "--only", "runs"]) == 0
    assert main(["report", "--config", str(config), "--only", "html"]) == 0
    page = (results / "report.html").read_text()
    assert page[page.index('id="runs"'):page.index('id="workflow"')].count(">not recorded<") == 1
    wall = pd.read_csv(results / "tables" / "wall_time.csv").set_index("group")
    assert wall.loc["range test", ["jobs", "timed"]].tolist() == [2, 1]


def test_page_without_claims_tables_says_how_they_come(tmp_path):
    results, config = _smoke_copy(tmp_path)
    assert main(["report", "--config", str(config), "--only", "runs"]) == 0
    assert main(["report", "--config", str(config), "--only", "html"]) == 0
    page = (results / "report.html").read_text()
    claims = page[page.index('id="claims"'):page.index('id="fmnist_lenet"')]
    assert "No claims tables yet" in claims and "tables/claims_scorecard.csv" in claims
    # Figures not written yet are said to be missing, not drawn as broken images.
    assert "fmnist_lenet_range_test.png: not written yet" in page


def test_run_folders_no_job_names_are_listed_and_never_counted(tmp_path):
    # Folders an earlier config left (a seed since dropped, a group since removed) hold finished
    # runs: the page names each, says why, and no table, count or runs row takes them in.
    results, config = _smoke_copy(tmp_path)
    train = results / "train" / "fmnist_lenet"
    foreign = {"train/fmnist_lenet/inv_8ep/seed3": train / "inv_8ep" / "seed0",
               "train/fmnist_lenet/clr_old/seed0": train / "onecycle_4ep" / "seed0"}
    for relative, source in foreign.items():
        shutil.copytree(source, results / relative)
        metrics = json.loads((results / relative / "metrics.json").read_text())
        _, experiment, group, seed = relative.split("/")
        identity = {"name": f"{experiment}/{group}/{seed}", "group": group, "seed": int(seed[len("seed"):])}
        metrics.update(identity)
        metrics["config"].update(identity)
        metrics["final"]["test_accuracy"] = 0.10  # were it counted, every mean would move
        (results / relative / "metrics.json").write_text(json.dumps(metrics))
    assert main(["report", "--config", str(config), "--only", "runs"]) == 0
    assert main(["report", "--config", str(config), "--only", "html"]) == 0
    page = (results / "report.html").read_text()
    runs = page[page.index('id="runs"'):page.index('id="workflow"')]
    listed = runs[runs.index("Run folders no job of this config names, never counted:"):]
    for relative in sorted(foreign):
        assert f"<li><code>{relative}</code>: no job of this config</li>" in listed
        assert f'href="{relative}/"' not in runs  # no row of the runs table
    assert "(8 jobs)" in page
    table = pd.read_csv(results / "tables" / "fmnist_lenet.csv").set_index("group")
    assert table.loc["inv_8ep", "accuracy_by_seed"] == "seed 0: 84.950; seed 1: 85.230; seed 2: 85.680"
    assert table.loc["onecycle_4ep", "accuracy_by_seed"] == "seed 0: 86.400; seed 1: 86.470; seed 2: 87.150"
    assert table["n"].tolist() == [3, 3] and "clr_old" not in table.index
    wall = pd.read_csv(results / "tables" / "wall_time.csv").set_index("group")
    assert wall.loc["inv_8ep", "jobs"] == 3 and "clr_old" not in wall.index


def test_a_pending_run_links_no_file_even_where_the_dag_wrote_its_spec(tmp_path):
    # The DAG writes every job's spec.json before any job runs; a committed page must not link
    # such a folder, which a clone of the committed results does not have.
    results, config = _smoke_copy(tmp_path)
    run = results / "train" / "fmnist_lenet" / "inv_8ep" / "seed2"
    for name in os.listdir(run):
        if name != "spec.json":
            (run / name).unlink()
    (results / "logs" / "train" / "fmnist_lenet" / "inv_8ep" / "seed2").mkdir(parents=True, exist_ok=True)
    (results / "logs" / "train" / "fmnist_lenet" / "inv_8ep" / "seed2" / "run.log").write_text("started\n")
    assert main(["report", "--config", str(config), "--only", "html"]) == 0
    page = (results / "report.html").read_text()
    runs = page[page.index('id="runs"'):page.index('id="workflow"')]
    rows = [row for row in runs.split("<tr>") if row.startswith("<td>inv_8ep</td><td>2</td>")]
    assert len(rows) == 1 and "<td>pending</td>" in rows[0] and "href" not in rows[0], rows
    # A finished run beside it still links its folder, log and config.
    assert 'href="train/fmnist_lenet/inv_8ep/seed1/"' in runs


def test_rebuilding_gives_the_same_bytes(smoke_report):
    results, config = smoke_report
    written = sorted(p for p in results.rglob("*") if p.is_file() and p.parts[-2] in ("tables", "figures"))
    written.append(results / "report.html")
    before = {p: p.read_bytes() for p in written}
    assert main(["report", "--config", str(config)]) == 0
    assert [p for p in written if p.read_bytes() != before[p]] == []


def test_index_gathers_every_folders_answers_and_names_a_missing_one(smoke_report, tmp_path):
    results, _ = smoke_report
    out = write_index([results], results.parent / "index.html")
    page = out.read_text()
    answers = pd.read_csv(results / "tables" / "answers.csv")
    for row in answers.itertuples():
        assert row.effect.replace("'", "&#x27;") in page
    # Links from the index go into the folder's page and files.
    assert f'href="{results.name}/report.html#runs-fmnist_lenet"' in page
    assert f'href="{results.name}/figures/fmnist_lenet_accuracy.png"' in page
    with pytest.raises(ConfigError, match="answers.csv: not written yet"):
        write_index([tmp_path / "nothing"], tmp_path / "index.html")


def _check_in_chromium(path: Path, screenshot: Path) -> None:
    """At 1280 x 800: the first screen answers, nothing scrolls sideways, every image loaded and
    shows more than one colour, and every verdict leads to existing files."""
    page = browser.render(path, width=1280, height=800, screenshot=screenshot, measure=FIRST_SCREEN_JS)
    assert page.console_errors == []
    assert page.scroll_width <= 1280, f"{path}: the page scrolls sideways ({page.scroll_width} px)"
    answered = [row for row in page.measured["rows"]
                if re.search(r"[+-]?\d+\.\d+ ?(pp|x|%)", row["text"]) and re.search(r"\[[^\]]*\d[^\]]*\]", row["text"])
                and re.search(r"\bn = \d+", row["text"]) and row["verdict"].startswith(VERDICT_WORDS)]
    assert answered, f"{path}: no answer with an effect, an interval, n and a verdict on the first screen"
    for image, variance in zip(page.images, page.measured["variances"]):
        assert image["complete"] and image["naturalWidth"] > 0, image
        assert variance > 0, f"{image['src']}: a single colour"
    assert page.measured["verdicts"], f"{path}: no verdict"
    for verdict in page.measured["verdicts"]:
        assert verdict["links"], f"{path}: verdict {verdict['text']!r} links nowhere"
        # A pending claim's runs have not run: its links lead to their rows, which link no file
        # (a clone has no folder for them); every decided verdict leads to the files behind it.
        if not verdict["text"].startswith("pending"):
            assert verdict["files"], f"{path}: verdict {verdict['text']!r} leads to no file"
        for url in verdict["files"]:
            assert url.startswith("file://") and Path(unquote(urlparse(url).path)).exists(), (verdict["text"], url)


@needs_chromium
def test_page_in_chromium_answers_first_and_loads_every_image(smoke_report):
    results, _ = smoke_report
    _check_in_chromium(results / "report.html", ARTEFACTS / "report_first_screen.png")


@needs_chromium
@pytest.mark.parametrize("path", COMMITTED, ids=[p.relative_to(REPO / "results").as_posix() for p in COMMITTED])
def test_committed_page_answers_first_and_fits_1280(path):
    name = path.parent.name if path.name == "report.html" else "index"
    _check_in_chromium(path, ARTEFACTS / f"first_screen_{name}.png")


def test_an_answer_names_the_groups_where_policy_and_epochs_alone_would_read_the_same():
    # precision_agreement compares 1cycle in 4 epochs with itself, fp32 against bf16.
    answers = pd.read_csv(REPO / "results/precision_agreement/tables/answers.csv").set_index("experiment")
    compared = answers.loc["agreement_lenet", "compared"]
    assert compared.startswith("1cycle, 4 epochs, bf16 (312 it): ") and " vs 1cycle, 4 epochs, fp32 (312 it): " in compared
    # Where the policies differ, the groups' names are left out (the smoke: 1cycle vs inv).
    smoke = pd.read_csv(REPO / "results/smoke/tables/answers.csv")
    assert smoke["compared"].str.startswith("1cycle, 4 epochs (312 it): ").all()


def test_scorecard_verdicts_link_to_the_experiment_that_states_each_claim():
    # results/sc_confounds: three experiments share one dataset / architecture column of the
    # scorecard, so a column cannot name one experiment; each verdict must lead to its own claim's
    # runs (they once all led to the last experiment's, whose runs were pending).
    config = yaml.safe_load((REPO / "configs" / "sc_confounds.yaml").read_text())
    stated_by = {claim["id"]: name for name, exp in config["experiments"].items() for claim in exp["claims"]}
    assert len(set(stated_by.values())) > 1
    page = (REPO / "results" / "sc_confounds" / "report.html").read_text()
    scorecard = page[page.index('id="claims"'):]
    scorecard = scorecard[:scorecard.index("</table>")]
    linked = dict(re.findall(r"<tr><td>([\w.]+)</td><td[^>]*><a href=\"#runs-([\w.]+)\">", scorecard))
    assert linked == stated_by
