"""The static report page (onecycle.report.html), rebuilt from the committed smoke results.

Nothing trains here: the committed raw results are copied and `onecycle report` writes the tables,
figures and report.html from them, as `make figures` does. The page is then opened in headless
Chromium (tests/browser.py) at 1280 px, as a reader would, and its first screen kept as a test
artefact in build/test-artefacts/.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from conftest import REPO
from onecycle.cli import main

import browser

ARTEFACTS = REPO / "build" / "test-artefacts"
needs_chromium = pytest.mark.skipif(browser.CHROMIUM is None,
                                    reason="chromium not installed (make test installs Debian's chromium as root)")

# A claims table and scorecard as onecycle.report.claims writes them (its columns), made by hand: the
# page must show them first, in their own section, whatever produced them.
CLAIMS = pd.DataFrame([
    {"claim_id": "budget", "kind": "non_inferior", "text": "1cycle in 3 epochs matches inv in 6",
     "source": "arXiv:1803.09820 Table 2", "candidate": "onecycle_3ep", "baseline": "inv_6ep",
     "evidence": "-3.89 pp, one-sided 95% bounds [-8.49 pp, +0.72 pp], n = 2, paired t, df 1; threshold -0.20 pp",
     "per_seed": "seed 0: -3.52 pp; seed 1: -4.25 pp", "n": 2, "estimate": -3.885, "lower_bound": -8.492,
     "upper_bound": 0.722, "threshold": -0.2, "verdict": "inconclusive", "expected": "supported",
     "note": "2 seeds: t quantile 6.31"},
    {"claim_id": "update_rule", "kind": "superior", "text": "PyTorch's rule beats Caffe's at 3 epochs",
     "source": "docs/paper_reference.md D6", "candidate": "onecycle_3ep_pytorch_rule", "baseline": "onecycle_3ep",
     "evidence": "+4.60 pp, one-sided 95% bounds [+4.09 pp, +5.10 pp], n = 2, paired t, df 1; threshold +0.00 pp",
     "per_seed": "seed 0: +4.28 pp; seed 1: +4.91 pp", "n": 2, "estimate": 4.595, "lower_bound": 4.09,
     "upper_bound": 5.1, "threshold": 0.0, "verdict": "supported at this scale", "expected": "", "note": ""}])
SCORECARD = pd.DataFrame({"claim": ["budget", "update_rule"],
                          "fashion_mnist / lenet": ["inconclusive (paper: supported)", "supported"]})


def _smoke_copy(root):
    """The committed smoke results (raw runs and range tests only) and the config they were run
    with (their workflow_config.json; configs/smoke.yaml may have moved on), pointing at them,
    its claims left out and configs/smoke.yaml's departures added."""
    results = root / "smoke"
    for part in ("train", "range_test", "data", "workflow_config.json"):
        source = REPO / "results" / "smoke" / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, results / part)
    config = json.loads((results / "workflow_config.json").read_text())
    config["results_dir"] = str(results)
    # Without its claims, so that the page shows the hand-made claims tables the tests write; with
    # the scale configs/smoke.yaml states (its departures from the paper), which the page shows.
    current = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["experiments"]
    for name, experiment in config["experiments"].items():
        experiment.pop("claims", None)
        experiment["departures"] = current[name]["departures"]
    (root / "smoke.yaml").write_text(yaml.safe_dump(config))
    return results, root / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    results, config = _smoke_copy(tmp_path_factory.mktemp("report"))
    (results / "tables").mkdir()
    CLAIMS.to_csv(results / "tables" / "fmnist_lenet_claims.csv", index=False)
    SCORECARD.to_csv(results / "tables" / "claims_scorecard.csv", index=False)
    assert main(["report", "--config", str(config)]) == 0
    return results, config


