"""Figures of the replication report, each the counterpart of a figure in Smith's papers.

One module per figure family: range_test, accuracy, comparison, bounds_study and scorecard, each
importing what they share (style, file writing, colours, markers) from style; callers import a
figure from its module.

Figures are built on `matplotlib.figure.Figure` objects, never through pyplot: no global
figure registry to leak from a long workflow, and no backend switch at import time (the Agg
canvas is used on save). Each `*_figure` function returns the Figure (the tests read its axes);
each `plot_*` function draws it and writes it as PNG (for the reports) and PDF (for papers, with
TrueType fonts embedded), atomically through onecycle.io, with no creation date in the PDF so
that a rerun on the same results gives the same bytes.

Each figure answers one question, in the papers' words: the accuracy figure the comparison an
experiment makes (SC Fig 1a: CLR against PC-LR), the comparison figure Part 1 Table 2's or SC
Table 1's (accuracy, or CLR - PC-LR, against the budget or the data size), the range test where
the LRs sit (Part 1 Fig 14, SC Fig 2). A policy (by its papers' name, onecycle.report.describe)
and a range-test rule keep one colour and marker in every figure (style.STYLES). The accuracy
figure draws each group's mean over its seeds with their lowest-to-highest band: the papers
draw one curve per setting, and a band over two or three seeds shows their spread without
hiding a seed; a seed that diverged stops where it stopped, marked with a cross, and the mean
from there on is that of the seeds still running, as the legend says (never padded;
docs/design.md §6 and §11). Range tests keep every seed's own curve: each seed is a test of its
own, read for its own suggestion. A figure draws nothing it has no data for: a group without
an evaluation gets no curve (the report says why in a sentence).
"""
