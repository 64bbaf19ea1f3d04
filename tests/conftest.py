"""Shared test configuration.

The ``mtls_ca``, ``mtls_ca_factory``, ``certs_d`` and ``mtls_server`` fixtures come from the
``dockercerts`` pytest plugin, loaded through its ``pytest11`` entry point: install the package
(``pip install -e .``) before running the tests.
"""
