"""Encoder backends on a tiny randomly initialised BERT (fast): export, cache, errors, parity, pairs.

The real model's parity and the service on each backend are in test_embed_backends_real.py (slow).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from transformers import BertConfig, BertModel, BertTokenizerFast  # noqa: E402

from monitor.embed.backends import EncoderBackend, OnnxBackend, clip_segments, make_backend, tokenize  # noqa: E402
from monitor.embed.embedder import Embedder  # noqa: E402
from monitor.embed.activation_ranges import calibration_digest  # noqa: E402
from monitor.embed.onnx_export import ExportedModelError, cache_key, export_onnx  # noqa: E402

WORDS = [f"w{i}" for i in range(90)]
TEXTS = [" ".join(WORDS[(7 * i + j) % 90] for j in range(n)) for i, n in enumerate([1, 3, 12, 40, 5, 90, 2, 17])]
PAIRS = [" ".join(WORDS[(3 * i + j) % 90] for j in range(n)) for i, n in enumerate([4, 1, 20, 2, 60, 9, 30, 1])]


def tiny_model(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return BertModel(config, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BertTokenizerFast:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


@pytest.fixture(scope="module")
def model() -> BertModel:
    return tiny_model()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_export_is_deterministic(model, tokenizer, tmp_path):
    for quantize in (False, True):
        first = export_onnx(model, tokenizer, tmp_path / f"a{quantize}", quantize=quantize)
        second = export_onnx(tiny_model(), tokenizer, tmp_path / f"b{quantize}", quantize=quantize)  # same weights, new object
        assert (first / "model.onnx").read_bytes() == (second / "model.onnx").read_bytes()
        assert (first / "manifest.json").read_text() == (second / "manifest.json").read_text()
    assert cache_key(model, "onnx-int8") == cache_key(tiny_model(), "onnx-int8")
    assert cache_key(model, "onnx-int8") != cache_key(tiny_model(seed=1), "onnx-int8")  # other weights, other folder
    assert cache_key(model, "onnx-int8") != cache_key(model, "onnx-fp32")


def test_in_memory_model_exports_once_and_matches_torch(model, tokenizer, cache):
    reference = make_backend("torch", model, tokenizer, device="cpu")
    fp32 = make_backend("onnx-fp32", model, tokenizer, cache_dir=cache)
    int8 = make_backend("onnx-int8", model, tokenizer, cache_dir=cache)
    for backend in (reference, fp32, int8):
        assert isinstance(backend, EncoderBackend)
        assert backend.dimension == 32
    assert (fp32.name, int8.name) == ("onnx-fp32", "onnx-int8")
    expected = reference.pooled(TEXTS)
    assert expected.shape == (len(TEXTS), 32) and expected.dtype == np.float32
    np.testing.assert_allclose(fp32.pooled(TEXTS), expected, atol=1e-4)
    assert cosine(int8.pooled(TEXTS), expected).min() > 0.95  # a random tiny model quantizes worse than MiniLM
    folders = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert len(folders) == 2
    make_backend("onnx-int8", model, tokenizer, cache_dir=cache)  # loaded from the cache, not exported again
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == folders


def test_an_int8_vector_does_not_depend_on_the_texts_sharing_its_pass(model, tokenizer, cache):
    """Activation ranges are fixed at export: live batches (formed by arrival time) and a replay's
    batches give every text the same vector, so the same verdicts and alerts."""
    int8 = make_backend("onnx-int8", model, tokenizer, cache_dir=cache)
    batched = int8.pooled(TEXTS, PAIRS)
    alone = np.concatenate([int8.pooled([t], [p]) for t, p in zip(TEXTS, PAIRS)])
    np.testing.assert_allclose(batched, alone, atol=1e-6)
    np.testing.assert_allclose(int8.pooled(TEXTS[:3]), int8.pooled(TEXTS)[:3], atol=1e-6)
    graph = (Path(int8.folder) / "model.onnx").read_bytes()
    assert b"DynamicQuantizeLinear" not in graph and b"QuantizeLinear" in graph
    assert json.loads((Path(int8.folder) / "manifest.json").read_text())["calibration_sha256"] == calibration_digest()


def test_exported_graphs_carry_the_cpu_rewrites(model, tokenizer, cache):
    """The skip layer norms are split and int8's integer products fused (``graph_rewrites``): an
    export that lost either step would still run, only slower, so only this notices."""
    import onnx

    for kind in ("onnx-fp32", "onnx-int8"):
        ops = {node.op_type for node in onnx.load(str(make_backend(kind, model, tokenizer, cache_dir=cache).folder / "model.onnx")).graph.node}
        assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops, (kind, ops)
        assert ("MatMulIntegerToFloat" in ops and "MatMulInteger" not in ops) == (kind == "onnx-int8"), (kind, ops)


def test_pairs_use_token_types_on_every_backend(model, tokenizer, cache):
    reference = make_backend("torch", model, tokenizer, device="cpu")
    fp32 = make_backend("onnx-fp32", model, tokenizer, cache_dir=cache)
    paired = reference.pooled(TEXTS, PAIRS)
    np.testing.assert_allclose(fp32.pooled(TEXTS, PAIRS), paired, atol=1e-4)
    assert not np.allclose(paired, reference.pooled(TEXTS), atol=1e-3)
    lengths = reference.tokenize(TEXTS, PAIRS).lengths
    assert lengths == fp32.tokenize(TEXTS, PAIRS).lengths
    assert lengths[0] == 1 + 4 + 3  # [CLS] w [SEP] w w w w [SEP]
    with pytest.raises(ValueError, match="pairs"):
        reference.pooled(TEXTS, PAIRS[:2])


def test_no_texts_give_no_rows_on_every_backend(model, tokenizer, cache):
    for backend in (make_backend("torch", model, tokenizer, device="cpu"), make_backend("onnx-fp32", model, tokenizer, cache_dir=cache)):
        assert backend.pooled([]).shape == (0, 32)
        assert backend.tokenize([]).lengths == []


def test_tokenizer_calls_never_overlap_across_threads(model, tokenizer):
    """A fast tokenizer's truncation setting is state on the object (pairs are clipped untruncated, then
    tokenized truncated): two threads inside it at once could tokenize past the model's length. An
    Embedder may be shared by threads, so the calls must be serialised."""
    inside, seen = [0], []
    count = threading.Lock()

    class Watching:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, *args, **kwargs):
            with count:
                inside[0] += 1
                seen.append(inside[0])
            time.sleep(0.002)
            try:
                return tokenizer(*args, **kwargs)
            finally:
                with count:
                    inside[0] -= 1

    backend = make_backend("torch", model, Watching(), max_seq_length=8, device="cpu")
    lengths: list[int] = []

    def work(i: int) -> None:
        for _ in range(10):
            tokens = backend.tokenize(TEXTS, PAIRS) if i % 2 else backend.tokenize(TEXTS)
            lengths.extend(tokens.lengths)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(seen) == 1 and len(seen) >= 60  # every call alone (pairs make two calls each)
    assert max(lengths) == 8


def test_a_length_off_the_onnx_bucket_still_encodes(model, tokenizer, cache):
    """ONNX passes pad to a multiple of 8 tokens; a max_seq_length that is not one (13 here; 100 in a
    config) must still encode, padded no further than the limit, as torch does, long texts included.
    Asking the tokenizer to pad to a multiple past its truncation length raised on every batch."""
    reference = Embedder(model="tiny", encoder=make_backend("torch", model, tokenizer, max_seq_length=13, device="cpu"))
    fp32 = Embedder(model="tiny", encoder=make_backend("onnx-fp32", model, tokenizer, max_seq_length=13, cache_dir=cache))
    assert max(fp32.token_lengths(TEXTS)) == 13
    np.testing.assert_allclose(fp32.encode(TEXTS), reference.encode(TEXTS), atol=1e-4)


def test_embedder_normalises_and_plans_passes_on_any_backend(model, tokenizer, cache):
    for backend in (make_backend("torch", model, tokenizer, device="cpu"), make_backend("onnx-int8", model, tokenizer, cache_dir=cache)):
        embedder = Embedder(model="tiny", encoder=backend)
        revision = {} if backend.name == "torch" else {"revision": f"bert-eager-fused-v1+cpu-rewrites-v1+static-ranges-v1+cal-{calibration_digest()[:12]}"}
        assert embedder.info.backend == backend.name and embedder.info.identity == {"model": "tiny", "backend": backend.name} | revision
        whole = embedder.encode(TEXTS, batch_size=64)
        np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(embedder.encode(TEXTS, batch_size=1), whole, atol=1e-5)  # grouping does not change vectors
        assert embedder.encode([]).shape == (0, 32)


def test_missing_or_corrupt_export_names_the_path_and_the_rebuild_command(model, tokenizer, tmp_path):
    folder = export_onnx(model, tokenizer, tmp_path / "export", quantize=True)
    with pytest.raises(ExportedModelError, match=r"monitor model export") as missing:
        OnnxBackend(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(missing.value)

    model_file = folder / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ExportedModelError, match="corrupt") as corrupt:
        OnnxBackend(folder)
    assert str(model_file) in str(corrupt.value) and "monitor model export" in str(corrupt.value)

    model_file.unlink()
    with pytest.raises(ExportedModelError, match="missing") as gone:
        OnnxBackend(folder)
    assert str(model_file) in str(gone.value)

    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "recipe": "old"}))
    with pytest.raises(ExportedModelError, match="recipe"):
        OnnxBackend(folder)


def test_a_broken_cache_folder_is_reported_not_silently_replaced(model, tokenizer, tmp_path):
    backend = make_backend("onnx-fp32", model, tokenizer, cache_dir=tmp_path)
    (backend.folder / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportedModelError, match=str(backend.folder)):
        make_backend("onnx-fp32", model, tokenizer, cache_dir=tmp_path)


def test_unknown_backend_and_in_memory_model_without_tokenizer_are_refused(model):
    with pytest.raises(ValueError, match="onnx-int8"):
        make_backend("tensorrt", model)
    with pytest.raises(ValueError, match="tokenizer"):
        make_backend("torch", model)


def test_a_length_past_the_model_positions_is_refused_before_anything_is_built(model, tokenizer, tmp_path):
    # BERT has 512 positions: a longer max_seq_length would load, then fail on every long text at inference.
    for kind in ("torch", "onnx-int8"):
        with pytest.raises(ValueError, match=r"max_seq_length 513 .* 512 token positions.*embedding_max_seq_length"):
            make_backend(kind, model, tokenizer, max_seq_length=513, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # refused before exporting
    assert make_backend("torch", model, tokenizer, max_seq_length=512).max_seq_length == 512


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="thread niceness is read from /proc (Linux)")
def test_onnx_threads_started_by_the_worker_take_its_niceness(model, tokenizer, cache):
    """ONNX Runtime starts its thread pool with each session: the worker's session is its own, so
    those threads are children of the worker thread and inherit ``worker_nice``, as torch's do."""
    import threading

    from monitor.config import Settings
    from monitor.pipeline.builder import build_service
    from tests.helpers.server import running_server
    from tests.test_worker_priority import thread_nices

    embedder = Embedder(model="tiny", encoder=make_backend("onnx-int8", model, tokenizer, cache_dir=cache, threads=2))
    before = thread_nices()
    with running_server(Settings(judge="prototype", worker_nice=7), lambda s: build_service(s, embedder=embedder)) as srv:
        assert srv.client.post("/v1/events", json=[{"prompt": " ".join(WORDS[i : i + 5])} for i in range(20)]).status_code == 202
        srv.wait_processed()
        [worker] = [t for t in threading.enumerate() if t.name.startswith("monitor-worker")]
        after = thread_nices()
        assert after[worker.native_id] == 7
        started = {tid for tid in after if tid not in before and after[tid] == 7} - {worker.native_id}
        assert len(started) >= 1  # the session's intra-op pool (2 threads: the caller and one more)
        assert after[threading.get_native_id()] == 0


