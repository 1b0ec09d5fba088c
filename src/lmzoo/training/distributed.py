"""Everything multi-process: process group, DDP/FSDP2 wrapping, gradient sync, reductions.

Nothing here is needed to read the model code: the model is a plain `nn.Module` and this
module wraps it from the outside. Run under `torchrun` (which sets RANK, LOCAL_RANK and
WORLD_SIZE); without it every helper degrades to a single-process no-op.

State dicts go through `torch.distributed.checkpoint.state_dict`, whose full-state-dict mode
gives the same name-keyed dicts for a plain, a DDP and an FSDP2 model, so checkpoints written
by any of them load into any other.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from lmzoo.devices import resolve_device

_FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # init_distributed created the process group (and `shutdown` ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA), or use the one the caller
    already set up (which then outlives the run: several runs can share one process group)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    create = world_size > 1 and not dist.is_initialized()
    if create:
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return DistEnv(rank, local_rank, world_size, resolved, owns_group=create)


def shutdown(env: DistEnv, wait_for_peers: bool = True, error: BaseException | None = None) -> None:
    """Leave the process group init_distributed created. After an error, do not wait: the peers
    may never arrive.

    Call it once every DDP wrapper of the run is gone (the trainer's frame has returned; for an
    `error`, its traceback's frames are cleared here). A DDP `Reducer` that outlives the group
    holds its last reference, and its destructor then joins gloo's worker threads while holding
    the GIL; a worker that is still releasing a finished collective's tensors needs the GIL, so
    the process hangs after a completed run (a race: it happened in CI). Freed
    while the group is still registered, the Reducer drops an ordinary reference, and the group
    itself goes through torch's GIL-releasing destructor.
    """
    if not (env.enabled and env.owns_group and dist.is_initialized()):
        return
    if error is not None:
        traceback.clear_frames(error.__traceback__)
    gc.collect()  # a wrapper in a reference cycle goes now, not after the group
    if wait_for_peers:
        # Tearing the group down under a peer still inside a collective aborts that peer.
        dist.barrier()
    dist.destroy_process_group()


def run_then_leave(env: DistEnv, work: Callable[[], T], wait_for_peers: bool = True) -> T:
    """`work()`, then `shutdown`. Whatever `work` builds (the trainer, its DDP wrapper) lives in
    its own frame, gone by the time the group is destroyed; on an error the traceback's frames are
    cleared first (see `shutdown`)."""
    try:
        result = work()
    except BaseException as err:
        shutdown(env, wait_for_peers=False, error=err)
        raise
    shutdown(env, wait_for_peers=wait_for_peers)
    return result


def exit_process(code: int) -> NoReturn:
    """End the process; a torchrun worker leaves without interpreter teardown.

    Once FSDP2's DTensors have run collectives, torch keeps the gloo backend's worker threads
    alive past `destroy_process_group`, and interpreter finalization occasionally races with them
    and aborts (std::terminate; about 1 launch in 80 here) after a run that completed. By now
    everything is saved and closed, so flush and exit directly.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def wrap_model(model: nn.Module, env: DistEnv, fsdp: bool, find_unused: bool = False) -> nn.Module:
    """DDP (replicated) or FSDP2 (each block, then the root, sharded) under torchrun.

    `find_unused`: some parameters may get no gradient in a step (DDP then searches the autograd
    graph for them after every forward, which costs time, so only when the model says it may).
    FSDP2 needs no such flag: a parameter without gradient on every rank is simply not reduced."""
    if not env.enabled:
        return model
    if fsdp:
        # Sharding block by block lets FSDP gather one block's parameters at a time; the root
        # call picks up what is left (embedding, final norm, LM head).
        for block in model.blocks:
            _shard_block(block)
        fully_shard(model)
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)


class _Boxed:
    """A block argument carried past FSDP2's forward pre-hook unopened (see `_shard_block`)."""

    def __init__(self, value):
        self.value = value


def _shard_block(block: nn.Module) -> None:
    """`fully_shard(block)`, with the block still getting the very context object the model passed.

    FSDP2's pre-forward hook rebuilds (`dataclasses.replace`) a dataclass argument that holds a
    tensor requiring grad, so the block would write into a copy of its `BlockContext`, and what
    blocks hand on through the context would be lost: spike-walze's spike rates (its auxiliary
    loss), efficia-1's GRU states (the block above's input). Two hooks around FSDP's box the
    context before it and unbox it after; `x`, a plain tensor, still gets FSDP's backward hook.
    """
    fully_shard(block)

    def box(module, args):
        return tuple(_Boxed(a) if dataclasses.is_dataclass(a) else a for a in args)

    def unbox(module, args):
        return tuple(a.value if isinstance(a, _Boxed) else a for a in args)

    block.register_forward_pre_hook(box, prepend=True)  # runs before FSDP's (registered prepended too)
    block.register_forward_pre_hook(unbox)


def grad_sync(wrapped: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on non-final accumulation micro-steps."""
    if isinstance(wrapped, FSDPModule):
        wrapped.set_requires_gradient_sync(enabled)
    elif isinstance(wrapped, DistributedDataParallel) and not enabled:
        return wrapped.no_sync()
    return contextlib.nullcontext()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank if it is true on any (so all ranks leave the loop together)."""
    if not env.enabled:
        return flag
    value = torch.tensor(int(flag), device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value)


def local_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor result (e.g. FSDP's replicated grad norm) as a plain tensor."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU weights on rank 0 (empty elsewhere under FSDP). A collective: call on all ranks."""
    return get_model_state_dict(model, options=_FULL_ON_RANK0)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Name-keyed, unsharded optimizer state on rank 0. A collective: call on all ranks."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL_ON_RANK0)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a name-keyed full optimizer state on every rank (each keeps its own shard).

    Not strict: a parameter that never had a gradient (efficia-1's compression unit at a short
    seq_len) has no AdamW state in the checkpoint, as in the run that wrote it."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True, strict=False))
