"""Fixtures of the control-plane tests: the multi-process cluster of tests/cluster (with control
replicas, see `Cluster.add_control`) and its failure report hook."""

from __future__ import annotations

from tests.cluster.conftest import cluster_factory, pytest_runtest_makereport

__all__ = ["cluster_factory", "pytest_runtest_makereport"]
