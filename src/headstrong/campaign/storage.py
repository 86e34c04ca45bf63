"""Durable campaign results: one manifest and one Parquet chunk per work unit under ``out/``.

Every file is written to a temporary name and renamed into place, so a process killed at any
moment leaves either a whole file or none. Nothing read back is trusted on its word (issue 16.3):

- The manifest carries a hash of its own content (spec, units, fingerprints); an edited ``fmt``
  or a unit dropped by hand no longer matches it and the manifest is refused, naming the file.
- Each chunk's footer says what it belongs to (spec hash, seed, model and data fingerprints, unit,
  rows), so a chunk copied from another run is recognised. Beside each chunk a small sidecar
  (``<unit>.parquet.check``, written by whoever wrote the chunk, a Ray worker included) records
  its size and SHA-256, so a chunk damaged or rewritten after it was written is recognised too.
- Chunks whose Parquet schema differs from the run's other chunks are named instead of failing
  the whole read with Arrow's "Schema at index 5 was different".

A chunk that fails any check is named; on resume (``pending_units``) it is deleted and redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
CHUNKS = "chunks"
_OWNER_KEY = b"headstrong.chunk"
_INTEGRITY = "integrity"
_CHECK_SUFFIX = ".check"


class ChunkRedone(UserWarning):
    """A chunk on disk failed its checks and is redone on this resume."""


@dataclass(frozen=True)
class ChunkOwner:
    """What every chunk of one run belongs to; written into each chunk's footer and checked on read."""

    spec_hash: str
    seed: Optional[int]
    model: Optional[str]  # the manifest's model_fingerprint
    data: Optional[str]  # the manifest's data_fingerprint

    @classmethod
    def of_manifest(cls, manifest: dict[str, Any]) -> "ChunkOwner":
        spec = manifest.get("spec") or {}
        return cls(spec_hash=_digest(spec), seed=spec.get("seed"), model=manifest.get("model_fingerprint"),
                   data=manifest.get("data_fingerprint"))

    def describe(self) -> str:
        return f"seed {self.seed}, spec {self.spec_hash[:12]}, model {str(self.model)[:12]}"


@dataclass(frozen=True)
class ChunkCheck:
    """A chunk's size and SHA-256 as written: the sidecar beside it."""

    size: int
    sha256: str


