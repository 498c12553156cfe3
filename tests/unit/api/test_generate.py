"""The committed generated code is exactly what the pinned generators produce."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from katalyst.api import generate


def test_regenerating_gives_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    root = generate.repository_root()
    produced = generate.generate(root=root, out=tmp_path)

    # Four files per proto, for both protos: a proto silently dropped from the
    # tree would otherwise pass.
    protos = {path.as_posix() for path in generate.find_protos(root)}
    assert protos == {
        "katalyst/api/pluginregistration/api.proto",
        "katalyst/api/resourceplugin/v1alpha1/api.proto",
    }
    assert len(produced) == 4 * len(protos)
    for path in produced:
        committed = root / path
        assert committed.is_file(), f"{path} is generated but not committed"
        assert committed.read_bytes() == (tmp_path / path).read_bytes(), (
            f"{path} differs from a fresh generation; run python -m katalyst.api.generate"
        )


def test_generation_is_deterministic(tmp_path: Path) -> None:
    root = generate.repository_root()
    first = generate.generate(root=root, out=tmp_path / "first")
    second = generate.generate(root=root, out=tmp_path / "second")
    assert first == second
    for path in first:
        assert (tmp_path / "first" / path).read_bytes() == (tmp_path / "second" / path).read_bytes()


def test_check_passes_on_the_committed_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check"]) == 0
    assert "out of date" not in capsys.readouterr().err


def _copy_protos(src_root: Path, dst_root: Path) -> None:
    for proto in generate.find_protos(src_root):
        (dst_root / proto).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / proto, dst_root / proto)


def test_check_lists_edited_missing_and_orphaned_files(tmp_path: Path) -> None:
    _copy_protos(generate.repository_root(), tmp_path)
    produced = generate.generate(root=tmp_path, out=tmp_path)
    assert generate.stale_files(root=tmp_path) == []

    edited = next(p for p in produced if p.name == "api_pb2.py")
    (tmp_path / edited).write_text("# edited by hand\n", encoding="utf-8")
    missing = next(p for p in produced if p.name == "api_pb2_grpc.pyi")
    (tmp_path / missing).unlink()
    orphan = Path("katalyst/api/old/gone_pb2.py")
    (tmp_path / orphan).parent.mkdir(parents=True)
    (tmp_path / orphan).write_text("# left behind by a deleted proto\n", encoding="utf-8")

    assert generate.stale_files(root=tmp_path) == sorted([edited, missing, orphan])


def test_missing_grpcio_tools_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A None entry in sys.modules makes the import fail exactly as if the
    # package were not installed.
    monkeypatch.setitem(sys.modules, "grpc_tools", None)
    assert generate.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "grpcio-tools is not installed" in err
    assert "pip install" in err
    assert list(tmp_path.iterdir()) == []
