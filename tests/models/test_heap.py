"""reuse_freed_memory: large freed blocks stay in the heap while embedding, handed back after."""

from __future__ import annotations

import resource
import sys
import threading

import pytest
import torch

from cellfoundry.models import heap
from cellfoundry.models.heap import reuse_freed_memory

glibc = pytest.mark.skipif(heap._glibc() is None, reason="glibc only")


def _faults_of_repeated_large_buffers() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        a = torch.empty(64 << 18)  # 64 MiB of float32, above glibc's mmap threshold
        a.fill_(1.0)  # touch every page
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_inside_freed_buffers_are_reused_not_faulted_in_again() -> None:
    outside = _faults_of_repeated_large_buffers()
    with reuse_freed_memory():
        inside = _faults_of_repeated_large_buffers()
    # outside, each 64 MiB buffer is a fresh mapping (16k page faults); inside, only the first
    assert outside >= 4 * 16_000
    assert inside < outside / 2


@glibc
def test_nested_and_concurrent_uses_restore_once() -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with reuse_freed_memory(), reuse_freed_memory():
                torch.ones(16 << 18).sum()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and heap._depth == 0
    assert _faults_of_repeated_large_buffers() >= 4 * 16_000  # glibc's usual behaviour again


def test_noop_where_not_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with reuse_freed_memory():
        assert heap._depth == 0
