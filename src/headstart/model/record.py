"""What a trained model is, beyond its tensors: a typed record, one small dataclass a part.

Each part declares its fields' constraints the way settings do (`setting(check=...)`), and is
read from the model folder's JSON by `from_dict`, which checks every field: a tampered or
damaged record is one line naming the file and the field, never a traceback or a wrong answer
(a temperature of -1 would silently invert every prediction). This module is the only one
that reads the record's JSON by key; everything else reads attributes.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from headstart.backbones.preprocessing import Preprocessing
from headstart.data.split import TEST_PERCENT, VAL_PERCENT
from headstart.errors import HeadstartError, SettingError
from headstart.model.heads import HeadConfig
from headstart.settings import Check, first_problem, number, setting

Part = TypeVar("Part", bound="RecordPart")


def finite(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if ok and math.isfinite(value) else "must be a finite number"


def positive(value: Any) -> str | None:
    return finite(value) or (None if value > 0 else "must be a finite number > 0")


def text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty string"


def optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def stage_numbers(value: Any) -> str | None:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 32 for i in value
    )
    return None if ok else "must be a list of stage numbers"


def mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) else "not an object"


def listing(value: Any) -> str | None:
    return None if isinstance(value, list) else "must be a list"


def class_names(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or not value:
        return "must be a list of class names"
    if not all(isinstance(label, str) and label for label in value):
        return "every label must be a non-empty string"
    if len(set(value)) != len(value):
        return "labels must be unique"
    unprintable = next((label for label in value if _control_characters(label)), None)
    if unprintable is not None:
        # a newline would shift every later line of NAME.labels.txt for whoever reads it
        return f"the label {unprintable!r} holds control characters; rename the class"
    return None


def _control_characters(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" or c in "\u2028\u2029" for c in text)


class RecordPart:
    """A part of the record: read from and written to JSON, checked on the way in."""

    @classmethod
    def from_dict(cls: type[Part], data: Any, where: str) -> Part:
        """The part `data` describes; HeadstartError names the first field (`where.field`)
        that is missing or outside its declared constraint. Keys it does not know (written by
        another release) are ignored."""
        if not isinstance(data, dict):
            raise HeadstartError(f"{where}: not an object")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for name, declared in fields.items():
            no_default = declared.default is declared.default_factory is dataclasses.MISSING
            if no_default and name not in data:
                raise HeadstartError(f"{where}: needs {name}")
        values = {
            name: _as_field(data[name], fields[name].default) for name in fields if name in data
        }
        try:
            part = cls(**values)
        except TypeError as error:  # a field whose value has the wrong shape
            raise HeadstartError(f"{where}: {error}") from error
        problem = first_problem(part)
        if problem:
            raise HeadstartError(f"{where}.{problem[0].name}: {problem[1]}")
        return part

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: optional fields left out while unset."""
        out = {}
        for declared in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, declared.name)
            if value is None or (value == () and declared.default == ()):
                continue
            out[declared.name] = _as_json(value)
        return out


@dataclass(frozen=True)
class BackboneRecord(RecordPart):
    """Which pretrained backbone, and after fine-tuning which tuned weights."""

    name: str = setting(check=text)
    weights: str = setting(check=text)
    fingerprint: str = setting(check=text)
    architecture: str | None = setting(None, optional(text))
    pooled_stages: tuple[int, ...] = setting((), stage_numbers)
    tuned_weights: str | None = setting(None, optional(text))
    tuned_fingerprint: str | None = setting(None, optional(text))
    weights_file: str | None = setting(None, optional(text))  # the user's own weights


@dataclass(frozen=True)
class UnknownStats(RecordPart):
    """The unknown-image score's statistics, z-scored on validation, and its threshold: what
    the NumPy score, the ONNX graph and the server all compute with."""

    distance_mean: float = setting(check=finite)
    distance_std: float = setting(check=positive)
    energy_mean: float = setting(check=finite)
    energy_std: float = setting(check=positive)
    threshold: float = setting(check=finite)
    bank_size: int | None = setting(None, optional(positive))
    pass_rate: float | None = setting(None, optional(positive))

    def is_unknown(self, score: Any) -> Any:
        """The one comparison: past the threshold, an image is none of the classes (a score,
        or an array of them)."""
        return score > self.threshold


@dataclass(frozen=True)
class Calibration(RecordPart):
    """Temperature scaling fitted on validation, with its effect on NLL and ECE there."""

    # The range training fits it in: a temperature of 1e-300 would turn every logit into inf.
    temperature: float = setting(1.0, number(0.05, 20.0, kind=float))
    val_nll_before: float | None = setting(None, optional(finite))
    val_nll_after: float | None = setting(None, optional(finite))
    val_ece_before: float | None = setting(None, optional(finite))
    val_ece_after: float | None = setting(None, optional(finite))


