"""WordNet 3.0 noun synsets by offset, read from the database Debian's ``wordnet-base`` package
installs (``/usr/share/wordnet``; ``MLSD_WORDNET_DIR`` elsewhere).

ImageNet's class ids are WordNet 3.0 noun offsets ("n04557648" = water bottle), so a class's
hypernym ("bottle") is one seek away. The format is WordNet's ``wndb(5WN)``: a data line is
``offset lex_filenum ss_type w_cnt (word lex_id)* p_cnt (pointer_symbol offset pos src/tgt)*
... | gloss``, and an offset is the line's byte position in ``data.noun``. (NLTK's reader wants
a ``lexnames`` file that the Debian package does not ship.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIRS = ("/usr/share/wordnet",)
HYPERNYM = {"@", "@i"}  # hypernym, instance hypernym


class WordNetMissing(FileNotFoundError):
    pass


@dataclass(frozen=True)
class Synset:
    offset: int
    words: tuple[str, ...]  # lemmas, "_" -> " "
    hypernyms: tuple[int, ...]  # noun offsets
    gloss: str


def find_dir() -> Path:
    for d in filter(None, (os.environ.get("MLSD_WORDNET_DIR"), *DEFAULT_DIRS)):
        if (Path(d) / "data.noun").is_file():
            return Path(d)
    raise WordNetMissing(
        "WordNet's data.noun not found (apt-get install wordnet-base, or set MLSD_WORDNET_DIR)"
    )


class WordNetNouns:
    """Noun synsets by offset; the file stays open for the reader's lifetime."""

    def __init__(self, root: str | Path | None = None):
        self._f = open(Path(root or find_dir()) / "data.noun", "rb")  # noqa: SIM115

    def synset(self, offset: int) -> Synset:
        self._f.seek(offset)
        line = self._f.readline().decode("utf-8")
        data, _, gloss = line.partition(" | ")
        parts = data.split()
        if not parts or int(parts[0]) != offset:
            raise KeyError(f"no noun synset at offset {offset}")
        n_words = int(parts[3], 16)
        words = tuple(parts[4 + 2 * i].replace("_", " ") for i in range(n_words))
        at = 4 + 2 * n_words
        n_ptrs = int(parts[at])
        ptrs = parts[at + 1 : at + 1 + 4 * n_ptrs]
        hyper = tuple(
            int(ptrs[4 * j + 1])
            for j in range(n_ptrs)
            if ptrs[4 * j] in HYPERNYM and ptrs[4 * j + 2] == "n"
        )
        return Synset(offset, words, hyper, gloss.strip())

    def hypernym_names(self, offset: int) -> list[str]:
        """The first lemma of each direct hypernym ("water bottle" -> ["bottle"])."""
        return [self.synset(h).words[0] for h in self.synset(offset).hypernyms]

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> WordNetNouns:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
