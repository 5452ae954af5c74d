"""Cluster harness for the failover tests: Redis (master + replica) watched by three
Sentinels, HAProxy in front, and N streamkeeper nodes, all on 127.0.0.1 with free ports,
inside the test's own network namespace (tests run under `unshare -n`).

The Redis, Sentinel and HAProxy configurations are the shipped ones from configs/cluster/
with ports and directories substituted, so the tests also exercise the example.

    with Cluster(tmp_path, nodes=3) as c:          # or the make_cluster fixture
        ing = c.api.create_ingress("demo")
        pub = c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
        room = c.follow("demo")                    # SSE through the LB, resumes on drop
        c.kill(c.host_of("demo"))                  # kill -9, recorded for the checker
        room.wait_event("RoomMoved")
        c.assert_invariants(room, final=True)

Everything started is stopped when the block (or the test) ends, even on failure: nodes
with SIGTERM first (their logs are checked for sanitizer reports), then the rest with
SIGKILL.
"""

import http.client
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import check_events
import harness

CONFIGS = harness.REPO / "configs" / "cluster"
MASTER_NAME = "streamkeeper"
REDIS_SERVER = "redis-server"
HAPROXY = "haproxy"

# DESIGN.md's defaults; a test may pass others (cluster={"lease_ttl_ms": 1500}).
DEFAULT_CLUSTER_SETTINGS = {"heartbeat_ms": 200, "lease_ttl_ms": 1000}


def now_ms():
    """Epoch milliseconds, the clock of the events' at_ms."""
    return time.time_ns() // 1_000_000


def _substitute(text, replacements):
    """Applies (regex, replacement) pairs, each of which must match: a changed shipped
    config must fail loudly here rather than silently run something else."""
    for pattern, repl in replacements:
        text, n = re.subn(pattern, repl, text, flags=re.M)
        if n == 0:
            raise AssertionError(f"config template: no match for {pattern!r}")
    return text


def redis_cli(port, *args, timeout=5):
    """One command through redis-cli; returns its stdout lines (raises on failure)."""
    p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise OSError(f"redis-cli -p {port} {args}: {p.stderr.strip()}")
    return p.stdout.splitlines()


