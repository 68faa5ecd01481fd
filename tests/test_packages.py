"""Unpacking user packages: layouts that must work, archives that must be refused."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import make_tar, make_zip

from cpr_function.errors import LoadError
from cpr_function.loading.packages import install_requirements, unpack


def _unpack(archive, tmp_path, max_bytes=10**6):
    return unpack(archive, archive.name, tmp_path / "cache", max_bytes=max_bytes)


def _tree(folder):
    return set(folder.rglob("*"))


def _entries(folder):
    return sorted(p for p in folder.iterdir() if p.name != ".locks")


def _member(name, kind=tarfile.REGTYPE, size=0, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    return info


ABSOLUTE_TARGET = "/tmp/cpr-function-test-absolute-member.py"

HOSTILE_TARS = {
    "dotdot": ([_member("pkg/../../evil.py", size=1)], "would land outside the package folder"),
    "absolute": ([_member(ABSOLUTE_TARGET, size=1)], "has an absolute path"),
    "symlink out": (
        [_member("pkg/link", tarfile.SYMTYPE, linkname="../../../etc")],
        r"is a link \(to '../../../etc'\); packages may hold only files and folders",
    ),
    "absolute symlink": (
        [_member("pkg/link", tarfile.SYMTYPE, linkname="/etc/passwd")],
        "is a link",
    ),
    "hardlink out": (
        [_member("pkg/hard", tarfile.LNKTYPE, linkname="../../etc/passwd")],
        "is a link",
    ),
    # The shape of CVE-2025-4517: links that look inside until resolved, then a
    # member written through them. Every link is refused, so none of it lands.
    "symlink chain": (
        [
            _member("pkg/d", tarfile.DIRTYPE),
            _member("pkg/d/l", tarfile.SYMTYPE, linkname="."),
            _member("pkg/escape", tarfile.SYMTYPE, linkname="d/l/../.."),
            _member("pkg/escape/evil.py", size=1),
        ],
        "is a link",
    ),
    "device": ([_member("pkg/dev", tarfile.CHRTYPE)], "is a device, FIFO or other special file"),
    "fifo": ([_member("pkg/fifo", tarfile.FIFOTYPE)], "is a device, FIFO or other special file"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_members_are_refused_and_nothing_is_written(tmp_path, case):
    members, reason = HOSTILE_TARS[case]
    archive = make_tar(tmp_path / "bad-0.1.tar.gz", {"pkg/ok.py": "x = 1\n"}, extra=members)
    before = _tree(tmp_path.parent)
    with pytest.raises(LoadError, match=f"package bad-0.1.tar.gz was refused: member .* {reason}"):
        _unpack(archive, tmp_path)
    written = [p for p in _tree(tmp_path.parent) - before if ".locks" not in p.parts]
    assert written == [p for p in written if p.is_dir()], f"files written: {written}"
    assert not Path(ABSOLUTE_TARGET).exists()
    assert _entries(tmp_path / "cache" / "packages") == [], "no entry, partial or whole"


@pytest.mark.parametrize(
    "name,reason",
    [
        ("../evil.py", "would land outside the package folder"),
        ("/abs/evil.py", "has an absolute path"),
        ("pkg\\..\\evil.py", "would land outside the package folder"),
    ],
)
def test_hostile_zip_and_wheel_members_are_refused(tmp_path, name, reason):
    for suffix in (".zip", ".whl"):
        archive = make_zip(tmp_path / f"bad-0.1{suffix}", {"ok.py": "", name: "x"})
        before = _tree(tmp_path.parent)
        with pytest.raises(LoadError, match=reason):
            _unpack(archive, tmp_path)
        written = [p for p in _tree(tmp_path.parent) - before if ".locks" not in p.parts]
        assert written == [p for p in written if p.is_dir()], f"files written: {written}"


def test_zip_symlink_is_refused(tmp_path):
    archive = tmp_path / "link-0.1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("pkg/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(LoadError, match="is a symbolic link"):
        _unpack(archive, tmp_path)


def test_size_and_member_count_are_bounded(tmp_path):
    big = make_tar(tmp_path / "big-0.1.tar.gz", {"pkg/zeros.bin": b"\0" * 200_000})
    with pytest.raises(LoadError, match="unpacks to 200000 bytes, more than the 100000"):
        _unpack(big, tmp_path, max_bytes=100_000)
    bomb = make_zip(tmp_path / "bomb-0.1.zip", {"zeros.bin": b"\0" * 5_000_000})
    assert bomb.stat().st_size < 50_000
    with pytest.raises(LoadError, match="unpacks to 5000000 bytes"):
        _unpack(bomb, tmp_path)
    many = make_tar(tmp_path / "many-0.1.tar.gz", {f"pkg/f{i}": "" for i in range(20_001)})
    with pytest.raises(LoadError, match="has more than 20000 members, at most 20000"):
        _unpack(many, tmp_path)


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk-0.1.tar.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(LoadError, match="is not a readable .tar.gz archive"):
        _unpack(junk, tmp_path)


def test_layouts_put_the_right_folders_on_the_path(tmp_path):
    flat = _unpack(
        make_tar(
            tmp_path / "flat-0.1.tar.gz",
            {
                "flat-0.1/setup.py": "from setuptools import setup\nsetup(py_modules=['mod'])\n",
                "flat-0.1/mod.py": "",
                "flat-0.1/pkg/__init__.py": "",
            },
        ),
        tmp_path,
    )
    assert [r.name for r in flat.roots] == ["flat-0.1"]
    assert flat.modules == ("mod", "pkg")

    src = _unpack(
        make_tar(
            tmp_path / "src-0.1.tar.gz",
            {
                "src-0.1/pyproject.toml": "",
                "src-0.1/src/srcpkg/__init__.py": "",
            },
        ),
        tmp_path,
    )
    assert [r.name for r in src.roots] == ["src-0.1", "src"]
    assert src.modules == ("srcpkg",)

    scripts = _unpack(
        make_tar(
            tmp_path / "scripts-0.1.tar.gz",
            {
                "scripts-0.1/setup.py": "import setuptools\nsetuptools.setup(name='s', "
                "scripts=['bin/predictor.py', 'preprocess.py'])\nraise SystemExit('never run')\n",
                "scripts-0.1/bin/predictor.py": "",
                "scripts-0.1/preprocess.py": "",
            },
        ),
        tmp_path,
    )
    assert [r.name for r in scripts.roots] == ["scripts-0.1", "bin"]
    assert scripts.modules == ("predictor", "preprocess")

    wheel = _unpack(
        make_zip(
            tmp_path / "w-0.1-py3-none-any.whl",
            {
                "wmod/__init__.py": "",
                "w-0.1.dist-info/METADATA": "Name: w\nVersion: 0.1\nRequires-Dist: tinydep\n"
                "Requires-Dist: pytest; extra == 'test'\n",
            },
        ),
        tmp_path,
    )
    assert wheel.modules == ("wmod",)
    assert wheel.requirements == ("tinydep",)


def test_same_archive_unpacks_once(tmp_path):
    archive = make_tar(tmp_path / "p-0.1.tar.gz", {"p-0.1/p.py": ""})
    assert _unpack(archive, tmp_path).unpacked is True
    assert _unpack(archive, tmp_path).unpacked is False


def _wheel(folder, name, module_source):
    """A real, minimal wheel of one module, for pip to install offline."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": module_source,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    import base64
    import hashlib

    record = [
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b'=').decode()},{len(c)}"
        for p, c in files.items()
    ]
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    return make_zip(folder / f"{name}-1.0-py3-none-any.whl", files)


