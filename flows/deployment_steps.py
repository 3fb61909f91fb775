"""Deployment steps of ``prefect.yaml`` that fail loudly.

A worker runs each flow from the eml checkout named by ``EML_HOME``. Prefect's own
``set_working_directory`` step with ``{{ $EML_HOME }}`` turns an unset variable into an empty or temporary
folder and the run dies on an unrelated ``FileNotFoundError``; :func:`enter_eml_home` says in one line which
variable is missing or what is wrong with the folder it names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOME = "EML_HOME"


class DeploymentSetupError(RuntimeError):
    """The worker's environment cannot run eml's flows; the message is one line naming the setting."""


def enter_eml_home() -> dict:
    """Pull step: change into ``$EML_HOME`` (an eml checkout, holding ``prefect.yaml`` and ``flows/``)."""
    value = os.environ.get(HOME, "").strip()
    problem = None
    if not value:
        problem = (f"{HOME} is not set on this worker: set it to the eml checkout the flows run from "
                   f"(see docs/deployments.md)")
    else:
        home = Path(value).expanduser()
        if not home.is_dir():
            problem = f"{HOME}={value}: no such folder on this worker (expected the eml checkout)"
        elif not (home / "prefect.yaml").is_file() or not (home / "flows").is_dir():
            problem = f"{HOME}={value}: not an eml checkout (no prefect.yaml and flows/ there)"
    if problem:
        print(f"eml: {problem}", file=sys.stderr)  # the first line of the worker's log, before Prefect's traceback
        raise DeploymentSetupError(problem)
    os.chdir(home)
    return {"directory": str(home)}
