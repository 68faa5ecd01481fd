"""`cpr-function init DIR`: a function's whole source, `main.py` and `requirements.txt`.

`main.py` is one import of the package's entry point; `requirements.txt` names the
package with the extras the models need, or a wheel copied beside them (a package that
is not on an index: Cloud Functions' build installs it from the uploaded folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path

EXTRAS = ("xgboost", "tensorflow", "mlflow", "frameworks")
# The package's other extras, which a function never needs.
NOT_SERVED = {"batch": "batch-predict's Apache Beam, which the function never imports"}

MAIN = '''"""Cloud Functions entry point: `functions-framework --target predict`."""

from cpr_function import predict  # noqa: F401
'''


class Refused(Exception):
    """What `init` will not do, said to the user."""


def write(folder: Path, *, extras: list[str], wheel: Path | None = None) -> list[Path]:
    """Writes `main.py` and `requirements.txt` into `folder` (made if missing).

    Raises:
        Refused: an extra is unknown, the wheel is not one, or a file would be overwritten.
    """
    for extra in extras:
        if extra in NOT_SERVED:
            raise Refused(f"a function does not need [{extra}]: it is {NOT_SERVED[extra]}")
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise Refused(f"unknown extra {', '.join(unknown)}; the extras are {', '.join(EXTRAS)}")
    if wheel is not None and (wheel.suffix != ".whl" or not wheel.is_file()):
        raise Refused(f"--wheel takes a built .whl file; {wheel} is not one")
    main, requirements = folder / "main.py", folder / "requirements.txt"
    taken = [p.name for p in (main, requirements) if p.exists()]
    if taken:
        raise Refused(f"{folder} already has {' and '.join(taken)}; nothing was written")
    folder.mkdir(parents=True, exist_ok=True)
    package = "cpr-function"
    written = [main, requirements]
    if wheel is not None:
        shutil.copy2(wheel, folder / wheel.name)
        package = f"./{wheel.name}"
        written.append(folder / wheel.name)
    wanted = f"[{','.join(extras)}]" if extras else ""
    main.write_text(MAIN)
    requirements.write_text(f"{package}{wanted}\n")
    return written
