"""Just enough RTMP for tests: AMF0, chunk framing, handshakes and a scripted fake server.

Used to craft hostile input for the daemon (test_bad_input.py) and to check on the wire
that sk-obs-publisher sends OBS's sequence (test_obs_publisher.py). Written from the
RTMP 1.0 and AMF0 specifications; it is a test peer, not a production parser.
"""

import os
import socket
import struct
import threading
import time

# --- AMF0 -------------------------------------------------------------------------------


class EcmaArray(dict):
    """A dict that encodes as an AMF0 ECMA array (what onMetaData uses)."""


class AmfError(ValueError):
    pass


def _enc_key(k):
    b = k.encode()
    return struct.pack(">H", len(b)) + b


def amf0_encode(value):
    if value is None:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x01" + (b"\x01" if value else b"\x00")
    if isinstance(value, (int, float)):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        b = value.encode()
        if len(b) > 0xFFFF:
            return b"\x0c" + struct.pack(">I", len(b)) + b
        return b"\x02" + struct.pack(">H", len(b)) + b
    if isinstance(value, EcmaArray):
        out = b"\x08" + struct.pack(">I", len(value))
        for k, v in value.items():
            out += _enc_key(k) + amf0_encode(v)
        return out + b"\x00\x00\x09"
    if isinstance(value, dict):
        out = b"\x03"
        for k, v in value.items():
            out += _enc_key(k) + amf0_encode(v)
        return out + b"\x00\x00\x09"
    if isinstance(value, (list, tuple)):
        out = b"\x0a" + struct.pack(">I", len(value))
        for v in value:
            out += amf0_encode(v)
        return out
    raise TypeError(f"cannot AMF0-encode {type(value)}")


def amf0_encode_all(*values):
    return b"".join(amf0_encode(v) for v in values)


def _dec(buf, pos, depth):
    if depth > 64:
        raise AmfError("nesting too deep")
    if pos >= len(buf):
        raise AmfError("truncated")
    marker = buf[pos]
    pos += 1

    def need(n):
        if pos + n > len(buf):
            raise AmfError("truncated")

    if marker == 0x00:
        need(8)
        return struct.unpack_from(">d", buf, pos)[0], pos + 8
    if marker == 0x01:
        need(1)
        return buf[pos] != 0, pos + 1
    if marker == 0x02:
        need(2)
        n = struct.unpack_from(">H", buf, pos)[0]
        need(2 + n)
        return buf[pos + 2:pos + 2 + n].decode(errors="replace"), pos + 2 + n
    if marker == 0x0C:
        need(4)
        n = struct.unpack_from(">I", buf, pos)[0]
        need(4 + n)
        return buf[pos + 4:pos + 4 + n].decode(errors="replace"), pos + 4 + n
    if marker in (0x05, 0x06):
        return None, pos
    if marker in (0x03, 0x08):
        out = EcmaArray() if marker == 0x08 else {}
        if marker == 0x08:
            need(4)
            pos += 4
        while True:
            if pos + 3 <= len(buf) and buf[pos:pos + 3] == b"\x00\x00\x09":
                return out, pos + 3
            if pos + 2 > len(buf):
                raise AmfError("truncated")
            n = struct.unpack_from(">H", buf, pos)[0]
            if pos + 2 + n > len(buf):
                raise AmfError("truncated")
            key = buf[pos + 2:pos + 2 + n].decode(errors="replace")
            out[key], pos = _dec(buf, pos + 2 + n, depth + 1)
    if marker == 0x0A:
        need(4)
        n = struct.unpack_from(">I", buf, pos)[0]
        pos += 4
        items = []
        for _ in range(n):
            v, pos = _dec(buf, pos, depth + 1)
            items.append(v)
        return items, pos
    raise AmfError(f"unsupported marker 0x{marker:02x}")


def amf0_decode_all(buf):
    values, pos = [], 0
    while pos < len(buf):
        v, pos = _dec(buf, pos, 0)
        values.append(v)
    return values


# --- chunk framing ----------------------------------------------------------------------

MSG_SET_CHUNK_SIZE = 1
MSG_ACK = 3
MSG_USER_CONTROL = 4
MSG_WINDOW_ACK = 5
MSG_PEER_BW = 6
MSG_AUDIO = 8
MSG_VIDEO = 9
MSG_DATA = 18
MSG_COMMAND = 20


