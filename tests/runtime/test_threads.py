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


def run_command(free: float) -> str:
    """``padless demo`` in a fresh Python where ``free_cores()`` reports ``free`` cores."""
    return ("import padless.runtime.threads as threads\n"
            f"threads.free_cores = lambda *args, **kwargs: {free!r}\n"
            "from padless.cli import main\nmain(['demo'])\n"
            "import torch\nprint('threads', torch.get_num_threads())\n")


@pytest.mark.slow
def test_beside_a_busy_core_the_command_waits_passively_on_the_free_ones() -> None:
    # spin count 0: waiting threads sleep at once (libgomp's default spins 300,000 times)
    report = openmp_settings(run_command(free=(os.cpu_count() or 2) - 1.0))
    assert "GOMP_SPINCOUNT = '0'" in report


@pytest.mark.slow
def test_on_an_idle_machine_torch_keeps_its_own_settings() -> None:
    report = openmp_settings(run_command(free=float(os.cpu_count() or 2)))
    assert "GOMP_SPINCOUNT = '300000'" in report


@pytest.mark.slow
def test_a_users_own_setting_is_kept() -> None:
    report = openmp_settings(run_command(free=0.0), OMP_WAIT_POLICY="ACTIVE")
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


def test_the_plan_for_idle_partly_busy_and_busy_machines() -> None:
    from padless.runtime.threads import threads_for

    assert threads_for(2.0, 2) == threads_for(1.6, 2) == (2, False)  # idle: torch's own
    assert threads_for(None, 4) == (4, False)  # unknown: torch's own
    assert threads_for(1.0, 2) == threads_for(0.7, 2) == (1, True)  # one program beside
    assert threads_for(2.9, 4) == (3, True)
    assert threads_for(0.2, 2) == (2, True)  # every core busy: a fair share on each
