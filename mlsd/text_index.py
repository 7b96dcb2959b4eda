"""The text branch of video search: the book's normalisation + tokenisation and an inverted
index with BM25, embedded (tantivy; k1 1.2, b 0.75).

Normalisation (ours, before tantivy): Unicode NFKD with accents stripped ("Noël" -> "Noel"),
lower case, every run of non-word characters (punctuation, control characters) to one space,
whitespace collapsed. Tokenisation + stemming: tantivy's ``en_stem`` analyser. User queries are
normalised the same way and become an OR of terms, so no query syntax reaches the parser:
quotes, colons or parentheses in a query cannot raise or change its meaning.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import numpy as np

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """'  Noël: the BEST-ever   video!! ' -> 'noel the best ever video'."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", stripped.lower()).strip()


class TextIndex:
    """An inverted index over documents with an integer id and some text fields."""

    def __init__(
        self,
        fields: Iterable[str] = ("title", "description", "tags"),
        tokenizer: str = "en_stem",
        path: str | None = None,
        boosts: dict[str, float] | None = None,
    ):
        import tantivy

        self.fields = list(fields)
        self.boosts = boosts or {}
        sb = tantivy.SchemaBuilder()
        sb.add_integer_field("id", stored=True, indexed=True, fast=True)
        for f in self.fields:
            sb.add_text_field(f, stored=False, tokenizer_name=tokenizer)
        self.schema = sb.build()
        self.index = tantivy.Index(self.schema, path=path) if path else tantivy.Index(self.schema)
        self._writer = None
        self._dirty = False

    @property
    def writer(self):
        if self._writer is None:
            self._writer = self.index.writer(heap_size=50_000_000, num_threads=1)
        return self._writer

    def add(self, doc_id: int, **texts: str) -> None:
        import tantivy

        unknown = set(texts) - set(self.fields)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; index has {self.fields}")
        doc = tantivy.Document()
        doc.add_integer("id", int(doc_id))
        for f, t in texts.items():
            if t:
                doc.add_text(f, normalise(t))
        self.writer.add_document(doc)
        self._dirty = True

    def delete(self, doc_id: int) -> None:
        self.writer.delete_documents_by_term("id", int(doc_id))
        self._dirty = True

    def commit(self) -> None:
        if self._dirty:
            self.writer.commit()
            self._dirty = False
        self.index.reload()

    def search(self, query: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(ids, BM25 scores), best first; an empty normalised query finds nothing."""
        if self._dirty:
            self.commit()
        words = normalise(query)
        if not words or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = self.index.parse_query(words, self.fields, field_boosts=self.boosts)
        searcher = self.index.searcher()
        hits = searcher.search(q, limit=int(k)).hits
        ids = np.array([searcher.doc(a)["id"][0] for _, a in hits], np.int64)
        return ids, np.array([s for s, _ in hits], np.float32)

    def __len__(self) -> int:
        if self._dirty:
            self.commit()
        return int(self.index.searcher().num_docs)