def test_model_export_command_builds_the_folder_the_service_loads(model, tokenizer, tmp_path):
    """A model folder on disk and the same weights in memory share one cache folder."""
    from typer.testing import CliRunner

    from monitor.cli import app

    folder = tmp_path / "tiny-model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cache = tmp_path / "cache"
    result = CliRunner().invoke(app, ["model", "export", "--backend", "all", "--model", str(folder), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    built = {kind: Path(path) for kind, path in re.findall(r"(onnx-int8|onnx-fp32): (\S+)", result.output)}
    assert built == {kind: cache / cache_key(model, kind) for kind in ("onnx-int8", "onnx-fp32")}
    (built["onnx-int8"] / "model.onnx").write_bytes(b"damaged")
    with pytest.raises(ExportedModelError, match="corrupt"):
        make_backend("onnx-int8", str(folder), cache_dir=cache)  # the service refuses a broken export...
    repaired = CliRunner().invoke(app, ["model", "export", "--model", str(folder), "--cache-dir", str(cache)])
    assert repaired.exit_code == 0, repaired.output  # ...and the command it names rebuilds it
    backend = make_backend("onnx-int8", str(folder), cache_dir=cache)  # found in the cache: the folder's tokenizer, no export
    assert backend.folder == built["onnx-int8"]
    reference = make_backend("torch", model, tokenizer, device="cpu").pooled(TEXTS)
    assert cosine(backend.pooled(TEXTS), reference).min() > 0.95


def test_pair_segments_are_clipped_before_truncation_without_changing_a_token(tokenizer):
    """Pair truncation is quadratic in the segments' length in the fast tokenizer; clipping each side first
    must keep exactly the tokens (and token types) the tokenizer's own truncation keeps, ties included."""
    sizes = [0, 3, 7, 8, 9, 15, 16, 17, 30, 200]
    texts = [" ".join(WORDS[(i + j) % 90] for j in range(a)) for i, a in enumerate(sizes) for b in sizes]
    pairs = [" ".join(WORDS[(5 * i + j) % 90] for j in range(b)) for i, a in enumerate(sizes) for b in sizes]
    for max_len in (8, 16, 33):
        tokens = tokenize(tokenizer, texts, pairs, max_len)
        theirs = tokenizer(texts, pairs, truncation=True, max_length=max_len, padding=True, return_token_type_ids=True)
        ours = {k: v.tolist() for k, v in tokens.padded().items()}  # padded here, as the tokenizer pads
        assert ours == {k: theirs[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        assert tokens.lengths == [sum(m) for m in theirs["attention_mask"]]
        rows = [7, 0, 55]  # one pass's rows: padded to their own longest, rounded up to 8 but not past the limit
        bucket = 8 if max_len % 8 == 0 else None  # the tokenizer refuses to round past its truncation length
        theirs = tokenizer([texts[i] for i in rows], [pairs[i] for i in rows], truncation=True, max_length=max_len,
                           padding="max_length" if bucket is None else True, pad_to_multiple_of=bucket, return_token_type_ids=True)
        ours = {k: v.tolist() for k, v in tokens.padded(rows, multiple=8, limit=max_len).items()}
        assert ours == {k: theirs[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    huge = " ".join(WORDS * 500)  # 45,000 tokens a side: what the tokenizer would truncate token by token
    a, b = clip_segments(tokenizer, [huge], [huge + " w1"], 16)
    assert (len(a[0].split()), len(b[0].split())) == (16, 17)  # the longer side keeps the odd token
    assert clip_segments(tokenizer, [huge], None, 16) == ([huge], None)  # single texts truncate in linear time: untouched



ISOLATION_SCRIPT = """
import json, sys
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast
from monitor.embed.backends import make_backend
torch.manual_seed(0)
model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64), add_pooling_layer=False).eval()
backend = make_backend("onnx-int8", model, BertTokenizerFast(vocab_file=sys.argv[2]), cache_dir=sys.argv[1])
print(json.dumps({"dimension": backend.dimension, "exporter_imported": any(
    m.startswith(("onnxruntime.transformers", "onnxruntime.quantization", "onnx.")) or m == "onnx" for m in sys.modules)}))
"""


def test_the_export_runs_in_a_child_so_the_serving_process_never_holds_the_exporters(tmp_path):
    # The exporters (onnx, onnxruntime's fusion and quantization) take far more memory than serving
    # and a process keeps it: a first start must build its model in a child and only load the result.
    import subprocess
    import sys

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    out = subprocess.run([sys.executable, "-c", ISOLATION_SCRIPT, str(tmp_path / "cache"), str(vocab)],
                         capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"dimension": 32, "exporter_imported": False}
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 1


class _Payload:
    """A stand-in model whose unpickling, in the export child, runs ``action(*args)``."""

    def __init__(self, action, *args) -> None:
        self.action, self.args = action, args

    def parameters(self):
        return iter(())

    def __reduce__(self):
        return self.action, self.args


def test_a_child_that_dies_or_hangs_becomes_a_clear_error_and_leaves_no_work_folder(tokenizer, tmp_path):
    import os
    import time

    from monitor.embed.onnx_export import export_in_child

    with pytest.raises(ExportedModelError, match=r"died \(exit code 9\).*1.6 GB.*monitor model export"):
        export_in_child(_Payload(os._exit, 9), tokenizer, tmp_path / "died", quantize=False)
    with pytest.raises(ExportedModelError, match=r"ran over 3 s and was stopped"):
        export_in_child(_Payload(time.sleep, 60), tokenizer, tmp_path / "hung", quantize=False, timeout_s=3)
    assert list(tmp_path.iterdir()) == []


def test_an_export_error_in_the_child_comes_back_with_its_type_and_the_model_stays_unshared(model, tokenizer, tmp_path):
    from monitor.embed.onnx_export import export_in_child

    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        export_in_child(model, tokenizer, tmp_path / "taken", quantize=False)
    folder = export_in_child(model, tokenizer, tmp_path / "fresh", quantize=False)
    assert (folder / "model.onnx").is_file()
    # Sent as bytes, not through multiprocessing's tensor sharing (which fills /dev/shm, 64 MB in containers).
    assert not any(p.is_shared() for p in model.parameters())
    assert folder.stat().st_mode & 0o777 == 0o755  # readable by the user an image serves as


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="thread CPU time is read from /proc (Linux)")
def test_onnx_threads_do_not_spin_after_a_run(model, tokenizer, cache):
    """A batch's runs (one per pass) are followed by the judge and the detectors, or at light load by
    nothing: the session's pool threads must go to sleep when a run returns, not spin on a core for the
    next one (by default ONNX Runtime's threads spin for tens of milliseconds of CPU after each run on
    this project's VMs; how long depends on the CPU, so the session's setting is checked as well)."""
    import os

    from bench.light_load_cpu import cpu_seconds

    def pool_cpu(tids: set[str]) -> float:
        return sum(cpu_seconds(Path(f"/proc/self/task/{tid}/stat")) for tid in tids)

    before = set(os.listdir("/proc/self/task"))
    backend = make_backend("onnx-int8", model, tokenizer, cache_dir=cache, threads=2)
    pool = set(os.listdir("/proc/self/task")) - before
    assert pool, "the session started no pool thread"
    assert backend._session().get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
    texts = [" ".join(WORDS[i : i + 40]) for i in range(50)] * 4
    for _ in range(3):
        backend.pooled(texts)
        spent = pool_cpu(pool)
        time.sleep(0.3)
        assert pool_cpu(pool) - spent < 0.02