class Redis:
    """One redis-server from configs/cluster/redis.conf (or the replica's file)."""

    def __init__(self, procs, workdir, name, replica_of=None):
        self.procs, self.name = procs, name
        self.port = harness.free_port()
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(workdir) / f"{name}.log"
        self.conf = Path(workdir) / f"{name}.conf"
        template = "redis-replica.conf" if replica_of else "redis.conf"
        subs = [(r"^port \d+$", f"port {self.port}"), (r"^dir .*$", f"dir {self.dir}")]
        if replica_of:
            subs.append((r"^replicaof .*$", f"replicaof 127.0.0.1 {replica_of.port}"))
        self.conf.write_text(_substitute((CONFIGS / template).read_text(), subs))
        self.proc = None

    def start(self):
        self.proc = self.procs.start([REDIS_SERVER, self.conf], self.log_path)
        harness.wait_until(lambda: self._ping(), 10, what=f"{self.name} on {self.port}")
        return self

    def _ping(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{harness.tail(self.log_path)}")
        return redis_cli(self.port, "PING") == ["PONG"]

    def role(self):
        return redis_cli(self.port, "ROLE")[0]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        harness.ProcessGroup.signal(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=5)


class Sentinel:
    """One Sentinel from configs/cluster/sentinel.conf; it rewrites its own copy."""

    def __init__(self, procs, workdir, index, master):
        self.procs = procs
        self.port = harness.free_port()
        self.log_path = Path(workdir) / f"sentinel-{index}.log"
        self.conf = Path(workdir) / f"sentinel-{index}.conf"
        sdir = Path(workdir) / f"sentinel-{index}"
        sdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(_substitute((CONFIGS / "sentinel.conf").read_text(), [
            (r"^port \d+$", f"port {self.port}"),
            (r"^dir .*$", f"dir {sdir}"),
            (rf"^sentinel monitor {MASTER_NAME} 127\.0\.0\.1 \d+ ",
             f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} "),
        ]))
        self.proc = None

    def start(self):
        self.proc = self.procs.start([REDIS_SERVER, self.conf, "--sentinel"], self.log_path)
        harness.wait_until(lambda: self.master() is not None, 10,
                           what=f"sentinel on {self.port}")
        return self

    def master(self):
        """(host, port) of the master as this Sentinel sees it, or None."""
        if self.proc.poll() is not None:
            raise AssertionError(f"sentinel exited:\n{harness.tail(self.log_path)}")
        out = redis_cli(self.port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        return (out[0], int(out[1])) if len(out) == 2 else None

    def known_replicas(self):
        out = redis_cli(self.port, "SENTINEL", "master", MASTER_NAME)
        fields = dict(zip(out[0::2], out[1::2]))
        return int(fields.get("num-slaves", 0)), int(fields.get("num-other-sentinels", 0))


class ClusterNode(harness.Node):
    """A streamkeeper node of the cluster: same token, the cluster's store and settings."""

    def __init__(self, procs, workdir, node_id, token, store, settings, extra_args=()):
        super().__init__(procs, workdir, node_id=node_id, extra_args=extra_args)
        self.token = token
        self.api = harness.Api(self.base, token)
        self.store = store
        self.settings = dict(settings)
        self.stopped = False  # SIGSTOPped
        self.killed = False   # killed on purpose: its death is not a test failure

    def argv(self):
        argv = super().argv()
        argv[argv.index("--store") + 1] = self.store
        for key, value in self.settings.items():
            argv += ["--set", f"cluster.{key}={value}"]
        return argv

    def ready(self):
        try:
            return self.alive() and self.api.get("/readyz", token=None, timeout=2).status == 200
        except OSError:
            return False


class LoadBalancer:
    """HAProxy from configs/cluster/haproxy.cfg: RTMP (TCP) and HTTP frontends over the
    nodes, health checks on /readyz, a stats socket to read what it thinks of them."""

    def __init__(self, procs, workdir, nodes):
        self.procs = procs
        self.rtmp_port = harness.free_port()
        self.http_port = harness.free_port()
        self.sock_path = Path(workdir) / "haproxy.sock"
        self.log_path = Path(workdir) / "haproxy.log"
        self.conf = Path(workdir) / "haproxy.cfg"
        self.conf.write_text(self.render(nodes))
        self.proc = None
        self.base = f"http://127.0.0.1:{self.http_port}"

    def render(self, nodes):
        text = (CONFIGS / "haproxy.cfg").read_text()
        rtmp = "".join(f"    server {n.node_id} 127.0.0.1:{n.rtmp_port} check port {n.http_port}\n"
                       for n in nodes)
        http = "".join(f"    server {n.node_id} 127.0.0.1:{n.http_port} check\n" for n in nodes)
        text = _substitute(text, [
            (r"^    stats socket \S+", f"    stats socket {self.sock_path}"),
            (r"^    bind 127\.0\.0\.1:1935$", f"    bind 127.0.0.1:{self.rtmp_port}"),
            (r"^    bind 127\.0\.0\.1:8080$", f"    bind 127.0.0.1:{self.http_port}"),
            # Each backend's server lines are replaced by the harness's nodes.
            (r"(?:^    server \S+ 127\.0\.0\.1:\d+ check port \d+\n)+", rtmp),
            (r"(?:^    server \S+ 127\.0\.0\.1:\d+ check\n)+", http),
        ])
        return text

    def start(self):
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", self.conf], capture_output=True,
                               text=True)
        assert check.returncode == 0, f"haproxy -c: {check.stdout}{check.stderr}"
        self.proc = self.procs.start([HAPROXY, "-db", "-f", self.conf], self.log_path)
        harness.wait_until(lambda: self.stats() is not None, 10, what="haproxy stats socket")
        return self

    def command(self, cmd):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.sock_path))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks).decode()

    def stats(self):
        """{(backend, server): status} ('UP', 'DOWN', 'NOLB', 'UP 1/2', …), None if down."""
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited:\n{harness.tail(self.log_path)}")
        try:
            lines = self.command("show stat").splitlines()
        except OSError:
            return None
        if not lines or not lines[0].startswith("# "):
            return None
        cols = lines[0][2:].split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(cols, line.split(",")))
            if row.get("svname") not in (None, "FRONTEND", "BACKEND"):
                out[(row["pxname"], row["svname"])] = row["status"]
        return out

    def server_status(self, node, backend="rtmp_nodes"):
        return (self.stats() or {}).get((backend, node.node_id))

    def wait_status(self, node, prefix, timeout=15, backends=("rtmp_nodes", "http_nodes")):
        """Waits until HAProxy reports @node as @prefix ('UP', 'DOWN', 'NOLB') in both
        backends."""
        def ok():
            st = self.stats() or {}
            return all(st.get((b, node.node_id), "").startswith(prefix) for b in backends)
        harness.wait_until(ok, timeout, interval=0.1,
                           what=f"haproxy: {node.node_id} {prefix} (have {self.stats()})")

    def rtmp_url(self, key, app="live"):
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{app}/{key}"

    def whep_url(self, room):
        return f"{self.base}/v1/rooms/{room}/whep"


