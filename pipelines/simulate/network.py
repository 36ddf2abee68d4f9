"""The simulated enterprise: internal hosts, external destinations, DNS names, host profiles.

Everything here is drawn once from the simulation seed. Addresses live in one table
(:attr:`Network.addrs`) and generators refer to them by integer index, so a flow is a
handful of integers until the very end of a chunk.

Addressing (home network ``10.0.0.0/8``): workstations ``10.1.x.y``, servers
``10.2.0.x``, domain controllers ``10.2.1.x``, admin jump hosts ``10.2.2.x``, printers
``10.3.0.x``. External destinations never use RFC 1918 space; the documentation ranges
``192.0.2.0/24``, ``198.51.100.0/24`` and ``203.0.113.0/24`` are reserved for attacker
infrastructure, so an attack destination is never contacted by benign traffic.

>>> net = Network(hosts=40, seed=3)
>>> len(net.hosts), net.hosts[0].role, net.hosts[0].ip
(40, 'dc', '10.2.1.10')
>>> sorted({h.role for h in net.hosts})
['dc', 'jump', 'printer', 'server', 'workstation']
>>> net.addrs[net.index["10.2.1.10"]]
'10.2.1.10'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.exceptions import ConfigError

__all__ = ["DOMAIN", "ROLES", "Host", "Network"]

DOMAIN = "corp.example"
ROLES = ("workstation", "server", "dc", "jump", "printer")

#: server functions in allocation order (the first servers get these names and jobs)
SERVER_FUNCS = (
    "mgmt",
    "fs",
    "sql",
    "app",
    "web",
    "mail",
    "fs",
    "app",
    "sql",
    "app",
    "build",
    "log",
)
#: which server functions run a nightly cloud backup
BACKUP_FUNCS = ("fs", "sql", "mail")

_POPULAR = (
    "www.google.com",
    "www.gstatic.com",
    "fonts.googleapis.com",
    "www.youtube.com",
    "i.ytimg.com",
    "outlook.office365.com",
    "login.microsoftonline.com",
    "teams.microsoft.com",
    "graph.microsoft.com",
    "www.office.com",
    "res.cdn.office.net",
    "aadcdn.msauth.net",
    "www.linkedin.com",
    "static.licdn.com",
    "slack.com",
    "edgeapi.slack.com",
    "zoom.us",
    "github.com",
    "api.github.com",
    "raw.githubusercontent.com",
    "www.bing.com",
    "news.ycombinator.com",
    "www.wikipedia.org",
    "upload.wikimedia.org",
    "www.amazon.com",
    "m.media-amazon.com",
    "cdn.jsdelivr.net",
    "cdnjs.cloudflare.com",
    "ajax.googleapis.com",
    "www.salesforce.com",
    "login.salesforce.com",
    "app.hubspot.com",
    "www.atlassian.com",
    "corp-example.atlassian.net",
    "www.dropbox.com",
    "docs.google.com",
    "drive.google.com",
    "mail.google.com",
    "accounts.google.com",
    "www.reddit.com",
    "www.nytimes.com",
    "www.bbc.co.uk",
    "stackoverflow.com",
    "www.cnn.com",
    "weather.com",
    "www.apple.com",
)
_WORDS = (
    "blue",
    "north",
    "data",
    "cloud",
    "metro",
    "green",
    "river",
    "stone",
    "bright",
    "pixel",
    "alpha",
    "delta",
    "urban",
    "swift",
    "prime",
    "solar",
    "cedar",
    "maple",
    "ocean",
    "atlas",
    "vector",
    "harbor",
    "summit",
    "nova",
    "lumen",
    "orbit",
    "quartz",
    "ember",
    "frost",
    "echo",
)
_TLDS = ("com", "com", "com", "net", "org", "io", "co.uk", "de", "fr", "info")
#: public-looking /16 prefixes for benign destinations (SaaS, CDN, hosting)
_PREFIXES = (
    "13.107",
    "13.69",
    "20.190",
    "40.126",
    "52.96",
    "52.114",
    "52.84",
    "54.230",
    "99.84",
    "104.16",
    "104.18",
    "104.244",
    "142.250",
    "151.101",
    "172.217",
    "185.199",
    "23.45",
    "23.215",
    "34.117",
    "35.186",
    "18.160",
    "3.33",
    "31.13",
    "157.240",
    "199.232",
)


@dataclass(frozen=True)
class Host:
    """An internal host: address, name and role (one of :data:`ROLES`).

    >>> Host("10.1.0.10", "ws-0001", "workstation").role
    'workstation'
    """

    ip: str
    name: str
    role: str
    function: str = ""


class Network:
    """Hosts, external destination pools, DNS names and per-host profiles for one seed.

    ``hosts`` is the number of internal hosts (at least 20). The role mix is fixed:
    2-3 domain controllers, 1-3 jump hosts, one printer per ~50 hosts, ~8% servers
    (at least 6), the rest workstations.
    """

    def __init__(self, hosts: int, seed: int) -> None:
        if hosts < 20:
            raise ConfigError("hosts: at least 20 internal hosts are needed")
        rng = np.random.default_rng([seed, 101])
        n_dc = 3 if hosts >= 600 else 2
        n_jump = min(3, max(1, hosts // 150))
        n_prn = max(1, hosts // 50)
        n_srv = max(6, round(hosts * 0.08))
        n_ws = hosts - n_dc - n_jump - n_prn - n_srv
        self.hosts: list[Host] = []
        for i in range(n_dc):
            self.hosts.append(Host(f"10.2.1.{10 + i}", f"dc{i + 1:02d}", "dc", "dc"))
        counts: dict[str, int] = {}
        for i in range(n_srv):
            func = SERVER_FUNCS[i] if i < len(SERVER_FUNCS) else "app"
            counts[func] = counts.get(func, 0) + 1
            self.hosts.append(Host(f"10.2.0.{10 + i}", f"{func}{counts[func]:02d}", "server", func))
        for i in range(n_jump):
            self.hosts.append(Host(f"10.2.2.{10 + i}", f"jump{i + 1:02d}", "jump", "jump"))
        for i in range(n_prn):
            self.hosts.append(Host(f"10.3.0.{10 + i}", f"prn{i + 1:02d}", "printer", "printer"))
        for i in range(n_ws):
            ip = f"10.1.{i // 240}.{10 + i % 240}"
            self.hosts.append(Host(ip, f"ws-{i + 1:04d}", "workstation", "workstation"))
        self.n_internal = len(self.hosts)
        self.addrs: list[str] = [h.ip for h in self.hosts]
        self.labels: dict[str, str] = {}
        role = np.array([ROLES.index(h.role) for h in self.hosts], dtype=np.int8)
        self.role = role
        self.ws = np.flatnonzero(role == 0).astype(np.int32)
        self.srv = np.flatnonzero(role == 1).astype(np.int32)
        self.dc = np.flatnonzero(role == 2).astype(np.int32)
        self.jump = np.flatnonzero(role == 3).astype(np.int32)
        self.prn = np.flatnonzero(role == 4).astype(np.int32)
        funcs = np.array([h.function for h in self.hosts], dtype=object)
        self.mgmt = int(np.flatnonzero(funcs == "mgmt")[0])
        self.fileservers = np.flatnonzero(funcs == "fs").astype(np.int32)
        self.appservers = np.flatnonzero(
            np.isin(funcs, ["app", "web", "sql", "build", "log"])
        ).astype(np.int32)
        self.backup_srv = np.flatnonzero(np.isin(funcs, BACKUP_FUNCS)).astype(np.int32)
        self.mail = int(np.flatnonzero(funcs == "mail")[0])
        self._externals(rng)
        self._profiles(rng)

    # -- address table -----------------------------------------------------------------
    def addr_arr(self) -> np.ndarray:
        """The address table as an object array (cached; rebuilt if addresses were added)."""
        cached = getattr(self, "_addr_arr", None)
        if cached is None or len(cached) != len(self.addrs):
            cached = self._addr_arr = np.array(self.addrs, dtype=object)
        return cached

    def add_external(self, ip: str, label: str = "") -> int:
        """Register an external address (idempotent) and return its index."""
        if ip in self.index:
            return self.index[ip]
        self.index[ip] = len(self.addrs)
        self.addrs.append(ip)
        if label:
            self.labels[ip] = label
        return self.index[ip]

    def _fixed(self, ips: list[str], label: str) -> np.ndarray:
        return np.array([self.add_external(ip, label) for ip in ips], dtype=np.int32)

    def _externals(self, rng: np.random.Generator) -> None:
        self.index = {ip: i for i, ip in enumerate(self.addrs)}
        seen: set[str] = set(self.addrs)

        def fresh(k: int) -> list[str]:
            out: list[str] = []
            while len(out) < k:
                pre = _PREFIXES[int(rng.integers(len(_PREFIXES)))]
                ip = f"{pre}.{int(rng.integers(0, 256))}.{int(rng.integers(1, 255))}"
                if ip not in seen:
                    seen.add(ip)
                    out.append(ip)
            return out

        # shared service endpoints (fixed, labelled in truth.hosts)
        self.telemetry = self._fixed(
            ["13.69.109.130"], "telemetry endpoint (OS diagnostics, every host)"
        )
        self.edr = self._fixed(["52.114.76.34"], "EDR cloud console (agent check-ins, every host)")
        self.update = self._fixed(
            ["13.107.4.50", "23.45.180.12", "23.215.7.40"], "OS/software update CDN"
        )
        self.backup = self._fixed(
            ["52.84.150.20", "52.84.150.21"], "cloud backup object store (nightly server backups)"
        )
        self.sync = self._fixed(["13.107.42.12", "13.107.42.14"], "cloud file sync (OneDrive-like)")
        self.exchange = self._fixed(
            ["52.96.88.130", "52.96.88.146", "52.96.91.34"], "hosted e-mail (Exchange Online-like)"
        )
        self.ntp_ext = self._fixed(["162.159.200.1", "162.159.200.123"], "public NTP pool")
        self.forwarders = self._fixed(
            ["9.9.9.9", "149.112.112.112"], "upstream DNS forwarders of the DCs"
        )
        self.smtp_ext = self._fixed(["40.126.32.70"], "outbound mail gateway (SMTP relay target)")
        # popular SaaS/CDN (many hosts) and the long tail (few hosts each)
        self.popular = np.array([self.add_external(ip) for ip in fresh(300)], dtype=np.int32)
        self.tail = np.array([self.add_external(ip) for ip in fresh(6000)], dtype=np.int32)
        self._names(rng)

    def _names(self, rng: np.random.Generator) -> None:
        """One DNS name per web destination, plus CDN names with random-looking labels."""
        names: list[str] = []
        for i in range(len(self.popular)):
            if i < len(_POPULAR):
                names.append(_POPULAR[i])
            elif i % 3 == 0:
                names.append(f"d{rng.bytes(7).hex()[:13]}.cloudfront.net")
            elif i % 3 == 1:
                names.append(f"e{int(rng.integers(1000, 99999))}.a.akamaiedge.net")
            else:
                names.append(f"{rng.bytes(4).hex()}.fastly-edge.com")
        for _ in range(len(self.tail)):
            w1, w2 = rng.choice(_WORDS, 2)
            tld = _TLDS[int(rng.integers(len(_TLDS)))]
            sep = "-" if rng.random() < 0.3 else ""
            pre = ("www.", "", "cdn.", "static.", "api.")[int(rng.integers(5))]
            names.append(
                f"{pre}{w1}{sep}{w2}{int(rng.integers(0, 99)) if rng.random() < 0.2 else ''}.{tld}"
            )
        self.web_names = np.array(names, dtype=object)  # aligned with concat(popular, tail)
        self.web_dst = np.concatenate([self.popular, self.tail])
        svc_names = {
            "telemetry": ["v10.events.data.example-os.com"],
            "edr": ["agent.edr-cloud.example.net"],
            "update": [
                "update.example-os.com",
                "dl.delivery.example-os.com",
                "av-defs.example-os.com",
            ],
            "backup": [
                "backup-bucket.s3.example-cloud.com",
                "backup-bucket-2.s3.example-cloud.com",
            ],
            "sync": ["sync.files.example-cloud.com", "api.files.example-cloud.com"],
            "exchange": [
                "outlook.office365.com",
                "outlook.office365.com",
                "autodiscover.office365.com",
            ],
        }
        self.svc_names = {k: np.array(v, dtype=object) for k, v in svc_names.items()}
        self.internal_names = np.array(
            [f"{h.name}.{DOMAIN}" for h in self.hosts]
            + [
                f"_ldap._tcp.dc._msdcs.{DOMAIN}",
                f"_kerberos._tcp.{DOMAIN}",
                f"wpad.{DOMAIN}",
                DOMAIN,
            ],
            dtype=object,
        )
        self.ptr_names = np.array(
            [".".join(reversed(h.ip.split("."))) + ".in-addr.arpa" for h in self.hosts],
            dtype=object,
        )

    # -- per-host profiles ---------------------------------------------------------------
    def _profiles(self, rng: np.random.Generator) -> None:
        n = self.n_internal
        self.start_h = rng.normal(8.2, 0.6, n).clip(6.5, 10.0)  # office start, local hours
        self.end_h = (self.start_h + rng.normal(8.8, 0.7, n)).clip(14.5, 20.0)
        self.laptop = rng.random(n) < 0.45  # laptops are off outside the working day
        self.intensity = rng.lognormal(0.0, 0.35, n)  # how busy a user is
        self.syncer = rng.random(n) < 0.3  # cloud file sync client installed
        self.resolver = self.dc[np.arange(n) % len(self.dc)]  # primary DNS/AD server
        self.home_fs = self.fileservers[np.arange(n) % len(self.fileservers)]
        self.printer = self.prn[np.arange(n) % len(self.prn)]
        self.phase = rng.random((n, 8))  # phases of periodic jobs (fractions of their period)
        self.fav = rng.integers(0, len(self.tail), n)  # offset into the long tail per host
        # admin jump hosts: fixed daily edges to servers (proto by target)
        self.admin_edges: list[tuple[int, int, int]] = []  # (jump, server, port)
        targets = np.concatenate([self.srv, self.dc])
        for j in self.jump:
            for s in rng.choice(targets, min(len(targets), 6), replace=False):
                port = (3389, 5985, 22)[int(rng.integers(3))]
                self.admin_edges.append((int(j), int(s), port))
        # IT staff workstations that RDP to the jump hosts
        self.it_staff = rng.choice(self.ws, min(len(self.ws), 3), replace=False).astype(np.int32)

    def describe(self, i: int) -> str:
        """Human description of internal host ``i`` for truth.json ``hosts``."""
        h = self.hosts[i]
        what = {
            "workstation": "laptop" if self.laptop[i] else "desktop workstation",
            "server": f"{h.function} server",
            "dc": "domain controller (AD DS, DNS resolver forwarding upstream, Kerberos, LDAP)",
            "jump": "admin jump host (RDP/WinRM/SSH to servers)",
            "printer": "network printer (9100/IPP)",
        }[h.role]
        if h.role == "workstation":
            what += f", office {self.start_h[i]:.1f}-{self.end_h[i]:.1f}h"
            if self.syncer[i]:
                what += ", cloud sync client"
            if i in set(self.it_staff.tolist()):
                what += ", IT staff (RDP to jump hosts)"
        if h.role == "server" and i in set(self.backup_srv.tolist()):
            what += ", nightly cloud backup"
        if i == self.mgmt:
            what += " (patch/inventory push to workstations over SMB/RPC)"
        return f"{h.name}.{DOMAIN} - {what}"
