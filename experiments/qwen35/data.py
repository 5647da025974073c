"""Data for the Qwen3.5 experiments: loading examples, chat formatting, encoding for training and generation,
and GSM8K-style scoring.

An example is ``{"question": str, "answer": str}`` whatever its source; where the task has a numeric answer, the
answer is in GSM8K's form, a worked solution then the final answer after ``####``
(``{"question": "3+4=", "answer": "7\\n#### 7"}``), and it is scored on that number.

The synthetic arithmetic tasks are generated here, so that no data set has to be downloaded. Their question ends
with the operands on purpose: right before the first answer token, they let the 4-layer model reach 50-80% exact
match in 60 steps (operands 0..4, lr 3e-3, by seed); with a ``"Q: 3+4=?\\nA: "`` preamble in between, it still
guessed one sum for every question after 100 steps (~20%). For the same reason they are encoded without the chat
template by default (``chat=False``): with the template's ~40 characters in between, the model learnt the format
but only 11-16% of the sums in 60-150 steps.

Everything lives in this one module rather than in a ``datasets.py`` beside it, which would shadow Hugging Face's
``datasets`` package for anything run from this directory.
"""

from __future__ import annotations

import json
import random
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    import datasets

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and transformers' loss) skip

# Synthetic task name -> largest operand. "arithmetic" has 25 distinct problems, "arithmetic-hard" 100.
SYNTHETIC_TASKS = {"arithmetic": 4, "arithmetic-hard": 9}
# A synthetic split's data seed is seed * len(SPLIT_OFFSETS) + offset: distinct for every (seed, split), and with
# seed 0 the train/test seeds 0/1 that finetune.py uses.
SPLIT_OFFSETS = {"train": 0, "test": 1}
# (question field, answer field) pairs a data set may use, tried in this order. With instruction/output, a
# non-empty "input" field (Alpaca's) is appended to the instruction.
FIELD_PAIRS = (("question", "answer"), ("prompt", "completion"), ("instruction", "output"))
FILE_SUFFIXES = (".jsonl", ".json")

# A number as written in reasoning text: "1,234" (thousands separators), "-3", "2.5". The minus is a sign only
# where it does not follow a word or a number, so "8-3=5" holds 8, 3 and 5.
NUMBER = r"(?:(?<![\w.])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
FINAL_ANSWER = re.compile(r"####\s*\$?\s*(" + NUMBER + ")")
ANY_NUMBER = re.compile(NUMBER)


# --- sources ---------------------------------------------------------------------------------------------------


def make_arithmetic(n: int, seed: int, max_operand: int = 4) -> list[dict[str, str]]:
    """``n`` addition problems with operands drawn uniformly from ``0..max_operand``.

    The same ``(n, seed)`` always gives the same list, and a longer list extends a shorter one with the same seed.
    There are only ``(max_operand + 1) ** 2`` distinct problems, so sets drawn from different seeds share
    questions: an eval set measures how well a run fitted the task, not generalisation to unseen sums, which no
    run at this scale shows (operands 0..9, 1000 steps: 3% exact match on held-out pairs, 100% on trained ones).
    """
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        examples.append({"question": f"{a}+{b}=", "answer": f"{a + b}\n#### {a + b}"})
    return examples


