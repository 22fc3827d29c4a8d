"""Runs that talk (onecycle.progress): plain lines per evaluation in a log, a live line at a terminal."""

import io
import re

import pandas as pd

from conftest import needs_fashion_mnist
from onecycle.progress import SILENT, RunProgress


def test_plain_lines_name_the_run_and_each_evaluation():
    stream = io.StringIO()
    with RunProgress("exp/g/seed0", stream=stream, live=False) as progress:
        progress.start(468, note="6 epochs of 78, cpu, 1 torch thread")
        for done in range(1, 79):
            progress.step(done, lr=0.01, loss=0.5)  # plain mode: no line per iteration
        progress.evaluation(iteration=78, lr=0.00912, test_loss=0.48012, test_accuracy=0.8312,
                            train_loss=0.51234, epoch=1, epochs=6)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "exp/g/seed0: 468 iterations (6 epochs of 78, cpu, 1 torch thread)"
    assert re.fullmatch(r"epoch 1/6  iteration 78/468  train_loss 0\.5123  test_loss 0\.4801  "
                        r"test_accuracy 83\.12%  lr 0\.00912  elapsed 0:00:\d\d", lines[1]), lines[1]
    assert len(lines) == 2


def test_resumed_run_says_where_it_resumes():
    stream = io.StringIO()
    RunProgress("r", stream=stream, live=False).start(100, done=40)
    assert stream.getvalue() == "r: 100 iterations, resuming after iteration 40\n"


def test_live_line_shows_rate_loss_lr_and_accuracy():
    stream = io.StringIO()
    with RunProgress("run", stream=stream, live=True) as progress:
        progress.start(10)
        for done in range(1, 6):
            progress.step(done, lr=0.05, loss=1.25)
        progress.evaluation(iteration=5, lr=0.05, test_loss=1.0, test_accuracy=0.5)
    text = stream.getvalue()
    final = text.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("run:  50%") and "5/10" in final and "it/s" in final, final
    assert "lr=0.05" in final and "loss=1.25" in final and "test_acc=50.00%" in final, final


def test_silent_progress_is_the_library_default():
    import inspect

    from onecycle.range_test import lr_range_test
    from onecycle.training.run import train

    for function in (train, lr_range_test):
        assert inspect.signature(function).parameters["progress"].default is SILENT


@needs_fashion_mnist
def test_a_training_run_prints_one_line_per_evaluation(tiny_run_config, tmp_path):
    from onecycle.experiments.config import RunConfig, parse
    from onecycle.training.run import train

    stream = io.StringIO()
    with RunProgress("tiny", stream=stream, live=False) as progress:
        train(parse(RunConfig, tiny_run_config), tmp_path, progress=progress)
    lines = stream.getvalue().splitlines()
    history = pd.read_csv(tmp_path / "history.csv")
    assert lines[0].startswith("tiny: 16 iterations (2 epochs of 8, cpu, ")
    assert len(lines) == 1 + len(history) == 3
    for line, row in zip(lines[1:], history.itertuples(), strict=True):
        assert line.startswith(f"epoch {row.epoch}/2  iteration {row.iteration}/16  ")
        assert f"test_accuracy {100 * row.test_accuracy:.2f}%" in line
