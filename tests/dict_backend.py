"""A repository backend that is a dict in this process: the smallest thing that is not a local
directory. Tests run a Repository on it to prove that no code path needs the repository to be
files (`caps.local_root` is None, there is no `root`), and it passes the backend contract
(`tests/contract/test_dict_backend.py`) so what it proves holds for a real one.

It counts the calls by operation and prefix, so a test can also say how a run used the port.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from davit.adapters.repository.backend import Caps, ObjectInfo, ObjectMissing, ObjectTooLarge, Source, check_key, check_prefix


def _bytes(src: Source) -> bytes:
    return src.read_bytes() if isinstance(src, Path) else bytes(src)


class DictBackend:
    def __init__(self, where: str = "dict://test") -> None:
        self.where = where
        self.caps = Caps(conditional_create=True, can_delete=True, local_root=None)
        self.objects: dict[str, tuple[bytes, float]] = {}
        self.calls: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def _count(self, op: str, key: str) -> None:
        self.calls[(op, key.split("/", 1)[0])] += 1

    def put_if_absent(self, key: str, src: Source) -> bool:
        self._count("put_if_absent", check_key(key))
        data = _bytes(src)
        with self._lock:
            if key in self.objects:
                return False
            self.objects[key] = (data, time.time())
            return True

    def put(self, key: str, src: Source) -> None:
        self._count("put", check_key(key))
        data = _bytes(src)
        with self._lock:
            self.objects[key] = (data, time.time())

    def _data(self, key: str) -> bytes:
        with self._lock:
            found = self.objects.get(check_key(key))
        if found is None:
            raise ObjectMissing(self.where, key)
        return found[0]

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        self._count("get", key)
        data = self._data(key)
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(self.where, key, len(data), max_bytes)
        return data

    def get_to(self, key: str, dst: Path) -> None:
        self._count("get_to", key)
        data = self._data(key)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(dst)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._count("get_range", key)
        return self._data(key)[offset : offset + length]

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self._count("get_ranges", key)
        data = self._data(key)
        return [data[offset : offset + length] for offset, length in ranges]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._count("list", check_prefix(prefix) or "/")
        with self._lock:
            found = [ObjectInfo(k, len(d), m) for k, (d, m) in self.objects.items() if k.startswith(prefix)]
        yield from found

    def stat(self, key: str) -> ObjectInfo | None:
        self._count("stat", key)
        with self._lock:
            found = self.objects.get(check_key(key))
        return None if found is None else ObjectInfo(key, len(found[0]), found[1])

    def delete(self, key: str) -> None:
        self._count("delete", check_key(key))
        with self._lock:
            self.objects.pop(key, None)

    def close(self) -> None:
        pass
