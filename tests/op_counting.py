"""Counting the aten ops a piece of PyTorch code dispatches: what a GPU pays per iteration.

Every op the dispatcher hands to a device is at least one kernel launch on a GPU (a few
microseconds of host time each, whatever the batch), so the number of ops per training
iteration bounds how fast a small net can go there, and it does not depend on the hardware or
the batch size: it can be counted on a CPU. `OpCounter` is a TorchDispatchMode: it sees each op
once, after autograd (the backward pass's ops included, since autograd carries the mode into
its engine), at the level a device backend receives it. An op that a CPU kernel carries out
as several (a `_foreach_*` op falls back to one op per tensor there) counts once, as on a GPU,
because the ops a mode's handler runs are not seen by the mode again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode


# Ops that launch no kernel on a GPU: allocations, and the profiler's markers (views, e.g.
# autograd's detach of every gradient it accumulates, are recognised by their schema).
NO_KERNEL = frozenset({"empty", "empty_like", "empty_strided", "_record_function_enter_new",
                       "_record_function_exit"})


class OpCounter(TorchDispatchMode):
    """`with OpCounter() as ops: ...`; then `ops.total`, `ops.kernels` (the ops that launch a
    kernel on a GPU: neither a view nor an allocation) and `ops.by_name` (op -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        name = str(func.overloadpacket.__name__)
        self.by_name[name] += 1
        self.kernels += not (func.is_view or name in NO_KERNEL)
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.by_name.values())


def ops_per_call(call: Callable[[], object], calls: int, warmup: int = 1) -> tuple[float, float, Counter[str]]:
    """Ops and kernel-launching ops per call of `call`, counted over `calls` calls after `warmup`
    uncounted ones (the first iteration creates the optimizer's state and caches); and the
    counts by op over those calls."""
    for _ in range(warmup):
        call()
    with OpCounter() as ops:
        for _ in range(calls):
            call()
    return ops.total / calls, ops.kernels / calls, ops.by_name
