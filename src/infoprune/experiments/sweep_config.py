"""Sweep configuration: a TOML file read into plain dataclasses, validated with clear errors.

A sweep is the grid model × dataset × seed × state (trained / untrained) × method × level of
the MIPP paper's evaluation (§5). The file has three parts::

    description = "LeNet-5 on MNIST, every method (MIPP Fig. 2a, 3)"   # optional

    [grid]
    models = ["lenet5"]
    datasets = ["mnist"]
    seeds = [0, 1]
    states = ["trained", "untrained"]     # untrained: prune at initialisation

    [training]                            # every key optional
    train_epochs = 3                      # before pruning (trained state only)
    retrain_epochs = 2
    calibration_samples = 2000
    train_samples = 20000                 # a seeded subset of the training split (default: all)
    test_samples = 2000                   # a seeded subset of the test split to evaluate on (default: all)
    device = "cpu"                        # default: CUDA when present
    data_dir = "data/cifar"               # data sets read from disk
    weights = "resnet50.pth"              # prune this checkpoint instead of training (trained state)
    characterise = true                   # record ECE and adversarial accuracy (MINT §IV-E)

    [[methods]]
    name = "mipp"                         # a registered method
    params = { fit_iterations = 300 }     # constructor arguments, fixed for every run
    levels = { param = "confidence", schedule = "geometric", count = 5 }
    # or at budgets: levels = { param = "flops", values = [0.5, 0.25, 0.1] }  (MIPP, ITPruner)

    [[methods]]
    name = "synflow"
    match = "mipp"                        # at the ratio MIPP reached in the same setting

A method entry's pruning level is one constructor argument (``levels.param``) taking either
listed ``values`` or the ``geometric`` schedule of MIPP App. D.1, x₀ = ``start`` (0.5) and
x_n = x_{n−1} + (1 − x_{n−1})·``rate`` (0.5). Or the entry ``match``-es an earlier entry (by
``label``, which defaults to ``name``): each of its runs takes, from the matched entry's run in
the same (model, dataset, seed, state, level), either the global fraction of units removed,
passed as ``ratio=`` (``match = "mipp"``; the paper's protocol for the baselines, §5), the
fraction of FLOPs or parameters kept, passed as ``flops=`` / ``params=`` budgets
(``match = { entry = "mipp", by = "flops" }``, for methods that take a budget), or its
keep-masks, passed as ``masks=`` (``match = { entry = "mipp", take = "masks" }``, for an
architecture re-initialised). An entry with neither runs once per setting. ``states`` limits an
entry to some of the grid's states. The sweep never special-cases a method: what an entry
means is all in these keys.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from infoprune.data import DATASETS
from infoprune.experiments.pipeline import Training
from infoprune.methods import available_methods, get_method
from infoprune.models import MODELS
from infoprune.training import recipe_for
from infoprune.validation import check_count

STATES = ("trained", "untrained")
MATCH_TAKES = ("ratio", "masks")  # what is taken from the matched run
MATCH_BY = {"units": "ratio", "flops": "flops", "params": "params"}  # what a ratio match equals -> the parameter it fills
SCHEDULES = ("geometric",)


class ConfigError(ValueError):
    """A sweep configuration that cannot be run; the message names the key and the fix."""


def geometric_schedule(count: int, start: float = 0.5, rate: float = 0.5) -> list[float]:
    """MIPP App. D.1: x₀ = ``start``, x_n = x_{n−1} + (1 − x_{n−1})·``rate``, ``count`` values.

    With the defaults: 0.5, 0.75, 0.875, 0.9375, … approaching 1 at a decreasing rate.
    """
    values = [start]
    while len(values) < count:
        values.append(values[-1] + (1 - values[-1]) * rate)
    return values[:count]


@dataclass(frozen=True)
class Match:
    """Take ``take`` (``ratio`` or ``masks``) from the run of entry ``entry`` in the same setting;
    a ratio match equals the matched run's fraction of ``by``: units removed (passed as
    ``ratio=``), FLOPs kept (``flops=``) or parameters kept (``params=``)."""

    entry: str
    take: str = "ratio"
    by: str = "units"

    @property
    def param(self) -> str:
        return "masks" if self.take == "masks" else MATCH_BY[self.by]


@dataclass(frozen=True)
class MethodEntry:
    """One method of the sweep: its fixed ``params`` and how its level varies."""

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    level_param: str | None = None
    level_values: tuple[Any, ...] = ()
    match: Match | None = None
    states: tuple[str, ...] = STATES


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: the grid, the training settings and the method entries (in run order:
    every matched entry comes before the entries that match it)."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    states: tuple[str, ...]
    training: Training
    methods: tuple[MethodEntry, ...]
    description: str = ""

    def entry(self, label: str) -> MethodEntry:
        return next(entry for entry in self.methods if entry.label == label)


# ---------------------------------------------------------------------------------------------
# Reading and checking


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML ``text``; errors name ``source`` (Python 3.10 needs the tomli package)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("Reading sweep configs needs Python ≥ 3.11 (tomllib) or `pip install tomli`.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate the sweep configuration at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Sweep config {path} does not exist.")
    return parse_config(parse_toml(path.read_text(), str(path)), str(path))


def parse_config(raw: dict[str, Any], source: str = "config") -> SweepConfig:
    """Validate a parsed TOML document; errors start with ``source`` and the key at fault."""
    _only_keys(raw, {"description", "grid", "training", "methods"}, source)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{source}: description must be a string.")
    grid = _table(raw, "grid", source, required=True)
    where = f"{source} [grid]"
    _only_keys(grid, {"models", "datasets", "seeds", "states"}, where)
    models = _names(grid, "models", MODELS, where)
    datasets = _names(grid, "datasets", DATASETS, where)
    seeds = _list(grid, "seeds", where, default=[0])
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(f"{where}: seeds must be distinct non-negative integers, got {seeds}.")
    states = _states(grid.get("states", list(STATES)), where)

    training = _training(_table(raw, "training", source), f"{source} [training]")
    _check_recipes(datasets, training, f"{source} [training]")
    entries = raw.get("methods")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{source}: needs at least one [[methods]] table (name = one of {', '.join(available_methods())}).")
    methods = [_method(entry, f"{source} [[methods]] #{i + 1}", states) for i, entry in enumerate(entries)]
    return SweepConfig(
        models=tuple(models),
        datasets=tuple(datasets),
        seeds=tuple(seeds),
        states=states,
        training=training,
        methods=_run_order(methods, source),
        description=description,
    )


def _only_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}.")


def _table(raw: dict[str, Any], key: str, where: str, required: bool = False) -> dict[str, Any]:
    if key not in raw:
        if required:
            raise ConfigError(f"{where}: missing the [{key}] table.")
        return {}
    if not isinstance(raw[key], dict):
        raise ConfigError(f"{where}: {key} must be a table ([{key}] or {key} = {{ ... }}).")
    return raw[key]


def _list(table: dict[str, Any], key: str, where: str, default: list | None = None) -> list:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: missing {key} = [...].")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty list, got {value!r}.")
    return value


def _names(table: dict[str, Any], key: str, known: dict, where: str) -> list[str]:
    names = _list(table, key, where)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown {key} {unknown}; available: {', '.join(sorted(known))}.")
    _distinct(names, key, where)
    return names


def _distinct(values: list, key: str, where: str) -> None:
    """Duplicates would run every run twice (and store it once): refuse them."""
    repeated = sorted({repr(v) for i, v in enumerate(values) if v in values[:i]})
    if repeated:
        raise ConfigError(f"{where}: {key} lists {', '.join(repeated)} more than once; list each once.")


def _states(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(s not in STATES for s in value) or len(set(value)) < len(value):
        raise ConfigError(f"{where}: states must be a non-empty list of distinct values from {list(STATES)}, got {value!r}.")
    return tuple(value)


def _training(table: dict[str, Any], where: str) -> Training:
    """The ``[training]`` table as :class:`Training`, its errors naming the table."""
    _only_keys(table, {f.name for f in fields(Training)}, where)
    try:
        return Training(**table)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _count(key: str, value: Any, minimum: int, where: str, optional: bool = False) -> int | None:
    """:func:`infoprune.validation.check_count`, its error naming the config's table."""
    try:
        return check_count(key, value, minimum, optional=optional)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_recipes(datasets: list[str], training: Training, where: str) -> None:
    """Every data set that is trained or re-trained has a recipe (checked before any run starts)."""
    for dataset in datasets:
        for retrain, epochs in ((False, training.train_epochs), (True, training.retrain_epochs)):
            if epochs > 0:
                try:
                    recipe_for(dataset, retrain, epochs)
                except ValueError as error:
                    raise ConfigError(f"{where}: {error}") from None


