"""Crash bookkeeping shared by both engines: dedup by signature, keep the smallest input of each, write a summary.

Layout under ``out`` (default ``fuzz/out/<engine>/<harness>/``): ``<sig-id>.bin`` (the smallest input seen with that
signature), ``<sig-id>.txt`` (signature and traceback) and ``summary.json`` (executions, crashing executions, and
per signature its count and file).
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz.harnesses import signature

OUT = Path(__file__).resolve().parent / "out"


@dataclass
class Signature:
    name: str
    count: int = 0
    size: int = 0
    file: str = ""


@dataclass
class CrashLog:
    harness: str
    directory: Path
    executions: int = 0
    crashes: int = 0
    started: float = field(default_factory=time.monotonic)
    signatures: dict[str, Signature] = field(default_factory=dict)
    _flushed: float = 0.0

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def ran(self) -> None:
        self.executions += 1
        if self.executions % 256 == 0 and time.monotonic() - self._flushed > 2.0:
            self.flush()

    def record(self, data: bytes, exc: BaseException) -> str:
        """Count one crashing input; keep it when it is the first or the smallest of its signature."""
        self.crashes += 1
        name = signature(exc)
        ident = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:12]
        entry = self.signatures.get(ident)
        if entry is None:
            entry = self.signatures[ident] = Signature(name=name)
        entry.count += 1
        if not entry.file or len(data) < entry.size:
            entry.size = len(data)
            entry.file = f"{ident}.bin"
            (self.directory / entry.file).write_bytes(data)
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            (self.directory / f"{ident}.txt").write_text(f"{name}\n\n{text[-6000:]}", encoding="utf-8")
            self.flush()
        return name

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        return {
            "harness": self.harness,
            "executions": self.executions,
            "seconds": round(elapsed, 1),
            "executions_per_second": round(self.executions / elapsed) if elapsed > 0 else 0,
            "crashes": self.crashes,
            "signatures": {
                ident: {"signature": s.name, "count": s.count, "smallest": s.size, "file": s.file}
                for ident, s in sorted(self.signatures.items(), key=lambda item: item[1].name)
            },
        }

    def flush(self) -> None:
        self._flushed = time.monotonic()
        path = self.directory / "summary.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.summary(), indent=1), encoding="utf-8")
        tmp.replace(path)
