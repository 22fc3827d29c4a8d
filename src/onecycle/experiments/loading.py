"""Reading config files strictly: YAML or JSON into a plain dict, before any model sees it.

load_mapping reads a file the way Snakemake reads a --configfile, but refuses what Snakemake's
loader lets through silently (a repeated key, a recursive alias, an alias bomb, a file too big or
too deep), in one line naming the file, line and key path; deep_merge layers settings on each
other; load_workflow_file and resolve_include add a workflow config's `include:` (one config
extending another, e.g. configs/paper_imagenet.yaml on configs/paper.yaml). The typed models
that validate the result are in onecycle.experiments.config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from onecycle.errors import ConfigError

# Bounds on what a config file may hold before anything reads it. The largest config, configs/
# paper.yaml, is 77 kB and expands (anchors and `<<:` merges included) to 5 451 values: these
# limits sit 50 and 9 times above it, and far below what hangs the suite (a billion-laughs alias
# bomb of 600 bytes, 9 levels of 9 aliases, expands to 9^9 = 387 million values).
MAX_CONFIG_BYTES = 4 * 2**20
MAX_CONFIG_VALUES = 50_000
# Configs nest 6 levels deep (experiments.<exp>.groups.<group>.schedule.params.<key>).
MAX_CONFIG_DEPTH = 32


# libyaml's parser where PyYAML was built with it (its wheels are): faster on large files, and it
# refuses nesting deeper than 1000 levels itself, where PyYAML's own parser hits RecursionError.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigLoader(_SAFE_LOADER):  # type: ignore[misc, valid-type]
    """YAML's safe loader, checked before it builds anything: a key repeated in one mapping (which
    YAML forbids and PyYAML lets the last one win), a recursive alias, or aliases expanding past
    MAX_CONFIG_VALUES (billion laughs) is refused, naming the line and key path. Anchors, aliases
    and `<<:` merges within those bounds work as in any YAML (configs/paper.yaml uses them)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _NodeCheck(self).check(node)
        return super().construct_document(node)


class ConfigShapeError(yaml.MarkedYAMLError):
    """Well-formed YAML that a config must not be (duplicate keys, alias bombs, recursion)."""


