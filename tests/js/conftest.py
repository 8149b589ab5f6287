from tests.cluster.conftest import cluster_factory, pytest_runtest_makereport  # noqa: F401 - fixtures
