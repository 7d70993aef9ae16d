"""Probes against the automaton: activation collection, linear probes, controls, baselines, MDL.

* :func:`collect` -> :class:`Collection` -- activations at hook sites aligned with ``Language.trace``
  labels, split by sequence, bounded memory (``probe.collect``).
* :class:`LinearProbe` (``kind="classification"|"regression"``), :class:`LogisticProbe`,
  :class:`RidgeProbe` -- scikit-learn estimators with CV-chosen regularisation (``probe.linear``;
  ``probe.logistic``, ``probe.ridge``, ``probe.standardized``).
* :func:`control_labels` / :func:`control_mapping` / :func:`apply_control` -- Hewitt & Liang control
  tasks; :func:`majority_baseline`; :func:`random_init_like` (``probe.controls``).
* :func:`probe_grid` -> :class:`ProbeRecord` per (site, variable) / :func:`format_table` /
  :func:`length_bins` -- the tidy results table (``probe.grid``).
* :class:`ConditionalProbe` -- one probe per value of a conditioning variable (top | depth)
  (``probe.conditional``).
* :func:`online_code_length` -- Voita & Titov online code (``probe.mdl``).
"""
from .collect import CATEGORICAL_NAMES, Collection, collect, layer_of, sites_matching
from .conditional import ConditionalProbe
from .controls import apply_control, control_labels, control_mapping, majority_baseline, random_init_like
from .grid import OODScore, ProbeRecord, format_table, length_bins, probe_given, probe_grid
from .linear import LinearProbe, LogisticProbe, RidgeProbe, with_hyperparameters
from .mdl import online_code_length

__all__ = [
    "CATEGORICAL_NAMES",
    "Collection",
    "ConditionalProbe",
    "LinearProbe",
    "LogisticProbe",
    "OODScore",
    "ProbeRecord",
    "RidgeProbe",
    "apply_control",
    "collect",
    "control_labels",
    "control_mapping",
    "format_table",
    "layer_of",
    "length_bins",
    "majority_baseline",
    "online_code_length",
    "probe_given",
    "probe_grid",
    "random_init_like",
    "sites_matching",
    "with_hyperparameters",
]
