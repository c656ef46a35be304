"""Host setup: CPU devices and malloc (tests/conftest.py already split the CPU in two)."""

import platform

import jax
import pytest

from lstm_jax import host


def test_conftest_made_two_cpu_devices():
    assert len(jax.devices("cpu")) == 2


def test_configure_after_start_keeps_the_devices_and_says_why():
    jax.devices()
    assert host.configure(malloc=False) == 2
    with pytest.warns(UserWarning, match="before any JAX computation"):
        assert host.configure(cpu_devices=3, malloc=False) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_configure_rejects_a_device_count_that_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match="positive integer"):
        host.configure(cpu_devices=bad)


def test_tune_malloc_applies_on_glibc():
    assert host.tune_malloc() == (
        platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    )


def test_available_cores_is_positive():
    assert host.available_cores() >= 1


def test_device_count_from_the_environment_is_checked(monkeypatch):
    monkeypatch.setenv(host.ENV_DEVICES, "two")
    with pytest.raises(ValueError, match="LSTM_JAX_CPU_DEVICES must be a positive integer"):
        host.configure(malloc=False)
    monkeypatch.setenv(host.ENV_DEVICES, "2")
    assert host.configure(malloc=False) == 2
