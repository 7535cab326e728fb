"""The few lib0 encodings we write ourselves: varuints, state vectors, delete sets."""

from __future__ import annotations

from crdt_state.errors import UpdateDecodeError
from mesh.limits import MAX_CLOCK, MAX_UPDATE_CLIENTS


def write_varuint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 56:
            raise UpdateDecodeError(f"bad varuint at byte {pos}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Decode a Yjs state vector (client -> clock)."""
    count, pos = read_varuint(data, 0)
    if count > MAX_UPDATE_CLIENTS:
        raise UpdateDecodeError("state vector too long")
    result: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_varuint(data, pos)
        clock, pos = read_varuint(data, pos)
        if clock > MAX_CLOCK:
            raise UpdateDecodeError("state vector clock too large")
        result[client] = clock
    if pos != len(data):
        raise UpdateDecodeError("trailing bytes after state vector")
    return result


def encode_delete_set(ranges: dict[int, list[tuple[int, int]]]) -> bytes:
    """Encode a delete set (client -> [(clock, length)]), clients ascending."""
    out = bytearray()
    clients = [client for client in sorted(ranges) if ranges[client]]
    write_varuint(out, len(clients))
    for client in clients:
        write_varuint(out, client)
        write_varuint(out, len(ranges[client]))
        for clock, length in ranges[client]:
            write_varuint(out, clock)
            write_varuint(out, length)
    return bytes(out)


def _normalise(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for clock, length in sorted(ranges):
        if merged and clock <= merged[-1][0] + merged[-1][1]:
            start, old = merged[-1]
            merged[-1] = (start, max(old, clock + length - start))
        else:
            merged.append((clock, length))
    return merged


def subtract_delete_sets(
    after: list[tuple[int, int, int]], before: list[tuple[int, int, int]]
) -> dict[int, list[tuple[int, int]]]:
    """Ranges deleted in ``after`` and not in ``before`` (both as (client, clock, length))."""
    by_client_after: dict[int, list[tuple[int, int]]] = {}
    by_client_before: dict[int, list[tuple[int, int]]] = {}
    for client, clock, length in after:
        by_client_after.setdefault(client, []).append((clock, length))
    for client, clock, length in before:
        by_client_before.setdefault(client, []).append((clock, length))
    result: dict[int, list[tuple[int, int]]] = {}
    for client, ranges in by_client_after.items():
        removed = _normalise(by_client_before.get(client, []))
        out: list[tuple[int, int]] = []
        i = 0  # one sweep over both sorted lists: O(n + m), not O(n * m)
        for clock, length in _normalise(ranges):
            start, end = clock, clock + length
            while i < len(removed) and removed[i][0] + removed[i][1] <= start:
                i += 1
            j = i
            while j < len(removed) and removed[j][0] < end:
                r_clock, r_end = removed[j][0], removed[j][0] + removed[j][1]
                if r_clock > start:
                    out.append((start, r_clock - start))
                start = max(start, r_end)
                if start >= end:
                    break
                j += 1
            if start < end:
                out.append((start, end - start))
        if out:
            result[client] = out
    return result
