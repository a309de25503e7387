"""What an install owns: one top-level import name, `autoscale`. The transformers dependency `kernels`
(the Hugging Face kernel hub) owns the name `kernels`, and a top-level package of ours by that name
shadowed it from the repository root and was shadowed by it everywhere else."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_distribution_ships_one_top_level_package():
    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert found["include"] == ["autoscale*"]
    assert [p.name for p in REPO.iterdir() if (p / "__init__.py").exists()] == ["autoscale"]


def test_import_kernels_from_the_repository_root_is_never_ours():
    origin = python("import importlib.util as u; s = u.find_spec('kernels'); print(s.origin if s else None)", REPO)
    assert origin == "None" or "site-packages" in Path(origin).parts, origin  # the installed distribution


def test_autoscale_s_models_and_ranks_import_its_own_kernels_and_no_top_level_kernels():
    loaded = python("import sys; import autoscale.models.gpt, autoscale.models.pipeline, autoscale.engine.pool_rank; "
                    "print(sys.modules['autoscale.kernels'].__file__, 'kernels' in sys.modules)", Path("/"))
    own, top_level = loaded.split()
    assert Path(own).is_relative_to(REPO / "autoscale" / "kernels") and top_level == "False"


def test_the_console_script_answers_its_version_from_outside_the_repository(tmp_path):
    script = Path(sys.executable).with_name("autoscale")
    done = subprocess.run([str(script), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("autoscale "), done.stderr
