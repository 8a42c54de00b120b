"""What the Training page draws about a run, computed from its folder and its pack (no TensorFlow).

- :func:`all_empty_val_dice`: the validation Dice of a model that predicts nothing. With the
  empty rule (both masks empty = 1) an all-empty prediction scores 1 on every empty image and
  0 on every positive one, so its Dice is the share of empty images among those validated. A
  val Dice at that level means "predicts nothing yet", not "learned 84%".
- :class:`BatchLossSampler`: the trainer's ``progress.json`` carries Keras' running mean of
  the loss over the epoch so far, which restarts at every epoch and lags behind the current
  loss; sampling it as it is draws a jump at each epoch start and, after a page reload, starts
  from a lagging value. The sampler turns successive samples into the mean loss of the
  batches *between* them, which is neither lagged nor reset.
- :func:`epoch_tick_step`: whole-number epoch ticks for charts.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from pneumo.errors import PneumoError

__all__ = ["all_empty_val_dice", "predicts_nothing", "BatchLossSampler", "epoch_tick_step",
           "PREDICTS_NOTHING_TOLERANCE"]

# A val Dice this close to the all-empty level is the all-empty prediction: a model that finds
# one lesion among 40 validated images moves it by 1/40 = 0.025; float32 averaging, by ~1e-6.
PREDICTS_NOTHING_TOLERANCE = 0.005


def all_empty_val_dice(config: Mapping[str, Any]) -> float | None:
    """The val Dice of an all-empty prediction for a run: the share of empty dev masks validated.

    ``config`` is the run's ``config.json`` (``pack``, ``batch_size``, ``validation_steps``).
    The trainer validates the first ``validation_steps * batch_size`` dev images in order (all of
    them when None); for the whole split the pack's ``positive_fraction_dev`` gives the answer
    without reading masks. None when the pack is gone or unreadable (the chart then has no line).
    """
    from pneumo.store.pack import Pack

    pack = config.get("pack")
    if not pack or not os.path.isfile(str(pack)):
        return None
    try:
        with Pack(pack) as packed:
            count = packed.counts["dev"]
            steps, batch = config.get("validation_steps"), config.get("batch_size")
            n = count
            if isinstance(steps, int) and isinstance(batch, int) and steps > 0 and batch > 0:
                n = min(count, steps * batch)
            if n == 0:
                return None
            recorded = packed.positive_fraction("dev")
            if n == count and recorded is not None:
                return 1.0 - recorded
            # chunk by chunk: a 1024 px dev split does not fit at once
            return (n - int(packed.positives("dev", stop=n).sum())) / n
    except (PneumoError, OSError, KeyError, ValueError):
        return None


def predicts_nothing(val_dice: float | None, all_empty: float | None,
                     tolerance: float = PREDICTS_NOTHING_TOLERANCE) -> bool:
    """Whether ``val_dice`` is the all-empty level (within ``tolerance``); False when either is unknown."""
    if val_dice is None or all_empty is None or not math.isfinite(val_dice):
        return False
    return abs(val_dice - all_empty) <= tolerance


def epoch_tick_step(max_epoch: float, max_ticks: int = 12) -> int:
    """A whole tick step (1, 2, 5, 10, 20, 50, ...) giving at most ``max_ticks`` epoch ticks.

    Plotly's automatic ticks fall on halves for a short run, which ``tickformat="d"`` prints as
    "1 1 2 2 3": an explicit whole step avoids that.
    """
    decade = 1
    while True:
        for mantissa in (1, 2, 5):
            if max_epoch / (mantissa * decade) <= max_ticks:
                return mantissa * decade
        decade *= 10


@dataclass
class BatchLossSampler:
    """The running batch loss of one run, from ``progress.json`` samples taken now and then.

    :meth:`add` takes each ``progress.json`` read (``stage``, ``epoch``, ``step``, ``steps``,
    ``loss`` = mean over the epoch's batches so far). :attr:`points` holds ``(x, loss)`` with
    ``x = epoch - 1 + step / steps`` and ``loss`` the mean of the batches since the previous
    sample; ``loss`` None marks a gap the chart must not bridge (the page was away, or the run
    was resumed from an earlier epoch).
    """

    max_points: int = 1000
    points: list[tuple[float, float | None]] = field(default_factory=list)
    _last: tuple[str, int, int, float, float] | None = None  # stage, epoch, step, running mean, x

    def add(self, progress: Mapping[str, Any] | None) -> bool:
        """Take one sample; True when a point was added."""
        if not progress:
            return False
        try:
            stage = str(progress.get("stage") or "train")
            epoch, step, steps = int(progress["epoch"]), int(progress["step"]), int(progress["steps"])
            mean = float(progress["loss"])
        except (KeyError, TypeError, ValueError):
            return False
        if not (math.isfinite(mean) and epoch >= 1 and 1 <= step <= steps):
            return False
        x = epoch - 1 + step / steps
        last, self._last = self._last, (stage, epoch, step, mean, x)
        if last is not None and (epoch, step) == last[1:3]:
            return False  # the file has not changed since the last look
        if last is not None and x < last[4]:
            # Resumed from an earlier epoch: the points past it belong to the abandoned attempt.
            while self.points and (self.points[-1][0] >= x or self.points[-1][1] is None):
                self.points.pop()
            self._gap()
            return False
        if last is not None and (epoch, stage) == (last[1], last[0]) and step > last[2]:
            y = (mean * step - last[3] * last[2]) / (step - last[2])  # batches last+1 .. step
        elif last is not None and epoch == last[1] + 1:
            y = mean  # the previous sample was in the epoch before: batches 1 .. step
        else:
            # First sample, or a gap of more than an epoch: a mean over an unknown stretch
            # (lagging behind the current loss) is kept as the start of the next interval only.
            self._gap()
            return False
        self.points.append((x, y))
        del self.points[: -self.max_points]
        return True

    def _gap(self) -> None:
        if self.points and self.points[-1][1] is not None:
            self.points.append((self.points[-1][0], None))

    def series(self) -> tuple[list[float], list[float | None]]:
        """``(x, y)`` for a line chart; None in ``y`` breaks the line."""
        return [p[0] for p in self.points], [p[1] for p in self.points]

    def plotted(self) -> int:
        """How many real points there are (gaps not counted)."""
        return sum(1 for _, y in self.points if y is not None)
