"""A tiny model trained in a few seconds to translate word by word (English -> Spanish words of the
conftest tokenizer), so that export and demo tests compare real, varied outputs that end in `</s>`
rather than a random model's repeated token."""

import functools
import random

import torch
from conftest import tiny_config, word_tokenizer

from vanilla_transformer import VanillaTransformerForConditionalGeneration

DICTIONARY = {
    "the": "el", "a": "la", "house": "casa", "dog": "perro", "cat": "gato", "is": "es",
    "was": "era", "big": "grande", "small": "pequeño", "red": "rojo", "blue": "azul",
    "green": "verde", "in": "en", "and": "y", "of": "de", "see": "ver", "saw": "vio",
    "runs": "corre", "ran": "corrió",
}  # fmt: skip
SENTENCES = ["the big dog runs", "a red cat is in the house", "see the small blue house", "dog"]


def toy_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = sorted(DICTIONARY)
    pairs = []
    for _ in range(n):
        sentence = [rng.choice(words) for _ in range(rng.randint(1, 7))]
        pairs.append((" ".join(sentence), " ".join(DICTIONARY[w] for w in sentence)))
    return pairs


@functools.cache
def trained_toy_model(steps: int = 250, **overrides) -> VanillaTransformerForConditionalGeneration:
    """Trained once per configuration and shared between tests: do not modify it."""
    return train_toy(toy_pairs(steps * 16), steps, **overrides)


def save_toy_model(folder):
    """`trained_toy_model()` and the word tokenizer saved as a model folder; returns `folder`."""
    trained_toy_model().save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def train_toy(
    pairs: list[tuple[str, str]], steps: int, **overrides
) -> VanillaTransformerForConditionalGeneration:
    """A tiny model (`tiny_config(**overrides)`) trained on `pairs`, 16 per step, seeded."""
    torch.manual_seed(0)
    tokenizer = word_tokenizer()
    model = VanillaTransformerForConditionalGeneration(tiny_config(**overrides))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = pairs[step * 16 : (step + 1) * 16]
        inputs = tokenizer([s for s, _ in batch], padding=True, return_tensors="pt")
        labels = tokenizer([t for _, t in batch], padding=True, return_tensors="pt").input_ids
        labels[labels == tokenizer.pad_token_id] = -100
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def swap_pairs(n: int) -> list[int]:
    """The reordering of `n` words that swaps each adjacent pair: 0 1 2 3 4 -> 1 0 3 2 4
    (target word j translates source word order[j])."""
    order = list(range(n))
    for j in range(0, n - 1, 2):
        order[j], order[j + 1] = order[j + 1], order[j]
    return order


def reordered_pairs(n: int, seed: int = 0, reorder=swap_pairs) -> list[tuple[str, str, list[int]]]:
    """Word-by-word translations whose target words come in another order: `(source, target,
    order)`, target word j translating source word `order[j]`; no word repeats in a sentence, so
    which source word a target word translates is never ambiguous."""
    rng = random.Random(seed)
    words = sorted(DICTIONARY)
    triples = []
    for _ in range(n):
        sentence = rng.sample(words, rng.randint(2, 7))
        order = reorder(len(sentence))
        target = " ".join(DICTIONARY[sentence[i]] for i in order)
        triples.append((" ".join(sentence), target, order))
    return triples


@functools.cache
def trained_reordering_model(steps: int = 1500, **overrides):
    """A tiny model trained to translate word by word and swap each adjacent pair of words
    (`reordered_pairs`): a known alignment. Shared between tests: do not modify it."""
    pairs = [(s, t) for s, t, _ in reordered_pairs(steps * 16, seed=1)]
    return train_toy(pairs, steps, **overrides)
