"""From run folders to what a researcher reads: tables, verdicts, figures and the HTML page.

Everything here reads explicit lists of result files that the plan names (never walks folders):
- evidence: each planned run fresh, diverged, broken, stale or missing, before anything reads it;
- runs: collect a run's metrics.json and history.csv into a row, or say why it is broken;
- aggregate: per-group summaries beside the papers' numbers, the paired table;
- speedup: the one definition of the target accuracy, time to it and the speed-up;
- validity: the gates an experiment must pass before any verdict (invalid, tiny);
- stats, claims, scorecard: statistics over seeds, the claims' verdicts, the suite's scorecard (Holm);
- bounds_study: each range-test rule's regret against the study's LR grid;
- tables (CSV, Markdown, LaTeX, HTML), figures/ (one module per figure family, one style per
  policy and rule), describe (labels, the papers' names of the policies);
- outputs: where every table and figure goes; build: one experiment's tables; build_figures: its
  figures; context: the papers' numbers beside ours;
- answers, answer_box: the answers a page opens on; html, html_runs: the static report page and
  its runs; index: results/index.html, every folder's answers;
- published: the papers' numbers as data; reference: a fresh run against the committed reference.
"""
