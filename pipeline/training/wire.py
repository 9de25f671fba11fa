"""Bytes that actually crossed a worker's links, read from its network interfaces' counters.

A worker knows its links from the environment: ``GLOO_SOCKET_IFNAME`` names the interface the
gloo process group uses (the ``process_group`` link) and ``LANDCOVER_SPARK_IFNAME`` the one
Spark uses (the ``spark`` link). The emulated cluster sets both (``pg0``, ``spark0``); on a
real cluster set them with ``spark.executorEnv.*``. Without them nothing is measured: on one
machine's loopback every process shares one interface, so its counters say nothing about a
worker.

The counters are read from ``/proc/net/dev``, which shows the interfaces of the reading
process's own network namespace. They count what the kernel handed to the interface: the
payload plus the Ethernet, IP and TCP headers of each packet, and the TCP acknowledgements;
on a veth pair the kernel hands over offloaded packets of up to 64 KiB with one set of headers
each (a physical NIC's counters add the headers of every 1,500-byte frame, ~4.6 % of a full
frame's payload).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

LINK_VARIABLES = {"process_group": "GLOO_SOCKET_IFNAME", "spark": "LANDCOVER_SPARK_IFNAME"}


def interface_counters(proc_net_dev: Path = Path("/proc/net/dev")) -> dict[str, tuple[int, int]]:
    """(received, sent) bytes of every interface of this process's network namespace."""
    counters = {}
    for line in proc_net_dev.read_text().splitlines()[2:]:
        name, _, numbers = line.partition(":")
        fields = numbers.split()
        counters[name.strip()] = (int(fields[0]), int(fields[8]))
    return counters


def retransmitted_segments(proc_net_snmp: Path = Path("/proc/net/snmp")) -> int:
    """TCP segments this network namespace has retransmitted (``RetransSegs``)."""
    header, values = (line.split() for line in proc_net_snmp.read_text().splitlines()
                      if line.startswith("Tcp:"))
    return int(values[header.index("RetransSegs")])


def link_rate_bps(ifname: str) -> float | None:
    """The rate of the token-bucket shaper on ``ifname`` in bits/s; ``None`` when unshaped."""
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            indices = ipr.link_lookup(ifname=ifname)
            qdiscs = ipr.get_qdiscs(indices[0]) if indices else []
    except Exception:  # noqa: BLE001 (no netlink here: the rate is simply unknown)
        return None
    for qdisc in qdiscs:
        if qdisc.get_attr("TCA_KIND") == "tbf" and qdisc["parent"] == 0xFFFFFFFF:
            parms = qdisc.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
            return float(parms["rate"] * 8)
    return None


class WireMeter:
    """Bytes sent and received on each of a worker's links since the meter was made."""

    def __init__(self, links: Mapping[str, str]) -> None:
        self.links = dict(links)  # link -> interface
        counters = interface_counters()
        missing = [ifname for ifname in self.links.values() if ifname not in counters]
        if missing:
            raise RuntimeError(f"network interface(s) {missing} named by "
                               f"{sorted(LINK_VARIABLES.values())} do not exist in this "
                               f"worker's network namespace (it has {sorted(counters)})")
        self._start = {link: counters[ifname] for link, ifname in self.links.items()}
        self._retransmitted = retransmitted_segments() if self.links else 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> WireMeter:
        """The links the environment names (none: a meter that measures nothing)."""
        return cls({link: environ[var] for link, var in LINK_VARIABLES.items()
                    if environ.get(var)})

    def figures(self) -> dict[str, float]:
        """``wire_bytes_{sent,received}_<link>`` so far, TCP retransmissions, the link rate.

        ``tcp_retransmitted_segments`` counts this worker's namespace (both links): segments
        TCP sent again after a loss or a timeout, which the wire bytes include.
        """
        counters = interface_counters()
        out: dict[str, float] = {}
        for link, ifname in self.links.items():
            (received, sent), (received0, sent0) = counters[ifname], self._start[link]
            received, sent = received - received0, sent - sent0
            out[f"wire_bytes_sent_{link}"] = float(sent)
            out[f"wire_bytes_received_{link}"] = float(received)
        if self.links:
            out["tcp_retransmitted_segments"] = float(retransmitted_segments()
                                                      - self._retransmitted)
        if "process_group" in self.links:
            rate = link_rate_bps(self.links["process_group"])
            if rate is not None:
                out["link_rate_bps"] = rate
        return out
