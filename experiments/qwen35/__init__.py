"""Tiny Qwen3.5 (Gated DeltaNet + full attention, 3:1) fine-tuning on a synthetic GSM8K-style task.

The real ``transformers`` Qwen3.5 classes with a small config, so a study exercises the same code paths a full
model would, at a cost of seconds per run on CPU. Entry point: ``experiments.qwen35.finetune.run``.
"""
