"""The offline demo corpus: documentation text that ships with every CPython.

About 1.5 MB of English technical prose: the `pydoc_data` help topics (the language
reference as `help()` shows it) plus the docstrings of a fixed list of standard-library
modules. Needs no download and is identical for a given Python version and platform.
"""
from __future__ import annotations

import importlib
import inspect
import os
import warnings
from collections.abc import Iterator
from typing import Any

from lmzoo.tokenizers import Tokenizer

# Sorted; a module missing from a stripped-down Python build is skipped.
MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "binascii", "bisect", "builtins", "bz2",
    "calendar", "cmath", "cmd", "codecs", "collections", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis", "doctest",
    "email.message", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client",
    "http.cookies", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json",
    "locale", "logging", "lzma", "mailbox", "math", "mimetypes", "multiprocessing", "numbers",
    "operator", "optparse", "os", "pathlib", "pdb", "pickle", "plistlib", "pprint", "pstats", "queue",
    "random", "re", "reprlib", "sched", "secrets", "selectors", "shlex", "shutil", "signal", "smtplib",
    "socket", "socketserver", "sqlite3", "ssl", "statistics", "string", "struct", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "tokenize", "trace",
    "traceback", "types", "typing", "unittest", "unittest.mock", "urllib.parse", "urllib.request",
    "uuid", "warnings", "weakref", "xml.etree.ElementTree", "xmlrpc.client", "zipfile", "zlib",
)


def default_corpus_documents() -> Iterator[str]:
    """Yield the corpus: one document per help topic, then one per module."""
    yield from _help_topics()
    seen: set[str] = set()  # re-exported objects and inherited docstrings appear only once
    for name in MODULES:
        # Some stdlib names warn when touched (typing.io, ...); that is no concern of a reader.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
            except Exception:  # noqa: BLE001  any failure just means this build lacks the module
                continue
            document = _module_document(module, seen)
        if document:
            yield document


def prepare_default_corpus(out_dir: str | os.PathLike, tokenizer: str | os.PathLike | Tokenizer = "bytes",
                           **kwargs: Any) -> dict[str, Any]:
    """`prepare_dataset` on the default corpus; keyword arguments are passed through."""
    from lmzoo.data.prepare import prepare_dataset  # lazy: the prepare pipeline is not needed otherwise

    return prepare_dataset(default_corpus_documents, out_dir, tokenizer=tokenizer, **kwargs)


def _help_topics() -> Iterator[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions package the help topics separately
        return
    for key in sorted(topics):
        yield topics[key].strip() + "\n"


def _module_document(module: Any, seen: set[str]) -> str:
    """The module docstring, then `name: docstring` for its public classes, functions and methods."""
    sections: list[str] = []
    _add(sections, seen, f"module {module.__name__}", module)
    for name in sorted(dir(module)):
        obj = getattr(module, name, None)
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        qualified = f"{module.__name__}.{name}"
        _add(sections, seen, qualified, obj)
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):  # own members only, not inherited
                if not attr.startswith("_") and _is_documentable_member(member):
                    _add(sections, seen, f"{qualified}.{attr}", member)
    return "\n\n".join(sections) + "\n" if sections else ""


def _is_documentable_member(member: Any) -> bool:
    return inspect.isroutine(member) or isinstance(member, (property, classmethod, staticmethod))


def _add(sections: list[str], seen: set[str], title: str, obj: Any) -> None:
    doc = inspect.getdoc(obj)
    if doc and doc not in seen:
        seen.add(doc)
        sections.append(f"{title}\n{doc}")
