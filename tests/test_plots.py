"""Figures: what they show, read back from their axes, and the files they are written to."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from onecycle.range_test_plot import choose_scale
from onecycle.report.figures.accuracy import RunCurve, accuracy_figure, plot_accuracy_curves, undrawable_groups
from onecycle.report.figures.comparison import comparison_figure, difference_figure, plot_comparison
from onecycle.report.figures.range_test import LOSS_CLIP_FACTOR, RangeSeed, plot_range_test, range_test_figure
from onecycle.report.figures.style import STYLES, group_styles, named_styles

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_figure_files(paths, stem):
    assert [p.name for p in paths] == [f"{stem.name}.png", f"{stem.name}.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(PNG_MAGIC)
    assert pdf.startswith(b"%PDF")
    # An empty canvas is a few kB; real axes, lines and text take more.
    assert len(png) > 10_000 and len(pdf) > 5_000
    assert not list(stem.parent.glob("*.tmp*")), "temporary files left behind"


def by_gid(fig, prefix):
    return {artist.get_gid(): artist for ax in fig.axes for artist in ax.lines
            if (artist.get_gid() or "").startswith(prefix)}


def range_history(n: int, diverge_at: int | None = None, eval_every: int = 10, spike: float | None = None) -> pd.DataFrame:
    """A linear 0 -> 1 ramp; loss falls then rises; test metrics every `eval_every` iterations.
    spike: the loss of the last recorded iterations (a divergence, as the smoke run's 7 383)."""
    it = np.arange(n)
    lr = it / (n - 1)
    loss = 2.0 - 1.5 * lr + 3.0 * lr**4
    evaluated = it % eval_every == 0
    frame = pd.DataFrame({"iteration": it, "lr": lr, "momentum": 0.9, "train_loss": loss, "smoothed_loss": loss,
                          "test_loss": np.where(evaluated, loss + 0.1, np.nan),
                          "test_accuracy": np.where(evaluated, 0.5 + 0.4 * lr - 0.3 * lr**4, np.nan)})
    if diverge_at is not None:
        frame = frame.iloc[: diverge_at + 1].copy()
    if spike is not None:
        frame.loc[frame.index[-3:], "smoothed_loss"] = [spike / 100, spike / 10, spike]
        frame.loc[frame.index[-1], "test_loss"] = spike * 30
    return frame


BOUNDS = {"chosen_rule": "smith_accuracy_peak", "policy_kind": "1cycle", "n_seeds": 2, "n_seeds_with_bounds": 2,
          "base_lr": 0.06, "max_lr": 0.6}


def two_seeds():
    suggestions = [{"smith_accuracy_peak": {"max_lr": 0.55, "lr": None, "note": ""},
                    "fastai_valley": {"max_lr": None, "lr": None, "note": "no valley"}},
                   {"smith_accuracy_peak": {"max_lr": 0.65, "lr": None, "note": ""},
                    "fastai_valley": {"max_lr": 0.2, "lr": 0.2, "note": ""}}]
    return [RangeSeed(0, range_history(200), None, suggestions[0]),
            RangeSeed(1, range_history(200, diverge_at=150, spike=7383.0), {"iteration": 150, "lr": 150 / 199},
                      suggestions[1])]


def test_range_test_loss_axes_are_log_and_cut_the_divergence_spike_off_the_curves():
    fig = range_test_figure(two_seeds(), BOUNDS, "Part 1 Fig 14b")
    accuracy, train_loss, test_loss = fig.axes[:3]
    assert train_loss.get_yscale() == "log" and test_loss.get_yscale() == "log"
    # Seed 1's spike (7 383; test 221 490) is far above 10x the largest start (2.0; test 2.1):
    # the axes end there, and the useful part (a fall to 1.55) keeps most of the panel.
    assert train_loss.get_ylim()[1] == pytest.approx(LOSS_CLIP_FACTOR * 2.0)
    assert test_loss.get_ylim()[1] == pytest.approx(LOSS_CLIP_FACTOR * 2.1)
    # ...and the bottom shows the minimum of the curve (2 - 1.5 lr + 3 lr^4 at lr = 0.5^(2/3): 1.55).
    assert train_loss.get_ylim()[0] < 1.55
    # Where seed 1 leaves the panel is marked; seed 0's own rise to 3.5 (2 - 1.5 + 3) stays on it.
    assert {a.get_gid() for a in train_loss.lines if (a.get_gid() or "").startswith("clipped")} == {"clipped:seed 1"}
    # The largest value is written in the legend, below the panels, not over the curves.
    assert len(train_loss.texts) == 0 and len(test_loss.texts) == 0
    texts = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert "smoothed train loss off scale, seed 1: up to 7,383 at lr 0.754" in texts
    # Accuracy is not clipped: 0.5 .. 0.63 (x100) all inside.
    low, high = accuracy.get_ylim()
    assert low <= 50 and high >= 63


def test_a_loss_panel_without_a_spike_ends_just_above_its_highest_point():
    fig = range_test_figure([RangeSeed(0, range_history(200))], None, "Part 1 Fig 14b")
    # The curve rises to 3.5 at lr 1, below 10x its start: a tenth of a decade above it.
    assert fig.axes[1].get_ylim()[1] == pytest.approx(3.5 * 10 ** 0.1)


def test_a_divergence_is_marked_at_the_lr_where_it_happened():
    # The run diverged at lr 0.8; its last test evaluation was at iteration 150 (lr 0.754).
    history = range_history(200, diverge_at=155)
    fig = range_test_figure([RangeSeed(3, history, {"iteration": 159, "lr": 0.8})], None, "SC Fig 2b")
    for ax in fig.axes[:3]:
        (cross,) = [a for a in ax.lines if a.get_gid() == "stopped:seed 3"]
        assert cross.get_xdata()[0] == pytest.approx(0.8)


def test_range_test_draws_the_lrs_training_set_in_the_config_in_each_policys_colour():
    trained = [{"label": "CLR 0.1-3", "low": 0.1, "high": 3.0, "policy": "CLR"},
               {"label": "PC-LR 0.35", "low": None, "high": 0.35, "policy": "PC-LR"}]
    fig = range_test_figure(two_seeds(), None, "SC Fig 2b", trained=trained)
    accuracy = fig.axes[0]
    # The ramp ends at lr 1: CLR's low end (0.1) and PC-LR's 0.35 are lines, CLR's peak (3) is
    # beyond the axis, marked on its edge and said in the legend; the axis is not stretched to it.
    lines = {round(line.get_xdata()[0], 3): line.get_color() for line in accuracy.lines
             if line.get_linestyle() in ("--", ":") and len(line.get_xdata()) == 2}
    assert lines == {0.1: STYLES["CLR"]["color"], 0.35: STYLES["PC-LR"]["color"]}
    assert accuracy.get_xlim()[1] < 1.1
    texts = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert "trained: CLR 0.1-3 (3 beyond this axis ▶)" in texts and "trained: PC-LR 0.35" in texts


def test_range_test_draws_every_seed_and_marks_where_a_seed_stopped():
    fig = range_test_figure(two_seeds(), BOUNDS, "Part 1 Fig 14b")
    curves = by_gid(fig, "curve")
    for column in ("test_accuracy", "smoothed_loss", "test_loss"):
        assert {f"curve:{column}:seed 0", f"curve:{column}:seed 1"} <= set(curves)
    # Seed 1 stopped at iteration 150, lr 0.754: its curve ends there, with a cross on each panel.
    assert curves["curve:smoothed_loss:seed 1"].get_xdata()[-1] == pytest.approx(150 / 199)
    stopped = [a for ax in fig.axes[:3] for a in ax.lines if a.get_gid() == "stopped:seed 1"]
    assert len(stopped) == 3 and not by_gid(fig, "stopped:seed 0")
    labels = fig.axes[-1].get_legend().get_texts()
    assert any(t.get_text() == "diverged: seed 1 at lr 0.754" for t in labels)


def test_range_test_labels_the_bounds_used_and_each_rules_suggestion_per_seed():
    fig = range_test_figure(two_seeds(), BOUNDS, "Part 1 Fig 14b")
    texts = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert "max_lr used: 0.6 (median of 2 seeds' smith_accuracy_peak)" in texts
    assert "base_lr used: 0.06 = max_lr / 10 (1cycle)" in texts
    # Median of the seeds that found one, with each seed's value (or "none").
    assert "smith_accuracy_peak: 0.6 (0.55, 0.65), the rule used" in texts
    assert "fastai_valley: 0.2 (none, 0.2)" in texts
    medians = by_gid(fig, "suggestion:")
    assert medians["suggestion:smith_accuracy_peak"].get_xdata()[0] == pytest.approx(0.6)
    assert list(by_gid(fig, "suggestion-seeds:")["suggestion-seeds:smith_accuracy_peak"].get_xdata()) == [0.55, 0.65]


def test_range_test_legend_is_off_the_data():
    fig = range_test_figure(two_seeds(), BOUNDS, "Part 1 Fig 14b")
    FigureCanvasAgg(fig).draw()
    legend = fig.axes[-1].get_legend().get_window_extent()
    for ax in fig.axes[:4]:  # three panels and the suggestions strip
        assert not legend.overlaps(ax.get_window_extent())


def test_range_test_axis_follows_the_ramp():
    history = range_history(100)
    history["lr"] = np.geomspace(1e-5, 1.0, len(history))
    fig = range_test_figure([RangeSeed(0, history)], None, "SC Fig 2b", x_scale="log")
    assert fig.axes[0].get_xscale() == "log"
    fig = range_test_figure([RangeSeed(0, range_history(100))], None, "Part 1 Fig 1a", x_scale="linear")
    assert fig.axes[0].get_xscale() == "linear"


@pytest.mark.parametrize(("values", "scale"), [
    ([0.0, 0.5, 3.0], "linear"),        # Smith's linear ramp starts at 0
    ([1e-5, 1e-3, 1.0], "log"),         # an exponential ramp over five decades
    ([0.01, 0.05, 0.1], "linear"),      # one decade
    ([1e-6, 1e-4, float("nan")], "linear"),  # exactly two decades is not "more than two"
])
def test_choose_scale(values, scale):
    assert choose_scale(values) == scale


def test_range_test_plot_rejects_a_history_without_smoothed_loss(tmp_path):
    with pytest.raises(ValueError, match="range-test history of seed 0: missing column 'smoothed_loss'"):
        plot_range_test([RangeSeed(0, range_history(50).drop(columns="smoothed_loss"))], None,
                        tmp_path / "x", "t")
    assert not list(tmp_path.iterdir())


def test_range_test_files(tmp_path):
    stem = tmp_path / "figs" / "range_test"
    assert_figure_files(plot_range_test(two_seeds(), BOUNDS, stem, "Part 1 Fig 1a"), stem)


def epoch_history(iterations, accuracies):
    return pd.DataFrame({"epoch": range(1, len(iterations) + 1), "iteration": iterations,
                         "test_accuracy": accuracies, "test_loss": 0.5})


def schedule(lr_points, momentum_points, steps=400):
    it = np.arange(steps)
    return pd.DataFrame({"iteration": it, "lr": np.interp(it, [0, 150, 300, steps], lr_points),
                         "momentum": np.interp(it, [0, 150, 300, steps], momentum_points)})


def test_accuracy_figure_draws_each_groups_mean_and_band_and_marks_every_divergence():
    curves = {
        "1cycle": [RunCurve(0, epoch_history([100, 200, 300], [0.5, 0.8, 0.9])),
                   # Diverged in epoch 2: its history has a NaN tail after epoch 1.
                   RunCurve(1, epoch_history([100, 200, 300], [0.6, np.nan, np.nan]),
                            {"iteration": 170, "epoch": 2, "reason": "loss is nan"})],
        "step": [RunCurve(0, epoch_history([100, 200, 300, 400], [0.4, 0.6, 0.7, 0.85])),
                 RunCurve(1, epoch_history([100, 200, 300, 400], [0.5, 0.7, 0.8, 0.95]))],
    }
    fig = accuracy_figure(curves, None, "SC Fig 1a")
    means = by_gid(fig, "mean")
    # The mean of the seeds still running: (50 + 60) / 2 at iteration 100, seed 0 alone after seed 1 stopped.
    assert list(means["mean:1cycle"].get_ydata()) == pytest.approx([55.0, 80.0, 90.0])
    assert list(means["mean:step"].get_ydata()) == pytest.approx([45.0, 65.0, 75.0, 90.0])
    band = next(c for c in fig.axes[0].collections if c.get_gid() == "band:step")
    assert band.get_paths()[0].vertices[:, 1].min() == pytest.approx(40.0)
    # The cross sits where the seed stopped: iteration 170 at its last accuracy.
    mark = by_gid(fig, "diverged")["diverged:1cycle:seed 1"]
    assert (mark.get_xdata()[0], mark.get_ydata()[0]) == (170, 60.0)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "1cycle (2 seeds, 1 diverged)" in texts and "step (2 seeds)" in texts


def test_a_group_without_an_evaluation_has_no_curve_and_says_why():
    curves = {"CLR": [RunCurve(s, epoch_history([], []), {"iteration": 9 + s, "epoch": 1, "reason": "loss is nan"})
                      for s in range(3)]}
    trace = schedule([0.1, 3.0, 0.1, 0.1], [0.9, 0.9, 0.9, 0.9])
    assert undrawable_groups(curves) == ["CLR"]
    fig = accuracy_figure(curves, {"CLR": trace}, "LeNet through SC's CLR cycle")
    # No empty accuracy panel: the schedule alone, with each seed's cross on it.
    assert [ax.get_ylabel() for ax in fig.axes] == ["learning rate"]
    assert len(by_gid(fig, "trace-diverged:lr:CLR")) == 3
    assert any("no evaluation before it stopped" in t.get_text() for t in fig.legends[0].get_texts())


def test_accuracy_figure_colours_by_policy_and_puts_the_lr_on_a_log_axis_where_it_spans_decades():
    curves = {g: [RunCurve(0, epoch_history([100, 200], [0.5, 0.9]))] for g in ("clr", "pc")}
    traces = {"clr": schedule([0.1, 3.0, 0.1, 0.1], [0.9] * 4),
              "pc": schedule([0.35, 0.35, 0.0035, 0.0035], [0.9] * 4)}
    fig = accuracy_figure(curves, traces, "SC Fig 1a", policies={"clr": "CLR", "pc": "PC-LR"})
    means = by_gid(fig, "mean")
    assert means["mean:clr"].get_color() == STYLES["CLR"]["color"]
    assert means["mean:pc"].get_marker() == STYLES["PC-LR"]["marker"]
    # 0.0035 .. 3: three decades, on a log axis; constant momentum: no momentum panel.
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log"]


def test_one_style_per_policy_and_rule_in_every_figure():
    # The same name gets the same colour and marker whatever else is drawn beside it.
    assert named_styles(["PC-LR", "CLR"])["CLR"] == named_styles(["CLR"])["CLR"] == STYLES["CLR"]
    rules = ["smith_accuracy_peak", "smith_loss_turn_up", "fastai_valley", "fastai_slide", "fastai_steep",
             "fastai_minimum", "steepest_slope_lr", "steepest_slope_log_lr"]
    styles = named_styles(rules)
    assert len({s["color"] for s in styles.values()}) == len(rules)
    # A name the table does not know gets a style no known name of the figure has.
    other = named_styles(["CLR", "poly"])
    assert (other["poly"]["color"], other["poly"]["marker"]) != (other["CLR"]["color"], other["CLR"]["marker"])


def test_accuracy_panels_draw_each_group_where_named_in_one_colour_and_one_legend():
    # CLR Fig 1's pairs: fixed vs triangular2, exp vs exp_range; exp_range also beside fixed_42k.
    groups = ("fixed", "triangular2", "exp", "exp_range", "fixed_42k")
    curves = {g: [RunCurve(s, epoch_history([100, 200], [0.5, 0.9])) for s in (0, 1)] for g in groups}
    traces = {g: schedule([0.001, 0.006, 0.001, 0.001], [0.9] * 4) for g in groups}
    panels = [["fixed", "triangular2"], ["exp", "exp_range"], ["fixed_42k", "exp_range"]]
    fig = accuracy_figure(curves, traces, "CLR Fig 1", panels=panels)
    accuracy_axes = [ax for ax in fig.axes if ax.get_ylabel() == "test accuracy (%)"]
    assert [ax.get_title(loc="left") for ax in accuracy_axes] == [" vs ".join(p) for p in panels]
    for ax, panel in zip(accuracy_axes, panels):
        # Each group's mean over its seeds (the band beside it), in the panels that name it only.
        drawn = {line.get_gid() for line in ax.get_lines() if (line.get_gid() or "").startswith("mean:")}
        assert drawn == {f"mean:{g}" for g in panel}
    # exp_range is drawn twice, in the same colour; the legend lists it once.
    colours = {line.get_color() for ax in accuracy_axes for line in ax.get_lines()
               if line.get_gid() == "mean:exp_range"}
    assert len(colours) == 1
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(fig.legends) == 1 and texts.count("exp_range (2 seeds)") == 1
    # Each panel has its own LR axis beneath, with that panel's schedules only.
    lr_axes = [ax for ax in fig.axes if ax.get_ylabel() == "learning rate"]
    assert [sorted(line.get_gid().split(":")[2] for line in ax.get_lines()) for ax in lr_axes] == \
        [sorted(p) for p in panels]


def test_seven_groups_get_distinct_colours_and_markers():
    styles = group_styles([f"g{i}" for i in range(7)])
    colours = [tuple(round(c, 3) for c in s["color"]) for s in styles.values()]
    assert len(set(colours)) == 7 and len({s["marker"] for s in styles.values()}) == 7
    # Clearly different: every pair of colours at least 0.2 apart in RGB (the old palette had
    # two oranges 0.12 apart).
    for i, a in enumerate(colours):
        for b in colours[i + 1:]:
            assert math.dist(a, b) > 0.2


def test_accuracy_figure_files_and_empty_input(tmp_path):
    stem = tmp_path / "acc"
    curves = {"1cycle": [RunCurve(0, epoch_history([100, 200], [0.5, 0.9]))]}
    assert_figure_files(plot_accuracy_curves(curves, None, stem, "Part 1 Fig 16a"), stem)


def test_comparison_of_unordered_groups_joins_nothing():
    runs = pd.DataFrame({"group": ["1cycle", "1cycle", "inv", "inv", "step"],
                         "final_accuracy": [81.5, 80.9, 85.1, 85.0, np.nan],
                         "status": ["completed"] * 4 + ["diverged"]})
    fig = comparison_figure(runs, "group", "smoke")
    ax = fig.axes[0]
    # No line through the categories: every drawn line is a lone marker or unconnected points.
    assert all(line.get_linestyle() == "None" or len(line.get_xdata()) < 2 for line in ax.lines)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1cycle", "inv", "step"]


def test_comparison_of_an_ordered_setting_joins_the_means():
    runs = pd.DataFrame({"weight_decay": [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6],
                         "final_accuracy": [np.nan, np.nan, 92.1, 92.5, 88.3, 87.2],
                         "status": ["diverged", "diverged", "completed", "completed", "completed", "completed"]})
    fig = comparison_figure(runs, "weight_decay", "SC Fig 10b: weight decay")
    ax = fig.axes[0]
    joined = [line for line in ax.lines if line.get_linestyle() != "None" and len(line.get_xdata()) > 1]
    assert len(joined) == 1 and list(joined[0].get_xdata()) == [1e-6, 1e-5, 1e-4]
    assert ax.get_xscale() == "log"


def test_comparison_files(tmp_path):
    runs = pd.DataFrame({"momentum": ["0.95-0.85", "0.95-0.85", "0.9", "0.9"],
                         "final_accuracy": [92.0, 92.2, 91.4, 91.1], "status": "completed",
                         "group": ["cm", "cm", "const", "const"]})
    stem = tmp_path / "cm"
    assert_figure_files(plot_comparison(runs, "momentum", stem, "Part 1 Table 1: momentum", hue="group"), stem)


def test_files_are_byte_identical_on_rerun_with_truetype_fonts(tmp_path):
    # No creation date in the PDF: regenerated figures do not show up as changed in git.
    curves = {"1cycle": [RunCurve(0, epoch_history([100, 200], [0.5, 0.9]))]}
    first = [p.read_bytes() for p in plot_accuracy_curves(curves, None, tmp_path / "a", "t")]
    second = [p.read_bytes() for p in plot_accuracy_curves(curves, None, tmp_path / "b", "t")]
    assert first == second
    # pdf.fonttype 42: TrueType fonts embedded (FontFile2), no Type 3 bitmaps-as-procedures.
    assert b"/FontFile2" in first[1] and b"/Type3" not in first[1]


def test_figures_of_no_finished_runs_are_still_written(tmp_path):
    # A report rebuilt while runs are pending still writes every figure the workflow declares.
    empty_runs = pd.DataFrame({"weight_decay": [], "final_accuracy": [], "status": []})
    for stem, draw in ((tmp_path / "rt", lambda s: plot_range_test([], None, s, "Part 1 Fig 1a")),
                       (tmp_path / "acc", lambda s: plot_accuracy_curves({}, None, s, "SC Fig 1a")),
                       (tmp_path / "wd", lambda s: plot_comparison(empty_runs, "weight_decay", s, "SC Fig 10b"))):
        paths = draw(stem)
        assert [p.read_bytes()[:4] for p in paths] == [PNG_MAGIC[:4], b"%PDF"]


def test_difference_figure_puts_ours_and_the_papers_on_one_log2_axis_of_sizes():
    ours = pd.DataFrame({"x": [1250, 2500, 5000, 10000], "n": 3, "mean_diff": [-1.02, -5.07, -4.25, -8.95],
                         "lower_bound_pp": [-4.41, -10.38, -6.86, -10.37],
                         "upper_bound_pp": [2.37, 0.25, -1.63, -7.52]})
    paper = pd.DataFrame({"x": [10000, 20000, 50000], "difference_pp": [9.2, 5.2, 1.2]})
    fig = difference_figure(ours, paper, "data.train_subset", "SC Table 1", candidate="CLR", baseline="PC-LR",
                            paper_name="SC", margin_pp=0.5)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xaxis().get_transform().base == 2
    # Every size is a tick, written as the docs write sizes; the axis says what it is, with its unit.
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1 250", "2 500", "5 000", "10 000", "20 000", "50 000"]
    assert ax.get_xlabel() == "training images (log scale)" and "CLR - PC-LR" in ax.get_ylabel()
    # Ours with the claims' bounds as its bar; the paper's point values as open diamonds.
    (bars,) = [c for c in ax.containers]
    low, high = bars.lines[2][0].get_segments()[0][:, 1]
    assert (low, high) == pytest.approx((-4.41, 2.37))
    (published,) = [line for line in ax.lines if line.get_marker() == "D"]
    assert list(published.get_ydata()) == [9.2, 5.2, 1.2]
    assert [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":" and len(line.get_xdata()) == 2] \
        == [-0.5]


def test_comparison_bars_are_the_t_interval_from_three_seeds_and_the_range_below():
    runs = pd.DataFrame({"epochs": [12, 12, 12, 85, 85], "final_accuracy": [91.0, 91.2, 91.4, 91.1, 91.3],
                         "status": "completed", "policy": ["smith_1cycle"] * 3 + ["inv"] * 2})
    fig = comparison_figure(runs, "epochs", "Part 1 Table 2", hue="policy",
                            names={"smith_1cycle": "1cycle", "inv": "inv"})
    ax = fig.axes[0]
    bars = {container.lines[0].get_color(): container.lines[2][0].get_segments()[0][:, 1]
            for container in ax.containers}
    # 1cycle: 3 seeds, mean 91.2, sd 0.2, t(0.975, 2) = 4.3027 (4.303 here: 1e-3 covers the rounding times
    # 0.2 / sqrt 3). inv: its two seeds, their range.
    half = 4.303 * 0.2 / 3 ** 0.5
    assert bars[STYLES["1cycle"]["color"]] == pytest.approx([91.2 - half, 91.2 + half], abs=1e-3)
    assert bars[STYLES["inv"]["color"]] == pytest.approx([91.1, 91.3])
