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


def test_environment_with_huge_pages_adds_the_glibc_tunable_once():
    env = host.environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.trim_threshold=1:glibc.malloc.hugetlb=1"
    assert host.environment_with_huge_pages(env) == env
    assert host.environment_with_huge_pages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_no_relaunch_when_opted_out_or_already_on_huge_pages(monkeypatch):
    monkeypatch.setenv(host.ENV_HUGE_PAGES, "0")
    assert not host.huge_pages_pending()
    host.relaunch_with_huge_pages("lstm_jax.cli", ["--help"])  # returns: nothing to do
    monkeypatch.delenv(host.ENV_HUGE_PAGES)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    assert not host.huge_pages_pending()
