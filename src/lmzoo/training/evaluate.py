"""Validation loss, bits per byte, perplexity and next-token accuracy over a dataset split."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from lmzoo.errors import LmzooError
from lmzoo.modeling import causal_lm_loss
from lmzoo.training.distributed import all_reduce_sum


def _rank_share(batches: Iterable[torch.Tensor], rank: int, world_size: int) -> Iterator[torch.Tensor]:
    """Batch `rank` of each complete group of `world_size`: every rank runs the same number of
    forwards, which FSDP needs (each forward is a collective). A last partial group is dropped."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == world_size:
            yield group[rank]
            group = []


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int, seq_len: int, max_batches: int | None = None, *,
             autocast_dtype: torch.dtype | None = None, rank: int = 0, world_size: int = 1,
             progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """Mean next-token loss (nats) over the split's first `max_batches` batches (all when None).

    Returns loss, bpb (bits per byte of the original text, via the split's tokens/bytes ratio),
    ppl, accuracy (share of next tokens that are the argmax of the logits) and tokens (the number
    of predicted tokens). Sums stay on the device until the end. Under torchrun pass
    rank/world_size: the batches are dealt out across ranks and the sums all-reduced, so every
    rank gets the result. `progress(n)` is called after each batch with the tokens predicted so far on this rank.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                else contextlib.nullcontext())
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss x tokens, tokens, correct
    done = 0
    try:
        for batch in _rank_share(dataset.iter_eval_batches(batch_size, seq_len, max_batches), rank, world_size):
            batch = batch.to(device, non_blocking=True)
            with autocast:
                logits = model(batch).logits
            # Cross-entropy alone: an architecture's auxiliary loss is not part of the val metric.
            predicted = batch[:, 1:].numel()
            sums[0] += causal_lm_loss(logits, batch).double() * predicted
            sums[1] += predicted
            sums[2] += (logits[:, :-1].argmax(-1) == batch[:, 1:]).sum()
            done += predicted
            if progress is not None:
                progress(done)
    finally:
        model.train(was_training)
    total, count, correct = all_reduce_sum(sums).tolist()
    tokens = int(count)
    if tokens == 0:
        raise LmzooError(f"the val split holds no batch of {batch_size} x {seq_len} tokens per rank; "
                         "lower --seq-len/--batch-size or prepare more validation data")
    loss = total / tokens
    return {"loss": loss, "bpb": dataset.bits_per_byte(loss),
            "ppl": math.exp(min(loss, 700.0)),  # capped: exp overflows a float past ~709
            "accuracy": correct / tokens, "tokens": tokens}