class _NodeCheck:
    """One walk over the composed (not yet constructed) node graph: aliases are shared nodes
    there, so counting their expanded size costs one visit per node, not per expansion."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.sizes: dict[int, int] = {}   # id(node) -> values it expands to
        self.open: set[int] = set()       # nodes on the current path: seeing one again is a cycle
        self.distinct = 0                 # nodes visited, each once: the file's own values

    def check(self, root: yaml.Node) -> None:
        self._size(root, (), 0)

    def _size(self, node: yaml.Node, path: tuple[str, ...], depth: int) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            self._refuse(node, path, "is an alias to itself (a recursive structure)")
        if depth > MAX_CONFIG_DEPTH:
            self._refuse(node, path, f"nests deeper than {MAX_CONFIG_DEPTH} levels")
        self.open.add(key)
        self.distinct += 1
        size = 1
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                size += self._size(item, (*path, f"[{index}]"), depth + 1)
                self._bound(size, node, path)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                name = self._key(key_node, path)
                if name in seen:
                    self._refuse(key_node, (*path, str(name)),
                                 f"is repeated (first on line {seen[name].start_mark.line + 1}); "
                                 "YAML keys must be unique, remove or rename one")
                seen[name] = key_node
                label = "<<" if key_node.tag == "tag:yaml.org,2002:merge" else str(name)
                size += 1 + self._size(value_node, (*path, label), depth + 1)
                self._bound(size, node, path)
        self.open.discard(key)
        self.sizes[key] = size
        return size

    def _key(self, node: yaml.Node, path: tuple[str, ...]) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self._refuse(node, path, "has a key that is a list or mapping; keys are plain names")
        if node.tag == "tag:yaml.org,2002:merge":
            return "<<"
        # As the dict will hold it: `1` and `0x1` (or `1` and `true`) are one key there.
        return self.loader.construct_object(node)

    def _bound(self, size: int, node: yaml.Node, path: tuple[str, ...]) -> None:
        # Checked while summing, so that a bomb is refused after MAX_CONFIG_VALUES steps.
        if size <= MAX_CONFIG_VALUES:
            return
        if self.distinct > MAX_CONFIG_VALUES:
            self._refuse(node, path, f"holds more than {MAX_CONFIG_VALUES} values; no config needs as many")
        self._refuse(node, path, f"expands to more than {MAX_CONFIG_VALUES} values through its "
                                 "aliases (an alias bomb?)")

    @staticmethod
    def _refuse(node: yaml.Node, path: tuple[str, ...], problem: str) -> None:
        where = _key_path(path)
        raise ConfigShapeError(problem=f"{f'key {where!r}' if where else 'the document'} {problem}",
                               problem_mark=node.start_mark)


def _key_path(path: tuple[str, ...]) -> str:
    return "".join(part if part.startswith("[") else f".{part}" for part in path).lstrip(".")


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Read a config file into a dict, with one-line errors naming the file, the way Snakemake
    reads a --configfile, so that a file means the same to `snakemake` and to `onecycle`:

    - `.json` (what the workflow writes: spec.json, workflow_config.json) with the json module.
      JSON is not read as YAML: io.write_json writes 1e-06, which JSON reads as a number and
      YAML 1.1 as the string '1e-06' (every job with a weight decay or LR below 1e-4 failed).
    - anything else as YAML 1.1 through ConfigLoader, where `1e-4` without a dot is a string (the
      models refuse it with a hint to write 1.0e-4), and duplicate keys and aliases are checked.
    Size and encoding are checked for both; a key repeated in one JSON object is refused too.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)  # bounded: --config /dev/zero must not hang
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    data = _load_json(path, text) if path.suffix.lower() == ".json" else _load_yaml(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _load_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: line {error.lineno} not valid JSON ({error.msg})") from None
    except _RepeatedJsonKey as error:
        raise ConfigError(f"{path}: key {error.args[0]!r} is repeated in one object; "
                          "JSON keys must be unique") from None
    except RecursionError:
        raise ConfigError(f"{path}: nests too deeply to be a config") from None


class _RepeatedJsonKey(Exception):
    """A key twice in one JSON object (json keeps the last one, silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise _RepeatedJsonKey(key)
        mapping[key] = value
    return mapping


def _load_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except ConfigShapeError as error:
        raise ConfigError(f"{path}:{_line(error)} {error.problem}") from None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{_line(error)} not valid YAML ({problem})") from None
    except RecursionError:  # the pure-Python composer recurses once per level of nesting
        raise ConfigError(f"{path}: nests too deeply to be a config") from None
    except ValueError as error:  # an integer of more digits than Python converts, a 13th month
        reason = str(error).split(";")[0]  # not Python's advice to raise its digit limit
        raise ConfigError(f"{path}: a value YAML cannot convert ({reason})") from None


def _line(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    return f" line {mark.line + 1}:" if mark is not None else ""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge key by key; any other value in `override` replaces the base's."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# A workflow config's top-level `include: OTHER.yaml` (relative to the including file's folder):
# the other config's settings, with this file's deep-merged over them (its experiments added,
# any key it repeats replacing the included one's). configs/paper_imagenet.yaml is configs/
# paper.yaml plus the full-ILSVRC rows. Includes may chain up to MAX_INCLUDE_DEPTH files.
INCLUDE_KEY = "include"
MAX_INCLUDE_DEPTH = 8


def resolve_include(data: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """`data` (read from the file `source`) with its `include:` chain merged under it."""
    return _resolved(data, Path(source), ())


def load_workflow_file(path: str | Path) -> dict[str, Any]:
    """A workflow config file, strictly read (load_mapping), with its `include:` resolved."""
    return resolve_include(load_mapping(path), path)


def _resolved(data: dict[str, Any], source: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if INCLUDE_KEY not in data:
        return data
    target = data[INCLUDE_KEY]
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"{source}: '{INCLUDE_KEY}' must name one config file, a path relative to "
                          f"{source.parent}; got {target!r}")
    path = (source.parent / target).resolve()
    seen = (*chain, source.resolve())
    if path in seen:
        raise ConfigError(f"{source}: '{INCLUDE_KEY}: {target}' includes itself again "
                          f"({' -> '.join(str(p) for p in (*seen, path))})")
    if len(seen) > MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{source}: more than {MAX_INCLUDE_DEPTH} files chained by '{INCLUDE_KEY}'")
    if not path.is_file():
        raise ConfigError(f"{source}: '{INCLUDE_KEY}: {target}': {path} not found")
    base = _resolved(load_mapping(path), path, seen)
    return deep_merge(base, {key: value for key, value in data.items() if key != INCLUDE_KEY})
