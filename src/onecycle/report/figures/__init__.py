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

Every seed is drawn as its own curve: with the two to four seeds the papers and this suite run,
a mean and band would hide which seed did what, and a mean over the seeds still running turns
silently into one seed's curve when the other stops. A seed that diverged stops where it
stopped, marked with a cross, and is never padded (docs/design.md §6 and §11).
"""
