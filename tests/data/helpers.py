"""Shared pieces of the data tests: a config for a local source, every document of a corpus."""

from __future__ import annotations

from zonkey.core.recipe import DataConfig
from zonkey.data import Corpus


def local_cfg(path, **kw) -> DataConfig:
    return DataConfig(source=str(path), max_doc_bytes=kw.pop("max_doc_bytes", 16),
                      batch_bytes=kw.pop("batch_bytes", 64), **kw)


def all_docs(corpus: Corpus) -> list[bytes]:
    return sorted(corpus.documents("train") + corpus.documents("heldout"))
