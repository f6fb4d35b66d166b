"""What ``torchrun`` starts in tests/training/test_distributed.py: ``adapterhub train`` with a planned fault.

``ADAPTERHUB_TEST_FAULT``: ``interrupt@N`` (rank 0 gets Ctrl-C after step N) or ``die@N``
(rank 1 exits abruptly after step N); unset, a plain ``adapterhub train``.
"""

from __future__ import annotations

import os
import signal
import sys

from adapterhub.cli import main
from adapterhub.training import Trainer

fault, _, at = os.environ.get("ADAPTERHUB_TEST_FAULT", "").partition("@")
if fault:
    original_step = Trainer.train_step

    def step_with_fault(self):
        row = original_step(self)
        rank = self.accelerator.process_index
        if self.step == int(at) and fault == "interrupt" and rank == 0:
            os.kill(os.getpid(), signal.SIGINT)
        if self.step == int(at) and fault == "die" and rank == 1:
            os._exit(3)
        return row

    Trainer.train_step = step_with_fault

sys.exit(main(["train", *sys.argv[1:]]))
