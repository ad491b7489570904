"""``check``: does an adapter fit a base? Static: headers and configs only, never torch."""

from __future__ import annotations

from pathlib import Path

from lora_lock.compat.base import base_file_findings, default_base_spec, read_base
from lora_lock.compat.static import static_findings
from lora_lock.errors import InputError
from lora_lock.findings import Category, Report, input_finding
from lora_lock.inspect.adapter import read_adapter
from lora_lock.runtime import Stack
from lora_lock.runtime.applied import resolve_stack
from lora_lock.sources.resolve import resolve
from lora_lock.userregex import per_run


@per_run
def check(
    adapter: str | Path,
    base: str | Path | None = None,
    *,
    allow_symlinks: bool = False,
    stack: Stack | str | None = None,
) -> Report:
    """Static fit check of ``adapter`` against ``base`` (default: the base the adapter config names).

    ``stack``: the transformers / PEFT whose load rules apply, a :class:`~lora_lock.runtime.Stack` or text such as
    ``"transformers==4.57.1,peft==0.17.1"`` (default: the installed versions, read from package metadata).

    Unusable input becomes ``input`` findings (status ``error``); nothing here imports torch. Both sources go
    through the fence (symlinks out of them refused unless ``allow_symlinks``); what the base's file set says on
    its own (a planted adapter, stray weights) is reported in the ``base`` category.
    """
    ran: tuple[Category, ...] = (Category.ADAPTER, Category.COMPAT, Category.QUANTIZATION)
    try:
        chosen = resolve_stack(stack)
        adapter_source = resolve(adapter, what="adapter", allow_symlinks=allow_symlinks)
        adapter_view = read_adapter(adapter_source.path, require_weights=False, remote=adapter_source.remote)
        spec = base if base is not None else default_base_spec(adapter_view)
        base_source = resolve(spec, relative_to=adapter_view.root, what="base", allow_symlinks=allow_symlinks)
        base_view = read_base(base_source)
        gguf = base_view.gguf
        # A GGUF architecture transformers cannot load has no parameter names to check the adapter against.
        _, findings = (
            static_findings(adapter_view, base_view, stack=chosen) if gguf is None or gguf.names else (None, [])
        )
        if gguf is not None:
            from lora_lock.compat.gguf import gguf_findings

            findings += gguf_findings(gguf)
        base_findings = base_file_findings(base_view, base_source.files) if gguf is None else []
        if gguf is None:
            from lora_lock.compat.vocab import check_findings as vocab_findings

            findings += vocab_findings(adapter_source.path, adapter_source.files, base_view)
    except InputError as exc:
        # Nothing could be concluded: every category is "error", never "pass".
        return Report.build([input_finding(exc)], ran=ran, title="lora-lock check", blocked=ran)
    if base_findings:
        ran = (Category.BASE, *ran)
    return Report.build([*base_findings, *findings], ran=ran, title="lora-lock check")
