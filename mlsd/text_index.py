"""The text branch of video search: the book's normalisation + tokenisation and an inverted
index with BM25, embedded (tantivy; k1 1.2, b 0.75).

Normalisation (ours, before tantivy): Unicode NFKD with accents stripped ("Noël" -> "Noel"),
lower case, every run of non-word characters (punctuation, control characters) to one space,
whitespace collapsed. Tokenisation: tantivy analysers, registered by us so that the query side
runs the very same one: ``english`` (the default; any language with a tantivy stemmer works) =
words, lower case, stemmed; the language's stop words (where tantivy has a list) are not
content: a document must match at least one content term of the query, so a match on
function words alone is not a match, and a query made only of stop words matches nothing
(stop words still add their small BM25 weight to documents that match otherwise, as in plain
BM25). ``en_stem`` = the same with every word content; ``default`` = words, lower case. User
queries become term queries built by us, so no query syntax reaches a parser: quotes, colons
or parentheses in a query cannot raise or change its meaning.

Besides BM25, :meth:`TextIndex.search_with_coverage` says how much of the query a hit matches:
the IDF-weighted share of the query's terms found in the document (1 = every term, 0.2 = only
a common one). BM25 ranks within the branch; coverage is a strength that fusion can compare
across queries and branches (BM25's scale depends on the query and the collection).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import numpy as np
import tantivy
from tantivy import Filter, Occur, Query, TextAnalyzerBuilder, Tokenizer

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
STOP_WORD_LANGUAGES = {  # tantivy's built-in stop word lists
    "danish", "dutch", "english", "finnish", "french", "german", "hungarian", "italian",
    "norwegian", "portuguese", "russian", "spanish", "swedish",
}  # fmt: skip
BUILTIN = {"default": (False, None), "en_stem": (False, "english")}  # (stop words, stemmer)


def analyzer(name: str, stop_words: bool = True):
    """A tantivy TextAnalyzer: ``default``, ``en_stem`` or a language name (stop words where
    tantivy has a list for it and ``stop_words``, and its stemmer)."""

    stop, stem = BUILTIN.get(name, (name in STOP_WORD_LANGUAGES and stop_words, name))
    b = TextAnalyzerBuilder(Tokenizer.simple()).filter(Filter.remove_long(40))
    b = b.filter(Filter.lowercase())
    if stop:
        b = b.filter(Filter.stopword(name))
    if stem:
        try:
            b = b.filter(Filter.stemmer(stem))
        except ValueError as e:
            raise ValueError(f"no tantivy analyser for {name!r}: {e}") from None
    return b.build()


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
        tokenizer: str = "english",
        path: str | None = None,
        boosts: dict[str, float] | None = None,
    ):

        self.fields = list(fields)
        self.boosts = boosts or {}
        self.analyzer = analyzer(tokenizer, stop_words=False)  # documents
        self.query_analyzer = analyzer(tokenizer)  # queries: stop words dropped
        name = f"mlsd_{tokenizer}"
        sb = tantivy.SchemaBuilder()
        sb.add_integer_field("id", stored=True, indexed=True, fast=True)
        for f in self.fields:  # stored: coverage re-reads a hit's words
            sb.add_text_field(f, stored=True, tokenizer_name=name)
        self.schema = sb.build()
        self.index = tantivy.Index(self.schema, path=path) if path else tantivy.Index(self.schema)
        self.index.register_tokenizer(name, self.analyzer)
        self._writer = None
        self._dirty = False

    @property
    def writer(self):
        if self._writer is None:
            self._writer = self.index.writer(heap_size=50_000_000, num_threads=1)
        return self._writer

    def add(self, doc_id: int, **texts: str) -> None:

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

    def terms(self, text: str) -> list[str]:
        """A query's content terms (normalised, analysed, stop words dropped), in order."""
        return self.query_analyzer.analyze(normalise(text))

    def _query(self, words: str, content: list[str]):
        """BM25 over every term of the query, stop words included (they still weigh, a little,
        as in plain BM25), but a document must match at least one content term."""

        def clauses(terms):
            out = []
            for t in dict.fromkeys(terms):  # distinct, in order
                for f in self.fields:
                    q = Query.term_query(self.schema, f, t, index_option="freq")
                    boost = self.boosts.get(f, 1.0)
                    out.append((Occur.Should, Query.boost_query(q, boost) if boost != 1 else q))
            return out

        content_set = set(content)
        stop = [t for t in self.analyzer.analyze(words) if t not in content_set]
        must = (Occur.Must, Query.boolean_query(clauses(content)))
        return Query.boolean_query([must, *clauses(stop)])

    def _hits(self, query: str, k: int):
        if self._dirty:
            self.commit()
        words = normalise(query)
        terms = self.query_analyzer.analyze(words)  # = self.terms(query)
        if not terms or k <= 0:
            return terms, None, []
        searcher = self.index.searcher()
        return terms, searcher, searcher.search(self._query(words, terms), limit=int(k)).hits

    def search(self, query: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(ids, BM25 scores), best first; a query with no terms (empty, or only stop words)
        finds nothing."""
        _, searcher, hits = self._hits(query, k)
        ids = np.array([searcher.doc(a)["id"][0] for _, a in hits], np.int64)
        return ids, np.array([s for s, _ in hits], np.float32)

    def idf(self, terms: list[str], searcher=None) -> np.ndarray:
        """BM25's idf per term, from the largest document frequency over the fields."""
        searcher = searcher or self.index.searcher()
        n = max(int(searcher.num_docs), 1)
        df = np.array([max(searcher.doc_freq(f, t) for f in self.fields) for t in terms], float)
        return np.log1p((n - df + 0.5) / (df + 0.5))

    def search_with_coverage(
        self, query: str, k: int = 10
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, BM25 scores, coverage in [0, 1]), in BM25 order."""
        terms, searcher, hits = self._hits(query, k)
        if not hits:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
        q = list(dict.fromkeys(terms))
        w = self.idf(q, searcher)
        ids, cov = [], []
        for _, a in hits:
            doc = searcher.doc(a)
            have = set()
            for f in self.fields:
                for text in doc.get_all(f):
                    have.update(self.analyzer.analyze(text))
            ids.append(doc["id"][0])
            cov.append(float(w[[t in have for t in q]].sum() / max(w.sum(), 1e-12)))
        return (
            np.array(ids, np.int64),
            np.array([s for s, _ in hits], np.float32),
            np.array(cov, np.float32),
        )

    def __len__(self) -> int:
        if self._dirty:
            self.commit()
        return int(self.index.searcher().num_docs)
