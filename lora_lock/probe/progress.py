"""Progress of a probe run for a :data:`~lora_lock.probe.sidecar.Step` callback, counted in units of work."""

from __future__ import annotations

from lora_lock.probe.sidecar import Step


class Ticks:
    """Progress for a :data:`~lora_lock.probe.sidecar.Step` callback, counted in units of work (forwards)."""

    def __init__(self, step: Step | None, total: int) -> None:
        self.step, self.total, self.done = step, total, 0

    def add(self, n: int) -> None:
        """Count ``n`` units done and report the total so far."""
        self.done += n
        if self.step is not None:
            self.step(self.done, self.total)

    def tick(self) -> None:
        """Count one unit done."""
        self.add(1)
