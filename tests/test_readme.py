"""The README's library example runs as it is, and the README stays a guide (<= 400 lines)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_the_library_example_runs_a_jitted_step():
    library = _readme().split("## Library", 1)[1]
    code = re.search(r"```python\n(.*?)```", library, re.S).group(1)
    flags = os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=1")
    env = {**os.environ, "XLA_FLAGS": flags}  # one device, the suite's cheap compiles
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loss = float(re.search(r"step 1 loss (\S+)", proc.stdout).group(1))
    assert 0 < loss < 20, proc.stdout


def test_the_readme_is_a_guide_and_its_links_resolve():
    text = _readme()
    assert len(text.splitlines()) <= 400
    for target in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)", text):
        assert os.path.exists(os.path.join(ROOT, target)), target
