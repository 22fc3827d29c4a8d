"""Fuzzing the config loaders: configs/smoke.yaml and a run config, mutated at random into files no
config may be (wrong types, repeated keys, alias bombs, oversized or deeply nested values, unicode
names, unusable paths), each handed to the real `onecycle` command line: exit 2, one line, and no
output that looks finished. Seeded and bounded, and validated through loading and expansion only
(`onecycle report` and `onecycle train` stop before any data or training), so it runs in seconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_run
from onecycle import cli
from onecycle.experiments.loading import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_VALUES
from onecycle.errors import MAX_MESSAGE_CHARS

CASES = 100
# What the one line must say, by kind of mutation (the others name a key and value in many ways).
EXPECTED = {"duplicate": ["is repeated"], "alias": ["alias"],
            "size": ["larger than", "holds more than", "cannot convert", "nesting", "nests"]}
# Free text: any string is a valid value there, so a string mutation would make a valid config.
FREE_TEXT = {"description", "replicates"}
UNICODE_NAMES = ["inv 6ep", "ïnv_6ep", "inv/6ep", "..", "-inv", "inv\u200b6ep", "\u202einv", "inv;rm -rf", "☃"]


def _leaves(data, path=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, data


def _mappings(data, path=()):
    if isinstance(data, dict):
        yield path
        for key, value in data.items():
            yield from _mappings(value, (*path, key))


def _get(data, path):
    for key in path:
        data = data[key]
    return data


def _emit(data, path=(), *, raw=None, duplicate=None):
    """`data` as YAML flow text (JSON with YAML's anchors): `raw` maps a key path to the text of
    its value; `duplicate` is (path of a mapping, text of a second value for its first key)."""
    raw = raw or {}
    if path in raw:
        return raw[path]
    if isinstance(data, dict):
        items = [f"{json.dumps(str(k))}: {_emit(v, (*path, k), raw=raw, duplicate=duplicate)}" for k, v in data.items()]
        if duplicate is not None and duplicate[0] == path and data:
            items.append(f"{json.dumps(str(next(iter(data))))}: {duplicate[1]}")
        return "{" + ", ".join(items) + "}"
    if isinstance(data, list):
        return "[" + ", ".join(_emit(v, (*path, i), raw=raw, duplicate=duplicate) for i, v in enumerate(data)) + "]"
    return json.dumps(data, ensure_ascii=False)


def _bomb(rng, name):
    """Billion laughs, as lists or as mappings: width^levels values from a few hundred bytes."""
    width, levels = rng.randint(6, 12), rng.randint(7, 10)
    if rng.random() < 0.5:
        parts = [f"&{name}0 [" + ", ".join(['"lol"'] * width) + "]"]
        parts += [f"&{name}{i} [" + ", ".join([f"*{name}{i - 1}"] * width) + "]" for i in range(1, levels)]
        return "[" + ", ".join(parts) + "]"
    parts = [f'"k0": &{name}0 {{' + ", ".join(f'"a{j}": 1' for j in range(width)) + "}"]
    parts += [f'"k{i}": &{name}{i} {{' + ", ".join(f'"a{j}": *{name}{i - 1}' for j in range(width)) + "}"
              for i in range(1, levels)]
    return "{" + ", ".join(parts) + "}"


def _wrong_type(rng, value):
    if isinstance(value, bool):
        return rng.choice(["yes please", [True], 2])
    if isinstance(value, (int, float)):
        return rng.choice(["abc", "1e-4", [value], {"value": value}, True])
    if isinstance(value, str):
        return rng.choice([12345, [value], {"name": value}, 0.5])
    if isinstance(value, list):
        return rng.choice([",".join(map(str, value)), {"0": value}, 7])
    return "abc"


def _mutate(rng, data, case):
    """(text of a config no loader may accept, what it does) for one seeded case."""
    leaves = [(p, v) for p, v in _leaves(data) if p[-1] not in FREE_TEXT and v is not None]
    mappings = [p for p in _mappings(data) if p]
    kind = rng.choice(["type", "duplicate", "alias", "size", "unicode", "path"])
    if kind == "type":
        path, value = rng.choice(leaves)
        return _emit(data, raw={path: _emit(_wrong_type(rng, value))}), f"type {'.'.join(map(str, path))}"
    if kind == "duplicate":
        # The first key of a mapping again, with its own value (the repeat alone is the fault) or
        # another; PyYAML alone would keep the last silently.
        path = rng.choice([()] + mappings)
        mapping = _get(data, path)
        value = rng.choice([mapping[next(iter(mapping))], 1, "x", {}, [0]])
        return _emit(data, duplicate=(path, _emit(value))), f"duplicate in {path}"
    if kind == "alias":
        path = rng.choice([p for p, _ in leaves] + mappings)
        recursive = rng.random() < 0.2
        text = f"&r{case} [1, *r{case}]" if recursive else _bomb(rng, f"b{case}_")
        return _emit(data, raw={path: text}), f"alias {'recursive' if recursive else 'bomb'} at {path}"
    if kind == "size":
        path = rng.choice([p for p, _ in leaves])
        size = rng.choice(["string", "list", "deep", "digits"])
        value = {"string": lambda: json.dumps("x" * (MAX_CONFIG_BYTES + 1)),
                 "list": lambda: _emit(list(range(MAX_CONFIG_VALUES + 1))),
                 "deep": lambda: "[" * (MAX_CONFIG_DEPTH + rng.randint(1, 2000)) + "]" * 0,
                 "digits": lambda: "9" * rng.randint(5000, 20000)}[size]()
        if size == "deep":  # balanced brackets
            depth = value.count("[")
            value = "[" * depth + "]" * depth
        return _emit(data, raw={path: value}), f"size {size} at {path}"
    if kind == "unicode":
        return _unicode_name(rng, data), "unicode name"
    return _bad_path(rng, data, case), "path"


def _unicode_name(rng, data):
    name = rng.choice(UNICODE_NAMES)
    if "experiments" in data:
        experiments = data["experiments"]
        exp = next(iter(experiments))
        if rng.random() < 0.5:
            renamed = {name: experiments[exp]}
            return _emit({**data, "experiments": renamed})
        groups = experiments[exp]["groups"]
        first = next(iter(groups))
        exp_data = {**experiments[exp], "groups": {name: groups[first], **{k: v for k, v in groups.items() if k != first}}}
        return _emit({**data, "experiments": {exp: exp_data}})
    return _emit({**data, "data": {**data["data"], "dataset": name}})


def _bad_path(rng, data, case):
    if "results_dir" in data:
        return _emit({**data, "results_dir": rng.choice(["", "   ", "res\0ults"])})
    return _emit({**data, "model": {**data["model"], "arch": rng.choice(["../lenet", "/etc/passwd", ""])}})


def _looks_finished(folder: Path) -> list[Path]:
    return [p for pattern in ("**/metrics.json", "**/tables/*.csv", "**/history.csv") for p in folder.glob(pattern)]


@pytest.mark.parametrize("which", ["workflow", "run"])
def test_mutated_configs_fail_in_one_line_with_exit_2(which, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, results_dir "" included, land here
    rng = random.Random(f"issue-19-{which}")
    if which == "workflow":
        base = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
        base["results_dir"] = str(tmp_path / "results")
    else:
        base = tiny_run()
    failures = []
    for case in range(CASES):
        text, what = _mutate(rng, base, case)
        config = tmp_path / f"case{case}.yaml"
        config.write_text(text, encoding="utf-8")
        args = (["report", "--config", str(config)] if which == "workflow"
                else ["train", "--config", str(config), "--out", str(tmp_path / f"out{case}")])
        status = cli.main(args)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        single = len(lines) == 1 and lines[0].startswith("onecycle: error: ") \
            and len(lines[0]) <= len("onecycle: error: ") + MAX_MESSAGE_CHARS
        names_the_fault = single and any(fragment in lines[0] for fragment in EXPECTED.get(what.split()[0], [""]))
        if status != 2 or not single or not names_the_fault:
            failures.append(f"case {case} ({what}): exit {status}, stderr {err[:300]!r}")
        config.unlink()
    finished = _looks_finished(tmp_path)
    assert not failures, "\n".join(failures)
    assert not finished, finished