def _digest(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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


def _integrity(manifest: dict[str, Any]) -> dict[str, str]:
    body = {k: v for k, v in manifest.items() if k != _INTEGRITY}
    return {"manifest": _digest(body), "spec": _digest(body.get("spec")), "units": _digest(body.get("units"))}


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of a run (as it was written), or None when ``out`` holds none yet.

    ValueError naming the file when it is damaged, not a campaign manifest, or edited after it
    was written (its integrity hash no longer matches: say which part changed).
    """
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    if path.is_dir():
        raise ValueError(f"manifest {str(path)!r} is a folder; a campaign folder holds a manifest.json file")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"manifest {str(path)!r} is damaged ({error}); move it away or use a new out") from None
    if not isinstance(manifest, dict) or "spec" not in manifest or "units" not in manifest:
        got = type(manifest).__name__ if not isinstance(manifest, dict) else f"keys {sorted(manifest)}"
        raise ValueError(
            f"manifest {str(path)!r} is not a campaign manifest (a JSON object with spec and units; got {got}); "
            "point at the folder a campaign wrote"
        )
    recorded = manifest.pop(_INTEGRITY, None)
    if not isinstance(recorded, dict) or "manifest" not in recorded:
        raise ValueError(
            f"manifest {str(path)!r} carries no integrity hash (edited by hand, or written by a headstrong "
            "older than this check); rerun the campaign into a new out"
        )
    actual = _integrity(manifest)
    if recorded["manifest"] != actual["manifest"]:
        parts = [name for name in ("spec", "units") if recorded.get(name) != actual[name]] or ["other fields"]
        raise ValueError(
            f"manifest {str(path)!r} was edited after the run wrote it (its {' and '.join(parts)} no longer "
            "match its integrity hash), so its records cannot be trusted; restore the file or rerun into a new out"
        )
    return manifest


def write_manifest(out: str | Path, manifest: dict[str, Any]) -> None:
    """Write the manifest with a hash of its own content, checked by ``read_manifest``."""
    out = Path(out)
    (out / CHUNKS).mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in manifest.items() if k != _INTEGRITY}
    _atomic_write_bytes(out / MANIFEST, json.dumps({**body, _INTEGRITY: _integrity(body)}, indent=1,
                                                   sort_keys=True).encode())


def _owner_in(out: Path) -> ChunkOwner:
    """The owner of the chunks under ``out``, from its manifest (written before any chunk)."""
    manifest = read_manifest(out)
    if manifest is None:
        raise ValueError(f"{str(out)!r} holds no {MANIFEST}; write the manifest before its chunks")
    return ChunkOwner.of_manifest(manifest)


def chunk_path(out: str | Path, unit_id: str) -> Path:
    return Path(out) / CHUNKS / f"{unit_id}.parquet"


def _check_path(chunk: Path) -> Path:
    return chunk.with_name(chunk.name + _CHECK_SUFFIX)


def write_chunk(out: str | Path, unit_id: str, table: pa.Table, owner: Optional[ChunkOwner] = None) -> Path:
    """Write one unit's records atomically: what they belong to in the footer, size and SHA-256 beside.

    ``owner`` defaults to the one the manifest in ``out`` names (so the manifest comes first);
    a driver that already holds it can pass ``ChunkOwner.of_manifest(manifest)`` to skip the read.
    """
    out = Path(out)
    owner = owner if owner is not None else _owner_in(out)
    path = chunk_path(out, unit_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(table.schema.metadata or {})
    meta[_OWNER_KEY] = json.dumps({"unit": unit_id, "rows": table.num_rows, **asdict(owner)}).encode()
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True, compression="zstd")
    data = sink.getvalue().to_pybytes()
    check = ChunkCheck(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    # the record first: a kill between the two leaves a record without its chunk (redone quietly)
    _atomic_write_bytes(_check_path(path), json.dumps(asdict(check)).encode())
    _atomic_write_bytes(path, data)
    return path


def _read_check(path: Path) -> ChunkCheck:
    try:
        return ChunkCheck(**json.loads(_check_path(path).read_text()))
    except FileNotFoundError:
        raise ValueError(
            f"chunk {str(path)!r} has no size/checksum record ({_check_path(path).name}): its run was killed "
            "while writing it, or it was copied here without it"
        ) from None
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"chunk {str(path)!r}: its size/checksum record is damaged ({error})") from None


def read_chunk(path: str | Path, unit_id: str, rows: int, owner: Optional[ChunkOwner] = None) -> pa.Table:
    """Read and check one chunk; ValueError naming the file when it is not the unit it should be.

    Checked: it parses with its page checksums; its footer names this unit, this row count and
    this run (``owner``, by default the one the manifest two folders up names); its bytes have
    the size and SHA-256 recorded when it was written.
    """
    path = Path(path)
    owner = owner if owner is not None else _owner_in(path.parent.parent)
    try:
        data = path.read_bytes()
        table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
        info = json.loads((table.schema.metadata or {}).get(_OWNER_KEY, b"{}"))
    except (OSError, pa.ArrowException, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"chunk {str(path)!r} is corrupt or truncated ({error})") from None
    if info.get("unit") != unit_id or info.get("rows") != rows or table.num_rows != rows:
        raise ValueError(
            f"chunk {str(path)!r} holds {table.num_rows} rows of unit {info.get('unit')!r}; "
            f"expected {rows} rows of unit {unit_id!r}"
        )
    theirs = {k: info.get(k) for k in asdict(owner)}
    if theirs != asdict(owner):
        other = ChunkOwner(**theirs)
        raise ValueError(
            f"chunk {str(path)!r} belongs to another run ({other.describe()}), not to this one "
            f"({owner.describe()}): copied from another run?"
        )
    check = _read_check(path)
    digest = hashlib.sha256(data).hexdigest()
    if (len(data), digest) != (check.size, check.sha256):
        raise ValueError(
            f"chunk {str(path)!r} is not the file its run wrote ({len(data)} bytes, SHA-256 {digest[:12]}; "
            f"recorded {check.size} bytes, {check.sha256[:12]}): damaged or replaced"
        )
    return table.replace_schema_metadata({k: v for k, v in (table.schema.metadata or {}).items() if k != _OWNER_KEY})


def chunk_is_valid(path: str | Path, unit_id: str, rows: int, owner: Optional[ChunkOwner] = None) -> bool:
    try:
        read_chunk(path, unit_id, rows, owner)
    except ValueError:
        return False
    return True


def remove_temporaries(out: str | Path) -> None:
    """Delete the ``*.tmp`` files a killed run left behind."""
    folder = Path(out) / CHUNKS
    if folder.is_dir():
        for tmp in folder.glob("*.tmp"):
            tmp.unlink(missing_ok=True)


def _remove_chunk(path: Path) -> None:
    path.unlink(missing_ok=True)
    _check_path(path).unlink(missing_ok=True)


def _fits(schema: pa.Schema, reference: pa.Schema) -> bool:
    """Same columns in the same order, each of the same type (an all-null column fits any type)."""
    if schema.names != reference.names:
        return False
    return all(a.type == b.type or pa.types.is_null(a.type) or pa.types.is_null(b.type)
               for a, b in zip(schema, reference))


def _schema_misfits(
    found: list[tuple[Path, pa.Schema]], reference: Optional[pa.Schema] = None
) -> list[tuple[Path, str]]:
    """Chunks whose schema does not fit the reference, each with what differs.

    The reference is the given schema, else the one most chunks share (ties: the newest chunk's),
    so one damaged chunk is the one named, never the run's healthy rest.
    """
    if reference is None:
        if len(found) < 2:
            return []
        groups: dict[bytes, list[tuple[Path, pa.Schema]]] = {}
        for path, schema in found:
            groups.setdefault(schema.remove_metadata().serialize().to_pybytes(), []).append((path, schema))
        newest = {key: max(p.stat().st_mtime_ns for p, _ in group) for key, group in groups.items()}
        best = max(groups, key=lambda key: (len(groups[key]), newest[key]))
        reference = groups[best][0][1]
    misfits = []
    for path, schema in found:
        if _fits(schema, reference):
            continue
        if schema.names != reference.names:
            what = f"columns {schema.names} here, {reference.names} in the others"
        else:
            what = ", ".join(f"{a.name}: {a.type} here, {b.type} in the others"
                             for a, b in zip(schema, reference) if a.type != b.type)
        misfits.append((path, what))
    return misfits


def pending_units(
    out: str | Path, units: Iterable[dict[str, Any]], schema: Optional[pa.Schema] = None
) -> list[dict[str, Any]]:
    """The units whose chunk is missing or fails a check; those chunks are deleted so they are redone.

    Each chunk deleted is named in a ``ChunkRedone`` warning with what was wrong with it. ``schema``:
    the records' schema when the caller knows it (else the one most chunks share).
    """
    out = Path(out)
    owner = _owner_in(out)
    units = list(units)
    redo: set[str] = set()
    found: list[tuple[Path, pa.Schema]] = []
    unit_of: dict[Path, str] = {}
    for unit in units:
        path = chunk_path(out, unit["id"])
        if not path.exists():
            _check_path(path).unlink(missing_ok=True)
            redo.add(unit["id"])
            continue
        try:
            found.append((path, read_chunk(path, unit["id"], unit["stop"] - unit["start"], owner).schema))
            unit_of[path] = unit["id"]
        except ValueError as error:
            _redo(path, str(error))
            redo.add(unit["id"])
    for path, what in _schema_misfits(found, schema):
        _redo(path, f"chunk {str(path)!r} has a Parquet schema unlike the run's others ({what})")
        redo.add(unit_of[path])
    return [unit for unit in units if unit["id"] in redo]


def _redo(path: Path, why: str) -> None:
    warnings.warn(f"{why}; redoing it", ChunkRedone, stacklevel=3)
    _remove_chunk(path)


def read_records(
    out: str | Path, units: Iterable[dict[str, Any]], schema: Optional[pa.Schema] = None
) -> pd.DataFrame:
    """All the records of a finished run, in unit order; clear errors for missing or bad chunks."""
    out = Path(out)
    owner = _owner_in(out)
    tables = []
    missing = []
    for unit in units:
        path = chunk_path(out, unit["id"])
        if not path.exists():
            missing.append(unit["id"])
            continue
        try:
            tables.append((path, read_chunk(path, unit["id"], unit["stop"] - unit["start"], owner)))
        except ValueError as error:
            raise ValueError(f"{error}; rerun the campaign with the same out to redo it") from None
    if missing:
        raise ValueError(
            f"run {str(out)!r} is incomplete: {len(missing)} chunk(s) missing (first {missing[0]}); "
            "rerun the campaign with the same out to finish it"
        )
    if not tables:
        raise ValueError(f"run {str(out)!r} holds no records")
    misfits = _schema_misfits([(path, table.schema) for path, table in tables], schema)
    if misfits:
        path, what = misfits[0]
        raise ValueError(
            f"chunk {str(path)!r} has a Parquet schema unlike the run's others ({what})"
            + (f", and {len(misfits) - 1} more chunk(s) too" if len(misfits) > 1 else "")
            + "; rerun the campaign with the same out to redo them"
        )
    return pa.concat_tables([table for _, table in tables], promote_options="default").to_pandas()
