"""Data for the Qwen3.5 experiments: every source, field mapping and error, the chat template, encoding for
training and for generation (left-padded batches generate as single prompts do), and scoring."""

from __future__ import annotations

import json
import shutil
import warnings

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

from experiments.qwen35.data import (
    IGNORE_INDEX,
    encode_for_training,
    encode_prompts,
    exact_match,
    format_prompt,
    load_examples,
    make_arithmetic,
    parse_final_answer,
)
from experiments.qwen35.tiny import CHAT_TEMPLATE, VOCAB, build_tiny_model, build_tokenizer

GSM8K_CARD = """---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train-*
  - split: test
    path: main/test-*
---
"""


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh, empty ``datasets`` cache, offline: what a machine without network and without downloads has.

    ``datasets`` reads HF_HOME and HF_HUB_OFFLINE when it is imported, so the settings they make are patched.
    """
    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def tokenizer():
    return build_tokenizer()


def _write_parquet(path, columns: dict[str, list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _gsm8k_repo(root):
    """A directory laid out as the Hub's openai/gsm8k: config "main" declared in the card, parquet shards."""
    repo = root / "gsm8k"
    for split, n in (("train", 6), ("test", 3)):
        questions = [f"{split} {i}?" for i in range(n)]
        answers = [f"{i}+1={i + 1}\n#### {i + 1}" for i in range(n)]
        _write_parquet(repo / "main" / f"{split}-00000-of-00001.parquet", {"question": questions, "answer": answers})
    (repo / "README.md").write_text(GSM8K_CARD)
    return repo


