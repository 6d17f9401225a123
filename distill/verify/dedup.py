"""Duplicate traces of the same problem: exact (normalised text) and near (MinHash LSH, datasketch)."""

from __future__ import annotations

import hashlib
import zlib
from functools import lru_cache

import numpy as np


def normalise(text: str) -> str:
    return " ".join(text.lower().split())  # str.split is 3x faster than a whitespace regex here


_PRIME = np.uint64((1 << 61) - 1)


@lru_cache(maxsize=8)
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    a = rng.integers(1, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
    return a, b


def fingerprint(text: str, shingle: int = 5, num_perm: int = 64) -> tuple[str, np.ndarray]:
    """(exact hash of the normalised text, MinHash signature over word `shingle`-grams).

    Computed in the filter's workers, so it must not depend on the process: words are hashed with
    CRC-32, not Python's per-process salted `hash`. datasketch's own update path runs SHA-1 on
    every shingle string (about 6 ms for a 20,000-character trace); hashing each word once and
    combining shingles with numpy is several times faster and gives the same kind of signature.
    """
    norm = normalise(text)
    words = norm.split() or [""]
    w = np.fromiter((zlib.crc32(x.encode()) for x in words), dtype=np.uint64, count=len(words))
    k = min(shingle, len(w))
    h = np.zeros(len(w) - k + 1, dtype=np.uint64)
    for i in range(k):  # polynomial combination of the k word hashes of each shingle (wraps mod 2^64)
        h = h * np.uint64(1_000_003) + w[i : len(w) - k + 1 + i]
    h = np.unique(h) & _PRIME
    a, b = _permutations(num_perm)
    # (a*h + b) mod p for every permutation and shingle; the product wraps mod 2^64, which only
    # makes the permutation family a slightly different universal hash.
    sig = ((a[:, None] * h[None, :] + b[:, None]) & _PRIME).min(axis=1)
    return hashlib.sha256(norm.encode()).hexdigest(), sig.astype(np.uint64)


@lru_cache(maxsize=16)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for a threshold. datasketch picks them by numerical integration in every
    constructor (~30 ms); the streaming filter calls `find_duplicates` once per problem, so once here."""
    from datasketch import MinHashLSH

    try:
        probe = MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError as e:  # datasketch cannot band a threshold this close to 1 with so few permutations
        raise ValueError(f"filter.dedup.near_threshold={threshold} with num_perm={num_perm}: {e}; raise "
                         "filter.dedup.num_perm (e.g. 256) or set near_threshold to 1.0 for exact duplicates only") from None
    return probe.b, probe.r


def find_duplicates(items: list[tuple[str, str, str | tuple]], threshold: float, shingle: int = 5,
                    num_perm: int = 64) -> dict[str, tuple[str, str]]:
    """items: (key, problem_id, text or its fingerprint) in keep-priority order
    -> {key: ('exact'|'near', key it repeats)}."""
    from datasketch import MinHash, MinHashLSH

    dups: dict[str, tuple[str, str]] = {}
    by_problem: dict[str, list[tuple[str, str]]] = {}
    params = lsh_params(threshold, num_perm) if threshold < 1 else None
    for key, pid, text in items:
        by_problem.setdefault(pid, []).append((key, text))
    for group in by_problem.values():
        exact: dict[str, str] = {}
        lsh = MinHashLSH(num_perm=num_perm, params=params) if params and len(group) > 1 else None
        for key, text in group:
            h, sig = text if isinstance(text, tuple) else fingerprint(text, shingle, num_perm)
            if h in exact:
                dups[key] = ("exact", exact[h])
                continue
            exact[h] = key
            if lsh is None:
                continue
            m = MinHash(num_perm=num_perm, hashvalues=sig, scheme="affine64")
            hits = lsh.query(m)
            if hits:
                dups[key] = ("near", sorted(hits)[0])
                continue
            lsh.insert(key, m)
    return dups


