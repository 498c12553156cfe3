"""Regenerate the Python code for the wire protocols under ``katalyst/api``.

Usage::

    python -m katalyst.api.generate            # rewrite the committed files in place
    python -m katalyst.api.generate --out DIR  # write the tree under DIR instead
    python -m katalyst.api.generate --check    # exit 1 if the committed files are stale

For every ``*.proto`` below ``katalyst/api`` this writes, beside it,
``*_pb2.py`` and ``*_pb2_grpc.py`` (protoc's Python and gRPC generators) and
``*_pb2.pyi`` and ``*_pb2_grpc.pyi`` (mypy-protobuf's typed stubs, which is what
``mypy --strict`` checks the rest of the code against).

The repository root is the only include root (``-I .``), so the generated
modules import each other as ``katalyst.api....`` and need no ``sys.path`` games.

The generated code is committed: the runtime needs only ``grpcio`` and
``protobuf``. The generators (``grpcio-tools``, ``mypy-protobuf``) are test/dev
extras, pinned in pyproject because the committed output must be exactly what
they produce; ``--check`` (and a unit test) enforce that.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "GENERATED_SUFFIXES",
    "GenerationError",
    "find_protos",
    "generate",
    "generated_files",
    "main",
    "repository_root",
    "stale_files",
]

#: What one ``foo.proto`` turns into, beside it.
GENERATED_SUFFIXES: tuple[str, ...] = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

_API_PACKAGE = Path("katalyst") / "api"

_INSTALL_HINT = "install the test extra: pip install -e '.[test]'"


class GenerationError(Exception):
    """The code could not be generated; the message says why and what to do."""


def repository_root() -> Path:
    """The include root for protoc: the directory that holds ``katalyst/``."""
    return Path(__file__).resolve().parents[2]


def find_protos(root: Path) -> list[Path]:
    """Every ``.proto`` file under ``root/katalyst/api``, relative to ``root``, sorted.

    Sorted so that protoc sees the same argument list on every machine; its
    output does not depend on the order, but a stable order keeps error
    messages and ``--check`` listings stable too.
    """
    return sorted(p.relative_to(root) for p in (root / _API_PACKAGE).rglob("*.proto"))


def generated_files(protos: Sequence[Path]) -> list[Path]:
    """The files that generating ``protos`` produces, relative to the output root."""
    return sorted(
        proto.with_name(proto.stem + suffix) for proto in protos for suffix in GENERATED_SUFFIXES
    )


def _plugin(name: str) -> Path:
    """Locate a protoc plugin executable installed by a Python package.

    Console scripts are installed beside the interpreter of the environment
    that holds the package (``.venv/bin``), which need not be on ``PATH`` when
    the interpreter is called by its full path, so look there first.
    ``sys.executable`` is deliberately not resolved: in a virtualenv it is a
    symlink to the base interpreter, whose directory has no such scripts.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    raise GenerationError(
        f"protoc plugin {name!r} not found beside {sys.executable} or on PATH; "
        f"it comes with mypy-protobuf: {_INSTALL_HINT}"
    )


def generate(*, root: Path, out: Path) -> list[Path]:
    """Run protoc over every proto under ``root`` and write the results under ``out``.

    Returns the generated files, relative to ``out``. Raises GenerationError
    if the generators are not installed or protoc rejects a file (protoc's
    own diagnostics go to stderr).
    """
    try:
        # Imported here, not at module level: grpcio-tools is a dev/test extra,
        # and importing katalyst.api must never need it.
        from grpc_tools import protoc  # noqa: PLC0415
    except ImportError as exc:
        raise GenerationError(f"grpcio-tools is not installed ({exc}); {_INSTALL_HINT}") from exc

    protos = find_protos(root)
    if not protos:
        raise GenerationError(f"no .proto files under {root / _API_PACKAGE}")
    out.mkdir(parents=True, exist_ok=True)
    # grpcio-tools ships the well-known types (google/protobuf/*.proto); none
    # are imported today, but the include keeps a future import working.
    well_known = Path(protoc.__file__).parent / "_proto"
    out_arg = str(out)
    argv = [
        "grpc_tools.protoc",
        f"--proto_path={root}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_arg}",
        f"--grpc_python_out={out_arg}",
        # "quiet": mypy-protobuf otherwise reports every file it writes.
        # "generate_concrete_servicer_stubs": the runtime base servicer is
        # concrete (every RPC answers UNIMPLEMENTED until overridden), so the
        # stubs say the same; otherwise mypy would demand that a plugin
        # implement RPCs that the kubelet treats as optional.
        f"--mypy_out=quiet:{out_arg}",
        f"--mypy_grpc_out=quiet,generate_concrete_servicer_stubs:{out_arg}",
        # Absolute paths: protoc maps them back to names relative to the
        # include root, so the descriptors record "katalyst/api/..." whatever
        # the current directory is. That keeps the output reproducible.
        *(str(root / proto) for proto in protos),
    ]
    status = protoc.main(argv)
    if status != 0:
        raise GenerationError(f"protoc exited with status {status}; see its messages above")
    expected = generated_files(protos)
    missing = [path for path in expected if not (out / path).is_file()]
    if missing:
        raise GenerationError("protoc succeeded but did not write: " + ", ".join(map(str, missing)))
    return expected


def stale_files(*, root: Path) -> list[Path]:
    """Generated files under ``root`` that differ from a fresh generation.

    Also lists committed ``*_pb2*`` files that no ``.proto`` produces any more
    (a deleted or renamed proto), since they would still be importable.
    Paths are relative to ``root``.
    """
    with tempfile.TemporaryDirectory(prefix="katalyst-api-") as scratch:
        fresh_root = Path(scratch)
        fresh = generate(root=root, out=fresh_root)
        stale = [
            path
            for path in fresh
            if not (root / path).is_file()
            or not filecmp.cmp(root / path, fresh_root / path, shallow=False)
        ]
    produced = set(fresh)
    orphans = [
        path.relative_to(root)
        for path in (root / _API_PACKAGE).rglob("*_pb2*")
        if path.is_file()
        and path.name.endswith(GENERATED_SUFFIXES)
        and path.relative_to(root) not in produced
    ]
    return sorted(stale + orphans)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m katalyst.api.generate",
        description="Generate the Python gRPC code and typed stubs for katalyst/api/**/*.proto.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the generated tree under DIR instead of beside the protos",
        metavar="DIR",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 and list the files that differ from a fresh generation",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _parse_args(argv)
    root = repository_root()
    try:
        if args.check:
            stale = stale_files(root=root)
            for path in stale:
                print(f"out of date: {path}", file=sys.stderr)
            if stale:
                print("run: python -m katalyst.api.generate", file=sys.stderr)
                return 1
            return 0
        out: Path = root if args.out is None else args.out
        for path in generate(root=root, out=out):
            print(out / path)
    except GenerationError as exc:
        print(f"katalyst.api.generate: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
