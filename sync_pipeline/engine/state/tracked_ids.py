"""A run's snapshot of an entity's tracked EntityIds, compact enough to check every page without a query.

Taken once, under the entity's lock (no other run can track this entity meanwhile; what this run
delivers is never read again, keys come in order), by one streaming read. Canonical GUIDs, what a
GUID key always becomes, are kept as their 16 bytes in a sorted array: an exact set, 16 MB per
million. Any other EntityId is kept as a 64-bit fingerprint (Python's own string hash, SipHash with
a key of this process, which the snapshot never leaves), 8 MB per million; a page's fingerprint
hits are confirmed against the table, as two texts may share one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from sync_pipeline.engine.mapping.entity_ids import GUID_TEXT_LENGTH

_HYPHENS = [8, 13, 18, 23]
_HEX_DIGITS = [i for i in range(GUID_TEXT_LENGTH) if i not in _HYPHENS]
_GUID = np.dtype("S16")
_FINGERPRINT = np.dtype(np.int64)


class TrackedIds:
    """The tracked EntityIds of one entity, as sorted GUID bytes and sorted fingerprints."""

    def __init__(self, chunks: Iterable[Sequence[str]], confirm: Callable[[Sequence[str]], set[str]]) -> None:
        """Read `chunks` of tracked IDs once; `confirm` says which IDs of a list are truly tracked."""
        guids = bytearray()
        fingerprints = bytearray()
        for chunk in chunks:
            guid_bytes, is_guid = _guid_bytes(chunk)
            guids += guid_bytes
            others = _others(chunk, is_guid)
            fingerprints += np.fromiter(map(hash, others), _FINGERPRINT, len(others)).tobytes()
        self._guids = np.frombuffer(guids, _GUID)  # shares the bytearray: sorted in place, never copied
        self._guids.sort()
        self._fingerprints = np.frombuffer(fingerprints, _FINGERPRINT)
        self._fingerprints.sort()
        self._confirm = confirm

    def __len__(self) -> int:
        return len(self._guids) + len(self._fingerprints)

    def among(self, entity_ids: Sequence[str]) -> set[str]:
        """Those of `entity_ids` that are tracked (exact: fingerprint hits are confirmed)."""
        if not len(self) or not entity_ids:
            return set()
        guid_bytes, is_guid = _guid_bytes(entity_ids)
        tracked: set[str] = set()
        if len(self._guids) and guid_bytes:
            found = contains(self._guids, np.frombuffer(guid_bytes, _GUID))
            tracked.update(entity_ids[int(i)] for i in np.flatnonzero(is_guid)[found])
        others = _others(entity_ids, is_guid)
        if len(self._fingerprints) and others:
            found = contains(self._fingerprints, np.fromiter(map(hash, others), _FINGERPRINT, len(others)))
            if found.any():
                tracked.update(self._confirm([others[int(i)] for i in np.flatnonzero(found)]))
        return tracked


def contains(sorted_keys: npt.NDArray[np.generic], keys: npt.NDArray[np.generic]) -> npt.NDArray[np.bool_]:
    """For each of `keys`, whether it is in `sorted_keys` (not empty)."""
    positions = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.asarray(sorted_keys[positions] == keys)


def _guid_bytes(entity_ids: Sequence[str]) -> tuple[bytes, npt.NDArray[np.bool_]]:
    """The 16 bytes of each canonical (lower-case hyphenated) GUID among `entity_ids`, in order, and
    which of the IDs those are; checked on all of them at once, as a page or chunk is mostly alike."""
    is_guid = np.zeros(len(entity_ids), dtype=np.bool_)
    candidates = [i for i, text in enumerate(entity_ids) if len(text) == GUID_TEXT_LENGTH and text.isascii()]
    if not candidates:
        return b"", is_guid
    every = len(candidates) == len(entity_ids)
    raw = "".join(entity_ids if every else [entity_ids[i] for i in candidates]).encode("ascii")
    text = np.frombuffer(raw, np.uint8).reshape(len(candidates), GUID_TEXT_LENGTH)
    digits = text[:, _HEX_DIGITS]
    is_digit = (digits >= ord("0")) & (digits <= ord("9"))
    is_letter = (digits >= ord("a")) & (digits <= ord("f"))
    canonical = (text[:, _HYPHENS] == ord("-")).all(axis=1) & (is_digit | is_letter).all(axis=1)
    is_guid[np.asarray(candidates)[canonical]] = True
    nibbles = np.where(is_digit, digits - ord("0"), digits - (ord("a") - 10))[canonical]
    return ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).astype(np.uint8).tobytes(), is_guid


def _others(entity_ids: Sequence[str], is_guid: npt.NDArray[np.bool_]) -> list[str]:
    """The IDs that are not canonical GUIDs: those kept and looked up as fingerprints."""
    if is_guid.all():
        return []
    return [entity_ids[int(i)] for i in np.flatnonzero(~is_guid)]