class RoomFollower(harness.EventLog):
    """Follows a room's SSE stream through the load balancer on a thread, like a client
    that must not lose anything: when the connection drops (its node died, HAProxy cut
    it) it reconnects with Last-Event-ID = the last seq it got. Events are kept exactly as
    received, duplicates included, so that the checker can see them."""

    def __init__(self, host, port, room, token, retry_s=0.2):
        super().__init__(room)
        self.host, self.port, self.token = host, port, token
        self.retry_s = retry_s
        self.connections = 0   # successful (200) connections
        self.errors = []       # why each connection ended, for failure messages
        self.stopping = False
        self.conn = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"sse-{room}")

    def start(self, timeout=15):
        self.thread.start()
        harness.wait_until(lambda: self.connections > 0, timeout,
                           what=f"SSE stream of {self.room} via LB ({self.errors[-3:]})")
        return self

    def last_seq(self):
        with self.cond:
            for e in reversed(self.events):
                if isinstance(e.get("seq"), int):
                    return e["seq"]
        return None

    def _run(self):
        while not self.stopping:
            try:
                self._follow_once()
                self.errors.append("closed by peer")
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
                if not self.stopping:
                    self.errors.append(repr(exc))
            if not self.stopping:
                time.sleep(self.retry_s)

    def _follow_once(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        hdrs = {"Accept": "text/event-stream", "Authorization": f"Bearer {self.token}"}
        last = self.last_seq()
        if last is not None:
            hdrs["Last-Event-ID"] = str(last)
        self.conn.request("GET", f"/v1/rooms/{self.room}/events", headers=hdrs)
        resp = self.conn.getresponse()
        if resp.status != 200:
            raise OSError(f"SSE status {resp.status}: {resp.read()[:200]!r}")
        self.connections += 1
        self.raw.append(f": streamkeeper test: connection {self.connections}, "
                        f"Last-Event-ID {last}")
        frame = []
        while not self.stopping:
            line = resp.fp.readline()
            if not line:
                return
            text = line.decode("utf-8", errors="replace").rstrip("\r\n")
            self.raw.append(text)
            if text:
                frame.append(text)
                continue
            if frame:
                evs = check_events.parse_sse("\n".join(frame))
                # A frame cut by a dropped connection never reaches the blank line: only
                # whole frames count, as for a browser's EventSource.
                with self.cond:
                    self.events.extend(evs)
                    self.cond.notify_all()
            frame = []

    def _ended(self):
        return f"connection ends {self.errors[-5:]}"

    def stop(self):
        self.stopping = True
        try:
            if self.conn is not None and self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=5)


