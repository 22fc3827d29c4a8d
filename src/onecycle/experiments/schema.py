"""`onecycle config --schema`: the JSON Schema of each config kind, generated from its model.

The pydantic models in onecycle.experiments.config (and WorkflowConfig in onecycle.experiments.workflow) are the one
definition of every config file; this module only exports them as JSON Schema (draft 2020-12),
for editors (e.g. the YAML language server's `# yaml-language-server: $schema=...`) and readers.
Two things the models hold outside pydantic's view are added: the comment above each field in
the model's source becomes its `description`, and names checked against a registry at load
time (datasets, architectures, fillers, schedule policies, bound rules) get the registry as an
`enum`, so the schema lists the valid values too.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

_FIELD = re.compile(r"^\s+(\w+)\s*:")

KINDS = ("run", "range-test", "workflow")


def config_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a run config (`onecycle train`), a range-test config (`onecycle
    range-test`) or a workflow config (`configs/*.yaml`, the Snakefile's --configfile)."""
    from onecycle.experiments.config import RangeTestConfig, RunConfig
    from onecycle.experiments.workflow import WorkflowConfig

    models = {"run": RunConfig, "range-test": RangeTestConfig, "workflow": WorkflowConfig}
    if kind not in models:
        raise ValueError(f"unknown config kind {kind!r}; valid: {', '.join(KINDS)}")
    model = models[kind]
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    definitions = schema.get("$defs", {})
    for cls in _models_in(model):
        target = schema if cls is model else definitions.get(cls.__name__, {})
        for name, text in field_comments(cls).items():
            target.get("properties", {}).get(name, {}).setdefault("description", text)
    _add_registry_enums(definitions)
    return schema


def field_comments(model: type) -> dict[str, str]:
    """Field name -> the `#` comment lines right above its declaration in `model`'s class body
    (and its bases'), joined into one paragraph."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not cls.__module__.startswith("onecycle."):  # BaseModel, object
            continue
        lines, _ = inspect.getsourcelines(cls)
        block: list[str] = []
        for line in lines[1:]:
            stripped = line.strip()
            if stripped.startswith("#"):
                block.append(stripped.lstrip("#").strip())
                continue
            match = _FIELD.match(line)
            if match and block and match.group(1) in cls.model_fields:
                comments[match.group(1)] = " ".join(block)
            block = []
    return comments


def _models_in(model: type) -> list[type]:
    """`model` and every pydantic model its fields hold, however deeply nested."""
    from pydantic import BaseModel

    seen: list[type] = []
    stack = [model]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for field in cls.model_fields.values():
            for candidate in _types_in(field.annotation):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    stack.append(candidate)
    return seen


def _types_in(annotation: Any) -> list[Any]:
    from typing import get_args

    return [annotation, *(t for arg in get_args(annotation) for t in _types_in(arg))]


def _add_registry_enums(definitions: dict[str, Any]) -> None:
    from onecycle.bounds import SUGGESTION_RULES
    from onecycle.data import DATASETS
    from onecycle.models import INIT_SCHEMES, MODELS
    from onecycle.schedules import POLICIES

    registries = {("DataConfig", "dataset"): DATASETS, ("ModelConfig", "arch"): MODELS,
                  ("ModelConfig", "init"): INIT_SCHEMES, ("ScheduleConfig", "policy"): POLICIES,
                  ("RangeTestSpec", "bounds_rule"): SUGGESTION_RULES}
    for (model, field), registry in registries.items():
        properties = definitions.get(model, {}).get("properties", {})
        if field in properties:
            properties[field]["enum"] = sorted(registry)
