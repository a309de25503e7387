"""A training script that cannot run ZeRO-1: it exits 1 with a message; any other config trains
(examples/deepspeed_loop.py). For tests of a failing script trial."""

import json
import runpy
import sys
from pathlib import Path

config = json.loads(Path(sys.argv[sys.argv.index("--deepspeed_config") + 1]).read_text())
if config["zero_optimization"]["stage"] == 1:
    print("training...")
    sys.exit("this script cannot run ZeRO-1")
sys.argv[0] = str(Path(__file__).resolve().parents[2] / "examples" / "deepspeed_loop.py")
runpy.run_path(sys.argv[0], run_name="__main__")
