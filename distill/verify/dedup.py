"""Duplicate traces of the same problem: exact (normalised text) and near (MinHash LSH, datasketch)."""

from __future__ import annotations

import hashlib
import re

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip()


def _minhash(text: str, shingle: int, num_perm: int):
    from datasketch import MinHash

    words = normalise(text).split()
    grams = {" ".join(words[i : i + shingle]) for i in range(max(1, len(words) - shingle + 1))}
    m = MinHash(num_perm=num_perm, seed=1)
    # update_batch hashes all shingles in one vectorised call (a per-shingle update is ~50x slower).
    m.update_batch([g.encode() for g in grams])
    return m


def find_duplicates(items: list[tuple[str, str, str]], threshold: float, shingle: int = 5,
                    num_perm: int = 64) -> dict[str, tuple[str, str]]:
    """items: (key, problem_id, text) in keep-priority order -> {key: ('exact'|'near', key it repeats)}."""
    from datasketch import MinHashLSH

    dups: dict[str, tuple[str, str]] = {}
    by_problem: dict[str, list[tuple[str, str]]] = {}
    for key, pid, text in items:
        by_problem.setdefault(pid, []).append((key, text))
    for group in by_problem.values():
        exact: dict[str, str] = {}
        try:
            lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if threshold < 1 and len(group) > 1 else None
        except ValueError as e:  # datasketch cannot band a threshold this close to 1 with so few permutations
            raise ValueError(f"filter.dedup.near_threshold={threshold} with num_perm={num_perm}: {e}; raise "
                             "filter.dedup.num_perm (e.g. 256) or set near_threshold to 1.0 for exact duplicates only") from None
        for key, text in group:
            h = hashlib.sha256(normalise(text).encode()).hexdigest()
            if h in exact:
                dups[key] = ("exact", exact[h])
                continue
            exact[h] = key
            if lsh is None:
                continue
            m = _minhash(text, shingle, num_perm)
            hits = lsh.query(m)
            if hits:
                dups[key] = ("near", sorted(hits)[0])
                continue
            lsh.insert(key, m)
    return dups


