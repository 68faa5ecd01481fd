"""Unpacking user packages (sdists, wheels) safely into the cache; finding their import roots."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath

from ..errors import LoadError
from . import cache, space

log = logging.getLogger(__name__)

MAX_MEMBERS = 20_000
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Package:
    """An unpacked package: where its code is and what it provides."""

    uri: str
    roots: tuple[Path, ...]
    modules: tuple[str, ...]
    requirements: tuple[str, ...]
    unpacked: bool


def unpack(archive: Path, uri: str, cache_root: Path, *, max_bytes: int) -> Package:
    """Unpacks a `.tar.gz`, `.zip` or `.whl` into the cache, once per content.

    Nothing of the package runs: `setup.py` is read as text, never executed.

    Raises:
        LoadError: the archive is unreadable, holds a member that would land outside
            its folder, a link, a device file, too many members, or too many bytes.
    """
    digest = _sha256(archive)
    target = cache_root / "packages" / digest[:40]
    extract = _extract_zip if uri.endswith((".zip", ".whl")) else _extract_tar

    def build(tmp: Path) -> None:
        log.info("unpacking %s", uri)
        extract(archive, tmp, uri, max_bytes)

    unpacked = cache.materialize(target, build)
    roots = _roots(target, wheel=uri.endswith(".whl"))
    return Package(
        uri=uri,
        roots=roots,
        modules=tuple(sorted({m for r in roots for m in _top_level_modules(r)})),
        requirements=_requirements(target, roots[0]),
        unpacked=unpacked,
    )


def install_requirements(requirements: list[str], cache_root: Path) -> Path:
    """Installs declared dependencies with pip into a cache folder, once per set.

    Raises:
        LoadError: pip failed; its whole output is in the message.
    """
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:40]
    target = cache_root / "deps" / key

    def build(tmp: Path) -> None:
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
        command += ["--no-input", "--target", str(tmp), *requirements]
        log.info("installing package dependencies: %s", " ".join(requirements))
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            log.error("pip install failed:\n%s", output)
            raise LoadError(
                f"installing the packages' dependencies ({', '.join(requirements)}) failed; "
                f"pip said:\n{output[-20000:]}"
            )

    cache.materialize(target, build)
    return target


# Extraction


def _extract_tar(archive: Path, dest: Path, uri: str, max_bytes: int) -> None:
    import tarfile

    try:
        with space.reported(dest.parent, f"package {uri}"), tarfile.open(archive, "r:*") as tar:
            members, total = [], 0
            for member in tar:  # one at a time: a tiny archive may hold millions of headers
                members.append(member)
                total += member.size
                _check_counts(uri, len(members), total, max_bytes)
            space.check_room(dest.parent, total, f"package {uri} unpacked")
            dest.mkdir(parents=True)
            for member in members:
                _check_tar_member(member, dest, uri)
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise LoadError(f"package {uri} is not a readable .tar.gz archive: {exc}") from exc
    except OSError as exc:
        raise LoadError(f"package {uri} could not be unpacked: {exc.strerror}") from exc


def _check_tar_member(member, dest: Path, uri: str) -> None:
    import tarfile

    if member.name.startswith("/"):
        # The data filter would quietly strip the slash; refuse instead.
        raise LoadError(f"package {uri} was refused: member {member.name!r} has an absolute path")
    if member.issym() or member.islnk():
        # Packages have no need for links, and link chains have defeated tarfile's
        # own filter before (CVE-2025-4517); refusing them all is the safe rule.
        raise LoadError(
            f"package {uri} was refused: member {member.name!r} is a link "
            f"(to {member.linkname!r}); packages may hold only files and folders"
        )
    try:
        tarfile.data_filter(member, str(dest))
    except tarfile.FilterError as exc:
        raise LoadError(f"package {uri} was refused: member {member.name!r} {_why(exc)}") from exc


def _why(exc: Exception) -> str:
    import tarfile

    reasons = {
        tarfile.AbsolutePathError: "has an absolute path",
        tarfile.OutsideDestinationError: "would land outside the package folder",
        tarfile.SpecialFileError: "is a device, FIFO or other special file",
    }
    return next((text for kind, text in reasons.items() if isinstance(exc, kind)), str(exc))


def _extract_zip(archive: Path, dest: Path, uri: str, max_bytes: int) -> None:
    import zipfile

    try:
        with space.reported(dest.parent, f"package {uri}"), zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            _check_counts(uri, len(infos), total, max_bytes)
            space.check_room(dest.parent, total, f"package {uri} unpacked")
            for info in infos:
                _check_zip_member(info, uri)
            dest.mkdir(parents=True)
            for info in infos:
                target = dest.joinpath(*PurePosixPath(info.filename).parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise LoadError(f"package {uri} is not a readable zip archive: {exc}") from exc
    except OSError as exc:
        raise LoadError(f"package {uri} could not be unpacked: {exc.strerror}") from exc


def _check_zip_member(info, uri: str) -> None:
    name = info.filename
    parts = PurePosixPath(name).parts
    mode = info.external_attr >> 16
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        problem = "has an absolute path"
    elif ".." in parts or "\\" in name:
        problem = "would land outside the package folder"
    elif stat.S_ISLNK(mode):
        problem = "is a symbolic link"
    elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        problem = "is a device, FIFO or other special file"
    else:
        return
    raise LoadError(f"package {uri} was refused: member {name!r} {problem}")


def _check_counts(uri: str, members: int, size: int, max_bytes: int) -> None:
    if members > MAX_MEMBERS:
        raise LoadError(
            f"package {uri} was refused: it has more than {MAX_MEMBERS} members, "
            f"at most {MAX_MEMBERS} are accepted"
        )
    if size > max_bytes:
        raise LoadError(
            f"package {uri} was refused: it unpacks to {size} bytes, more than the "
            f"{max_bytes} that CPR_MAX_MODEL_BYTES allows"
        )


# Layout


def _roots(folder: Path, *, wheel: bool) -> tuple[Path, ...]:
    """The folders to put on `sys.path` for a package unpacked at `folder`."""
    if wheel:
        extra = [p for d in folder.glob("*.data") for p in (d / "purelib", d / "platlib")]
        return (folder, *[p for p in extra if p.is_dir()])
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    top = entries[0] if len(entries) == 1 and entries[0].is_dir() else folder
    roots = [top]
    declared = _setup_layout(top)
    for rel in declared:
        candidate = (top / rel).resolve()
        if candidate.is_dir() and candidate.is_relative_to(top.resolve()):
            roots.append(candidate)
    src = top / "src"
    if src.is_dir() and not (src / "__init__.py").exists():
        roots.append(src)
    return tuple(dict.fromkeys(roots))


def _setup_layout(top: Path) -> list[str]:
    """Folders named by `setup(package_dir=..., scripts=[...])`, read without running setup.py."""
    call = _setup_call(top)
    if call is None:
        return []
    folders: list[str] = []
    for keyword in call.keywords:
        value = _literal(keyword.value)
        if keyword.arg == "scripts" and isinstance(value, list | tuple):
            folders += [os.path.dirname(s) or "." for s in value if isinstance(s, str)]
        elif keyword.arg == "package_dir" and isinstance(value, dict) and "" in value:
            folders.append(str(value[""]))
    return folders


def _setup_call(top: Path) -> ast.Call | None:
    setup_py = top / "setup.py"
    if not setup_py.is_file():
        return None
    try:
        tree = ast.parse(setup_py.read_bytes())
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "setup":
                return node
    return None


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _top_level_modules(root: Path) -> list[str]:
    found = []
    for entry in root.iterdir():
        if entry.suffix == ".py" and entry.stem.isidentifier() and entry.stem != "setup":
            found.append(entry.stem)
        elif entry.is_dir() and entry.name.isidentifier() and (entry / "__init__.py").exists():
            found.append(entry.name)
    return found


def _requirements(folder: Path, top: Path) -> tuple[str, ...]:
    """Dependencies the package declares, from its metadata or, failing that, setup.py."""
    for metadata in [*folder.glob("*.dist-info/METADATA"), top / "PKG-INFO"]:
        if metadata.is_file():
            from email.parser import Parser

            headers = Parser().parsestr(metadata.read_text(errors="replace"), headersonly=True)
            declared = [r for r in headers.get_all("Requires-Dist") or [] if "extra" not in r]
            if declared:
                return tuple(declared)
    for requires in top.glob("*.egg-info/requires.txt"):
        lines = requires.read_text(errors="replace").split("[")[0].splitlines()
        return tuple(line.strip() for line in lines if line.strip())
    call = _setup_call(top)
    for keyword in call.keywords if call else []:
        value = _literal(keyword.value)
        if keyword.arg == "install_requires" and isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
    return ()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
