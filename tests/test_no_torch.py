"""Warm commands on cached features need NumPy, SciPy and ONNX Runtime, never PyTorch: importing
it costs about 3 s of a 4 s warm `train`. Here any import of torch, torchvision or timm fails."""

import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent(
    """
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "timm"):
                raise ImportError(f"{name} imported on a path that must not need it")

    sys.meta_path.insert(0, Blocked())
    sys.argv = ["headstart", *sys.argv[1:]]
    from headstart.cli import main

    main()
    """
)


@pytest.mark.slow  # a whole warm command each, in its own interpreter
@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "report"])
def test_warm_commands_never_import_torch(trained, presplit, cache_dir, tmp_path, command):
    _, model = trained  # trained on `presplit` with this cache: every feature is cached
    photo = str(next((presplit / "val" / "sunflower").iterdir()))
    args = {
        "train": ["train", str(presplit), "-o", str(tmp_path / "m"), "--json"],
        "evaluate": ["evaluate", str(model), str(presplit), "--json"],
        "predict": ["predict", str(model), photo, "--json"],
        "report": [
            "report",
            str(model),
            str(presplit),
            "-o",
            str(tmp_path / "r"),
            "--no-heat-maps",
        ],
    }[command]
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, *args, "--cache-dir", str(cache_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported on a path" not in result.stderr
