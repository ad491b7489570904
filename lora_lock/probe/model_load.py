"""Loading a probe session's stack: the tokenizer, the base in its own auto class, every adapter attached by name
(PEFT multi-adapter), and what a library's failure to load them means for the report."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.errors import InputError, library_failure
from lora_lock.probe.numerics import _device, _dtype_name, _first_line, _quiet_libraries, memory_hint


def out_of_memory(torch: Any, exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and what a CPU allocation failure looks like (MemoryError, an allocator error)."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _weights_text(base_dir: Path, itemsize: int, dtype: str) -> str:
    """What the base's weights need in the dtype they load in, from the safetensors headers (no tensor read)."""
    from lora_lock.inspect.checkpoint import read_checkpoint

    try:
        params = sum(t.numel for t in read_checkpoint(base_dir).tensors.values())
    except InputError:
        size = sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
        return f"{size / 2**30:.2f} GiB of weight files"
    return f"{params:,} parameters: {params * itemsize / 2**30:.2f} GiB in {dtype}, before activations"


@dataclass(frozen=True)
class StackRequest:
    """What a session loads: the base and tokenizer folders, the adapters by lock name, the device and dtype asked
    for (``auto`` allowed), and the command that loads them (its options are what the error hints name)."""

    base_dir: Path
    tokenizer_dir: Path
    adapters: Sequence[tuple[str, Path]]
    device: str
    dtype: str
    command: str


@dataclass(frozen=True)
class LoadedStack:
    """A loaded stack: the device and dtype chosen, the tokenizer, the PEFT model in eval mode with every adapter
    attached, and the PEFT name of each adapter by its lock name."""

    device: str
    dtype_name: str
    tokenizer: Any
    model: Any
    peft_names: dict[str, str]


def load_stack(torch: Any, request: StackRequest) -> LoadedStack:
    """Load the tokenizer, the base and every adapter of ``request`` with safetensors only and no remote code, after
    the preflight refused what would run code or read a pickle. A library failing on the input becomes unusable
    input (:class:`~lora_lock.errors.InputError`) that says why: out of memory, a missing package, or the load
    itself (a size mismatch on a changed base)."""
    import transformers
    from peft import PeftModel
    from transformers import AutoTokenizer

    from lora_lock.probe.preflight import refuse_unsafe_load
    from lora_lock.probe.tasks import OWN_CLASS_TASKS, auto_class_name, task_of

    base_dir, adapters = request.base_dir, request.adapters
    device = _device(torch, request.device)
    dtype_name = _dtype_name(torch, device, request.dtype)
    torch_dtype = getattr(torch, dtype_name)
    refuse_unsafe_load(base_dir, adapters)  # before any library opens a file: no pickle, no Hub code
    _quiet_libraries()
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(
            str(request.tokenizer_dir), trust_remote_code=False, local_files_only=True
        )
        # A vision-language base loads with its ForConditionalGeneration class; its text path is what is scored.
        task = task_of(adapters[0][1]) if adapters else None
        auto: Any = getattr(transformers, OWN_CLASS_TASKS.get(task or "") or auto_class_name(base_dir))
        # A classifier head the checkpoint lacks is initialised at load: the same way on every load.
        torch.manual_seed(0)
        model: Any = auto.from_pretrained(
            str(base_dir),
            dtype=torch_dtype,
            trust_remote_code=False,
            local_files_only=True,
            use_safetensors=True,  # never a pickle, whatever else the folder holds
        )
        model.to(device)
        # PEFT names adapters inside module paths and refuses names with "." ("llama-3.1-lora"): it gets
        # names of its own, and the lock's names are mapped onto them.
        peft_names = {name: f"lora_lock_{index}" for index, (name, _) in enumerate(adapters)}
        (first, first_path), *rest = adapters
        # Randomised initialisations that PEFT runs again at load (pissa_niter_N) give the same model each run.
        torch.manual_seed(0)
        with warnings.catch_warnings():
            # Deprecation notices between peft and transformers releases are not findings about the adapter.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            peft_model: Any = PeftModel.from_pretrained(
                model, str(first_path), adapter_name=peft_names[first], is_trainable=False
            )
            for name, path in rest:
                peft_model.load_adapter(str(path), adapter_name=peft_names[name], is_trainable=False)
    except BaseException as exc:
        if not library_failure(exc):
            raise
        raise _load_error(torch, exc, request, device, dtype_name) from exc
    peft_model.eval()
    return LoadedStack(device, dtype_name, tokenizer, peft_model, peft_names)


def _load_error(torch: Any, exc: BaseException, request: StackRequest, device: str, dtype_name: str) -> InputError:
    """The unusable-input error for a library failing to load ``request`` on ``device`` in ``dtype_name``."""
    base_dir = request.base_dir
    if out_of_memory(torch, exc):
        return InputError(
            f"{base_dir}: the model does not fit on {device} "
            f"({_weights_text(base_dir, getattr(torch, dtype_name).itemsize, dtype_name)})",
            hint=memory_hint(request.command, "use a larger device"),
        )
    if isinstance(exc, ImportError):
        return InputError(
            f"{base_dir}: loading the model and adapter for the probe needs a package that is not installed "
            f"here: {_first_line(exc)}",
            hint="install it in the environment the lock was made for (see the environment findings), or "
            "skip the behaviour checks (--no-probe / --skip effect,golden)",
        )
    # A RuntimeError here is PEFT refusing the adapter (e.g. a size mismatch on a changed base): the static checks
    # say why; the probe cannot measure an adapter that does not load. Anything else (a crafted config value, a
    # native panic in the tokenizer) is unusable input as well.
    return InputError(
        f"{base_dir}: transformers/peft cannot load the model and adapter for the probe: "
        f"{type(exc).__name__}: {_first_line(exc)}",
        hint="see the compat findings (lora-lock check ADAPTER --base BASE)",
    )