def _basic_header(fmt, csid):
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([(fmt << 6) | 0, csid - 64])
    return bytes([(fmt << 6) | 1]) + struct.pack("<H", csid - 64)


def chunk_message(csid, msg_type, payload, timestamp=0, msid=0, chunk_size=128,
                  length=None):
    """Frames one message: a type-0 chunk then type-3 continuations.
    @length overrides the declared message length (to lie about it)."""
    declared = len(payload) if length is None else length
    ts = min(timestamp, 0xFFFFFF)
    out = bytearray(_basic_header(0, csid))
    out += struct.pack(">I", ts)[1:] + struct.pack(">I", declared)[1:]
    out += bytes([msg_type]) + struct.pack("<I", msid)
    if ts == 0xFFFFFF:
        out += struct.pack(">I", timestamp)
    first = True
    for off in range(0, max(len(payload), 1), chunk_size):
        if not first:
            out += _basic_header(3, csid)
            if ts == 0xFFFFFF:
                out += struct.pack(">I", timestamp)
        out += payload[off:off + chunk_size]
        first = False
    return bytes(out)


def command(name, txn, *args, csid=3, msid=0, chunk_size=128):
    return chunk_message(csid, MSG_COMMAND, amf0_encode_all(name, txn, *args), msid=msid,
                         chunk_size=chunk_size)


class Message:
    def __init__(self, csid, msg_type, timestamp, msid, payload):
        self.csid, self.type, self.timestamp, self.msid, self.payload = (
            csid, msg_type, timestamp, msid, payload)

    def amf(self):
        data = self.payload
        if self.type == 17 and data[:1] == b"\x00":  # AMF3 command with AMF0 body
            data = data[1:]
        return amf0_decode_all(data)

    def __repr__(self):
        return f"Message(type={self.type}, csid={self.csid}, ts={self.timestamp}, " \
               f"msid={self.msid}, len={len(self.payload)})"


class ChunkReader:
    """Incremental de-chunker: feed() bytes, get whole messages back."""

    MAX_MESSAGE = 32 * 1024 * 1024

    def __init__(self):
        self.buf = bytearray()
        self.chunk_size = 128
        self.streams = {}  # csid -> dict(ts, delta, length, type, msid, data, ext)

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            msg = self._one()
            if msg is None:
                return out
            if msg is not True:
                out.append(msg)

    def _one(self):
        b = self.buf
        if not b:
            return None
        fmt, csid, pos = b[0] >> 6, b[0] & 0x3F, 1
        if csid == 0:
            if len(b) < 2:
                return None
            csid, pos = b[1] + 64, 2
        elif csid == 1:
            if len(b) < 3:
                return None
            csid, pos = b[1] + 64 + b[2] * 256, 3
        st = self.streams.setdefault(csid, dict(ts=0, delta=0, length=0, type=0, msid=0,
                                                data=bytearray(), ext=False))
        hlen = (11, 7, 3, 0)[fmt]
        if len(b) < pos + hlen:
            return None
        h = b[pos:pos + hlen]
        pos += hlen
        if fmt <= 2:
            ts = int.from_bytes(h[0:3], "big")
            ext = ts == 0xFFFFFF
        else:
            ts, ext = None, st["ext"]
        if ext:
            if len(b) < pos + 4:
                return None
            ts_ext = struct.unpack_from(">I", b, pos)[0]
            pos += 4
            if ts is not None:
                ts = ts_ext
        starting = not st["data"]
        if fmt == 0:
            st["length"] = int.from_bytes(h[3:6], "big")
            st["type"] = h[6]
            st["msid"] = struct.unpack("<I", bytes(h[7:11]))[0]
        elif fmt == 1:
            st["length"] = int.from_bytes(h[3:6], "big")
            st["type"] = h[6]
        if st["length"] > self.MAX_MESSAGE:
            raise ValueError("message too large")
        remaining = st["length"] - len(st["data"])
        n = min(remaining, self.chunk_size)
        if len(b) < pos + n:
            return None
        # Whole chunk present: commit.
        if fmt == 0:
            st["ts"], st["delta"] = ts, 0
        elif fmt in (1, 2):
            st["delta"] = ts
            if starting:
                st["ts"] += ts
        elif starting:
            st["ts"] += st["delta"]
        st["ext"] = ext
        st["data"] += b[pos:pos + n]
        del b[:pos + n]
        if len(st["data"]) < st["length"]:
            return True
        msg = Message(csid, st["type"], st["ts"], st["msid"], bytes(st["data"]))
        st["data"] = bytearray()
        if msg.type == MSG_SET_CHUNK_SIZE and len(msg.payload) >= 4:
            self.chunk_size = struct.unpack(">I", msg.payload[:4])[0] & 0x7FFFFFFF
        return msg


