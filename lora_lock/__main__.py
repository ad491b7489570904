"""``python -m lora_lock``: the same command line as the ``lora-lock`` script."""

from lora_lock._cli import entry

entry()
