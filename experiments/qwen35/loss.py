"""Cross-entropy over answer tokens, computed without the full-vocabulary logits.

``model(**batch).loss`` projects every position of the batch onto Qwen3.5's 248,320-word vocabulary and upcasts the
logits to float32 for the loss: a batch of 16 sequences of 512 tokens is 2 billion logits, over 20 GB with the
softmax and its gradient. Only answer tokens have a label, so only their positions need a projection: this module
runs the decoder, keeps the hidden states of labelled positions, and projects them ``CHUNK_TOKENS`` at a time.
When gradients are on, each chunk is checkpointed (its logits are recomputed in the backward pass rather than held),
so the largest temporary is one chunk's logits whatever the batch: about 1 GB at ``CHUNK_TOKENS`` x 248,320 in
float32 with its gradient, instead of the batch's.

The loss is a *sum* with its token count, so that gradient accumulation can weigh every answer token the same
(``finetune._train_step``) and evaluation can average over a whole data set rather than over batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch.utils.checkpoint import checkpoint

from .data import IGNORE_INDEX

CHUNK_TOKENS = 256


def answer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(Summed cross-entropy over the labelled positions of ``batch``, as a float32 scalar; how many there are).

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``labels`` (``IGNORE_INDEX`` where there is no target),
    unshifted, as ``data.encode_for_training`` makes them: position t predicts label t+1. ``model`` is a
    ``Qwen3_5ForCausalLM`` or a PEFT model around one.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    hidden = base.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    states, targets = hidden[:, :-1][keep], labels[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), CHUNK_TOKENS):
        chunk = (base.lm_head, states[start:start + CHUNK_TOKENS], targets[start:start + CHUNK_TOKENS])
        if torch.is_grad_enabled():
            total = total + checkpoint(_summed_cross_entropy, *chunk, use_reentrant=False)
        else:
            total = total + _summed_cross_entropy(*chunk)
    return total, len(targets)


def _summed_cross_entropy(head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(states).float(), targets, reduction="sum")