def test_declared_dependencies_install_offline_into_the_cache(tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    _wheel(links, "tinydep", "VALUE = 42\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    target = install_requirements(["tinydep==1.0"], tmp_path / "cache")
    assert (target / "tinydep.py").read_text() == "VALUE = 42\n"
    assert target.parent == tmp_path / "cache" / "deps"

    with pytest.raises(LoadError) as failure:
        install_requirements(["absent-dependency==9.9"], tmp_path / "cache")
    assert "absent-dependency==9.9" in str(failure.value)
    assert "No matching distribution found for absent-dependency==9.9" in str(failure.value)
    assert _entries(tmp_path / "cache" / "deps") == [target]


def test_install_requires_is_read_without_running_setup_py(tmp_path):
    ran = tmp_path / "setup-py-ran"
    setup_py = (
        f"open({str(ran)!r}, 'w').close()\n"
        "from setuptools import setup\n"
        "setup(name='r', install_requires=['tinydep>=1', 'other'])\n"
    )
    archive = make_tar(tmp_path / "r-0.1.tar.gz", {"r-0.1/setup.py": setup_py, "r-0.1/r.py": ""})
    package = _unpack(archive, tmp_path)
    assert package.requirements == ("tinydep>=1", "other")
    assert not ran.exists(), "setup.py must never run"
