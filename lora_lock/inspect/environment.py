"""The software environment, read from package metadata without importing torch (or anything heavy)."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field

#: Packages whose versions change what an adapter does, and the default rule for comparing them.
#: ``exact``: the full version; ``minor``: major.minor; ``major``: major; ``any``: recorded, never compared.
DEFAULT_POLICY: dict[str, str] = {
    "python": "minor",
    "torch": "minor",
    "cuda": "minor",
    "transformers": "exact",
    "peft": "exact",
    "tokenizers": "minor",
    "safetensors": "minor",
    "huggingface_hub": "major",
    "accelerate": "minor",
    "bitsandbytes": "minor",
}

#: Packages only the probe needs: missing here is a warning (the static tier runs without them). safetensors is
#: one of them: the core reads safetensors headers itself, and only the ``probe`` extra installs the package.
PROBE_ONLY = frozenset({"torch", "cuda", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors"})

_CUDA_LINE = re.compile(r"""^cuda\s*(?::\s*\S+\s*)?=\s*['"]([^'"]+)['"]""", re.MULTILINE)


@dataclass(frozen=True)
class Environment:
    """The stack this process runs: package versions by name (with ``python`` and ``cuda``) and GPU facts."""

    versions: dict[str, str]
    gpu: dict[str, str] = field(default_factory=dict)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (package metadata only, nothing imported), or ``None``."""
    import importlib.metadata as md  # imported here: it costs ~30 ms, and `check` never needs it

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def torch_cuda_version() -> str | None:
    """CUDA version torch was built with, read from ``torch/version.py`` as a text file (no import)."""
    import importlib.metadata as md

    try:
        dist = md.distribution("torch")
    except md.PackageNotFoundError:
        return None
    try:
        text = dist.read_text("torch/version.py")
        if text is None:
            located = dist.locate_file("torch/version.py")
            text = open(str(located), encoding="utf-8").read()  # noqa: SIM115
    except (OSError, UnicodeDecodeError):
        return None
    match = _CUDA_LINE.search(text)
    return match.group(1) if match else None


def gpu_facts() -> dict[str, str]:
    """Name and compute capability of GPU 0 via ``nvidia-smi`` when present (no torch import)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.strip().splitlines()[0] if out.strip() else ""
    parts = [p.strip() for p in first.split(",")]
    if len(parts) != 2:
        return {}
    return {"name": parts[0], "compute-capability": parts[1]}


def current_environment(*, with_gpu: bool = True) -> Environment:
    """The versions of the packages the lock's policy covers, as installed (package metadata only, nothing
    imported), CUDA's if torch has it, and the GPU's facts unless ``with_gpu`` is false."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in DEFAULT_POLICY:
        if name in ("python", "cuda"):
            continue
        v = package_version(name.replace("_", "-")) or package_version(name)
        if v is not None:
            versions[name] = v
    cuda = torch_cuda_version()
    if cuda:
        versions["cuda"] = cuda
    return Environment(versions=dict(sorted(versions.items())), gpu=gpu_facts() if with_gpu else {})


def _parts(version: str) -> list[str]:
    return re.split(r"[.+]", version)


def versions_match(locked: str, current: str, rule: str) -> bool:
    """Whether ``current`` satisfies ``locked`` under ``rule``: ``any``; ``exact``; ``minor`` (same first two
    release numbers) or ``major`` (same first). An unknown rule is taken as ``exact``."""
    if rule == "any":
        return True
    if rule == "exact":
        return locked == current
    depth = {"minor": 2, "major": 1}.get(rule)
    if depth is None:
        return locked == current
    return _parts(locked)[:depth] == _parts(current)[:depth]
