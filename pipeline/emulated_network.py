"""An emulated cluster network on one machine: a network namespace per worker, rate-limited links.

Each worker ``i`` gets a Linux network namespace (``<name>-w<i>``, also its hostname) with two
interfaces, as a cluster node with a management and a data network has:

- ``spark0`` on ``198.18.<subnet>.0/24``, a bridge in the root namespace whose address
  (``.1``) the Spark master and the driver bind to: Spark's own traffic (task launch, results,
  heartbeats, the training's log lines) and torch's rendezvous store;
- ``pg0`` on ``198.19.<subnet>.0/24``, a bridge between the workers only: the gloo process group
  (``GLOO_SOCKET_IFNAME=pg0``), i.e. gradients and activations.

Both links are limited to ``link_rate`` in both directions with ``tc`` token-bucket filters: on
the namespace side of each veth pair (what the worker sends) and on the bridge side (what it
receives). The addresses are in the RFC 2544 benchmarking range 198.18.0.0/15, exist only on the
bridges and veths made here, and have no route off the machine (no gateway, no forwarding).

Everything is named ``<name>-...`` (``name`` = ``lc`` + 4 hex digits) and removed by
:meth:`EmulatedNetwork.destroy`, which is safe to call on a half-built network and twice.
Building needs root (network namespaces, veths, qdiscs), ``pyroute2`` and, to start processes in
a namespace with their own hostname, ``ip``, ``unshare`` and ``hostname``;
:func:`check_support` says which is missing.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import NetworkEmulationError

SPARK_IFNAME = "spark0"  # in each worker's namespace: Spark's link
PG_IFNAME = "pg0"  # in each worker's namespace: the process group's link
SPARK_NET = "198.18.{subnet}.0/24"
PG_NET = "198.19.{subnet}.0/24"
FIRST_HOST = 10  # worker i has host address FIRST_HOST + i on both networks
MAX_WORKERS = 240
NAME_PATTERN = re.compile(r"^lc[0-9a-f]{4}-")  # every object this module creates
NETNS_ETC = Path("/etc/netns")  # `ip netns exec` binds /etc/netns/<ns>/hosts over /etc/hosts
QUEUE_LATENCY = "50ms"  # longest a packet waits in a shaper's queue before it is dropped
FRAME_BYTES = 1514  # an Ethernet frame at MTU 1500, as the shaper counts it (no FCS, preamble)
COMMANDS = {"ip": "iproute2", "unshare": "util-linux", "hostname": "hostname"}

_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit)\s*$", re.IGNORECASE)
MAX_RATE_BPS = 32 * 10**9  # tbf's rate is 32 bits of bytes per second


def parse_rate(text: str) -> int:
    """Bits per second of a ``tc``-style rate: ``"100mbit"``, ``"1gbit"``, ``"2.5gbit"``.

    Raises:
        ValueError: not a rate in those units, or outside 1 kbit/s .. 32 gbit/s.
    """
    match = _RATE.match(str(text))
    if match is None:
        raise ValueError(f"link rate {text!r} is not a rate: write a number and one of "
                         f"{list(_UNITS)}, e.g. '100mbit', '1gbit', '10gbit'")
    bps = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if not 1000 <= bps <= MAX_RATE_BPS:
        raise ValueError(f"link rate {text!r} is outside 1kbit .. 32gbit")
    return bps


def shaper_burst_bytes(rate_bps: int) -> int:
    """The token bucket's depth: 500 us at the link rate, and at least two full frames.

    The bucket is what the shaper lets through at once, unpaced: with a deep one, a message
    smaller than the bucket would cross at memory speed however slow the link (no serialisation
    delay); with a shallow one the shaper must send again before the kernel's timer wakes it,
    and the link runs below its rate. 100 us held 956 Mbit/s at 1 Gbit/s on some days and 592 on
    others of this virtual machine (its timers wake late); 500 us holds 942. A message pays its
    bytes / rate less at most 500 us; larger offloaded packets are cut into frames that fit.
    """
    return max(2 * FRAME_BYTES, rate_bps // 8 // 2_000)


def check_support() -> None:
    """Raise :class:`NetworkEmulationError` naming what this machine lacks to build the network."""
    if os.geteuid() != 0:
        raise NetworkEmulationError(
            "creating network namespaces, veth pairs and tc qdiscs needs root (CAP_NET_ADMIN "
            f"and CAP_SYS_ADMIN); this process runs as uid {os.geteuid()}",
            "run it as root (e.g. `sudo make cluster-up NET=1gbit`), or use the loopback "
            "cluster (`make cluster-up`, no emulated network)")
    missing = [f"`{cmd}` (Debian package {pkg})" for cmd, pkg in COMMANDS.items()
               if shutil.which(cmd) is None]
    if missing:
        raise NetworkEmulationError(
            f"missing command(s) {', '.join(missing)}: they start each worker in its "
            "namespace with a hostname of its own",
            "install them (e.g. `apt-get install iproute2 util-linux hostname`)")
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        raise NetworkEmulationError(
            "the Python package pyroute2 is not installed",
            "install the project with its dependencies (`pip install -c constraints.txt -e .`)"
        ) from None
    if not Path("/proc/self/ns/net").exists():
        raise NetworkEmulationError("this kernel has no network namespaces (/proc/self/ns/net)",
                                    "run on a Linux kernel built with CONFIG_NET_NS")


def leftovers() -> list[str]:
    """Namespaces, interfaces and /etc/netns folders of any emulated network still present."""
    from pyroute2 import IPRoute, netns

    found = [f"netns {n}" for n in netns.listnetns() if NAME_PATTERN.match(n)]
    with IPRoute() as ipr:
        found += [f"link {link.get_attr('IFLA_IFNAME')}" for link in ipr.get_links()
                  if NAME_PATTERN.match(link.get_attr("IFLA_IFNAME") or "")]
    if NETNS_ETC.is_dir():
        found += [f"folder {p}" for p in NETNS_ETC.iterdir() if NAME_PATTERN.match(p.name)]
    return sorted(found)


def _used_subnets() -> set[int]:
    from pyroute2 import IPRoute

    spark = ipaddress.ip_network("198.18.0.0/16")
    with IPRoute() as ipr:
        addresses = [ipaddress.ip_address(a.get_attr("IFA_ADDRESS"))
                     for a in ipr.get_addr(family=2)]
    return {int(str(a).split(".")[2]) for a in addresses if a in spark}


@dataclass
class EmulatedNetwork:
    """The namespaces, bridges, veth pairs and shapers of an emulated cluster of ``workers``."""

    workers: int
    link_rate: str = "1gbit"
    name: str = field(default_factory=lambda: f"lc{secrets.token_hex(2)}")
    subnet: int = 0  # third octet of both networks; 0: the lowest one free on this machine

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"an emulated network has 1 .. {MAX_WORKERS} workers, "
                             f"got {self.workers}")
        if not NAME_PATTERN.match(f"{self.name}-"):
            raise ValueError(f"network name must be 'lc' and 4 hex digits, got {self.name!r}")
        parse_rate(self.link_rate)

    # ---- names and addresses
    def namespace(self, worker: int) -> str:
        """The network namespace (and hostname) of ``worker``."""
        return f"{self.name}-w{worker}"

    @property
    def driver_address(self) -> str:
        """The root namespace's address on the Spark network: the master's and the driver's."""
        return self._host(SPARK_NET, 1)

    def spark_address(self, worker: int) -> str:
        """``worker``'s address on the Spark network."""
        return self._host(SPARK_NET, FIRST_HOST + worker)

    def pg_address(self, worker: int) -> str:
        """``worker``'s address on the process group's network."""
        return self._host(PG_NET, FIRST_HOST + worker)

    def _host(self, net: str, host: int) -> str:
        return str(ipaddress.ip_network(net.format(subnet=self.subnet))[host])

    @property
    def _bridges(self) -> dict[str, str]:
        return {SPARK_IFNAME: f"{self.name}-spark", PG_IFNAME: f"{self.name}-pg"}

    def _host_side(self, ifname: str, worker: int) -> str:
        return f"{self.name}-{'s' if ifname == SPARK_IFNAME else 'p'}{worker}"

    def worker_environment(self, worker: int) -> dict[str, str]:
        """What a process in ``worker``'s namespace needs: its Spark address, gloo's interface."""
        return {"SPARK_LOCAL_IP": self.spark_address(worker), "GLOO_SOCKET_IFNAME": PG_IFNAME,
                "LANDCOVER_SPARK_IFNAME": SPARK_IFNAME}

    def command_in(self, worker: int, argv: list[str]) -> list[str]:
        """``argv`` run in ``worker``'s namespace, with its own hostname and hosts file."""
        host = self.namespace(worker)
        return ["ip", "netns", "exec", host, "unshare", "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', host, *argv]

    # ---- building and removing
    def create(self) -> EmulatedNetwork:
        """Build the network; on any failure (or Ctrl-C) remove what was built, then raise.

        Raises:
            NetworkEmulationError: no rights, a missing command, or the kernel refused a step
                (named in the message).
        """
        check_support()
        if not self.subnet:
            used = _used_subnets()
            self.subnet = next((s for s in range(1, 255) if s not in used), 0)
            if not self.subnet:
                raise NetworkEmulationError("every 198.18.x.0/24 subnet is in use here",
                                            "stop other emulated clusters (make cluster-down)")
        try:
            self._build()
        except BaseException as exc:
            self.destroy()
            if isinstance(exc, Exception) and not isinstance(exc, NetworkEmulationError):
                raise NetworkEmulationError(
                    f"building the network {self.name} failed: {type(exc).__name__}: {exc}",
                    "check that this kernel has veth, bridge and tbf (sch_tbf) support; "
                    "nothing was left behind") from exc
            raise
        return self

    def _build(self) -> None:
        from pyroute2 import IPRoute, NetNS, netns

        with IPRoute() as ipr:
            for ifname, bridge in self._bridges.items():
                ipr.link("add", ifname=bridge, kind="bridge")
                index = ipr.link_lookup(ifname=bridge)[0]
                if ifname == SPARK_IFNAME:
                    ipr.addr("add", index=index, address=self.driver_address, prefixlen=24)
                ipr.link("set", index=index, state="up")
            self._write_hosts_files()
            for worker in range(self.workers):
                namespace = self.namespace(worker)
                netns.create(namespace)
                for ifname, bridge in self._bridges.items():
                    host_side = self._host_side(ifname, worker)
                    ipr.link("add", ifname=host_side, kind="veth",
                             peer={"ifname": ifname, "net_ns_fd": namespace})
                    index = ipr.link_lookup(ifname=host_side)[0]
                    ipr.link("set", index=index, master=ipr.link_lookup(ifname=bridge)[0],
                             state="up")
                with NetNS(namespace) as ns:
                    ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                    for ifname, address in ((SPARK_IFNAME, self.spark_address(worker)),
                                            (PG_IFNAME, self.pg_address(worker))):
                        index = ns.link_lookup(ifname=ifname)[0]
                        ns.addr("add", index=index, address=address, prefixlen=24)
                        ns.link("set", index=index, state="up")
        self.set_rate(self.link_rate)

    def _write_hosts_files(self) -> None:
        lines = ["127.0.0.1 localhost", f"{self.driver_address} {self.name}-driver"]
        lines += [f"{self.spark_address(w)} {self.namespace(w)}" for w in range(self.workers)]
        for worker in range(self.workers):
            folder = NETNS_ETC / self.namespace(worker)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text("\n".join(lines) + "\n")

    def set_rate(self, link_rate: str) -> None:
        """Limit every worker's links to ``link_rate``, both directions (also while running)."""
        from pyroute2 import IPRoute, NetNS

        rate = parse_rate(link_rate)
        shaper = {"rate": rate // 8, "burst": shaper_burst_bytes(rate),
                  "latency": QUEUE_LATENCY}
        with IPRoute() as ipr:
            for worker in range(self.workers):
                with NetNS(self.namespace(worker)) as ns:
                    for ifname in (SPARK_IFNAME, PG_IFNAME):
                        ns.tc("replace", "tbf", ns.link_lookup(ifname=ifname)[0], **shaper)
                        host_side = ipr.link_lookup(ifname=self._host_side(ifname, worker))[0]
                        ipr.tc("replace", "tbf", host_side, **shaper)
        self.link_rate = link_rate

    def destroy(self, timeout_s: float = 10) -> None:
        """Remove every namespace, interface and hosts file of this network (what exists)."""
        from pyroute2 import IPRoute, netns

        mine = re.compile(rf"^{re.escape(self.name)}-")
        for namespace in netns.listnetns():
            if mine.match(namespace):
                netns.remove(namespace)
        deadline = time.monotonic() + timeout_s
        with IPRoute() as ipr:
            while True:  # a namespace's veths go with it, asynchronously; bridges by hand
                links = [(link["index"], link.get_attr("IFLA_IFNAME"))
                         for link in ipr.get_links()
                         if mine.match(link.get_attr("IFLA_IFNAME") or "")]
                for index, ifname in links:
                    if ifname in self._bridges.values() or time.monotonic() > deadline - 5:
                        try:
                            ipr.link("del", index=index)
                        except Exception:  # noqa: BLE001 (gone in the meantime)
                            pass
                if not links or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        for worker_folder in NETNS_ETC.glob(f"{self.name}-w*"):
            shutil.rmtree(worker_folder, ignore_errors=True)
