"""Learning-rate schedules: a constant or facenet's schedule file (``epoch: lr`` lines)."""
from __future__ import annotations

from tfface.core.errors import UserError, check_file


def read_schedule_file(path: str) -> list[tuple[int, float | None]]:
    """Parses facenet's schedule file: ``<first epoch>: <learning rate>`` per line, ``#``
    comments; a rate of ``-`` means stop training at that epoch. Sorted by epoch."""
    check_file(path, "learning_rate_schedule_file")
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                epoch, rate = (part.strip() for part in line.split(":"))
                entries.append((int(epoch), None if rate == "-" else float(rate)))
            except ValueError:
                raise UserError(
                    f"learning_rate_schedule_file: line {number} of '{path}' is {line!r}, expected '<epoch>: <rate>'"
                ) from None
    if not entries:
        raise UserError(f"learning_rate_schedule_file: '{path}' has no '<epoch>: <rate>' lines")
    return sorted(entries)


def learning_rate_for_epoch(schedule: list[tuple[int, float | None]], epoch: int) -> float | None:
    """The rate of the last entry whose epoch is <= ``epoch`` (None = stop training)."""
    rate = schedule[0][1]
    for start, value in schedule:
        if start <= epoch:
            rate = value
    return rate
