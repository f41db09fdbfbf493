"""Notices that the machine is about to be taken away (SIGTERM), so the loop can checkpoint and exit.

One process: a SIGTERM handler sets a flag; the loop reads it after each step (a Python
bool, no device sync), saves, and returns. Several processes (a TPU VM slice): every host
must stop at the same step or the collective save would hang, so the decision comes from
Orbax's `reached_preemption`, which agrees on a step across hosts through JAX's
preemption sync service (it listens for SIGTERM itself).
"""
from __future__ import annotations

import signal
import threading

import jax
import orbax.checkpoint as ocp


class Watcher:
    def __init__(self, mngr: ocp.CheckpointManager):
        self.mngr = mngr
        self.signalled = False
        self._previous = None
        self.multi_process = jax.process_count() > 1
        if not self.multi_process and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        del signum, frame
        self.signalled = True

    def requested(self, step: int) -> bool:
        if self.multi_process:
            return bool(self.mngr.reached_preemption(step))
        return self.signalled

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
