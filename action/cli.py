"""Run the lora-lock CLI for the action with this directory, not the working directory, first on ``sys.path``.

``python -m lora_lock`` would put the checked-out repository first on ``sys.path``, where a file such as ``json.py``
or a ``lora_lock/`` folder in a pull request would shadow the real modules.
"""

from __future__ import annotations

import sys

from lora_lock._cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
