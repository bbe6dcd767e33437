"""Cost of adding records to a dataset as it grows: a commit must not grow with the dataset.

For datasets of 1,000 / 20,000 / 200,000 records this prints the time to add 15 records
(``Dataset.add``: one new part), on the embedded store and on S3 (moto's server on loopback),
beside the baseline the project had before (read the whole clip list, merge, rewrite it: what
``write_manifests`` did on every run), and what reading the whole dataset costs (``snapshot``,
paid by ``publish`` and by readers, not by a commit). Median of ``--repeat`` runs, wall time.

    .venv/bin/python benchmarks/dataset.py [--sizes 1000,20000,200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from moto.server import ThreadedMotoServer
from tqdm import tqdm

from services.common.config import StoreSettings
from services.common.dataset import Dataset
from services.common.records import ClipRecord, ObjectRef
from services.common.store import ClipStore

_BATCH = 15


def _record(index: int, run: str) -> ClipRecord:
    """A clip record of the size the engine writes (about 700 bytes of JSON)."""
    source_id = f"{index:064x}"
    key = ClipStore.clip_key(source_id, 30, 330)
    return ClipRecord(
        ObjectRef(key, f"s3://hashtag2action/{key}", "ab" * 32, 1_234_567),
        source_id,
        f"https://www.tiktok.com/@user{index}/video/{run}{index}",
        f"tag{index % 386}",
        30,
        330,
        30.0,
        9,
        (0.91, 0.88, 0.0, 0.77, 0.93, 0.9, 0.85, 0.8, 0.79, 0.92),
        {
            "view_count": 5_000_000 + index,
            "source_duration_s": 21.4,
            "source_size": [1080, 1920],
            "scene": [12, 402],
            "scenes": 7,
            "person_frame_indices": list(range(12, 402, 39)),
            "meta_key": ClipStore.meta_key(source_id),
        },
    )


def _median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _baseline_merge(store: ClipStore, key: str, new: list[ClipRecord]) -> None:
    """The former commit: read every line, merge by clip key, write the whole list back."""
    lines = store.get_lines(key)
    seen = {line.split('"key": "', 1)[1].split('"', 1)[0] for line in lines}
    merged = lines + [r.to_json() for r in new if r.clip.key not in seen]
    store.put_lines(key, merged)


def _measure(store: ClipStore, size: int, repeat: int) -> dict[str, float]:
    dataset = Dataset(store, f"bench-{size}")
    existing = [_record(index, "old") for index in range(size)]
    dataset.add(existing)
    legacy = ClipStore.manifest_key(f"legacy-{size}", "clips.jsonl")
    store.put_lines(legacy, (record.to_json() for record in existing))

    def batch() -> list[ClipRecord]:
        run = uuid.uuid4().hex[:8]
        return [_record(size + index, run) for index in range(_BATCH)]

    return {
        "add": _median_ms(lambda: dataset.add(batch()), repeat),
        "baseline": _median_ms(lambda: _baseline_merge(store, legacy, batch()), repeat),
        "snapshot": _median_ms(dataset.snapshot, max(1, repeat // 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,20000,200000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="h2a-bench-dataset-") as folder:
            stores = {
                "local": ClipStore.from_settings(
                    StoreSettings(backend="local", root=Path(folder) / "store")
                ),
                "s3": ClipStore.from_settings(
                    StoreSettings(
                        backend="s3",
                        endpoint=f"{host}:{port}",
                        bucket="bench-dataset",
                        region="us-east-1",
                        access_key="bench",
                        secret_key="bench-secret",
                    )
                ),
            }
            cases = [(name, size) for size in sizes for name in stores]
            for name, size in tqdm(cases, desc="datasets", unit="dataset"):
                rows.append((name, size, _measure(stores[name], size, args.repeat)))
    finally:
        server.stop()

    print(f"\nAdd {_BATCH} records to a dataset of N records (median of {args.repeat}, ms)\n")
    print("| store | N records | add (one part) | baseline (read-merge-rewrite) | "
          "baseline / add | snapshot (whole dataset) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, size, cost in rows:
        print(
            f"| {name} | {size:,} | {cost['add']:.1f} | {cost['baseline']:.1f} | "
            f"{cost['baseline'] / cost['add']:.0f}x | {cost['snapshot']:.0f} |"
        )
    for name in dict.fromkeys(name for name, _, _ in rows):
        adds = [cost["add"] for store, _, cost in rows if store == name]
        print(f"{name}: add at the largest size / at the smallest: {adds[-1] / adds[0]:.2f}x")


if __name__ == "__main__":
    main()
