"""The three trust setups some sections run under, each in a child process of its own:
``SSL_CERT_*`` unset, set as on this machine, and ``SSL_CERT_FILE`` naming another bundle."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TypeVar

from .section import Run

K = TypeVar("K")

ENV_LABELS = {
    "unset": "SSL_CERT_* unset",
    "set": "SSL_CERT_* set as here",
    "bundle": "SSL_CERT_FILE=other bundle",
}


def each_trust_env(knobs: K) -> list[Run[K]]:
    """A section's runs: the same knobs under each trust setup, keyed by it."""
    return [Run(knobs, key=mode, env=mode) for mode in ENV_LABELS]


def ssl_env(mode: str, workdir: Path) -> dict[str, str]:
    """This process's environment, prepared for one of three trust setups.

    ``unset``: neither variable. ``set``: the values already there (this machine's; where
    absent, the platform's defaults, as images and CI systems usually export them).
    ``bundle``: ``SSL_CERT_FILE`` names a bundle that is not the platform's file (a copy of
    it), which must be honoured by loading it.
    """
    env = dict(os.environ)
    defaults = ssl.get_default_verify_paths()
    env.pop("SSLKEYLOGFILE", None)
    if mode == "set":
        env.setdefault(defaults.openssl_cafile_env, defaults.openssl_cafile)
        env.setdefault(defaults.openssl_capath_env, defaults.openssl_capath)
        return env
    env.pop(defaults.openssl_cafile_env, None)
    env.pop(defaults.openssl_capath_env, None)
    if mode == "bundle":
        copy = workdir / "other-bundle.pem"
        if not copy.exists():
            source = Path(defaults.openssl_cafile)
            copy.write_bytes((source if source.is_file() else Path(certifi_where())).read_bytes())
        env[defaults.openssl_cafile_env] = str(copy)
    return env


def certifi_where() -> str:
    import certifi

    return certifi.where()


def env_is_platform_store() -> bool:
    """Whether SSL_CERT_FILE/SSL_CERT_DIR are set and name the platform's own default store."""
    defaults = ssl.get_default_verify_paths()
    pairs = [
        (os.environ.get(defaults.openssl_cafile_env), defaults.openssl_cafile),
        (os.environ.get(defaults.openssl_capath_env), defaults.openssl_capath),
    ]
    if not any(named for named, _ in pairs):
        return False
    try:
        return all(not named or os.path.samefile(named, default) for named, default in pairs)
    except OSError:
        return False
