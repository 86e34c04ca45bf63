"""Chunk storage: atomic files, footer checks that catch truncation and damage, resume bookkeeping,
and nothing read back on its word: edited manifests, chunks of other runs, rewritten chunks and
chunks of another schema are named (issue 16.3)."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headstrong.campaign import storage


def _table(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"fault_id": list(range(offset, offset + n)), "delta_loss": [0.5 * i for i in range(n)]})


def _units() -> list[dict]:
    return [{"id": "L000_000000000", "layer": "a", "start": 0, "stop": 300},
            {"id": "L000_000000300", "layer": "a", "start": 300, "stop": 500}]


def _manifest(seed: int = 0, fmt: str = "fp32") -> dict:
    return {"spec": {"seed": seed, "fmt": fmt, "kind": "neuron"}, "model_fingerprint": "m" * 64,
            "data_fingerprint": "d" * 64, "units": _units()}


def _run(out: Path, seed: int = 0, chunks: bool = True) -> Path:
    """A run folder: its manifest and (by default) both chunks."""
    storage.write_manifest(out, _manifest(seed))
    if chunks:
        storage.write_chunk(out, _units()[0]["id"], _table(300))
        storage.write_chunk(out, _units()[1]["id"], _table(200, 300))
    return out


def test_written_chunk_reads_back_and_leaves_no_temporary(tmp_path: Path) -> None:
    _run(tmp_path, chunks=False)
    path = storage.write_chunk(tmp_path, "L000_000000000", _table(300))
    assert path.name == "L000_000000000.parquet"
    assert not list(path.parent.glob("*.tmp"))
    table = storage.read_chunk(path, "L000_000000000", 300)
    assert table.column("fault_id").to_pylist() == list(range(300))


def test_a_chunk_needs_its_manifest_first(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no manifest.json; write the manifest before its chunks"):
        storage.write_chunk(tmp_path, "u", _table(3))


def test_truncated_chunk_is_detected_and_removed_for_redo(tmp_path: Path) -> None:
    units = _units()
    _run(tmp_path)
    second = storage.chunk_path(tmp_path, units[1]["id"])
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])
    assert not storage.chunk_is_valid(second, units[1]["id"], 200)
    with pytest.raises(ValueError, match=r"L000_000000300.parquet.*corrupt or truncated.*rerun"):
        storage.read_records(tmp_path, units)
    with pytest.warns(storage.ChunkRedone, match="L000_000000300.parquet.*redoing it"):
        assert storage.pending_units(tmp_path, units) == [units[1]]
    assert not second.exists()


def test_flipped_byte_in_data_page_fails_the_checksum(tmp_path: Path) -> None:
    _run(tmp_path, chunks=False)
    path = storage.write_chunk(tmp_path, "u", _table(300))
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first data page, after the magic and page header
    path.write_bytes(bytes(data))
    assert not storage.chunk_is_valid(path, "u", 300)


def test_chunk_of_another_unit_or_row_count_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, chunks=False)
    path = storage.write_chunk(tmp_path, "u1", _table(10))
    other = path.with_name("u2.parquet")
    path.rename(other)
    with pytest.raises(ValueError, match="expected 10 rows of unit 'u2'"):
        storage.read_chunk(other, "u2", 10)
    assert not storage.chunk_is_valid(other, "u1", 11)


def test_missing_chunks_make_the_run_incomplete(tmp_path: Path) -> None:
    units = _units()
    _run(tmp_path, chunks=False)
    storage.write_chunk(tmp_path, units[0]["id"], _table(300))
    with pytest.raises(ValueError, match="incomplete: 1 chunk.*L000_000000300.*rerun"):
        storage.read_records(tmp_path, units)
    storage.write_chunk(tmp_path, units[1]["id"], _table(200, 300))
    assert storage.read_records(tmp_path, units)["fault_id"].tolist() == list(range(500))


def test_manifest_round_trip_and_temporaries_removed(tmp_path: Path) -> None:
    assert storage.read_manifest(tmp_path) is None
    storage.write_manifest(tmp_path, _manifest(seed=1))
    assert storage.read_manifest(tmp_path) == _manifest(seed=1)
    (tmp_path / "chunks" / "L000_000000000.parquet.tmp").write_bytes(b"partial")
    storage.remove_temporaries(tmp_path)
    assert not list((tmp_path / "chunks").iterdir())


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    with pytest.raises(ValueError, match="is a file; give a directory"):
        storage.check_out_dir(path)
    assert path.read_text() == "keep me"


def _edit_manifest(out: Path, edit) -> None:
    path = out / storage.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=1))


@pytest.mark.parametrize("edit, part", [
    (lambda m: m["units"].pop(), "units"),
    (lambda m: m["spec"].update(fmt="bf16"), "spec"),
    (lambda m: m.update(model_fingerprint="x"), "other fields"),
])
def test_an_edited_manifest_is_refused_naming_the_file_and_what_changed(tmp_path: Path, edit, part) -> None:
    _run(tmp_path)
    _edit_manifest(tmp_path, edit)
    with pytest.raises(ValueError, match=rf"manifest.json' was edited after the run wrote it \(its {part} "):
        storage.read_manifest(tmp_path)


def test_a_manifest_without_its_integrity_hash_is_refused(tmp_path: Path) -> None:
    _run(tmp_path)
    _edit_manifest(tmp_path, lambda m: m.pop("integrity"))
    with pytest.raises(ValueError, match="manifest.json' carries no integrity hash"):
        storage.read_manifest(tmp_path)


@pytest.mark.parametrize("content, got", [("[]", "got list"), ("{}", "got keys"), ('{"units": []}', "got keys")])
def test_a_manifest_that_is_not_one_is_named(tmp_path: Path, content: str, got: str) -> None:
    (tmp_path / storage.MANIFEST).write_text(content)
    with pytest.raises(ValueError, match=f"is not a campaign manifest .*{got}"):
        storage.read_manifest(tmp_path)


def test_a_manifest_that_is_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / storage.MANIFEST).mkdir()
    with pytest.raises(ValueError, match="manifest.json' is a folder"):
        storage.read_manifest(tmp_path)


@pytest.mark.parametrize("with_check", [True, False])
def test_a_chunk_copied_from_another_run_is_named_and_redone(tmp_path: Path, with_check: bool) -> None:
    ours, theirs = _run(tmp_path / "ours"), _run(tmp_path / "theirs", seed=1)
    unit = _units()[1]
    for suffix in (".parquet", ".parquet.check") if with_check else (".parquet",):
        source = theirs / storage.CHUNKS / f"{unit['id']}{suffix}"
        (ours / storage.CHUNKS / source.name).write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match=r"L000_000000300.parquet' belongs to another run \(seed 1.*not to this one \(seed 0"):
        storage.read_records(ours, _units())
    with pytest.warns(storage.ChunkRedone, match="belongs to another run"):
        assert storage.pending_units(ours, _units()) == [unit]


def test_a_chunk_rewritten_after_its_run_wrote_it_is_named(tmp_path: Path) -> None:
    _run(tmp_path)
    path = storage.chunk_path(tmp_path, _units()[0]["id"])
    table = pq.read_table(path)  # keeps the footer that says which run and unit it is
    doubled = table.set_column(1, "delta_loss", pa.array([2.0 * v for v in table["delta_loss"].to_pylist()]))
    pq.write_table(doubled, path)
    with pytest.raises(ValueError, match=r"L000_000000000.parquet' is not the file its run wrote .*damaged or replaced"):
        storage.read_records(tmp_path, _units())
    (path.parent / (path.name + ".check")).unlink()
    with pytest.raises(ValueError, match="has no size/checksum record"):
        storage.read_records(tmp_path, _units())


def test_a_chunk_of_another_schema_is_named_not_arrows_schema_error_and_redone(tmp_path: Path) -> None:
    units = _units()
    _run(tmp_path)
    # written through the storage API (as an older or newer headstrong would): every check passes
    # but its schema cannot join the others'
    odd = pa.table({"fault_id": [float(i) for i in range(300)], "delta_loss": [0.0] * 300})
    storage.write_chunk(tmp_path, units[0]["id"], odd)
    storage.write_chunk(tmp_path, units[1]["id"], _table(200, 300))  # one each: the newest is the reference
    with pytest.raises(ValueError, match=r"L000_000000000.parquet' has a Parquet schema unlike the run's others "
                                         r"\(fault_id: double here, int64 in the others\).*rerun"):
        storage.read_records(tmp_path, units)
    with pytest.warns(storage.ChunkRedone, match="L000_000000300.parquet' has a Parquet schema"):
        assert storage.pending_units(tmp_path, units, schema=odd.schema) == [units[1]]  # the caller's schema rules
    storage.write_chunk(tmp_path, units[1]["id"], _table(200, 300))
    with pytest.warns(storage.ChunkRedone, match="L000_000000000.parquet' has a Parquet schema"):
        assert storage.pending_units(tmp_path, units) == [units[0]]
    storage.write_chunk(tmp_path, units[0]["id"], _table(300))
    assert storage.read_records(tmp_path, units)["fault_id"].tolist() == list(range(500))


def test_an_all_null_column_joins_its_typed_neighbours(tmp_path: Path) -> None:
    units = _units()
    _run(tmp_path, chunks=False)
    storage.write_chunk(tmp_path, units[0]["id"], pa.table({"fault_id": list(range(300)), "note": [None] * 300}))
    storage.write_chunk(tmp_path, units[1]["id"], pa.table({"fault_id": list(range(300, 500)), "note": ["x"] * 200}))
    assert storage.pending_units(tmp_path, units) == []
    records = storage.read_records(tmp_path, units)
    assert records["note"].isna().sum() == 300 and (records["note"] == "x").sum() == 200
