"""Chunk storage: atomic files, footer checks that catch truncation and damage, resume bookkeeping."""

from pathlib import Path

import pyarrow as pa
import pytest

from headstrong.campaign import storage


def _table(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"fault_id": list(range(offset, offset + n)), "delta_loss": [0.5 * i for i in range(n)]})


def _units() -> list[dict]:
    return [{"id": "L000_000000000", "layer": "a", "start": 0, "stop": 300},
            {"id": "L000_000000300", "layer": "a", "start": 300, "stop": 500}]


def test_written_chunk_reads_back_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = storage.write_chunk(tmp_path, "L000_000000000", _table(300))
    assert path.name == "L000_000000000.parquet"
    assert not list(path.parent.glob("*.tmp"))
    table = storage.read_chunk(path, "L000_000000000", 300)
    assert table.column("fault_id").to_pylist() == list(range(300))


def test_truncated_chunk_is_detected_and_removed_for_redo(tmp_path: Path) -> None:
    units = _units()
    storage.write_chunk(tmp_path, units[0]["id"], _table(300))
    second = storage.write_chunk(tmp_path, units[1]["id"], _table(200, 300))
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])
    assert not storage.chunk_is_valid(second, units[1]["id"], 200)
    with pytest.raises(ValueError, match=r"L000_000000300.parquet.*corrupt or truncated.*rerun"):
        storage.read_records(tmp_path, units)
    assert storage.pending_units(tmp_path, units) == [units[1]]
    assert not second.exists()


def test_flipped_byte_in_data_page_fails_the_checksum(tmp_path: Path) -> None:
    path = storage.write_chunk(tmp_path, "u", _table(300))
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first data page, after the magic and page header
    path.write_bytes(bytes(data))
    assert not storage.chunk_is_valid(path, "u", 300)


def test_chunk_of_another_unit_or_row_count_is_refused(tmp_path: Path) -> None:
    path = storage.write_chunk(tmp_path, "u1", _table(10))
    other = path.with_name("u2.parquet")
    path.rename(other)
    with pytest.raises(ValueError, match="expected 10 rows of unit 'u2'"):
        storage.read_chunk(other, "u2", 10)
    assert not storage.chunk_is_valid(other, "u1", 11)


def test_missing_chunks_make_the_run_incomplete(tmp_path: Path) -> None:
    units = _units()
    storage.write_chunk(tmp_path, units[0]["id"], _table(300))
    with pytest.raises(ValueError, match="incomplete: 1 chunk.*L000_000000300.*rerun"):
        storage.read_records(tmp_path, units)
    storage.write_chunk(tmp_path, units[1]["id"], _table(200, 300))
    assert storage.read_records(tmp_path, units)["fault_id"].tolist() == list(range(500))


def test_manifest_round_trip_and_temporaries_removed(tmp_path: Path) -> None:
    assert storage.read_manifest(tmp_path) is None
    storage.write_manifest(tmp_path, {"spec": {"seed": 1}, "units": _units()})
    assert storage.read_manifest(tmp_path)["spec"] == {"seed": 1}
    (tmp_path / "chunks" / "L000_000000000.parquet.tmp").write_bytes(b"partial")
    storage.remove_temporaries(tmp_path)
    assert not list((tmp_path / "chunks").iterdir())


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    with pytest.raises(ValueError, match="is a file; give a directory"):
        storage.check_out_dir(path)
    assert path.read_text() == "keep me"
