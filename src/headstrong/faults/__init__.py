"""Fault sites, fault sets, sample sizes and seeded samplers.

A fault names a module by its qualified name (as in ``model.named_modules()``), a flat index
(into one sample's output for a neuron fault, into the weight tensor for a weight fault) and a
bit (0 is the least significant). ``FaultSet`` keeps faults as columns so the engine can apply
a whole batch of them with tensor operations.
"""

from __future__ import annotations

from headstrong.faults.faultset import KINDS, FaultSet
from headstrong.faults.models import (
    FaultEdits,
    FaultModel,
    get_fault_model,
    list_fault_models,
    register_fault_model,
)
from headstrong.faults.sampling import sample_neuron_faults, sample_size, sample_weight_faults
from headstrong.faults.value_models import RandomValue, ValueFault, ValueFunction, Zero

__all__ = ["KINDS", "FaultEdits", "FaultModel", "FaultSet", "RandomValue", "ValueFault", "ValueFunction", "Zero",
           "get_fault_model", "list_fault_models", "register_fault_model", "sample_neuron_faults", "sample_size",
           "sample_weight_faults"]
