"""Taking work in batches from a queue: what waits now, up to a cap.

The writer threads (sequencer, indexer, detection) share one rhythm: block for the
first item, then take whatever else is already waiting without blocking, so that a
busy thread handles large batches (cheaper per item) and an idle one answers at once.
"""

from __future__ import annotations

import queue
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def drain(
    source: queue.SimpleQueue[Any],
    first: T,
    *,
    stop: object,
    size: Callable[[T], int],
    cap: int,
) -> tuple[list[T], bool]:
    """``first`` and the items waiting behind it, until their ``size`` reaches ``cap``.

    Returns the batch and whether the ``stop`` marker was met (it is not in the batch).
    """
    batch, count = [first], size(first)
    while count < cap:
        try:
            item = source.get_nowait()
        except queue.Empty:
            break
        if item is stop:
            return batch, True
        batch.append(item)
        count += size(item)
    return batch, False


def handle_batches(
    source: queue.SimpleQueue[Any],
    handle: Callable[[list[Any]], None],
    *,
    stop: object,
    size: Callable[[Any], int] = lambda _item: 1,
    cap: int = sys.maxsize,
) -> None:
    """Pass batches from ``source`` to ``handle`` until the ``stop`` marker, after
    handling everything queued before it."""
    stopped = False
    while not stopped:
        first = source.get()
        if first is stop:
            return
        batch, stopped = drain(source, first, stop=stop, size=size, cap=cap)
        handle(batch)
