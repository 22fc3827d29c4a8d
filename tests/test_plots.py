"""Figures: written atomically as real PNG and PDF files, and robust to diverged seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from onecycle import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_figure_files(paths, stem):
    assert [p.name for p in paths] == [f"{stem.name}.png", f"{stem.name}.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(PNG_MAGIC)
    assert pdf.startswith(b"%PDF")
    # An empty canvas is a few kB; real axes, lines and text take more.
    assert len(png) > 10_000 and len(pdf) > 5_000
    assert not list(stem.parent.glob("*.tmp*")), "temporary files left behind"


def range_history(n: int, diverge_at: int | None = None, eval_every: int = 10) -> pd.DataFrame:
    """A linear 0 -> 1 ramp; loss falls then rises; test metrics every `eval_every` iterations."""
    it = np.arange(n)
    lr = it / (n - 1)
    loss = 2.0 - 1.5 * lr + 3.0 * lr**4
    evaluated = it % eval_every == 0
    frame = pd.DataFrame({"iteration": it, "lr": lr, "momentum": 0.9, "train_loss": loss, "smoothed_loss": loss,
                          "test_loss": np.where(evaluated, loss + 0.1, np.nan),
                          "test_accuracy": np.where(evaluated, 0.5 + 0.4 * lr - 0.3 * lr**4, np.nan)})
    if diverge_at is not None:
        # A diverged range test stops on its divergent iteration, whose loss is non-finite.
        frame = frame.iloc[: diverge_at + 1].copy()
        frame.loc[frame.index[-1], ["train_loss", "smoothed_loss"]] = [math.inf, math.nan]
    return frame


def test_mean_band_stops_a_short_seed_where_it_stopped():
    full = (np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    short = (np.array([0.0, 1.0]), np.array([3.0, 4.0]))
    grid, mean, low, high = plots.mean_band([full, short])
    np.testing.assert_array_equal(grid, [0.0, 1.0, 2.0, 3.0])
    # Beyond x=1 only the full seed is left: no padding of the short one with its last value.
    np.testing.assert_array_equal(mean, [2.0, 3.0, 3.0, 4.0])
    np.testing.assert_array_equal(low, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(high, [3.0, 4.0, 3.0, 4.0])


def test_mean_band_interpolates_seeds_onto_the_union_grid():
    a = (np.array([0.0, 2.0]), np.array([0.0, 2.0]))
    b = (np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 1.0]))
    grid, mean, _, _ = plots.mean_band([a, b])
    np.testing.assert_array_equal(grid, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(mean, [0.5, 1.0, 1.5])


@pytest.mark.parametrize(("values", "scale"), [
    ([0.0, 0.5, 3.0], "linear"),        # Smith's linear ramp starts at 0
    ([1e-5, 1e-3, 1.0], "log"),         # an exponential ramp over five decades
    ([0.01, 0.05, 0.1], "linear"),      # one decade
    ([1e-6, 1e-4, float("nan")], "linear"),  # exactly two decades is not "more than two"
])
def test_choose_scale(values, scale):
    assert plots.choose_scale(values) == scale


def test_range_test_plot_with_a_diverged_seed_and_bounds(tmp_path):
    stem = tmp_path / "figs" / "range_test"
    bounds = {"chosen_rule": "smith_accuracy_peak", "policy_kind": "1cycle", "base_lr": 0.06, "max_lr": 0.6,
              "suggestions": {"smith_accuracy_peak": {"max_lr": 0.6, "lr": None, "note": ""},
                              "fastai_valley": {"max_lr": None, "lr": 0.2, "note": "no valley"}}}
    paths = plots.plot_range_test([range_history(200), range_history(200, diverge_at=150)], bounds, stem,
                                  "Part 1 Fig 1a: LR range test")
    assert_figure_files(paths, stem)


def test_range_test_plot_without_bounds_and_forced_log_scale(tmp_path):
    history = range_history(100)
    history["lr"] = np.geomspace(1e-5, 1.0, len(history))
    stem = tmp_path / "rt_log"
    assert_figure_files(plots.plot_range_test([history], None, stem, "SC Fig 2b", x_scale="log"), stem)


def test_range_test_plot_rejects_a_history_without_smoothed_loss(tmp_path):
    with pytest.raises(ValueError, match="range-test history #0: missing column 'smoothed_loss'"):
        plots.plot_range_test([range_history(50).drop(columns="smoothed_loss")], None, tmp_path / "x", "t")
    assert not list(tmp_path.iterdir())


def epoch_history(iterations, accuracies):
    return pd.DataFrame({"epoch": range(1, len(iterations) + 1), "iteration": iterations,
                         "test_accuracy": accuracies, "test_loss": 0.5})


def test_accuracy_curves_with_traces_and_a_nan_tail(tmp_path):
    curves = {
        "1cycle": [epoch_history([100, 200, 300], [0.5, 0.8, 0.9]),
                   epoch_history([100, 200, 300], [0.6, np.nan, np.nan])],  # diverged after epoch 1
        "step": [epoch_history([100, 200, 300, 400], [0.4, 0.6, 0.7, 0.85])],
    }
    it = np.arange(0, 400, 10)
    traces = {"1cycle": pd.DataFrame({"iteration": it, "lr": np.interp(it, [0, 150, 300], [0.1, 1.0, 0.0]),
                                      "momentum": np.interp(it, [0, 150, 300], [0.95, 0.85, 0.95])}),
              "step": pd.DataFrame({"iteration": it, "lr": np.where(it < 300, 0.1, 0.01), "momentum": 0.9})}
    stem = tmp_path / "sc_fig1a"
    assert_figure_files(plots.plot_accuracy_curves(curves, traces, stem, "SC Fig 1a"), stem)


def test_accuracy_curves_without_traces(tmp_path):
    stem = tmp_path / "acc"
    curves = {"1cycle": [epoch_history([100, 200], [0.5, 0.9])]}
    assert_figure_files(plots.plot_accuracy_curves(curves, None, stem, "Part 1 Fig 16a"), stem)


def test_comparison_plot_marks_diverged_runs(tmp_path):
    runs = pd.DataFrame({"weight_decay": [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6],
                         "final_accuracy": [np.nan, np.nan, 92.1, 92.5, 88.3, 87.2],
                         "status": ["diverged", "diverged", "completed", "completed", "completed", "completed"],
                         "group": ["wd"] * 6})
    stem = tmp_path / "wd"
    assert_figure_files(plots.plot_comparison(runs, "weight_decay", stem, "SC Fig 10b: weight decay"), stem)


def test_comparison_plot_with_text_settings_and_hue(tmp_path):
    runs = pd.DataFrame({"momentum": ["0.95-0.85", "0.95-0.85", "0.9", "0.9"],
                         "final_accuracy": [92.0, 92.2, 91.4, 91.1], "status": "completed",
                         "group": ["cm", "cm", "const", "const"]})
    stem = tmp_path / "cm"
    paths = plots.plot_comparison(runs, "momentum", stem, "Part 1 Table 1: momentum", hue="group")
    assert_figure_files(paths, stem)


def test_pdf_is_byte_identical_on_rerun(tmp_path):
    # No creation date in the PDF: regenerated figures do not show up as changed in git.
    curves = {"1cycle": [epoch_history([100, 200], [0.5, 0.9])]}
    first = plots.plot_accuracy_curves(curves, None, tmp_path / "a", "t")[1].read_bytes()
    second = plots.plot_accuracy_curves(curves, None, tmp_path / "b", "t")[1].read_bytes()
    assert first == second


def test_figures_of_no_finished_runs_are_still_written(tmp_path):
    # A report rebuilt while runs are pending still writes every figure the workflow declares.
    empty_runs = pd.DataFrame({"weight_decay": [], "final_accuracy": [], "status": []})
    for stem, draw in ((tmp_path / "rt", lambda s: plots.plot_range_test([], None, s, "Part 1 Fig 1a")),
                       (tmp_path / "acc", lambda s: plots.plot_accuracy_curves({}, None, s, "SC Fig 1a")),
                       (tmp_path / "wd", lambda s: plots.plot_comparison(empty_runs, "weight_decay", s, "SC Fig 10b"))):
        paths = draw(stem)
        assert [p.read_bytes()[:4] for p in paths] == [PNG_MAGIC[:4], b"%PDF"]
