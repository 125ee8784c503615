"""20 Newsgroups as fixed-length token-id sequences, with optional GloVe embeddings.

Protocol (docs/datasets.md): seeded shuffle of all documents; the last 20% are the test, the 900
before that the val, the rest the train. Headers (up to the first blank line) are stripped; text
is lower-cased and split into word tokens; the vocabulary is the `vocab_size` most frequent train
words (ids: 0 = padding, 1 = unknown); sequences are truncated / right-padded to `max_len`.
With `glove` (a GloVe text file, absolute or relative to root) the bundle carries the embedding
matrix for the Global Pooling CNN (words missing from GloVe get zeros).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from calbench.data.base import DatasetBundle, dataset
from calbench.data.splits import rng_for
from calbench.errors import InputError

LAYOUT = ("<root>/<group>/<message files> for 20 groups (e.g. 20_newsgroups/ or "
          "20news-bydate-{train,test}/, merged), plus an optional GloVe text file '<word> <floats>'")
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
PAD, UNK = 0, 1


def _fail(path: Path, problem: str):
    raise InputError(f"dataset '20newsgroups': {path} {problem}; expected layout: {LAYOUT}")


def group_dirs(root: Path) -> dict[str, list[Path]]:
    """{group: [folders]}: root's own subfolders if they hold files, else those one level deeper."""
    def groups_of(parent: Path) -> list[Path]:
        return [d for d in sorted(parent.iterdir()) if d.is_dir() and any(f.is_file() for f in d.iterdir())]

    direct = groups_of(root)  # a stray folder with a file (e.g. glove/) is not a group level
    parents = [root] if len(direct) >= 2 else [d for d in sorted(root.iterdir()) if d.is_dir()]
    out: dict[str, list[Path]] = {}
    for parent in parents:
        for g in groups_of(parent):
            out.setdefault(g.name, []).append(g)
    return out


def _glove_path(root: Path, glove: str | None) -> Path | None:
    if not glove:
        return None
    p = Path(glove).expanduser()
    return p if p.is_absolute() else root / p


def check(root: Path, glove: str | None = None, **_) -> None:
    groups = group_dirs(root)
    if len(groups) < 2:
        _fail(root, f"holds {len(groups)} newsgroup folder(s) with message files")
    path = _glove_path(root, glove)
    if path is not None and not path.is_file():
        _fail(path, "(the glove option) is missing")


def strip_header(text: str) -> str:
    """Drop the mail header: everything up to the first blank line."""
    parts = re.split(r"\r?\n\s*\r?\n", text, maxsplit=1)
    return parts[1] if len(parts) == 2 else text


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def read_documents(root: Path) -> tuple[list[list[str]], np.ndarray, list[str]]:
    groups = group_dirs(root)
    names = sorted(groups)
    docs, labels = [], []
    for label, name in enumerate(names):
        for folder in groups[name]:
            for f in sorted(folder.iterdir()):
                if f.is_file():
                    docs.append(tokenize(strip_header(f.read_text(encoding="latin-1"))))
                    labels.append(label)
    return docs, np.asarray(labels, dtype=np.int64), names


def build_vocabulary(docs: list[list[str]], size: int) -> dict[str, int]:
    """The `size` most frequent words (ties broken alphabetically) -> ids from 2."""
    counts = Counter(w for d in docs for w in d)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    return {w: i + 2 for i, (w, _) in enumerate(ranked)}


def encode(docs: list[list[str]], vocab: dict[str, int], max_len: int) -> torch.Tensor:
    out = torch.full((len(docs), max_len), PAD, dtype=torch.int64)
    for i, d in enumerate(docs):
        ids = [vocab.get(w, UNK) for w in d[:max_len]]
        if ids:
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def load_glove(path: Path, vocab: dict[str, int]) -> torch.Tensor:
    """(len(vocab) + 2, d) float32: GloVe rows for vocabulary words; zeros for padding/unknown/missing."""
    rows: dict[int, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            word, _, rest = line.partition(" ")
            if dim is not None and word not in vocab:
                continue  # only vocabulary rows are parsed: GloVe 6B holds 400k words
            try:
                vec = np.asarray(rest.split(), dtype=np.float32)
            except ValueError:
                _fail(path, f"line {n} is not '<word> <floats>'")
            if not len(vec):
                _fail(path, f"line {n} is not '<word> <floats>'")
            if dim is None:
                dim = len(vec)
            elif len(vec) != dim:
                _fail(path, f"line {n} has {len(vec)} numbers, expected {dim}")
            if word in vocab:
                rows[vocab[word]] = vec
    if dim is None:
        _fail(path, "holds no vector")
    table = np.zeros((len(vocab) + 2, dim), dtype=np.float32)
    for i, v in rows.items():
        table[i] = v
    return torch.from_numpy(table)


@dataset("20newsgroups", description="20 Newsgroups: token ids (1000 x 20k vocabulary), optional GloVe",
         task="text", num_classes=20, layout=LAYOUT, check=check)
def build_20newsgroups(root: Path, seed: int = 0, glove: str | None = None, max_len: int = 1000,
                       vocab_size: int = 20000, val_size: int = 900,
                       test_fraction: float = 0.2) -> DatasetBundle:
    """20 Newsgroups: seeded shuffle; last 20% test, `val_size` before that val, the rest train."""
    docs, labels, names = read_documents(root)
    n = len(docs)
    n_test = int(round(test_fraction * n))
    if n - n_test - val_size < 1:
        raise InputError(f"dataset '20newsgroups': {n} documents in {root} are too few for "
                         f"val_size {val_size} and test_fraction {test_fraction}")
    order = rng_for(seed, "20newsgroups").permutation(n)
    test = order[n - n_test:]
    val = order[n - n_test - val_size: n - n_test]
    train = order[: n - n_test - val_size]
    vocab = build_vocabulary([docs[i] for i in train], int(vocab_size))
    x = encode(docs, vocab, int(max_len))
    y = torch.from_numpy(labels)
    options = {"vocab_size": len(vocab) + 2, "padding_idx": PAD}
    path = _glove_path(root, glove)
    if path is not None:
        options["embeddings"] = load_glove(path, vocab)
    tds = lambda idx: TensorDataset(x[torch.from_numpy(idx)], y[torch.from_numpy(idx)])  # noqa: E731
    return DatasetBundle(
        name="20newsgroups", train=tds(train), val=tds(val), test=tds(test),
        num_classes=len(names), class_names=names, task="text", input_shape=(int(max_len),),
        split_indices={"train": train, "val": val, "test": test}, backbone_options=options,
    )
