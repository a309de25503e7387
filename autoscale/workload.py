"""What a trial trains: autoscale's own training loop on its own model, or the user's script.

A `ScriptWorkload` is `autoscale tune --script train.py -- args`: the script is run once per rank
per trial with the trial's ds_config handed over the way DeepSpeed scripts take it (a flag naming
the file), and measured by `autoscale.probe` or, without the probe, by DeepSpeed's step timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NUMERICS_GATE_OFF = ("off: a script's data, seed and sample order are its own, so autoscale cannot make every "
                     "layout train the same samples, which a loss comparison needs")
DEFAULT_CONFIG_FLAG = "--deepspeed_config"  # deepspeed.add_config_arguments; HF Trainer scripts take --deepspeed


@dataclass(frozen=True, kw_only=True)
class ScriptWorkload:
    path: str  # the script, absolute
    args: tuple[str, ...] = ()  # the script's own arguments, before the config flag
    config_flag: str = DEFAULT_CONFIG_FLAG

    @property
    def name(self) -> str:
        return Path(self.path).name

    def command(self, python: str, ds_config_path: Path) -> list[str]:
        return [python, self.path, *self.args, self.config_flag, str(ds_config_path)]

    def describe(self) -> dict:
        """What summary.json and the report say was measured."""
        return {"kind": "script", "script": self.path, "args": list(self.args), "config_flag": self.config_flag,
                "numerics_gate": NUMERICS_GATE_OFF}

    @classmethod
    def from_dict(cls, data: dict) -> "ScriptWorkload":
        return cls(path=data["path"], args=tuple(data.get("args", ())), config_flag=data["config_flag"])
