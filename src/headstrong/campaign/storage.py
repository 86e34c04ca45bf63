"""Durable campaign results: one manifest and one Parquet chunk per work unit under ``out/``.

Every file is written to a temporary name and renamed into place, so a process killed at any
moment leaves either a whole file or none. Chunks carry page checksums and their unit id and row
count in the footer: a truncated or damaged chunk is recognised and redone on resume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
CHUNKS = "chunks"
_UNIT_KEY = b"headstrong.unit"


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a Path; refuses a path that exists and is not a directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} is a file; give a directory (new or holding an earlier run)")
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of a run, or None when ``out`` holds none yet."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"manifest {str(path)!r} is damaged ({error}); move it away or use a new out") from None


def write_manifest(out: str | Path, manifest: dict[str, Any]) -> None:
    out = Path(out)
    (out / CHUNKS).mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def chunk_path(out: str | Path, unit_id: str) -> Path:
    return Path(out) / CHUNKS / f"{unit_id}.parquet"


def write_chunk(out: str | Path, unit_id: str, table: pa.Table) -> Path:
    """Write one unit's records atomically, with checksums and the unit id in the footer."""
    path = chunk_path(out, unit_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(table.schema.metadata or {})
    meta[_UNIT_KEY] = json.dumps({"unit": unit_id, "rows": table.num_rows}).encode()
    table = table.replace_schema_metadata(meta)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, write_page_checksum=True, compression="zstd")
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_chunk(path: str | Path, unit_id: str, rows: int) -> pa.Table:
    """Read and check one chunk; ValueError naming the file when it is not the unit it should be."""
    path = Path(path)
    try:
        table = pq.read_table(path, page_checksum_verification=True)
        info = json.loads((table.schema.metadata or {}).get(_UNIT_KEY, b"{}"))
    except (OSError, pa.ArrowException, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"chunk {str(path)!r} is corrupt or truncated ({error})") from None
    if info.get("unit") != unit_id or info.get("rows") != rows or table.num_rows != rows:
        raise ValueError(
            f"chunk {str(path)!r} holds {table.num_rows} rows of unit {info.get('unit')!r}; "
            f"expected {rows} rows of unit {unit_id!r}"
        )
    return table.replace_schema_metadata({k: v for k, v in (table.schema.metadata or {}).items() if k != _UNIT_KEY})


def chunk_is_valid(path: str | Path, unit_id: str, rows: int) -> bool:
    try:
        read_chunk(path, unit_id, rows)
    except ValueError:
        return False
    return True


def remove_temporaries(out: str | Path) -> None:
    """Delete the ``*.tmp`` files a killed run left behind."""
    folder = Path(out) / CHUNKS
    if folder.is_dir():
        for tmp in folder.glob("*.tmp"):
            tmp.unlink(missing_ok=True)


def pending_units(out: str | Path, units: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The units whose chunk is missing or invalid; invalid chunks are deleted so they are redone."""
    todo = []
    for unit in units:
        path = chunk_path(out, unit["id"])
        if path.exists() and chunk_is_valid(path, unit["id"], unit["stop"] - unit["start"]):
            continue
        path.unlink(missing_ok=True)
        todo.append(unit)
    return todo


def read_records(out: str | Path, units: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """All the records of a finished run, in unit order; clear errors for missing or bad chunks."""
    tables = []
    missing = []
    for unit in units:
        path = chunk_path(out, unit["id"])
        if not path.exists():
            missing.append(unit["id"])
            continue
        try:
            tables.append(read_chunk(path, unit["id"], unit["stop"] - unit["start"]))
        except ValueError as error:
            raise ValueError(f"{error}; rerun the campaign with the same out to redo it") from None
    if missing:
        raise ValueError(
            f"run {str(out)!r} is incomplete: {len(missing)} chunk(s) missing (first {missing[0]}); "
            "rerun the campaign with the same out to finish it"
        )
    if not tables:
        raise ValueError(f"run {str(out)!r} holds no records")
    return pa.concat_tables(tables).to_pandas()
