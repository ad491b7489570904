"""Run lm-evaluation-harness on a local model, adapter and multiple-choice JSONL; print per-item results as JSON.

Run by tests/probe/test_lm_eval_parity.py with the Python of the environment ``make test-lm-eval-parity`` builds
(lm-eval is not a dependency of lora-lock). Imports nothing of lora-lock. Usage::

    python lm_eval_runner.py BASE ADAPTER ITEMS.jsonl WORKDIR

Each output row: ``{"doc_id", "lls": [...], "acc", "acc_norm"}`` from lm-eval's per-sample log.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TASK = """task: lora_lock_parity
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def main(base: str, adapter: str, items: str, workdir: str) -> None:
    work = Path(workdir)
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "datasets-cache"))
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tasks = work / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "lora_lock_parity.yaml").write_text(TASK.format(items=items), encoding="utf-8")

    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={base},peft={adapter},dtype=float32,device=cpu",
        tasks=["lora_lock_parity"],
        task_manager=TaskManager(include_path=str(tasks)),
        batch_size=1,
        log_samples=True,
    )
    assert results is not None
    rows = []
    for sample in sorted(results["samples"]["lora_lock_parity"], key=lambda s: s["doc_id"]):
        lls = [float(resp[0]) for resp in sample["filtered_resps"]]
        rows.append({"doc_id": sample["doc_id"], "lls": lls, "acc": sample["acc"], "acc_norm": sample["acc_norm"]})
    print(json.dumps({"version": lm_eval.__version__, "rows": rows}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