@dataclass(frozen=True)
class SplitPercents(RecordPart):
    val_percent: float = setting(VAL_PERCENT, finite)
    test_percent: float = setting(TEST_PERCENT, finite)


@dataclass(frozen=True)
class TrainingRecord(RecordPart):
    """How the model was trained: the strategy that ran, every setting, the split, the data."""

    strategy: str = setting("linear", text)
    settings: dict[str, Any] = setting(None, optional(mapping))  # FitSettings, as written
    split: SplitPercents = setting(SplitPercents())
    dataset: str | None = setting(None, optional(text))

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TrainingRecord:
        record = super().from_dict(data, where)
        split = SplitPercents.from_dict(data.get("split", {}), f"{where}.split")
        return dataclasses.replace(record, split=split, settings=record.settings or {})


@dataclass
class Summary(RecordPart):
    """The training run in numbers: what was used, skipped, chosen and measured."""

    dataset: str = ""
    layout: str = ""
    classes: int = 0
    used: dict[str, int] = field(default_factory=dict)  # images with features, per split
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    computed: int = 0  # images through the backbone (the rest came from the cache)
    train_per_class: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    l2: float | None = None  # the linear head's L2 strength, chosen on validation
    val_accuracy: float | None = None
    val_loss: float | None = None
    val_map: float | None = None  # multi-label: mean average precision on validation
    strategy: str = "linear"
    reason: str | None = None  # why auto chose the strategy
    augmented_views: int = 0
    notes: list[str] = field(default_factory=list)
    multi_label: bool = False  # `classes` are then labels, several (or none) a photo

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Summary:
        for name, kind in (("used", dict), ("train_per_class", dict), ("seconds", dict)):
            if not isinstance(_object(data, where).get(name, {}), kind):
                raise HeadstartError(f"{where}.{name}: not an object")
        for name in ("skipped", "notes"):
            if not isinstance(data.get(name, []), list):
                raise HeadstartError(f"{where}.{name}: must be a list")
        summary = super().from_dict(data, where)
        summary.notes = [str(note) for note in summary.notes]
        summary.skipped = [(str(item[0]), str(item[-1])) for item in summary.skipped if item]
        return summary

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "skipped": [list(item) for item in self.skipped]}


@dataclass(frozen=True)
class FinetuneRecord(RecordPart):
    """What fine-tuning did: the units tuned, where, and whether an epoch beat the start."""

    improved: bool = setting(False, None)
    tuned: tuple[str, ...] = ()
    units: int | None = None
    device: str | None = None
    freeze_bn: bool | None = None
    augment: str | None = None
    workers: int | None = None  # Ray Train workers, when it ran on a cluster


