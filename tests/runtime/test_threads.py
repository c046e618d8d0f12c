"""The command makes OpenMP's waiting threads sleep, before torch starts; the library never
changes a process-wide setting. (Each test starts a Python that imports torch: slow.)"""

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


@pytest.mark.slow
def test_the_command_sets_a_passive_wait_policy_before_torch_loads() -> None:
    # spin count 0: waiting threads sleep at once (libgomp's default spins 300,000 times)
    report = openmp_settings("from padless.cli import main; main(['demo'])")
    assert "GOMP_SPINCOUNT = '0'" in report


@pytest.mark.slow
def test_a_users_own_setting_is_kept() -> None:
    report = openmp_settings("from padless.cli import main; main(['demo'])",
                             OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in report


@pytest.mark.slow
def test_importing_the_library_or_the_cli_changes_nothing() -> None:
    code = ("import sys, os\nimport padless.cli\nassert 'torch' not in sys.modules\n"
            "from padless import pad_batch, masked_cross_entropy\n"
            "assert 'OMP_WAIT_POLICY' not in os.environ\n")
    assert "GOMP_SPINCOUNT = '300000'" in openmp_settings(code)  # libgomp's own default


def test_free_cores_counts_idle_time_between_two_readings(tmp_path, monkeypatch) -> None:
    from padless.runtime import threads

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal (guest columns are not counted)
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 ...\n")
    later = "cpu  250 0 150 850 100 0 0 0 0 0\n"  # +200 busy, +150 idle of +350

    def sleep(seconds: float) -> None:  # the machine moves on while free_cores waits
        stat.write_text(later)

    monkeypatch.setattr(threads.time, "sleep", sleep)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    assert threads.free_cores(stat=str(stat)) == pytest.approx(2 * 150 / 350)
    assert threads.free_cores(stat=str(tmp_path / "missing")) is None


def test_too_late_once_torch_is_imported(monkeypatch) -> None:
    import torch  # noqa: F401  (already imported by the test session)

    from padless.runtime.threads import configure_threads

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "already imported" in configure_threads()
    assert "OMP_WAIT_POLICY" not in os.environ


def test_one_thread_per_free_core_unless_none_is_free() -> None:
    from padless.runtime.threads import threads_for

    assert threads_for(2.0, 2) == 2 and threads_for(1.6, 2) == 2  # idle
    assert threads_for(1.0, 2) == 1 and threads_for(0.7, 2) == 1  # one program beside
    assert threads_for(0.2, 2) == 2  # every core busy: a fair share on each
    assert threads_for(None, 4) == 4 and threads_for(2.9, 4) == 3 and threads_for(9.0, 4) == 4
