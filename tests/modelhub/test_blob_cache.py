"""The node cache (modelhub/blob_cache.py): atomic fill, sha256 check, LRU eviction at the cap,
several real processes filling it at once (RELIABILITY.md A13: damaged bytes are never used)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path
from typing import IO

import pytest

from modelhub.blob_cache import BlobCache, CacheError, Corrupt

KB = 1024


def _content(key: str, size: int = KB) -> bytes:
    return (hashlib.sha256(key.encode()).digest() * (size // 32 + 1))[:size]


def _sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _writer(blob: bytes):
    def fetch(out: IO[bytes]) -> None:
        out.write(blob)
    return fetch


def _leftovers(cache: BlobCache) -> list[Path]:
    return list(cache.tmp.glob("*")) if cache.tmp.exists() else []


def test_a_fill_that_dies_halfway_leaves_no_entry_and_the_next_use_fetches_it_whole(tmp_path: Path) -> None:
    cache, blob = BlobCache(tmp_path, 10 * KB), _content("m")

    def dies(out: IO[bytes]) -> None:
        out.write(blob[:100])
        raise ConnectionError("bucket went away mid-download")

    with pytest.raises(ConnectionError):
        cache.path("variants/abc/model.onnx", _sha(blob), dies)
    assert not (tmp_path / "entries" / "variants" / "abc" / "model.onnx").exists()
    assert _leftovers(cache) == []
    path = cache.path("variants/abc/model.onnx", _sha(blob), _writer(blob))
    assert path.read_bytes() == blob and path == tmp_path / "entries" / "variants" / "abc" / "model.onnx"


def test_fetched_bytes_that_do_not_match_their_sha256_are_refused_and_not_kept(tmp_path: Path) -> None:
    """A13: a damaged object is refused at fill; nothing of it stays in the cache."""
    cache, blob = BlobCache(tmp_path, 10 * KB), _content("m")
    with pytest.raises(Corrupt, match="do not match"):
        cache.read("k/model.onnx", _sha(blob), _writer(blob[:-1] + b"x"))
    assert cache.total_bytes() == 0 and _leftovers(cache) == []


def test_a_cached_copy_damaged_on_disk_is_noticed_at_use_and_fetched_again(tmp_path: Path) -> None:
    cache, blob = BlobCache(tmp_path, 10 * KB), _content("m")
    path = cache.path("k/model.onnx", _sha(blob), _writer(blob))
    path.write_bytes(b"\0" * len(blob))  # same size, other bytes
    fetched: list[int] = []

    def fetch(out: IO[bytes]) -> None:
        fetched.append(1)
        out.write(blob)

    assert cache.read("k/model.onnx", _sha(blob), fetch)[0] == blob
    assert fetched == [1] and path.read_bytes() == blob
    assert cache.read("k/model.onnx", _sha(blob), fetch)[0] == blob and fetched == [1]  # a hit fetches nothing


def test_least_recently_used_entries_are_evicted_above_the_cap(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, 3 * KB, grace_s=0)
    paths = {}
    for key in ("a", "b", "c"):
        blob = _content(key)
        paths[key] = cache.path(f"{key}/f", _sha(blob), _writer(blob))
    for age, key in enumerate(("b", "a", "c")):  # b is the least recently used, then a
        os.utime(paths[key], (time.time() - 100 + age, time.time() - 100 + age))
    cache.path("a/f", _sha(_content("a")), _writer(b""))  # a hit: a becomes the most recently used
    blob = _content("d")
    cache.path("d/f", _sha(blob), _writer(blob))
    assert not paths["b"].exists()
    assert all(paths[key].exists() for key in ("a", "c")) and cache.total_bytes() == 3 * KB
    blob = _content("e")
    cache.path("e/f", _sha(blob), _writer(blob))
    assert not paths["c"].exists() and paths["a"].exists() and cache.total_bytes() == 3 * KB


def test_entries_used_within_the_grace_period_are_kept_even_above_the_cap(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, 1 * KB, grace_s=60)
    first = cache.path("a/f", _sha(_content("a")), _writer(_content("a")))
    cache.path("b/f", _sha(_content("b")), _writer(_content("b")))
    assert first.exists() and cache.total_bytes() == 2 * KB


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", "a//b", ""])
def test_a_key_that_is_not_a_plain_relative_path_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(CacheError):
        BlobCache(tmp_path, KB).path(key, "0" * 64, _writer(b""))


# --- several real processes -----------------------------------------------------------------------


def _fill_in_child(root: str, keys: list[str], cap: int, log: str, results: str) -> None:
    """A child process: read ``keys`` through the cache; each fetch is logged, slowly written."""
    cache = BlobCache(Path(root), cap, grace_s=0)
    for key in keys:
        blob = _content(key, 4 * KB)

        def fetch(out: IO[bytes], key: str = key, blob: bytes = blob) -> None:
            with open(log, "a") as handle:
                handle.write(key + "\n")
            for start in range(0, len(blob), KB):  # slowly, so that fills overlap
                out.write(blob[start:start + KB])
                time.sleep(0.02)

        got, _ = cache.read(key, _sha(blob), fetch)
        with open(results, "a") as handle:
            handle.write(f"{key} {'ok' if got == blob else 'WRONG'}\n")


def _run_children(tmp_path: Path, plans: list[list[str]], cap: int) -> tuple[list[str], list[str]]:
    log, results = tmp_path / "fetches.log", tmp_path / "results.log"
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_fill_in_child, args=(str(tmp_path / "cache"), keys, cap, str(log), str(results)))
                for keys in plans]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    return log.read_text().split(), results.read_text().splitlines()


def test_several_processes_filling_one_key_at_once_fetch_it_once_and_all_read_it_whole(tmp_path: Path) -> None:
    fetches, results = _run_children(tmp_path, [["variants/x/model.onnx"]] * 4, cap=1024 * KB)
    assert fetches == ["variants/x/model.onnx"]
    assert results == ["variants/x/model.onnx ok"] * 4
    assert _leftovers(BlobCache(tmp_path / "cache", KB)) == []


def test_several_processes_filling_many_keys_under_a_small_cap_stay_correct_and_within_the_cap(tmp_path: Path) -> None:
    keys = [f"k{i}/f" for i in range(8)]
    plans = [keys, keys[::-1], keys[2:] + keys[:2], keys[5:] + keys[:5]]
    _, results = _run_children(tmp_path, plans, cap=12 * KB)  # room for 3 of the 4 KB entries
    assert len(results) == 32 and all(line.endswith(" ok") for line in results)
    cache = BlobCache(tmp_path / "cache", 12 * KB)
    assert cache.total_bytes() <= 12 * KB and _leftovers(cache) == []