def load_examples(
    source: str, *, split: str = "train", limit: int | None = None, seed: int = 0, config: str | None = None
) -> list[dict[str, str]]:
    """Examples from ``source``, as ``{"question", "answer"}`` dicts.

    ``source`` is one of:

    - a synthetic task in ``SYNTHETIC_TASKS``: ``limit`` examples (required) drawn with a data seed derived from
      ``seed`` and ``split`` ("train" or "test"), so the two splits differ (but share questions: see
      ``make_arithmetic``);
    - a ``.jsonl``/``.json`` file, one JSON object per line. A file is a single split, so ``split`` must be
      "train": for a test split, pass another file, or a directory holding ``train.jsonl`` and ``test.jsonl``;
    - a local directory in a Hugging Face dataset repository's layout (``data/train-00000-of-00001.parquet``,
      ``train.jsonl``..., configs declared in its README), or a Hub dataset id such as ``openai/gsm8k`` (config
      ``main``) or ``yahma/alpaca-cleaned``: both read with ``datasets.load_dataset(source, config, split=split)``.
      A Hub id needs the network, or the data set in the ``datasets`` cache (``HF_HOME``) from an earlier load.

    Objects and rows are mapped by the first of ``FIELD_PAIRS`` whose two fields they have; values must be
    strings. ``limit`` keeps the first ``limit`` examples after a shuffle seeded by ``seed`` (a larger limit
    extends a smaller one); without it, a file or data set comes whole and in its own order.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if source in SYNTHETIC_TASKS:
        _no_config(source, config)
        return _synthetic(source, split, limit, seed)
    path = Path(source).expanduser()
    if path.suffix in FILE_SUFFIXES:
        _no_config(source, config)
        if split != "train":
            raise ValueError(
                f"{source} is a single file, so it has no {split!r} split; pass a file of its own, or a directory "
                f"holding train.jsonl and {split}.jsonl"
            )
        return _shuffled_prefix(_read_jsonl(path), limit, seed)
    if not path.is_dir() and source.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"no such file or directory: {source}")
    dataset = _load_dataset(source, config, split)
    pair = _field_pair(dataset.column_names, source)
    rows = dataset if limit is None else dataset.select(_shuffled_prefix(range(len(dataset)), limit, seed))
    return [_example(row, pair, source) for row in rows]


def _no_config(source: str, config: str | None) -> None:
    if config is not None:
        raise ValueError(f"config {config!r} given for {source}, which has no configs (only data sets do)")


def _synthetic(task: str, split: str, limit: int | None, seed: int) -> list[dict[str, str]]:
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r} for {task}; valid splits: {', '.join(SPLIT_OFFSETS)}")
    if limit is None:
        raise ValueError(f"{task} is generated: pass limit, the number of examples")
    return make_arithmetic(limit, seed * len(SPLIT_OFFSETS) + SPLIT_OFFSETS[split], SYNTHETIC_TASKS[task])


def _shuffled_prefix(items, limit: int | None, seed: int) -> list:
    items = list(items)
    if limit is None:
        return items
    random.Random(seed).shuffle(items)
    return items[:limit]


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    examples = []
    with path.open(encoding="utf-8") as lines:  # FileNotFoundError names the path
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: expected one JSON object per line: {error}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            examples.append(_example(row, _field_pair(row, where), where))
    return examples


def _load_dataset(source: str, config: str | None, split: str) -> datasets.Dataset:
    import datasets  # here, not at the top: runs on the synthetic tasks need neither it nor pyarrow

    try:
        return datasets.load_dataset(source, config, split=split)
    except ConnectionError as error:
        # Offline (HF_HUB_OFFLINE=1), or no network: datasets falls back on its cache, so this one is not there.
        raise ConnectionError(
            f"cannot load data set {source!r} (config {config!r}, split {split!r}): the Hugging Face Hub is not "
            f"reachable and the data set is not in the datasets cache ({datasets.config.HF_DATASETS_CACHE}), nor "
            f"is there a local directory of that name. Pre-download it where there is network, with the same "
            f"HF_HOME: python -c \"import datasets; datasets.load_dataset({source!r}, {config!r})\"; then set "
            f"HF_HUB_OFFLINE=1, which also skips ~20 s of retries. Or pass a local JSONL file or dataset "
            f"directory instead. ({error})"
        ) from error


def _field_pair(columns, where: str) -> tuple[str, str]:
    for pair in FIELD_PAIRS:
        if all(field in columns for field in pair):
            return pair
    expected = ", ".join("/".join(pair) for pair in FIELD_PAIRS)
    raise ValueError(f"{where}: no question/answer fields among {sorted(columns)}; expected one of {expected}")


def _example(row: dict, pair: tuple[str, str], where: str) -> dict[str, str]:
    question_field, answer_field = pair
    question, answer = row[question_field], row[answer_field]
    if pair == ("instruction", "output") and row.get("input"):
        question = f"{question}\n\n{row['input']}"
    if not isinstance(question, str) or not isinstance(answer, str):
        raise ValueError(f"{where}: {question_field!r} and {answer_field!r} must be strings")
    return {"question": question, "answer": answer}


# --- formatting and encoding -------------------------------------------------------------------------------------


def format_prompt(tokenizer: PreTrainedTokenizerBase, question: str, *, enable_thinking: bool = False) -> str:
    """``question`` as a user turn in ``tokenizer``'s chat template, followed by the assistant's generation
    prompt (with Qwen3.5's template and thinking off, one that ends in the empty ``<think>\\n\\n</think>\\n\\n``)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=enable_thinking,
    )


