"""The pure parts of the emulated network and the wire meter: rates, refusals, counters."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import emulated_network
from pipeline.config import load_params
from pipeline.emulated_network import EmulatedNetwork, check_support, parse_rate
from pipeline.errors import NetworkEmulationError, ParamsError
from pipeline.training.wire import WireMeter, interface_counters, retransmitted_segments

PROC_NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
spark0:    1290      13    0    0    0     0          0         0      734       9    0    0    0     0       0          0
   pg0: 56346     847    0    0    0     0          0         0 26272386     877    0    0    0     0       0          0
"""  # noqa: E501


@pytest.mark.parametrize(("text", "bps"), [("100mbit", 10**8), ("1gbit", 10**9),
                                           ("10GBIT", 10**10), ("2.5gbit", 25 * 10**8),
                                           ("500kbit", 5 * 10**5)])
def test_link_rates_are_read_in_tc_units(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text", ["fast", "100", "100mb", "1Gbps", "0mbit", "64gbit"])
def test_a_bad_link_rate_is_refused_with_the_units(text: str) -> None:
    with pytest.raises(ValueError, match="link rate"):
        parse_rate(text)


def test_a_bad_link_rate_in_params_names_the_field(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("cluster: {network: emulated, link_rate: 1Gbps}\n")
    with pytest.raises(ParamsError, match=r"cluster.*link rate '1Gbps' is not a rate.*'100mbit'"):
        load_params(params)


def test_without_root_the_emulated_network_is_refused_with_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulated_network.os, "geteuid", lambda: 1000)
    with pytest.raises(NetworkEmulationError, match=r"needs root.*uid 1000.*sudo make cluster-up"
                                                    r".*or use the loopback cluster"):
        check_support()


def test_a_missing_command_is_named_with_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulated_network.os, "geteuid", lambda: 0)
    real = shutil.which
    monkeypatch.setattr(emulated_network.shutil, "which",
                        lambda cmd: None if cmd == "unshare" else real(cmd))
    with pytest.raises(NetworkEmulationError, match=r"`unshare` \(Debian package util-linux\)"):
        check_support()


def test_network_names_and_addresses_stay_in_the_benchmarking_range() -> None:
    network = EmulatedNetwork(workers=3, link_rate="1gbit", name="lc00ff", subnet=7)
    assert network.driver_address == "198.18.7.1"
    assert [network.spark_address(i) for i in range(3)] == ["198.18.7.10", "198.18.7.11",
                                                            "198.18.7.12"]
    assert network.pg_address(2) == "198.19.7.12"
    assert network.namespace(2) == "lc00ff-w2"
    assert all(len(name) <= 15 for name in network._bridges.values())  # Linux IFNAMSIZ
    assert network.command_in(1, ["java"])[:4] == ["ip", "netns", "exec", "lc00ff-w1"]
    with pytest.raises(ValueError, match="1 .. 240 workers"):
        EmulatedNetwork(workers=0)


def test_interface_counters_are_read_per_interface(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.write_text(PROC_NET_DEV)
    assert interface_counters(dev) == {"lo": (0, 0), "spark0": (1290, 734),
                                       "pg0": (56346, 26272386)}


def test_tcp_retransmissions_are_read_from_snmp(tmp_path: Path) -> None:
    snmp = tmp_path / "snmp"
    snmp.write_text("Ip: Forwarding DefaultTTL\nIp: 1 64\n"
                    "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens "
                    "AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs\n"
                    "Tcp: 1 200 120000 -1 10 4 0 0 3 2209 2669 48 0\n")
    assert retransmitted_segments(snmp) == 48


def test_a_worker_without_links_of_its_own_measures_nothing() -> None:
    assert WireMeter.from_environment({}).figures() == {}


def test_a_link_that_does_not_exist_is_named() -> None:
    with pytest.raises(RuntimeError, match=r"\['nonexistent0'\].*do not exist"):
        WireMeter({"process_group": "nonexistent0"})
