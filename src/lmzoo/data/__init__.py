"""Data: reading text, tokenising it into token files, and batching those files."""
from lmzoo.data.dataset import TokenDataset, read_meta
from lmzoo.data.default_corpus import default_corpus_documents, prepare_default_corpus
from lmzoo.data.prepare import prepare_dataset
from lmzoo.data.sources import iter_documents, iter_pieces

__all__ = [
    "TokenDataset",
    "default_corpus_documents",
    "iter_documents",
    "iter_pieces",
    "prepare_dataset",
    "prepare_default_corpus",
    "read_meta",
]