def test_page_shows_claims_first_then_verdicts_then_figures_then_runs(smoke_report):
    results, _ = smoke_report
    page = (results / "report.html").read_text()
    order = [page.index(marker) for marker in ('id="claims"', 'id="fmnist_lenet"', "<h3>Verdicts</h3>",
                                               "fmnist_lenet_range_test.png", 'id="runs"', 'id="workflow"')]
    assert order == sorted(order)
    claims = page[page.index('id="claims"'):page.index('id="fmnist_lenet"')]
    assert '<td class="verdict v-inconclusive">inconclusive</td>' in claims
    assert '<td class="verdict v-supported">supported at this scale</td>' in claims
    assert "inconclusive (paper: supported)" in claims and "PyTorch&#x27;s rule beats Caffe&#x27;s" in claims
    # The one statement of evidence each verdict rests on is printed beside it.
    assert "-3.89 pp, one-sided 95% bounds [-8.49 pp, +0.72 pp], n = 2, paired t, df 1" in claims
    # Each figure once as an image, its PDF as a link.
    for figure in ("range_test", "accuracy", "comparison"):
        assert page.count(f'src="figures/fmnist_lenet_{figure}.png"') == 1
        assert page.count(f'href="figures/fmnist_lenet_{figure}.pdf" download') == 1


def test_page_states_the_scale_and_the_validity_gates(smoke_report):
    results, _ = smoke_report
    page = (results / "report.html").read_text()
    section = page[page.index('id="fmnist_lenet"'):page.index("<h3>Verdicts</h3>")]
    assert "holds <b>at this scale</b>" in section and "<b>batch</b>: 128 (Part 1: TBS 512)" in section
    gates = pd.read_csv(results / "tables" / "fmnist_lenet_validity.csv")
    assert gates["gate"].tolist() == ["trainings learned", "range tests left chance", "time to accuracy resolved"]
    assert "Validity gates, checked before any verdict" in section and "No verdict" not in section


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


def test_page_without_claims_keeps_their_place_and_says_how_they_come(tmp_path):
    results, config = _smoke_copy(tmp_path)
    assert main(["report", "--config", str(config), "--only", "runs"]) == 0
    assert main(["report", "--config", str(config), "--only", "html"]) == 0
    page = (results / "report.html").read_text()
    claims = page[page.index('id="claims"'):page.index('id="fmnist_lenet"')]
    assert "No claims tables in this results folder" in claims and "tables/claims_scorecard.csv" in claims
    # Figures not written yet are said to be missing, not drawn as broken images.
    assert "fmnist_lenet_range_test.png: not written yet" in page


def test_rebuilding_gives_the_same_bytes(smoke_report):
    results, config = smoke_report
    written = sorted(p for p in results.rglob("*") if p.is_file() and p.parts[-2] in ("tables", "figures"))
    written.append(results / "report.html")
    before = {p: p.read_bytes() for p in written}
    assert main(["report", "--config", str(config)]) == 0
    assert [p for p in written if p.read_bytes() != before[p]] == []


@needs_chromium
def test_page_in_chromium_holds_the_numbers_and_loads_every_image(smoke_report):
    results, _ = smoke_report
    screenshot = ARTEFACTS / "report_first_screen.png"
    # Tables sit in boxes that scroll sideways if they must: count those that must.
    page = browser.render(results / "report.html", width=1280, height=800, screenshot=screenshot,
                          measure="Array.from(document.querySelectorAll('.scroll'))"
                                  ".filter(box => box.scrollWidth > box.clientWidth).length")
    assert page.console_errors == []
    table = pd.read_csv(results / "tables" / "fmnist_lenet.csv")
    for row in table.itertuples():
        # The verdict table as the CSV has it: mean ± std (2 decimals), each seed, the verdict.
        assert f"{row.accuracy_mean:.2f} ± {row.accuracy_std:.2f}" in page.text
        assert f"[{row.accuracy_ci_low:.2f}, {row.accuracy_ci_high:.2f}]" in page.text  # 3 seeds: the t interval
        assert row.verdict in page.text
    assert len(page.images) == 3 + 0  # range test, accuracy, comparison (no scorecard figure given)
    for image in page.images:
        assert image["complete"] and image["naturalWidth"] > 0, image
    # Readable at 1280 px: nothing wider than the window, no table wider than its box.
    assert page.scroll_width <= 1280 and page.measured == 0
    assert screenshot.read_bytes().startswith(b"\x89PNG")