class Cluster:
    """Redis + replica + 3 Sentinels + HAProxy + N streamkeeper nodes. A context manager;
    see the module docstring. node_store: the nodes' --store (default: Sentinel);
    redis=False runs the nodes without Redis/Sentinel (then node_store must be 'memory')."""

    def __init__(self, workdir, nodes=3, sentinels=3, replica=True, redis=True,
                 node_store=None, cluster=None, node_args=(), on_log=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs = harness.ProcessGroup()
        self.token = secrets.token_hex(16)
        self.on_log = on_log or (lambda label, path: None)
        self.kills = []  # (node_id, epoch ms) of every kill -9 / stop past the TTL
        self.restarts = []  # (node_id, epoch ms) of every start of a new incarnation
        self.followers = []
        self.publishers = []
        self.redis, self.replica, self.sentinels = None, None, []
        self._n_sentinels, self._with_replica, self._with_redis = sentinels, replica, redis
        settings = dict(DEFAULT_CLUSTER_SETTINGS if cluster is None else cluster)
        # Node-to-node requests (remote publication) carry the cluster secret.
        settings.setdefault("secret", secrets.token_hex(16))
        self.settings = settings
        self._node_store = node_store
        self._node_args = list(node_args)
        self.nodes = [None] * nodes
        self.lb = None
        self.api = None

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        if self._with_redis:
            self.redis = Redis(self.procs, self.workdir, "redis-master").start()
            self.on_log("redis master", self.redis.log_path)
            if self._with_replica:
                self.replica = Redis(self.procs, self.workdir, "redis-replica",
                                     replica_of=self.redis).start()
                self.on_log("redis replica", self.replica.log_path)
                harness.wait_until(lambda: self._replica_in_sync(), 15,
                                   what="redis replica in sync")
            for i in range(self._n_sentinels):
                s = Sentinel(self.procs, self.workdir, i + 1, self.redis).start()
                self.on_log(f"sentinel {i + 1}", s.log_path)
                self.sentinels.append(s)
            if self.sentinels:
                # Sentinels discover the replica and each other through the master (INFO
                # every 10 s, hello messages every 2 s): a failover needs both.
                want = (1 if self.replica else 0, len(self.sentinels) - 1)
                harness.wait_until(
                    lambda: all(s.known_replicas() == want for s in self.sentinels), 30,
                    interval=0.2, what=f"sentinels to know {want} replicas/peers")
        store = self._node_store or self.store_uri()
        for i in range(len(self.nodes)):
            node_id = f"n{i + 1}"
            n = ClusterNode(self.procs, self.workdir, node_id, self.token, store,
                            self.settings if store != "memory" else {}, self._node_args)
            self.on_log(f"streamkeeper {node_id}", n.log_path)
            self.nodes[i] = n
        self.lb = LoadBalancer(self.procs, self.workdir, self.nodes).start()
        self.on_log("haproxy", self.lb.log_path)
        self.api = harness.Api(self.lb.base, self.token)
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            self.lb.wait_status(n, "UP")
        return self

    def stop(self):
        """Stops followers, publishers, nodes (SIGTERM, all at once so that drains overlap),
        then Redis, Sentinels and HAProxy. Returns problems found in the nodes' exits."""
        for f in self.followers:
            f.stop()
        for i, f in enumerate(self.followers):
            f.save(self.workdir / f"{f.room}-{i}.sse")
        for p in self.publishers:
            if p.running():
                harness.ProcessGroup.signal(p.proc, signal.SIGKILL)
        problems = []
        live = [n for n in self.nodes if n is not None and n.alive()]
        for n in live:
            if n.stopped:
                harness.ProcessGroup.signal(n.proc, signal.SIGCONT)
            n.proc.send_signal(signal.SIGTERM)
        for n in live:
            try:
                rc = n.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                harness.ProcessGroup.signal(n.proc, signal.SIGKILL)
                rc = None
            if rc != 0:
                problems.append(f"{n.node_id} exited {rc} on SIGTERM")
        for n in self.nodes:
            if n is None or n.proc is None:
                continue
            if not n.killed and n not in live:
                problems.append(f"{n.node_id} died during the test "
                                f"(rc={n.proc.returncode})")
            report = harness.sanitizer_report(n.log_path)
            if report:
                problems.append(f"{n.node_id} sanitizer report: {report}")
        self.procs.kill_all()
        self.problems = problems
        return problems

    # --- nodes -------------------------------------------------------------------------

    def store_uri(self):
        if self.sentinels:
            return f"sentinel://127.0.0.1:{self.sentinels[0].port}/{MASTER_NAME}"
        return f"redis://127.0.0.1:{self.redis.port}"

    def node(self, node_id):
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    def _node(self, node):
        return self.node(node) if isinstance(node, str) else node

    def kill(self, node):
        """kill -9; the kill time goes to the checker (--killed NODE@MS). Returns it."""
        n = self._node(node)
        n.killed = True
        ms = now_ms()
        self.kills.append((n.node_id, ms))
        harness.ProcessGroup.signal(n.proc, signal.SIGKILL)
        n.proc.wait(timeout=5)
        return ms

    def sigstop(self, node):
        """Freezes a node (a partition as its peers see it). Returns the epoch ms; a stop
        that outlives the lease TTL is a death for the checker: call record_death()."""
        n = self._node(node)
        ms = now_ms()
        harness.ProcessGroup.signal(n.proc, signal.SIGSTOP)
        n.stopped = True
        return ms

    def sigcont(self, node):
        n = self._node(node)
        harness.ProcessGroup.signal(n.proc, signal.SIGCONT)
        n.stopped = False

    def record_death(self, node, ms):
        self.kills.append((self._node(node).node_id, ms))

    def restart(self, node, timeout=30):
        """Starts a (killed or stopped) node again on the same ports, as a new incarnation;
        waits for /readyz and for HAProxy to take it back."""
        n = self._node(node)
        if n.alive():
            self.kill(n)
        n.killed = False
        self.restarts.append((n.node_id, now_ms()))
        n.start(timeout=timeout)
        self.lb.wait_status(n, "UP", timeout=timeout)
        return n

    def wait_ready(self, node, timeout=20):
        n = self._node(node)
        harness.wait_until(n.ready, timeout, what=f"{n.node_id} /readyz 200")

    def live_nodes(self):
        return [n for n in self.nodes if n.alive() and not n.stopped]

    def host_of(self, room):
        """The node hosting @room, per the API through the LB."""
        r = self.api.get(f"/v1/rooms/{room}")
        assert r.status == 200, f"GET room {room}: {r}"
        return self.node(r.json["node"])

    def ingress_node_of(self, ingress_id):
        rec = self.api.ingress(ingress_id)
        return self.node((rec.get("state") or {}).get("node"))

    # --- Redis -------------------------------------------------------------------------

    def redis_master(self):
        """(host, port) of the master according to a majority of the live Sentinels."""
        views = [s.master() for s in self.sentinels if s.proc.poll() is None]
        best = max(set(views), key=views.count) if views else None
        return best if best and views.count(best) * 2 > len(views) else None

    def _replica_in_sync(self):
        info = dict(line.split(":", 1) for line in
                    redis_cli(self.replica.port, "INFO", "replication") if ":" in line)
        return info.get("master_link_status") == "up"

    def kill_redis_master(self, timeout=30):
        """kill -9 of the current master; waits until the Sentinels agree on a new one and
        it answers as master. Returns the Redis object now master."""
        old = self.redis_master()
        victim = next(r for r in (self.redis, self.replica) if r and r.port == old[1])
        victim.kill()

        def promoted():
            m = self.redis_master()
            if m is None or m == old:
                return None
            new = next(r for r in (self.redis, self.replica) if r and r.port == m[1])
            return new if new.role() == "master" else None

        return harness.wait_until(promoted, timeout, interval=0.2,
                                  what=f"sentinel to promote a new master (old {old})")

    # --- the store's view: placements, leases (layout of failover/sk-store-redis.c) -------

    # One atomic read of every placement (sk:placed, sk:room:<room>) and every node's
    # incarnation counter and lease (sk:nodes, sk:inc:<node>, sk:lease:<node>).
    _STORE_VIEW_LUA = (
        "local out = {} "
        "for _, r in ipairs(redis.call('SMEMBERS', 'sk:placed')) do "
        "  local p = redis.call('HMGET', 'sk:room:' .. r, 'node', 'inc', 'epoch') "
        "  out[#out + 1] = 'room ' .. r .. ' ' .. (p[1] or '-') .. ' ' .. (p[2] or '0') "
        "    .. ' ' .. (p[3] or '0') "
        "end "
        "for _, n in ipairs(redis.call('SMEMBERS', 'sk:nodes')) do "
        "  local lease = redis.call('EXISTS', 'sk:lease:' .. n) "
        "  out[#out + 1] = 'node ' .. n .. ' ' .. (redis.call('GET', 'sk:inc:' .. n) or '0') "
        "    .. ' ' .. lease "
        "end "
        "return out")

    def store_view(self):
        """({room: (node, incarnation, epoch)}, {node: live incarnation}) read from the
        current Redis master in one script. A node is live while its lease key exists; its
        live incarnation is then its counter (a retired one bumps the counter and drops the
        lease, a new one INCRs it and sets the lease)."""
        master = self.redis_master() if self.sentinels else ("127.0.0.1", self.redis.port)
        assert master is not None, "no Redis master agreed on by the Sentinels"
        placements, live = {}, {}
        for line in redis_cli(master[1], "EVAL", self._STORE_VIEW_LUA, 0):
            kind, name, *rest = line.split(" ")
            if kind == "room":
                placements[name] = (rest[0], int(rest[1]), int(rest[2]))
            elif kind == "node" and rest[1] == "1":
                live[name] = int(rest[0])
        return placements, live

    def orphaned_rooms(self):
        """Placements naming an incarnation that is not live: nobody hosts those rooms."""
        placements, live = self.store_view()
        return sorted(f"{room} on {node}#{inc} (epoch {epoch}; live {live})"
                      for room, (node, inc, epoch) in placements.items()
                      if live.get(node) != inc)

    def hosted_rooms(self):
        """{room: [node ids]} from every live node's own GET /v1/rooms (its local rooms)."""
        out = {}
        for n in self.live_nodes():
            r = n.api.get("/v1/rooms")
            if r.status != 200:
                continue
            for room in r.json.get("rooms", []):
                out.setdefault(room["name"], []).append(n.node_id)
        return out

    def doubled_rooms(self):
        return {room: nodes for room, nodes in self.hosted_rooms().items() if len(nodes) > 1}

    def wait_no_orphans(self, timeout=15):
        """Waits until no placement names a dead incarnation and no room is hosted twice
        (a dead host's rooms are orphaned until a survivor claims them). Returns the
        problems still there at the deadline (empty: all good)."""
        deadline = time.monotonic() + timeout
        while True:
            problems = [f"orphaned: {o}" for o in self.orphaned_rooms()]
            problems += [f"doubled: {r} on {ns}" for r, ns in self.doubled_rooms().items()]
            if not problems or time.monotonic() >= deadline:
                return problems
            time.sleep(0.2)

    # --- clients -----------------------------------------------------------------------

    def rtmp_url(self, key, app="live"):
        return self.lb.rtmp_url(key, app)

    def whep_url(self, room):
        return self.lb.whep_url(room)

    def play(self, room, **kw):
        """sk-whep-client through the LB (a 307 to the host is followed by the client)."""
        return harness.whep_play(self.lb, room, **kw)

    def publish(self, kind, url, **opts):
        p = harness.Publisher(self.procs, kind, url, self.workdir, **opts)
        self.on_log(f"publisher {kind}", p.log_path)
        self.publishers.append(p)
        return p

    def follow(self, room):
        f = RoomFollower("127.0.0.1", self.lb.http_port, room, self.token).start()
        self.followers.append(f)
        return f

    def check(self, follower, final=False, **kw):
        """check_events.check over what @follower received, with the recorded kills."""
        return check_events.check(list(follower.events), final=final,
                                  killed=self.kills, restarted=self.restarts, **kw)

    def assert_invariants(self, follower, final=False, **kw):
        errors = self.check(follower, final=final, **kw)
        assert not errors, (f"event invariants of room {follower.room} violated "
                            f"(kills {self.kills}):\n" + "\n".join(errors))


@pytest.fixture
def make_cluster(tmp_path, request):
    """Factory: make_cluster(**Cluster kwargs) -> a started Cluster, stopped at the end of
    the test; a node that died unexpectedly, exited non-zero on SIGTERM or left a sanitizer
    report fails the test."""
    clusters = []

    def on_log(label, path):
        logs = getattr(request.node, "_sk_logs", None)
        if logs is None:
            logs = request.node._sk_logs = []
        logs.append((label, path))

    def make(**kw):
        c = Cluster(tmp_path / f"cluster-{len(clusters)}", on_log=on_log, **kw)
        clusters.append(c)
        return c.start()

    yield make
    problems = []
    for c in clusters:
        problems += c.stop()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def have_tools():
    """(ok, what is missing) for the cluster tests' external programs."""
    missing = [t for t in (REDIS_SERVER, "redis-cli", HAPROXY, "ffmpeg")
               if not any(os.access(os.path.join(d, t), os.X_OK)
                          for d in os.environ.get("PATH", "").split(os.pathsep))]
    return not missing, missing
