"""Data: reading text, tokenising it into token files, and batching those files."""
from lmzoo.data.dataset import TokenDataset, read_meta
from lmzoo.data.default_corpus import default_corpus_documents, prepare_default_corpus
from lmzoo.data.prepare import prepare_dataset
from lmzoo.data.sentences import count_words, split_sentences
from lmzoo.data.sources import iter_documents, iter_pieces
from lmzoo.data.wiki_dump import clean_wikitext, extract_wiki_dump

__all__ = [
    "TokenDataset",
    "clean_wikitext",
    "count_words",
    "default_corpus_documents",
    "extract_wiki_dump",
    "iter_documents",
    "iter_pieces",
    "prepare_dataset",
    "prepare_default_corpus",
    "read_meta",
    "split_sentences",
]