def _method(raw: dict[str, Any], where: str, grid_states: tuple[str, ...]) -> MethodEntry:
    _only_keys(raw, {"name", "label", "params", "levels", "match", "states"}, where)
    name = raw.get("name")
    if name not in available_methods():
        raise ConfigError(f"{where}: name must be one of {', '.join(available_methods())}, got {name!r}.")
    label = raw.get("label", name)
    where = f"{where} ({label})"
    if not isinstance(label, str) or not label or "/" in label:
        raise ConfigError(f"{where}: label must be a non-empty string without '/', got {label!r}.")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: params must be a table of constructor arguments, got {params!r}.")
    states = _states(raw.get("states", list(grid_states)), where)
    if not set(states) <= set(grid_states):
        raise ConfigError(f"{where}: states {list(states)} are not all in the grid's states {list(grid_states)}.")
    if "levels" in raw and "match" in raw:
        raise ConfigError(f"{where}: give levels or match, not both.")

    level_param, level_values, match = None, (), None
    if "levels" in raw:
        level_param, level_values = _levels(raw["levels"], where)
    elif "match" in raw:
        match = _match(raw["match"], where)
        level_param = match.param
    entry = MethodEntry(label, name, dict(params), level_param, tuple(level_values), match, states)
    _check_method_arguments(entry, where)
    return entry


