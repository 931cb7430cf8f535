"""Everything in omnisim.__all__ resolves, and importing omnisim stays light."""

import subprocess
import sys

import omnisim


def test_every_public_name_resolves():
    missing = [n for n in omnisim.__all__ if not hasattr(omnisim, n)]
    assert missing == []


def test_import_omnisim_does_not_pull_heavy_dependencies():
    code = ("import sys, omnisim; heavy = [m for m in ('dask', 'optuna', 'fastapi', 'simpy', 'sklearn') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
