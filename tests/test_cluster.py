"""omnisim.cluster: a script that starts a LocalCluster of processes without the
``if __name__ == "__main__":`` guard gets told so, instead of only Dask's nanny tracebacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "my_sweep.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)


def test_an_unguarded_script_is_told_about_the_main_guard(tmp_path):
    res = _run(tmp_path, """
        from omnisim.sweep import sweep
        sweep("default", ["blast"], 1, n_users=20, days=1, progress=False)
        """)
    assert res.returncode != 0
    assert "ClusterError: could not start a Dask LocalCluster of 2 worker processes" in res.stderr
    assert "my_sweep.py" in res.stderr and 'if __name__ == "__main__":' in res.stderr


def test_the_guarded_script_runs(tmp_path):
    res = _run(tmp_path, """
        from omnisim.sweep import sweep
        if __name__ == "__main__":
            table = sweep("default", ["blast"], 1, n_users=20, days=1, progress=False)
            print("runs", len(table))
        """)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "runs 1" in res.stdout
