"""Studies: train baseline and text-guided models, inject faults, compare; ``demo`` is the smallest."""

from headstrong.study.config import CampaignSettings, StudyConfig, load_study, parse_study
from headstrong.study.demo import demo_config, run_demo
from headstrong.study.pipeline import StudyResult, grid, run_study

__all__ = [
    "StudyConfig", "CampaignSettings", "load_study", "parse_study", "run_study", "StudyResult", "grid",
    "demo_config", "run_demo",
]
