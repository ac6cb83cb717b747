"""Fine-tuning from the studio: an explicit job (minutes on a CPU, not seconds), run in the
background into PROJECT/model-finetuned/, with its estimated time up front. The linear model
keeps training after every change meanwhile; the user compares the two and downloads either.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from headstart.data.split import TEST_PERCENT, VAL_PERCENT
from headstart.errors import HeadstartError
from headstart.studio.trainer import Trainer
from headstart.training.settings import FitSettings, Strategy
from headstart.training.strategy import finetune_seconds

FOLDER = "model-finetuned"


@dataclass(frozen=True)
class FineTuneState:
    running: bool
    epochs: int
    estimate_seconds: float | None  # for the project as it is now, or the run in progress
    elapsed_seconds: float | None  # of the run in progress, or of the last one
    ready: bool  # a fine-tuned model is in PROJECT/model-finetuned/
    val_accuracy: float | None  # its accuracy on its validation photos
    message: str | None  # why the last run failed


@dataclass
class FineTuner:
    trainer: Trainer
    epochs: int = FitSettings().finetune_epochs
    _started: float | None = field(init=False, default=None)
    _estimate: float | None = field(init=False, default=None)
    _elapsed: float | None = field(init=False, default=None)
    _val_accuracy: float | None = field(init=False, default=None)
    _message: str | None = field(init=False, default=None)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _job: threading.Thread | None = field(init=False, default=None)

    @property
    def folder(self):
        return self.trainer.project.root / FOLDER

    def state(self) -> FineTuneState:
        with self._lock:
            running = self._job is not None
            estimate = self._estimate if running else self._estimated(self.epochs)
            elapsed = time.monotonic() - self._started if running and self._started else None
            return FineTuneState(
                running, self.epochs, estimate, elapsed or self._elapsed,
                (self.folder / "headstart.json").is_file(), self._val_accuracy, self._message,
            )  # fmt: skip

    def start(self, epochs: int) -> FineTuneState:
        """Fine-tune the newest model's backbone on the project's photos, in the background."""
        with self._lock:
            if self._job is not None:
                raise HeadstartError("fine-tuning runs already")
            self.trainer.classifier()  # says why when there is no model to start from
            self.epochs, self._message = epochs, None
            self._estimate = self._estimated(epochs)
            self._started = time.monotonic()
            self._job = threading.Thread(target=self._run, args=(epochs,), daemon=True)
            self._job.start()
        return self.state()

    def _run(self, epochs: int) -> None:
        settings = replace(
            self.trainer.settings, strategy=Strategy.FINETUNE, finetune_epochs=epochs
        )
        trainer = self.trainer
        try:
            tuned = trainer.train(
                trainer.project.photos, self.folder, settings=settings, context=trainer.context
            )
            summary = tuned.summary
            accuracy = summary.val_accuracy if summary is not None else None
            message = None
        except Exception as error:  # reported on the page; the linear model is unaffected
            accuracy, message = None, f"fine-tuning failed: {error}"
        with self._lock:
            self._val_accuracy, self._message = accuracy, message
            self._elapsed = time.monotonic() - (self._started or time.monotonic())
            self._job = None

    def _estimated(self, epochs: int) -> float | None:
        """Seconds for the project as it is, at the newest model's input size."""
        try:
            classifier = self.trainer.classifier()
        except HeadstartError:
            return None
        photos = sum(self.trainer.project.counts().values())
        val, test = (round(photos * percent / 100) for percent in (VAL_PERCENT, TEST_PERCENT))
        settings = replace(self.trainer.settings, finetune_epochs=epochs)
        side = max(classifier.preprocessing.input_size)
        return finetune_seconds(photos - val - test, val, settings, _cuda(), side)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
