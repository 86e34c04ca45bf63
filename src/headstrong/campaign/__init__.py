"""Fault-injection campaigns: specs, local or Ray execution, durable Parquet results, resume."""

from headstrong.campaign.runner import CampaignResult, load_results, run_campaign
from headstrong.campaign.spec import CampaignSpec

__all__ = ["CampaignSpec", "run_campaign", "load_results", "CampaignResult"]
