"""The differential oracle: on every architecture the pinned transformers builds tiny, check's verdict on each
(base, adapter) pair equals what real PEFT does with it — applies, silently drops N tensors, or raises.

Cases listed in known_disagreements.json must disagree (with the reason recorded there); one that starts agreeing
fails too, so the list stays true.
"""

from __future__ import annotations

import pytest

from tests.oracle.cases import ARCHITECTURES, SCENARIOS, Case, Oracle
from tests.oracle.evaluate import compare, known_disagreements
from tests.oracle.predicted import cli_exit

pytestmark = [pytest.mark.slow, pytest.mark.oracle]

MIN_ARCHITECTURES = 80
KNOWN = known_disagreements()


def _cases_or_skip(oracle: Oracle, arch: str) -> list[Case]:
    try:
        return oracle.cases(arch)
    except Exception as exc:
        pytest.skip(f"{arch} cannot be built tiny: {type(exc).__name__}: {exc}".splitlines()[0][:300])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_check_agrees_with_peft(oracle: Oracle, arch: str) -> None:
    problems = []
    for case in _cases_or_skip(oracle, arch):
        result = compare(oracle, case)
        known = KNOWN.get(case.id)
        if not result.agree and known is None:
            problems.append(
                f"{case.id}: PEFT {result.truth}, check {result.predicted} ({result.predicted.detail.get('findings')})"
            )
        elif result.agree and known is not None:
            problems.append(f"{case.id}: now agrees ({result.truth}); remove it from known_disagreements.json")
    assert not problems, "\n".join(problems)


def test_enough_architectures(oracle: Oracle) -> None:
    built = []
    for arch in ARCHITECTURES:
        try:
            oracle.cases(arch)
        except Exception:
            continue
        built.append(arch)
    assert len(built) >= MIN_ARCHITECTURES, f"only {len(built)} architectures build tiny: {built}"


def test_known_disagreements_name_real_cases(oracle: Oracle) -> None:
    stale = []
    for case_id in KNOWN:
        arch, _, scenario = case_id.partition("/")
        if arch not in ARCHITECTURES or scenario not in SCENARIOS:
            stale.append(case_id)
            continue
        if not any(c.id == case_id for c in _cases_or_skip(oracle, arch)):
            stale.append(case_id)
    assert not stale, f"known_disagreements.json names cases the oracle lacks: {stale} (unbuilt: {oracle.unbuilt})"


def _cli_sample(oracle: Oracle) -> list[Case]:
    """A few cases of every scenario (running the CLI on all of them would dominate the oracle's time)."""
    picked: dict[str, list[Case]] = {}
    for arch in ARCHITECTURES:
        try:
            cases = oracle.cases(arch)
        except Exception:
            continue
        for case in cases:
            bucket = picked.setdefault(case.scenario, [])
            if len(bucket) < 2:
                bucket.append(case)
    return [case for bucket in picked.values() for case in bucket]


def test_cli_exit_code_matches_the_api(oracle: Oracle) -> None:
    wrong = []
    for case in _cli_sample(oracle):
        expected = compare(oracle, case).exit_code
        got = cli_exit(case.adapter, case.base.path)
        if got != expected:
            wrong.append(f"{case.id}: CLI exit {got}, check() status exit {expected}")
    assert not wrong, "\n".join(wrong)
