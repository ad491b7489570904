"""What PEFT really did with each adapter's tensors when the probe loaded it, against the static prediction.

The probe loads the base and every adapter with the installed transformers and PEFT anyway, so their own load
result is the exact answer for this stack: the adapter tensors PEFT had no place for (its ``unexpected_keys``:
dropped without an error, ``strict=False``) and the LoRA weights of targeted modules the file did not hold (its
adapter ``missing_keys``: left at their initial values). Those become findings; and where the static engine
(``check``) predicted otherwise, a tripwire finding says the static model is wrong for this case.

Findings are in the ``effect`` category: they come from the probe's model load and say which part of the
adapter's effect is absent. The result is read by setting the adapter's own weights again into the model the
probe already built (``set_peft_model_state_dict``, values unchanged): no second model, and no init method runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_lock.findings import Category, Finding, Severity

CODE_DROPPED = "PROBE-DROPPED"
CODE_UNTRAINED = "PROBE-UNTRAINED"
CODE_DISAGREES = "PROBE-STATIC-DISAGREES"
#: Static findings that predict PEFT dropping adapter tensors without an error (the engine before ``prediction``).
STATIC_DROP_CODES = frozenset({"COMPAT-UNMATCHED", "COMPAT-NO-MATCH"})
#: Names quoted in a finding; the count is always the full one.
SHOWN = 3
_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoadResult:
    """PEFT's own account of one adapter's load: file keys it dropped, LoRA weights the file did not hold."""

    dropped: tuple[str, ...]
    untrained: tuple[str, ...]


@dataclass(frozen=True)
class Prediction:
    """What the static engine said PEFT would do: ``outcome`` applies / drops / raises, and the dropped count
    (None when the engine gives no count, only a finding)."""

    outcome: str
    dropped: int | None


def _file_key(key: str, adapter_name: str) -> str:
    """``base_model.model.x.lora_A.lora_lock_0.weight`` → ``x.lora_A.weight`` (as the file and reports name it)."""
    return key.removeprefix(_PREFIX).replace(f".{adapter_name}.", ".").removesuffix(f".{adapter_name}")


def load_result(model: Any, adapter_name: str, path: Path, device: str) -> LoadResult:
    """Set the adapter's weights into the PEFT model once more and return what PEFT reports about the keys."""
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from peft.utils import set_peft_model_state_dict
    from peft.utils.save_and_load import load_peft_weights

    weights = load_peft_weights(str(path), device=device)
    result: Any = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(model.peft_config[adapter_name].peft_type, "lora_")
    # As PeftModel.load_adapter filters them: the missing keys of this adapter and tuner, not the base's.
    untrained = [k for k in result.missing_keys if prefix in k and adapter_name in k]
    return LoadResult(
        dropped=tuple(sorted(_file_key(k, adapter_name) for k in result.unexpected_keys)),
        untrained=tuple(sorted(_file_key(k, adapter_name) for k in untrained)),
    )


def static_prediction(fit: Any, findings: Iterable[Finding]) -> Prediction:
    """The engine's prediction (``Fit.prediction``), or what its findings imply where it has none."""
    prediction = getattr(fit, "prediction", None)
    if prediction is not None:
        dropped = getattr(prediction, "dropped_tensors", None)
        count = dropped if isinstance(dropped, int) else len(dropped) if dropped is not None else None
        return Prediction(str(getattr(prediction, "outcome", "applies")), count)
    codes = {f.code for f in findings if f.severity is Severity.ERROR}
    return Prediction("drops" if codes & STATIC_DROP_CODES else "applies", None)


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def compare(name: str, loaded: LoadResult, predicted: Prediction, stack: str) -> list[Finding]:
    """Findings for one adapter: what PEFT dropped or left untrained, and any disagreement with ``check``."""
    out: list[Finding] = []
    if loaded.dropped:
        out.append(
            Finding(
                CODE_DROPPED,
                Category.EFFECT,
                Severity.ERROR,
                f"adapter {name}: PEFT loaded the adapter and dropped {len(loaded.dropped)} of its tensors without "
                f"an error ({_names(loaded.dropped)}); their training has no effect",
                subject=name,
                expected="every adapter tensor loaded",
                actual=f"{len(loaded.dropped)} dropped",
                hint=f"measured by loading with {stack}; see `lora-lock check` for which modules the base lacks",
            )
        )
    if loaded.untrained:
        out.append(
            Finding(
                CODE_UNTRAINED,
                Category.EFFECT,
                Severity.WARNING,
                f"adapter {name}: PEFT created {len(loaded.untrained)} LoRA weights the adapter file does not hold "
                f"({_names(loaded.untrained)}); they keep their initial values",
                subject=name,
                actual=f"{len(loaded.untrained)} missing",
            )
        )
    real = "drops" if loaded.dropped else "applies"
    static = predicted.outcome if predicted.outcome in ("applies", "drops") else None
    count_differs = predicted.dropped is not None and predicted.dropped != len(loaded.dropped)
    if static is not None and (static != real or count_differs):
        said = f"{predicted.dropped} dropped tensors" if predicted.dropped is not None else f"it {static}"
        out.append(
            Finding(
                CODE_DISAGREES,
                Category.EFFECT,
                Severity.WARNING,
                f"adapter {name}: the static check predicted {said}, but PEFT's load dropped "
                f"{len(loaded.dropped)}; the load result is the one that counts for {stack}",
                subject=name,
                expected=said,
                actual=f"{len(loaded.dropped)} dropped tensors",
                hint="the static model of this architecture is wrong here: please report it with the base's "
                "config.json and the adapter's tensor names",
            )
        )
    return out


def loaded_findings(session: Any, adapters: Sequence[tuple[str, Path]], base_dir: Path) -> list[Finding]:
    """For each adapter of a probe session: PEFT's real load result against ``check``'s prediction for the
    installed stack. Run after the session's measurements (it sets each adapter's weights once more)."""
    from lora_lock.compat.base import read_base
    from lora_lock.compat.static import static_findings
    from lora_lock.errors import InputError
    from lora_lock.inspect.adapter import read_adapter
    from lora_lock.runtime import installed_stack
    from lora_lock.sources.resolve import resolve

    stack = installed_stack()
    try:
        base = read_base(resolve(base_dir, what="base"))
    except InputError:  # e.g. a symlink the user allowed: PEFT's own result still stands, without the comparison
        base = None
    model = session.model
    names: dict[str, str] = getattr(session, "_peft_names", None) or dict(
        zip((n for n, _ in adapters), model.peft_config, strict=False)
    )
    out: list[Finding] = []
    for name, path in adapters:
        try:
            loaded = load_result(model, names[name], path, str(getattr(session, "device", "cpu")))
        except (RuntimeError, ValueError, KeyError, TypeError, OSError):
            # The probe's own load of these weights succeeded; a PEFT release that cannot report on them again
            # leaves the measurements standing and says nothing it did not see.
            continue
        predicted = Prediction("unknown", None)
        if base is not None:
            try:
                fit, findings = static_findings(read_adapter(path), base, stack=stack)
                predicted = static_prediction(fit, findings)
            except InputError:
                pass
        out += compare(name, loaded, predicted, stack.describe())
    return out