def encode_for_training(
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, str]],
    *,
    chat: bool = False,
    enable_thinking: bool = False,
    max_seq_len: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` for prompt + completion + EOS.

    The prompt is the question, or with ``chat`` the question in the chat template up to and including the
    assistant's generation prompt. The completion is the answer, and with ``chat`` also what the template writes
    after it (``<|im_end|>\\n``), so that the model learns to end its turn. EOS follows, unless the completion holds
    it already (a chat tokenizer's EOS is the end-of-turn marker): the completion then ends at it, once. Labels are
    ``IGNORE_INDEX`` on the prompt and on padding, so the loss (and eval_loss) is over the completion alone: the
    questions are given, and fitting them would only add noise to the curves.

    ``max_seq_len`` cuts a sequence's completion from the end; an example whose prompt alone fills
    ``max_seq_len`` would have no label left, so it is dropped with a warning that counts the dropped examples
    (rows then no longer line up with ``examples``). Raises ``ValueError`` when every example is dropped.
    """
    prompts = [_prompt_text(tokenizer, e["question"], chat, enable_thinking) for e in examples]
    completions = [_completion_text(tokenizer, e, p, chat, enable_thinking) for e, p in zip(examples, prompts)]
    sequences, label_rows = [], []
    for prompt, completion in zip(_token_ids(tokenizer, prompts), _token_ids(tokenizer, completions)):
        completion = _ended(completion, tokenizer.eos_token_id)
        if max_seq_len is not None:
            if len(prompt) >= max_seq_len:
                continue
            completion = completion[: max_seq_len - len(prompt)]
        sequences.append(prompt + completion)
        label_rows.append([IGNORE_INDEX] * len(prompt) + completion)
    if len(sequences) < len(examples):
        if not sequences:
            raise ValueError(f"every prompt has max_seq_len={max_seq_len} tokens or more; no example is left")
        warnings.warn(
            f"dropped {len(examples) - len(sequences)} of {len(examples)} examples whose prompt alone has "
            f"max_seq_len={max_seq_len} tokens or more",
            stacklevel=2,
        )
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (sequence, label_row) in enumerate(zip(sequences, label_rows)):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        labels[row, : len(label_row)] = torch.tensor(label_row)
        attention_mask[row, : len(sequence)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, questions: list[str], *, chat: bool = False, enable_thinking: bool = False
) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` of the prompts for ``questions``, for ``generate``.

    Left, so that every prompt ends where generation starts. Right-padded, a short prompt's first new token would
    be predicted at a pad, and the pads would sit between prompt and continuation, reaching it through the Gated
    DeltaNet layers' convolution and recurrent state (the mask only zeroes the pads' inputs, during the prefill):
    the tiny model then continues a prompt quite differently than it does alone. Left-padded, a batch generates
    what each prompt generates alone (tests/test_data.py).
    """
    prompts = [_prompt_text(tokenizer, question, chat, enable_thinking) for question in questions]
    encoded = tokenizer(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _prompt_text(tokenizer: PreTrainedTokenizerBase, question: str, chat: bool, enable_thinking: bool) -> str:
    return format_prompt(tokenizer, question, enable_thinking=enable_thinking) if chat else question


def _completion_text(
    tokenizer: PreTrainedTokenizerBase, example: dict[str, str], prompt: str, chat: bool, enable_thinking: bool
) -> str:
    if not chat:
        return example["answer"]
    # The conversation with its answer, as the template writes it, minus the generation prompt: whatever the
    # template puts around an answer (its end-of-turn marker) is then trained on exactly as it will be served.
    conversation = tokenizer.apply_chat_template(
        [{"role": "user", "content": example["question"]}, {"role": "assistant", "content": example["answer"]}],
        tokenize=False,
        enable_thinking=enable_thinking,
    )
    if not conversation.startswith(prompt):
        raise ValueError(
            "the chat template's generation prompt is not a prefix of the conversation with its answer, so the "
            f"answer cannot be split off: {prompt!r} vs {conversation!r}"
        )
    return conversation[len(prompt) :]


def _ended(completion: list[int], eos: int) -> list[int]:
    # A chat template's end-of-turn marker is the EOS of chat tokenizers (Qwen3.5's "<|im_end|>"): the completion
    # then ends there, once, without the newline the template writes after it or a second marker.
    if eos in completion:
        return completion[: completion.index(eos) + 1]
    return completion + [eos]


def _token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    # Prompt and completion are tokenized apart, as a prompt is at generation time; the template's markers are
    # already in the text, so no special tokens are added.
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


# --- scoring ---------------------------------------------------------------------------------------------------


def parse_final_answer(text: str, *, last_number_fallback: bool = False) -> int | float | None:
    """The number after the first ``####`` (as GSM8K's scoring reads it), or None when there is none.

    With ``last_number_fallback``, a text without ``####`` gives its last number instead, as the lenient
    ("flexible") GSM8K scoring of many evaluation suites does. Thousands separators are dropped (``1,234`` is
    1234), and a decimal gives a float, which compares equal to the int of the same value (``5.0 == 5``).
    """
    match = FINAL_ANSWER.search(text)
    if match:
        return _number(match.group(1))
    if last_number_fallback:
        numbers = ANY_NUMBER.findall(text)
        return _number(numbers[-1]) if numbers else None
    return None


def exact_match(pred_text: str, reference_answer: str) -> bool:
    """Whether a generated text gives the reference's answer.

    A reference with a number (after ``####``, else its last number) is matched on that number, the prediction
    being read leniently (``parse_final_answer(..., last_number_fallback=True)``). A reference without a number
    (free text) is matched on its text, ignoring leading and trailing whitespace.
    """
    reference = parse_final_answer(reference_answer, last_number_fallback=True)
    if reference is None:
        return pred_text.strip() == reference_answer.strip()
    return parse_final_answer(pred_text, last_number_fallback=True) == reference


def _number(text: str) -> int | float:
    text = text.replace(",", "")
    return float(text) if "." in text else int(text)