@dataclass
class ModelRecord:
    """Everything a model folder's JSON holds about the model. Its tensors live beside it."""

    labels: tuple[str, ...]
    backbone: BackboneRecord
    preprocessing: Preprocessing
    head: HeadConfig
    training: TrainingRecord | None = None
    summary: Summary | None = None
    calibration: Calibration | None = None
    unknown: UnknownStats | None = None
    finetune: FinetuneRecord | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one row a training epoch
    head_history: list[dict[str, Any]] = field(default_factory=list)  # before fine-tuning
    versions: dict[str, str] = field(default_factory=dict)  # libraries that wrote it
    # The training photo behind each row of the unknown-image score's bank: (path relative to
    # the dataset, or as given, and label index), so explanations can show the nearest.
    bank_photos: tuple[tuple[str, int], ...] = ()
    # A multi-label model's threshold a label, on its calibrated sigmoid probability; none
    # for a single-label (softmax) model.
    thresholds: tuple[float, ...] = ()

    @property
    def multi_label(self) -> bool:
        """Several labels a photo, each its own sigmoid and threshold (not one softmax)."""
        return bool(self.thresholds)

    @property
    def temperature(self) -> float:
        """Fitted on the validation split at training time; 1.0 when there was none."""
        return self.calibration.temperature if self.calibration else 1.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "labels": list(self.labels),
            "backbone": self.backbone.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "head": self.head.to_dict(),
        }
        if self.unknown is not None:
            out["unknown"] = self.unknown.to_dict()
        for name in ("training", "summary", "calibration", "finetune"):
            part = getattr(self, name)
            if part is not None:
                out[name] = part.to_dict()
        out["history"] = self.history
        if self.head_history:
            out["head_history"] = self.head_history
        if self.bank_photos:
            out["bank_photos"] = [list(photo) for photo in self.bank_photos]
        if self.thresholds:
            out["thresholds"] = list(self.thresholds)
        return out

    @classmethod
    def from_dict(cls, metadata: dict[str, Any], where: Path) -> ModelRecord:
        """The record of a model folder's JSON (any format version), every field checked;
        HeadstartError names `where` and the first field that is not as written."""
        try:
            return cls._read(metadata)
        except (HeadstartError, SettingError) as error:
            raise HeadstartError(f"{where}: {error}") from error

    @classmethod
    def _read(cls, m: dict[str, Any]) -> ModelRecord:
        problem = class_names(m.get("labels"))
        if problem:
            raise HeadstartError(f"labels: {problem}")
        labels: list[str] = m["labels"]
        if not isinstance(m.get("head"), dict):
            raise HeadstartError("head: missing or not an object")
        if not isinstance(m.get("backbone"), dict):
            raise HeadstartError("backbone: missing or not an object")
        if not isinstance(m.get("preprocessing"), dict):
            raise HeadstartError("preprocessing: missing")
        head = HeadConfig.from_dict(m["head"])
        if head.num_classes != len(labels):
            raise HeadstartError(
                f"labels: {len(labels)} labels for a head of {head.num_classes} classes"
            )
        try:
            preprocessing = Preprocessing.from_dict(m["preprocessing"])
        except (KeyError, TypeError, ValueError) as error:
            raise HeadstartError(f"preprocessing: {error}") from error
        return cls(
            labels=tuple(labels),
            backbone=BackboneRecord.from_dict(m["backbone"], "backbone"),
            preprocessing=preprocessing,
            head=head,
            training=_part(TrainingRecord, m, "training"),
            summary=_part(Summary, m, "summary"),
            calibration=_part(Calibration, m, "calibration"),
            unknown=_part(UnknownStats, m, "unknown"),
            finetune=_part(FinetuneRecord, m, "finetune"),
            history=_rows(m, "history"),
            head_history=_rows(m, "head_history"),
            versions=_versions(m.get("versions")),
            bank_photos=_bank_photos(m.get("bank_photos"), len(labels)),
            thresholds=_thresholds(m.get("thresholds"), len(labels)),
        )


MAX_BANK_PHOTOS = 4096  # as many as the unknown-image score keeps
MAX_PATH_CHARACTERS = 4096


def _bank_photos(value: Any, classes: int) -> tuple[tuple[str, int], ...]:
    """[[path, label index], ...]: each checked, so a crafted record cannot point outside
    the labels or hold a path no file system has."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_BANK_PHOTOS:
        raise HeadstartError(f"bank_photos: a list of at most {MAX_BANK_PHOTOS} photos")
    photos = []
    for index, photo in enumerate(value):
        valid = (
            isinstance(photo, list)
            and len(photo) == 2
            and isinstance(photo[0], str)
            and 0 < len(photo[0]) <= MAX_PATH_CHARACTERS
            and "\x00" not in photo[0]
            and type(photo[1]) is int
            and 0 <= photo[1] < classes
        )
        if not valid:
            raise HeadstartError(f"bank_photos[{index}]: not [path, label index]")
        photos.append((photo[0], photo[1]))
    return tuple(photos)


def _thresholds(value: Any, labels: int) -> tuple[float, ...]:
    """One threshold a label, each strictly between 0 and 1 (0 would say every label of
    every photo; NaN, none)."""
    if value is None:
        return ()
    valid = (
        isinstance(value, list)
        and len(value) == labels
        and all(finite(t) is None and 0 < t < 1 for t in value)
    )
    if not valid:
        raise HeadstartError(f"thresholds: must be {labels} numbers between 0 and 1, one a label")
    return tuple(float(t) for t in value)


def _part(kind: type[Part], metadata: dict[str, Any], name: str) -> Part | None:
    value = metadata.get(name)
    return None if value is None else kind.from_dict(value, name)


def _rows(metadata: dict[str, Any], name: str) -> list[dict[str, Any]]:
    rows = metadata.get(name) or []
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise HeadstartError(f"{name}: must be a list of objects")
    return rows


def _versions(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise HeadstartError(f"{where}: not an object")
    return data


def _as_field(value: Any, default: Any) -> Any:
    """JSON's lists as tuples for the fields that hold tuples; other values as read."""
    return tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value


def _as_json(value: Any) -> Any:
    if isinstance(value, RecordPart):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    return value
