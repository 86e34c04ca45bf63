"""``headstrong demo``: the smallest study, sized to finish in minutes on a 2-core CPU.

Fashion-MNIST, the offline MiniLM encoder and the shipped descriptions; one backbone trained twice
with the same recipe (ordinary head, text-guided head); neuron campaigns over every layer in fp32
and bf16 (stratified, each layer sized to ±0.5 pp on the mismatch rate), a weight campaign on the
classification layer (each fault on every evaluation image); one report.
"""

from __future__ import annotations

from typing import Any, Optional

from headstrong.study.config import StudyConfig, parse_study
from headstrong.study.pipeline import Say, StudyResult, run_study

DEMO_TRAIN = {"epochs": 3, "batch_size": 128, "lr": 0.05, "limit_train": 20000, "limit_test": 2000}
# neuron campaigns stratified by (layer, bit), each layer to ±0.5 pp on the mismatch rate at 99%
DEMO_CAMPAIGN = {"margin": 0.005, "max_images": 256, "weight_n_faults": 2048}


def demo_config(
    out: str = "runs/demo", device: str = "cpu", backbone: str = "cnn-small",
    formats: tuple[str, ...] = ("fp32", "bf16"), train: Optional[dict[str, Any]] = None,
    campaign: Optional[dict[str, Any]] = None,
) -> StudyConfig:
    """The demo's study, with the defaults above overridden by ``train`` / ``campaign``."""
    data = {
        "study": {
            "name": "demo", "dataset": "fashion-mnist", "encoder": "minilm", "backbones": [backbone],
            "inits": ["baseline", "text"], "formats": list(formats), "seeds": [0], "out": out, "device": device,
        },
        "train": {**DEMO_TRAIN, **(train or {})},
        "campaign": {**DEMO_CAMPAIGN, **(campaign or {})},
    }
    return parse_study(data)


def run_demo(config: Optional[StudyConfig] = None, *, progress: bool = True, say: Optional[Say] = None) -> StudyResult:
    return run_study(config or demo_config(), progress=progress, say=say)


__all__ = ["demo_config", "run_demo", "DEMO_TRAIN", "DEMO_CAMPAIGN"]
