"""De-duplicating and splitting a corpus that does not fit in memory: a pair is known by an
8-byte digest, which also decides its split.

:func:`pair_digest` is a keyed BLAKE2b of the normalised pair (the key is the split seed),
:func:`split_of` puts a digest in train, valid or test by where it falls in ``[0, 1)``, and
:class:`SeenDigests` remembers the digests of the pairs kept so far in sorted ``uint64``
arrays: 8 bytes a unique pair (80 MB for 10M), where a set of the pairs themselves took about
3 KB. Two different pairs share a digest with probability about ``n**2 / 2**65`` (3e-6 at 10M
pairs); the second would be dropped as a duplicate.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["SeenDigests", "pair_digest", "split_of"]


def pair_digest(source: str, target: str, seed: int) -> int:
    """The pair's 64-bit digest under ``seed`` (the same pair, the same digest)."""
    key = f"padless-split:{seed}".encode()
    data = f"{source}\t{target}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "little")


def split_of(digest: int, valid_fraction: float, test_fraction: float) -> str:
    """``"valid"`` for the first ``valid_fraction`` of the digests' range, ``"test"`` for the
    next ``test_fraction``, else ``"train"``: a split by hash, the same for any corpus order
    and size."""
    where = (digest >> 11) / 2**53  # 53 bits: exact in a float, uniform in [0, 1)
    if where < valid_fraction:
        return "valid"
    return "test" if where < valid_fraction + test_fraction else "train"


class SeenDigests:
    """The digests seen so far, in a few sorted arrays of doubling sizes (merged as they
    grow, like a log-structured merge tree): membership is a binary search in each."""

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def first_seen(self, digests: np.ndarray) -> np.ndarray:
        """``[n]`` bool, True where ``digests[i]`` (uint64) is seen for the first time,
        counting the earlier entries of ``digests`` itself; those are remembered."""
        digests = np.asarray(digests, dtype=np.uint64)
        new = np.zeros(len(digests), dtype=bool)
        if not len(digests):
            return new
        _, first = np.unique(digests, return_index=True)  # first occurrences in this block
        new[first] = True
        for level in self._levels:
            at = np.minimum(np.searchsorted(level, digests), len(level) - 1)
            new &= level[at] != digests
        self._add(np.sort(digests[new]))
        return new

    def _add(self, block: np.ndarray) -> None:
        if not len(block):
            return
        self._levels.append(block)
        while len(self._levels) > 1 and len(self._levels[-2]) <= 2 * len(self._levels[-1]):
            top = self._levels.pop()
            self._levels[-1] = np.sort(np.concatenate([self._levels[-1], top]), kind="stable")