# --- handshakes -------------------------------------------------------------------------

SIG = 1536


def recv_exact(sock, n, timeout=10.0):
    sock.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        part = sock.recv(n - len(out))
        if not part:
            raise ConnectionError(f"peer closed after {len(out)} of {n} bytes")
        out += part
    return bytes(out)


def client_handshake(sock, timeout=10.0):
    """Plain handshake as a client; returns (S0, S1, S2)."""
    c1 = struct.pack(">II", int(time.time()) & 0xFFFFFFFF, 0) + os.urandom(SIG - 8)
    sock.sendall(b"\x03" + c1)
    s0s1s2 = recv_exact(sock, 1 + 2 * SIG, timeout)
    s1 = s0s1s2[1:1 + SIG]
    sock.sendall(s1)  # C2 echoes S1
    return s0s1s2[:1], s1, s0s1s2[1 + SIG:]


def connect_and_handshake(port, host="127.0.0.1", timeout=10.0):
    sock = socket.create_connection((host, port), timeout=timeout)
    client_handshake(sock, timeout)
    return sock


def wait_closed(sock, timeout):
    """True if the peer closes (EOF or reset) within @timeout; drains what it sends."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(min(left, 0.5))
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            continue
        except OSError:
            return True


# --- a scripted fake server ------------------------------------------------------------


class FakeRtmpServer:
    """Accepts connections on 127.0.0.1 and answers a publisher just enough to get media:
    _result for connect and createStream, onStatus Publish.Start for publish. Records the
    raw C0/C1 and every message of every connection. close_after_s drops each connection
    that long after publish (to exercise reconnects)."""

    def __init__(self, close_after_s=None):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.close_after_s = close_after_s
        self.connections = []  # dicts: c0c1, messages, accepted_at, closed_at
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        self.lsock.settimeout(0.2)
        while not self.stopping:
            try:
                sock, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn = dict(c0c1=b"", messages=[], accepted_at=time.monotonic(), closed_at=None)
            with self.lock:
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(sock, conn), daemon=True).start()

    def _serve(self, sock, conn):
        try:
            conn["c0c1"] = recv_exact(sock, 1 + SIG)
            s1 = struct.pack(">II", 0, 0) + os.urandom(SIG - 8)
            sock.sendall(b"\x03" + s1 + conn["c0c1"][1:])  # S0 S1 S2(=C1)
            recv_exact(sock, SIG)  # C2
            reader = ChunkReader()
            published_at = None
            sock.settimeout(0.2)
            while not self.stopping:
                if published_at and self.close_after_s is not None and \
                        time.monotonic() - published_at > self.close_after_s:
                    break
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                for msg in reader.feed(data):
                    with self.lock:
                        conn["messages"].append(msg)
                    if msg.type == MSG_COMMAND:
                        if self._answer(sock, msg):
                            published_at = time.monotonic()
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            conn["closed_at"] = time.monotonic()
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _answer(sock, msg):
        vals = msg.amf()
        name, txn = vals[0], vals[1] if len(vals) > 1 else 0
        if name == "connect":
            sock.sendall(chunk_message(2, MSG_WINDOW_ACK, struct.pack(">I", 2500000)))
            sock.sendall(command("_result", txn,
                                 {"fmsVer": "FMS/3,0,1,123", "capabilities": 31},
                                 {"level": "status", "code": "NetConnection.Connect.Success",
                                  "description": "Connection succeeded.",
                                  "objectEncoding": 0}))
        elif name == "createStream":
            sock.sendall(command("_result", txn, None, 1))
        elif name == "publish":
            sock.sendall(command("onStatus", 0, None,
                                 {"level": "status", "code": "NetStream.Publish.Start",
                                  "description": "publishing"}, csid=5, msid=1))
            return True
        return False

    def close(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        self.thread.join(timeout=5)
