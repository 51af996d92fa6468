"""Shared fixtures: a tiny model configuration and a word-level tokenizer built in memory, so that no
test needs the Hub, the Bible corpus or a trained BPE."""

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from vanilla_transformer import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    inference,
)
from vanilla_transformer.modeling_vanilla_transformer import CACHE_OUTPUT_FIELD
from vanilla_transformer.recipe.tokenization import SPECIAL_TOKEN_KWARGS, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
# A few sentences for translation and scoring tests (the echo model translates them perfectly).
SENTENCES = [
    "the big dog saw the small cat in the house",
    "a red house",
    "the cat runs to the blue house and the dog runs too",
    "la casa roja es grande",
    "el perro vio al gato",
    "in the beginning",
    "and the small green dog was in the big red house of the cat",
]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, the project's convention
WORDS = list(  # unique: each word one id
    dict.fromkeys(
        "the a house dog cat is was big small red blue green in on and of to see saw runs ran "
        "la el casa perro gato es era grande pequeño rojo azul verde en y de ver vio corre corrió"
        "".split()
    )
)


def tiny_config(**overrides) -> VanillaTransformerConfig:
    """Marian-tester-sized model: d_model 32, 2+2 layers, 4 heads, d_ff 64."""
    kwargs = dict(
        vocab_size=len(SPECIALS) + len(WORDS),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        dropout=0.0,
    )
    kwargs.update(overrides)
    return VanillaTransformerConfig(**kwargs)


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 2)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKEN_KWARGS)


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models run fastest on one thread, and extra threads only contend when the machine is
    busy (subprocesses get OMP_NUM_THREADS=1 from their tests for the same reason)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


INT8_ANYWHERE = "import vanilla_transformer.inference as i; i.cpu_has_fast_int8 = lambda: True"


@contextlib.contextmanager
def int8_on_any_cpu():
    """The torch int8 fast path allowed on this CPU whatever its flags. Without VNNI or AMX the
    package refuses it because it is slower than float32 there (a speed rule, tested with faked
    flags in test_inference.py); its arithmetic is the same on every CPU, and the tests that use
    this check that arithmetic. `INT8_ANYWHERE` does the same in a subprocess's code."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference, "cpu_has_fast_int8", lambda: True)
        yield


@pytest.fixture
def int8_anywhere():
    with int8_on_any_cpu():
        yield


class _DeprecationLogs(logging.Handler):
    """Collects transformers' deprecation notices, which it logs instead of warning."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.messages.append(message)


@pytest.fixture(autouse=True)
def _no_deprecation_logs(request):
    """Fail any test during which transformers logs a deprecation notice, except one that a
    `transformers_internal_deprecation(pattern)` marker names: raised by transformers' own code
    calling itself (e.g. its assisted-decoding candidate generator), not by ours."""
    handler = _DeprecationLogs()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    marker = request.node.get_closest_marker("transformers_internal_deprecation")
    messages = [m for m in handler.messages if not (marker and re.search(marker.args[0], m))]
    assert not messages, f"transformers logged deprecations: {messages}"


def pytest_configure(config):
    if CACHE_OUTPUT_FIELD == "past_key_values":
        # Before transformers 5.24, generate() passes `past_key_values=`: our forwards accept it
        # through transformers' own deprecation helper, whose notice is the one expected there.
        config.addinivalue_line(
            "filterwarnings", "ignore:`past_key_values` is deprecated:FutureWarning"
        )


REMOTE_CODE = (  # the files saved beside a model and imported by trust_remote_code
    "configuration_vanilla_transformer.py",
    "modeling_vanilla_transformer.py",
    "pipeline_vanilla_transformer.py",
)


def tiny_model(**overrides) -> VanillaTransformerForConditionalGeneration:
    return VanillaTransformerForConditionalGeneration(tiny_config(**overrides)).eval()


def sharpened_tiny_model(**overrides) -> VanillaTransformerForConditionalGeneration:
    """A seeded tiny model whose embeddings (tied to the output projection) are scaled up, so its
    next-token choices have no near-ties: tests comparing tokens across paths stay deterministic."""
    torch.manual_seed(0)
    model = tiny_model(**overrides)
    with torch.no_grad():
        model.model.shared.weight.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """One saved tiny model (single safetensors file + tokenizer); tests copy it before harming it."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    torch.manual_seed(0)
    tiny_model().save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def fresh_copy(saved, tmp_path):
    """A function that copies the `saved` model folder to a new folder of tmp_path."""

    def make(name="model") -> Path:
        return Path(shutil.copytree(saved, tmp_path / name))

    return make


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_jsonl(path: Path, rows) -> Path:
    """A JSONL file of `rows`: a dict is written as JSON, an (en, es) pair as a translation row,
    a str as the line itself (to write malformed lines)."""

    def line(row) -> str:
        if isinstance(row, str):
            return row
        if isinstance(row, tuple):
            row = {"translation": {"en": row[0], "es": row[1]}}
        return json.dumps(row, ensure_ascii=False)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line(r) + "\n" for r in rows), encoding="utf-8")
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its size, as an interrupted write leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE trained on a few sentences in three scripts (vocabulary 300)."""
    texts = ["the big house is red", "la casa grande es roja", "Ελληνικά 中文 🙂"] * 10
    return train_tokenizer(texts, vocab_size=300, min_frequency=1)


def run_python(*args, env: dict | None = None, timeout: float = 300, **kwargs):
    """`python <args>` in a child process with one torch thread and quiet tokenizers, plus `env`
    (a None value removes that variable); stdout and stderr captured as text. `kwargs` go to
    `subprocess.run` (cwd, input)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        **kwargs,
    )


def run_script(script: str, *args, **kwargs):
    """`python scripts/<script> <args>` (`run_python`)."""
    return run_python(REPO / "scripts" / script, *args, **kwargs)


def save_tiny_model(folder: Path, tokenizer) -> Path:
    """A tiny model (seed 0, 128 positions) for `tokenizer`'s vocabulary, saved with the
    tokenizer in `folder`."""
    torch.manual_seed(0)
    tiny_model(vocab_size=len(tokenizer), max_position_embeddings=128).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def incremental_logits(model, input_ids, attention_mask, decoder_input_ids):
    """The decoder's logits computed one position at a time through the key/value cache, as
    generation does: (B, T, vocab), and the final cache."""
    encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    cache, steps = None, []
    for t in range(decoder_input_ids.shape[1]):
        out = model(
            encoder_outputs=encoder_outputs,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids[:, t : t + 1],
            cache=cache,
            use_cache=True,
        )
        cache = getattr(out, CACHE_OUTPUT_FIELD)
        steps.append(out.logits[:, 0])
    return torch.stack(steps, dim=1), cache