def _levels(raw: Any, where: str) -> tuple[str, list[Any]]:
    where = f"{where} levels"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table, e.g. {{ param = \"ratio\", values = [0.5, 0.9] }}.")
    _only_keys(raw, {"param", "values", "schedule", "count", "start", "rate"}, where)
    param = raw.get("param")
    if not isinstance(param, str) or not param:
        raise ConfigError(f"{where}: param must name the method argument that sets the level (e.g. \"confidence\").")
    if ("values" in raw) == ("schedule" in raw):
        raise ConfigError(f"{where}: give either values = [...] or schedule = \"geometric\" with count = N.")
    if "values" in raw:
        values = raw["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: values must be a non-empty list, got {values!r}.")
        if set(raw) & {"count", "start", "rate"}:
            raise ConfigError(f"{where}: count, start and rate belong to a schedule, not to listed values.")
        _distinct(values, "values", where)
        return param, values
    if raw["schedule"] not in SCHEDULES:
        raise ConfigError(f"{where}: schedule must be one of {list(SCHEDULES)}, got {raw['schedule']!r}.")
    count = _count("count", raw.get("count"), 1, where)
    start, rate = raw.get("start", 0.5), raw.get("rate", 0.5)
    for key, value in (("start", start), ("rate", rate)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ConfigError(f"{where}: {key} must be a number in (0, 1), got {value!r}.")
    return param, geometric_schedule(count, start, rate)


def _match(raw: Any, where: str) -> Match:
    if isinstance(raw, str):
        raw = {"entry": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: match must be an entry label or {{ entry = \"mipp\", by = \"flops\" }}.")
    _only_keys(raw, {"entry", "take", "by"}, f"{where} match")
    entry, take, by = raw.get("entry"), raw.get("take", "ratio"), raw.get("by", "units")
    if not isinstance(entry, str) or not entry:
        raise ConfigError(f"{where}: match needs the label of another method entry.")
    if take not in MATCH_TAKES:
        raise ConfigError(f"{where}: match take must be one of {sorted(MATCH_TAKES)}, got {take!r}.")
    if by not in MATCH_BY:
        raise ConfigError(f"{where}: match by must be one of {sorted(MATCH_BY)}, got {by!r}.")
    if take == "masks" and by != "units":
        raise ConfigError(f"{where}: match by = {by!r} applies to ratio matches; take = \"masks\" copies the masks.")
    return Match(entry, take, by)


def _check_method_arguments(entry: MethodEntry, where: str) -> None:
    """The method accepts the params and the level argument, and every listed level builds it."""
    cls = get_method(entry.name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    wanted = set(entry.params) | ({entry.level_param} if entry.level_param else set())
    unknown = sorted(wanted - set(accepted))
    if unknown:
        raise ConfigError(f"{where}: method {entry.name!r} does not take {unknown}; its parameters are: {accepted}.")
    if entry.level_param in entry.params:
        raise ConfigError(f"{where}: {entry.level_param!r} is the level; remove it from params.")
    if entry.match is not None and entry.match.take == "masks":
        return  # the masks exist only once the matched run has finished
    trial_values = entry.level_values or ((0.5,) if entry.match else (None,))
    for value in trial_values:
        arguments = dict(entry.params)
        if entry.level_param is not None:
            arguments[entry.level_param] = value
        try:
            cls(**arguments)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {entry.name}({_format_arguments(arguments)}) is invalid: {error}") from None


def _format_arguments(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())


def _run_order(methods: list[MethodEntry], source: str) -> tuple[MethodEntry, ...]:
    """Entries ordered so that every matched entry runs before those matching it."""
    by_label: dict[str, MethodEntry] = {}
    for entry in methods:
        if entry.label in by_label:
            raise ConfigError(f"{source}: two method entries are labelled {entry.label!r}; give each a distinct label.")
        by_label[entry.label] = entry
    for entry in methods:
        if entry.match is None:
            continue
        target = by_label.get(entry.match.entry)
        if target is None or target is entry:
            raise ConfigError(
                f"{source}: method {entry.label!r} matches {entry.match.entry!r}, which is not another entry's "
                f"label; labels: {sorted(by_label)}."
            )
        missing = sorted(set(entry.states) - set(target.states))
        if missing:
            raise ConfigError(f"{source}: method {entry.label!r} runs in states {missing} where {target.label!r}, which it matches, does not.")
    _no_twin_entries(methods, source)
    ordered: list[MethodEntry] = []
    visiting: set[str] = set()

    def visit(entry: MethodEntry) -> None:
        if entry in ordered:
            return
        if entry.label in visiting:
            raise ConfigError(f"{source}: method entries match each other in a cycle through {entry.label!r}.")
        visiting.add(entry.label)
        if entry.match is not None:
            visit(by_label[entry.match.entry])
        visiting.discard(entry.label)
        ordered.append(entry)

    for entry in methods:
        visit(entry)
    return tuple(ordered)


def _no_twin_entries(methods: list[MethodEntry], source: str) -> None:
    """Two entries differing only in their label would run the same runs twice: refuse them."""
    seen: dict[str, str] = {}
    for entry in methods:
        key = repr((entry.name, sorted(entry.params.items()), entry.level_param, entry.level_values, entry.match, entry.states))
        if key in seen:
            raise ConfigError(
                f"{source}: method entries {seen[key]!r} and {entry.label!r} are the same runs (same method, "
                "params, levels, match and states); remove one."
            )
        seen[key] = entry.label