def _write_jsonl(path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


# --- sources ---------------------------------------------------------------------------------------------------


def test_synthetic_tasks_are_seeded_by_seed_and_split():
    train = load_examples("arithmetic", limit=8)
    assert train == make_arithmetic(8, seed=0)  # the train/test data seeds 0/1 of finetune.py
    assert load_examples("arithmetic", split="test", limit=8) == make_arithmetic(8, seed=1)
    assert load_examples("arithmetic", limit=8, seed=1) not in (train, make_arithmetic(8, seed=1))
    assert load_examples("arithmetic", limit=4) == train[:4]
    operands = {int(n) for e in load_examples("arithmetic-hard", limit=300) for n in e["question"][:-1].split("+")}
    assert operands == set(range(10))
    with pytest.raises(ValueError, match="pass limit"):
        load_examples("arithmetic")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        load_examples("arithmetic", split="validation", limit=4)
    with pytest.raises(ValueError, match="has no configs"):
        load_examples("arithmetic", limit=4, config="main")


def test_jsonl_files_map_each_field_pair(tmp_path):
    path = tmp_path / "mixed.jsonl"
    _write_jsonl(path, [
        {"question": "q1", "answer": "a\n#### 1", "id": 7},
        {"prompt": "p2", "completion": "c2"},
        {"instruction": "Add.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
    ])
    assert load_examples(str(path)) == [
        {"question": "q1", "answer": "a\n#### 1"},
        {"question": "p2", "answer": "c2"},
        {"question": "Add.\n\n2 and 3", "answer": "5"},
        {"question": "Say hi.", "answer": "hi"},
    ]


def test_limit_is_a_seeded_shuffle_whose_prefixes_agree(tmp_path):
    path = tmp_path / "many.json"
    _write_jsonl(path, [{"question": f"q{i}", "answer": str(i)} for i in range(50)])
    every = load_examples(str(path))
    assert [e["question"] for e in every] == [f"q{i}" for i in range(50)]  # whole, in file order
    first = load_examples(str(path), limit=10, seed=3)
    assert first == load_examples(str(path), limit=10, seed=3) != load_examples(str(path), limit=10, seed=4)
    assert first != every[:10]
    assert load_examples(str(path), limit=20, seed=3)[:10] == first
    assert sorted(e["question"] for e in load_examples(str(path), limit=99)) == sorted(e["question"] for e in every)


def test_file_errors_name_the_file_line_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_examples(str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="no such file or directory: ./no/such/dir"):
        load_examples("./no/such/dir")
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, [{"question": "q", "answer": "a"}, {"text": "t", "label": 1}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no question/answer fields among \['label', 'text'\]; "
                                         r"expected one of question/answer, prompt/completion, instruction/output"):
        load_examples(str(path))
    _write_jsonl(path, [{"question": "q", "answer": 4}])
    with pytest.raises(ValueError, match="bad.jsonl:1: 'question' and 'answer' must be strings"):
        load_examples(str(path))
    path.write_text('[{"question": "q", "answer": "a"}]\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: expected a JSON object, got list"):
        load_examples(str(path))
    with pytest.raises(ValueError, match="single file, so it has no 'test' split"):
        load_examples(str(path), split="test")


def test_local_dataset_directories_load_through_load_dataset(tmp_path, hf_cache):
    repo = _gsm8k_repo(tmp_path)
    assert load_examples(str(repo), config="main", split="test") == [
        {"question": f"test {i}?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(3)
    ]
    assert len(load_examples(str(repo), config="main", limit=4, seed=1)) == 4

    # Alpaca's layout: no card, the default "data/" directory, instruction/input/output.
    alpaca = tmp_path / "alpaca"
    _write_parquet(
        alpaca / "data" / "train-00000-of-00001.parquet",
        {"instruction": ["Add.", "Greet."], "input": ["1 and 2", ""], "output": ["3", "Hello!"]},
    )
    assert load_examples(str(alpaca)) == [
        {"question": "Add.\n\n1 and 2", "answer": "3"}, {"question": "Greet.", "answer": "Hello!"}
    ]

    # Splits of JSONL files by name, the way to give a file-based data set a test split.
    splits = tmp_path / "splits"
    splits.mkdir()
    _write_jsonl(splits / "train.jsonl", [{"prompt": "p", "completion": "c"}])
    _write_jsonl(splits / "test.jsonl", [{"prompt": "tp", "completion": "tc"}])
    assert load_examples(str(splits), split="test") == [{"question": "tp", "answer": "tc"}]

    unknown = tmp_path / "unknown"
    _write_parquet(unknown / "data" / "train-00000-of-00001.parquet", {"text": ["t"], "label": [0]})
    with pytest.raises(ValueError, match=r"no question/answer fields among \['label', 'text'\]"):
        load_examples(str(unknown))
    assert list(hf_cache.iterdir())  # the loads above were cached in the temporary cache, not in ~/.cache


def test_hub_id_loads_offline_from_a_prefilled_cache(tmp_path, hf_cache):
    # Fill the cache as `load_dataset("openai/gsm8k", "main")` with network would: prepare the same files under
    # the Hub id's cache directory, <cache>/openai___gsm8k/main/0.0.0/<hash>/ (gsm8k-train.arrow, ...).
    datasets.load_dataset_builder(str(_gsm8k_repo(tmp_path)), "main").download_and_prepare()
    shutil.copytree(hf_cache / "gsm8k", hf_cache / "openai___gsm8k")

    train = load_examples("openai/gsm8k", config="main")
    assert train[0] == {"question": "train 0?", "answer": "0+1=1\n#### 1"} and len(train) == 6
    assert len(load_examples("openai/gsm8k", config="main", split="test")) == 3


def test_hub_id_missing_offline_says_how_to_get_it(hf_cache):
    with pytest.raises(ConnectionError) as raised:
        load_examples("yahma/alpaca-cleaned")
    message = str(raised.value)
    for part in ("'yahma/alpaca-cleaned'", "not in the datasets cache", "HF_HOME", "local JSONL"):
        assert part in message


# --- chat template and encoding ----------------------------------------------------------------------------------


def test_chat_template_honours_enable_thinking(tokenizer):
    user = "<|im_start|>user\n3+4=<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt(tokenizer, "3+4=") == user + "<think>\n\n</think>\n\n"
    assert format_prompt(tokenizer, "3+4=", enable_thinking=True) == user + "<think>\n"
    # Spelt out in VOCAB's characters: nothing becomes <unk>.
    ids = tokenizer(format_prompt(tokenizer, "3+4="), add_special_tokens=False)["input_ids"]
    assert VOCAB.index("<unk>") not in ids


@pytest.mark.parametrize(
    ("enable_thinking", "completion"),
    [(False, "7\n#### 7<|im_end|>\n<eos>"), (True, "\n</think>\n\n7\n#### 7<|im_end|>\n<eos>")],
)
def test_chat_encoding_labels_only_the_completion(tokenizer, enable_thinking, completion):
    examples = [{"question": "3+4=", "answer": "7\n#### 7"}, {"question": "10+10=", "answer": "20\n#### 20"}]
    batch = encode_for_training(tokenizer, examples, chat=True, enable_thinking=enable_thinking)
    labels, mask = batch["labels"][0], batch["attention_mask"][0]
    prompt = format_prompt(tokenizer, "3+4=", enable_thinking=enable_thinking)
    assert (labels[: len(prompt)] == IGNORE_INDEX).all()  # the whole template prefix
    assert tokenizer.decode(labels[labels != IGNORE_INDEX]) == completion
    assert tokenizer.decode(batch["input_ids"][0][mask == 1]) == prompt + completion
    padding = batch["attention_mask"] == 0
    assert padding[0].any() and (batch["labels"][padding] == IGNORE_INDEX).all()


def test_chat_tokenizer_whose_eos_ends_the_turn_trains_one_end_marker():
    """Qwen3.5's chat tokenizers end a turn with their EOS, <|im_end|>: the completion ends there, once, not with
    the template's newline and a second <|im_end|>."""
    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    qwen = Qwen3_5Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    qwen.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    qwen.chat_template = CHAT_TEMPLATE
    batch = encode_for_training(qwen, [{"question": "3+4=", "answer": "7\n#### 7"}], chat=True)
    labels = batch["labels"][0]
    assert qwen.decode(labels[labels != IGNORE_INDEX]) == "7\n#### 7<|im_end|>"
    plain = encode_for_training(qwen, [{"question": "3+4=", "answer": "7"}])["labels"][0]
    assert qwen.decode(plain[plain != IGNORE_INDEX]) == "7<|im_end|>"  # without chat, EOS is appended as before


def test_max_seq_len_cuts_the_completion_and_drops_prompts_that_fill_it(tokenizer):
    examples = [{"question": "1+2=", "answer": "3\n#### 3"}, {"question": "10+20=", "answer": "30"}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is dropped
        batch = encode_for_training(tokenizer, examples, max_seq_len=8)
    assert [tokenizer.decode(row) for row in batch["input_ids"]] == ["1+2=3\n##", "10+20=30"]  # EOS cut too
    assert [tokenizer.decode(row[row != IGNORE_INDEX]) for row in batch["labels"]] == ["3\n##", "30"]
    with pytest.warns(UserWarning, match="dropped 1 of 2 examples"):
        batch = encode_for_training(tokenizer, examples, max_seq_len=6)
    assert [tokenizer.decode(row) for row in batch["input_ids"]] == ["1+2=3\n"]
    with pytest.raises(ValueError, match="no example is left"):
        encode_for_training(tokenizer, examples, max_seq_len=4)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("chat", [False, True])
def test_left_padded_batches_generate_what_single_prompts_do(tokenizer, chat):
    model = build_tiny_model(seed=0).eval()
    questions = ["3+4=", "What is 7 times 8?", "12+345="]
    batch = encode_prompts(tokenizer, questions, chat=chat)
    assert (batch["attention_mask"][:, -1] == 1).all() and (batch["attention_mask"][0, 0] == 0)  # padded on the left
    settings = dict(
        max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    with torch.no_grad():
        batched = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1]:]
        for row, question in enumerate(questions):
            alone = encode_prompts(tokenizer, [question], chat=chat)
            assert alone["attention_mask"].all()
            expected = model.generate(**alone, **settings)[0, alone["input_ids"].shape[1]:]
            assert batched[row].tolist() == expected.tolist(), question
        # The check has teeth: padded on the right, the shortest prompt continues differently.
        prompts = [format_prompt(tokenizer, question) for question in questions] if chat else questions
        right = tokenizer(prompts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
        width = right["input_ids"].shape[1]
        assert model.generate(**right, **settings)[0, width:].tolist() != batched[0].tolist()


# --- scoring ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "strict", "lenient"),
    [
        ("3+4=7\n#### 7", 7, 7),
        ("#### 1,234", 1234, 1234),
        ("#### -5", -5, -5),
        ("#### $2.50", 2.5, 2.5),
        ("#### 7\n#### 8", 7, 7),  # the first ####, as GSM8K's scoring reads it
        ("12\n####", None, 12),
        ("So 8-3=5, and the total is 1,200.", None, 1200),
        ("It falls to -3.5 degrees.", None, -3.5),
        ("1,2,3", None, 3),  # a list, not one number with separators
        ("no number here", None, None),
    ],
)
def test_final_answers_are_parsed_strictly_or_leniently(text, strict, lenient):
    assert parse_final_answer(text) == strict
    assert parse_final_answer(text, last_number_fallback=True) == lenient


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("7\n#### 7", "3+4=7\n#### 7", True),
        ("The answer is 7.", "3+4=7\n#### 7", True),
        ("#### 7.0", "#### 7", True),
        ("#### 1,234", "#### 1234", True),
        ("#### 8", "3+4=7\n#### 7", False),
        ("I don't know", "#### 7", False),
        ("  Hello!\n", "Hello!", True),  # free text: the text itself
        ("Hi!", "Hello!", False),
    ],
)
def test_exact_match(prediction, reference, expected):
    assert exact_match(prediction, reference) is expected
