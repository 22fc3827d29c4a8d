"""The papers' numbers shown beside ours as context: no verdict is given against them.

A mirror on other data (Fashion-MNIST for SC's CIFAR-10) cannot be held to the paper's
accuracies, but a reader still wants the paper's shape on the same axes: SC Table 1's CLR minus
PC-LR at each training-set size beside ours. The rows come from configs/reference/published.yaml
(onecycle.report.published), named by the experiment's `compare.paper`, never typed into code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from onecycle.errors import ConfigError

# A comparison's x (a config path) -> the published rows' setting of the same quantity.
PUBLISHED_SETTINGS = {"data.train_subset": "train_samples", "train.epochs": "epochs", "optim.weight_decay": "wd",
                      "train.batch_size": "tbs", "optim.momentum": "momentum"}


def paper_differences(published: pd.DataFrame, pairs: Mapping[str, str], x: str, where: str) -> pd.DataFrame:
    """One row per published (candidate, baseline) pair: its x (the rows' setting that `x` maps
    to, PUBLISHED_SETTINGS), both accuracies and candidate minus baseline (pp), sorted by x.
    A pair whose rows are missing, or differ in that setting, is a ConfigError naming `where`."""
    setting = PUBLISHED_SETTINGS.get(x)
    if setting is None:
        raise ConfigError(f"{where}: the published rows have no setting for x {x!r} "
                          f"(known: {', '.join(PUBLISHED_SETTINGS)})")
    rows = _rows(published, [*pairs, *pairs.values()], where)
    out = []
    for candidate, baseline in pairs.items():
        values = {rows.loc[candidate, "settings"].get(setting), rows.loc[baseline, "settings"].get(setting)}
        if len(values) != 1 or None in values:
            raise ConfigError(f"{where}: {candidate} and {baseline} are not at one {setting} "
                              f"({sorted(map(str, values))})")
        out.append({"x": values.pop(), "candidate_id": candidate, "baseline_id": baseline,
                    "candidate_accuracy": rows.loc[candidate, "accuracy"],
                    "baseline_accuracy": rows.loc[baseline, "accuracy"],
                    "difference_pp": rows.loc[candidate, "accuracy"] - rows.loc[baseline, "accuracy"]})
    columns = ["x", "candidate_id", "baseline_id", "candidate_accuracy", "baseline_accuracy", "difference_pp"]
    return pd.DataFrame(out, columns=columns).sort_values("x", ignore_index=True)


def paper_setting(published: pd.DataFrame, ids: Iterable[str], where: str) -> str | None:
    """"CIFAR-10 / ResNet-56": the dataset and architecture the cited published rows share, or
    None if they name none or several (then the paper's setting is not one pair)."""
    rows = _rows(published, list(ids), where)
    pairs = set(zip(rows["dataset"], rows["architecture"]))
    if len(pairs) != 1:
        return None
    dataset, architecture = pairs.pop()
    return f"{dataset} / {architecture}"


def _rows(published: pd.DataFrame, ids: list[str], where: str) -> pd.DataFrame:
    by_id = published.set_index("id")
    unknown = [i for i in ids if i not in by_id.index]
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} is not a row of configs/reference/published.yaml")
    return by_id.loc[list(dict.fromkeys(ids))]
