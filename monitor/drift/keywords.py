"""Top keywords per cluster by class-based TF-IDF (c-TF-IDF, as in BERTopic).

Why c-TF-IDF: each cluster's texts are joined into one document and weighed against every other
cluster *and* the unclustered background, so a cluster's keywords are the words that set it apart
from the rest of unsafe-looking traffic, not the words unsafe prompts share ("how", "make").

Weight of term ``t`` in class ``c``: ``tf(t, c) / |c| * log(1 + A / f(t))`` where ``|c|`` is the
number of words in class ``c``, ``A`` the average number of words per class and ``f(t)`` the
count of ``t`` over all classes.

>>> docs = {
...     "c1": ["download the film torrent", "torrent of the new film", "free film download"],
...     "c2": ["poison the neighbour's dog", "hurt a dog quietly"],
...     "background": ["how do I bake bread", "make bread at home"],
... }
>>> top = class_tfidf_keywords(docs, top_k=2)
>>> top["c1"], top["c2"]
(['film', 'download'], ['dog', 'hurt'])
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer


def class_tfidf_keywords(docs_by_class: Mapping[str, Sequence[str]], top_k: int = 8) -> dict[str, list[str]]:
    """The ``top_k`` highest-weighted terms of each class (ties broken alphabetically).

    Classes with no usable words (empty, or only stop words) get an empty list.
    """
    names = list(docs_by_class)
    joined = [" ".join(docs_by_class[name]) for name in names]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b", lowercase=True)
    try:
        counts = vectorizer.fit_transform(joined).toarray().astype(np.float64)
    except ValueError:  # no vocabulary at all
        return {name: [] for name in names}
    words = vectorizer.get_feature_names_out()
    class_words = counts.sum(axis=1, keepdims=True)
    tf = np.divide(counts, class_words, out=np.zeros_like(counts), where=class_words > 0)
    idf = np.log1p(class_words.mean() / counts.sum(axis=0))
    weights = tf * idf
    order = np.argsort(words, kind="stable")  # alphabetical tie-break, then stable sort by weight
    out: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        ranked = order[np.argsort(-weights[i, order], kind="stable")]
        out[name] = [str(words[j]) for j in ranked[:top_k] if weights[i, j] > 0]
    return out
