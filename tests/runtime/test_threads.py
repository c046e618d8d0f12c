"""The command makes OpenMP's waiting threads sleep, before torch starts; the library never
changes a process-wide setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def openmp_settings(code: str, **env: str) -> str:
    """What libgomp reports (``OMP_DISPLAY_ENV=VERBOSE``) when ``code`` imports torch."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environment.update(OMP_DISPLAY_ENV="VERBOSE", **env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    if "GOMP_SPINCOUNT" not in done.stderr:
        pytest.skip("torch's OpenMP runtime is not GNU libgomp: nothing to read back")
    return done.stderr


def test_the_command_sets_a_passive_wait_policy_before_torch_loads() -> None:
    # spin count 0: waiting threads sleep at once (libgomp's default spins 300,000 times)
    report = openmp_settings("from padless.cli import main; main(['demo'])")
    assert "GOMP_SPINCOUNT = '0'" in report


def test_a_users_own_setting_is_kept() -> None:
    report = openmp_settings("from padless.cli import main; main(['demo'])",
                             OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in report


def test_importing_the_library_or_the_cli_changes_nothing() -> None:
    code = ("import sys, os\nimport padless.cli\nassert 'torch' not in sys.modules\n"
            "from padless import pad_batch, masked_cross_entropy\n"
            "assert 'OMP_WAIT_POLICY' not in os.environ\n")
    assert "GOMP_SPINCOUNT = '300000'" in openmp_settings(code)  # libgomp's own default
