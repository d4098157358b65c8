#!/usr/bin/env python3
"""Consul HTTP API test double (Python 3 standard library only).

Follows /work/shared/reference/protocols.md sections 1 (KV) and 2 (catalog, health, agent):
what is implemented and where each behaviour comes from is in doc/internals/consul-double.md.

In-process:
    from doubles.consul import ConsulDouble
    with ConsulDouble(datacenters=("dc1", "dc2")) as consul:
        consul.kv_put("gloo/gateway.solo.io/v1/Gateway/gloo-system/gw", b"bindPort: 8080\n")
        consul.register_service("petstore", address="127.0.0.1", port=8080)
        ... talk HTTP to consul.addr ...
        consul.fault("leader_loss")
As a process (prints "consul-double listening on http://127.0.0.1:PORT" once ready):
    /usr/bin/python3 tests/doubles/consul.py --port 0 [--control-port N] [--dc dc1 --dc dc2]
                     [--acl-token SECRET=write] [--acl-default-policy deny] [--go-extras]

Faults (Python: fault(kind, **params); HTTP: PUT /_double/fault {"kind": ..., ...}, a path that a
real Consul never serves; DELETE /_double/fault clears):
    down          mode=refuse (listener closed: ECONNREFUSED) | hang (accepts, never answers) |
                  reset (accepts, then RST)
    slow          ms=N: every /v1 request is answered N ms late
    error         status=500, body="No known Consul servers": every /v1 call fails like that
    forbidden     status=403, body="ACL not found"
    leader_loss   default/consistent reads and writes -> 500 "No cluster leader"; ?stale still
                  answers with X-Consul-Knownleader: false and a growing X-Consul-Lastcontact
    index_zero    X-Consul-Index: 0 on every read (the old-agent bug); blocking never wakes
    dc_unreachable dc=NAME: ?dc=NAME -> 500 "No path to datacenter"
  common params: duration_ms (auto-clear), count (only the next N requests), paths (prefixes).
One-shot actions: index_reset(dc, delta) (every index moves backwards, blocked queries return at
once), reap_tombstones(dc) (a prefix index can go backwards, as after Consul's tombstone GC).
"""

import base64
import gzip
import json
import random
import re
import select
import socket
import sys
import threading
import time
import uuid
from urllib.parse import quote_plus

try:
    from ._common import (CHUNK_THRESHOLD, MAX_HEADER_BYTES, canonical_header_key, go_clean_path,  # noqa: F401
                          _unhex, DoubleBase, _ClientGone, _Faults, _Listener, _Resp, parse_args, serve)
except ImportError:  # run as a script: python3 tests/doubles/consul.py
    from _common import (CHUNK_THRESHOLD, MAX_HEADER_BYTES, canonical_header_key, go_clean_path,  # noqa: F401
                         _unhex, DoubleBase, _ClientGone, _Faults, _Listener, _Resp, parse_args, serve)

__all__ = ["ConsulDouble", "main"]

DEFAULT_QUERY_TIME = 300.0      # seconds: blocking wait when ?wait is absent or <= 0
MAX_QUERY_TIME = 600.0          # seconds: ?wait is capped here
JITTER_FRACTION = 16            # the server adds up to wait/16
KV_MAX_VALUE_SIZE = 512 * 1024  # kv_max_value_size default
GZIP_MIN_SIZE = 1400            # NYTimes gziphandler DefaultMinSize (go_extras only)
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
VERSION = "1.21.0"              # reported in node/service meta only
HEALTH_STATES = ("passing", "warning", "critical", "maintenance")

_REASONS = {
    100: "Continue", 200: "OK", 301: "Moved Permanently", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    413: "Request Entity Too Large", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

# --------------------------------------------------------------------------------------------
# Go behaviours the wire shows: header canonicalisation, durations, query parsing, JSON, paths


def go_quote(s):
    """strconv.Quote for the strings that appear in Consul error texts."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        elif not ch.isprintable():
            out.append("\\u%04x" % o if o < 0x10000 else "\\U%08x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
              "m": 60.0, "h": 3600.0}
_DUR_NUM = re.compile(r"([0-9]*)(\.([0-9]*))?")
_DUR_UNIT = re.compile(r"[^0-9.]*")


def parse_go_duration(s):
    """time.ParseDuration -> seconds (float). Raises ValueError like Go returns an error."""
    orig, neg = s, False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if s == "":
        raise ValueError("invalid duration " + go_quote(orig))
    total = 0.0
    while s:
        m = _DUR_NUM.match(s)
        ip, fp = m.group(1), m.group(3)
        if ip == "" and not fp:
            raise ValueError("invalid duration " + go_quote(orig))
        s = s[m.end():]
        u = _DUR_UNIT.match(s).group(0)
        if u == "":
            raise ValueError("missing unit in duration " + go_quote(orig))
        if u not in _DUR_UNITS:
            raise ValueError("unknown unit %s in duration %s" % (go_quote(u), go_quote(orig)))
        s = s[len(u):]
        total += (int(ip or "0") + (float("0." + fp) if fp else 0.0)) * _DUR_UNITS[u]
    if total * 1e9 > 9223372036854775807:
        raise ValueError("invalid duration " + go_quote(orig))
    return -total if neg else total


def go_unescape(s, query):
    """url.QueryUnescape (query=True: '+' is space) / url.PathUnescape; ValueError when bad."""
    out = bytearray()
    i, b = 0, s.encode("utf-8", "surrogateescape")
    while i < len(b):
        c = b[i]
        if c == 0x25:  # %
            if i + 2 >= len(b):
                raise ValueError("invalid URL escape " + go_quote(b[i:i + 3].decode("latin-1")))
            h, l = _unhex(chr(b[i + 1])), _unhex(chr(b[i + 2]))
            if h is None or l is None:
                raise ValueError("invalid URL escape " + go_quote(b[i:i + 3].decode("latin-1")))
            out.append(h * 16 + l)
            i += 3
        elif c == 0x2B and query:
            out.append(0x20)
            i += 1
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "replace")


def go_parse_query(raw):
    """url.ParseQuery: -> (dict name -> [values], first error or None)."""
    q, err = {}, None
    for part in raw.split("&"):
        if ";" in part:
            err = err or "invalid semicolon separator in query"
            continue
        if part == "":
            continue
        k, _, v = part.partition("=")
        try:
            k = go_unescape(k, True)
            v = go_unescape(v, True)
        except ValueError as e:
            err = err or str(e)
            continue
        q.setdefault(k, []).append(v)
    return q, err


def go_query_encode(q):
    """url.Values.Encode: sorted by key, QueryEscape'd."""
    parts = []
    for k in sorted(q):
        for v in q[k]:
            parts.append(quote_plus(k, safe="") + "=" + quote_plus(v, safe=""))
    return "&".join(parts)


def go_json(obj, pretty=False):
    """encoding/json: compact (or MarshalIndent with 4 spaces + newline), HTML-safe escapes."""
    if pretty:
        s = json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
    else:
        s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    s = (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
         .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return s.encode("utf-8", "replace")


def go_parse_bool(v):
    """strconv.ParseBool."""
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(v)


def go_parse_uint(v):
    """strconv.ParseUint(v, 10, 64) -> int, or ValueError carrying Go's error text."""
    if v == "" or not v.isascii() or not v.isdigit():
        raise ValueError("strconv.ParseUint: parsing %s: invalid syntax" % go_quote(v))
    n = int(v)
    if n >= 1 << 64:
        raise ValueError("strconv.ParseUint: parsing %s: value out of range" % go_quote(v))
    return n


_KEY_BAD_EXT = (
    ".js", ".css", ".html", ".htm", ".xml", ".json", ".txt", ".log", ".php", ".asp", ".jsp",
    ".cgi", ".pl", ".py", ".rb", ".sh", ".exe", ".dll", ".bat", ".cmd", ".com", ".scr", ".vbs",
    ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".zip", ".rar", ".tar", ".gz",
    ".7z", ".bz2", ".jpg", ".jpeg", ".png", ".gif", ".svg", ".ico", ".bmp", ".mp3", ".mp4",
    ".avi", ".mov", ".wmv", ".flv", ".swf", ".woff", ".woff2", ".ttf", ".eot", ".otf")


def validate_kv_key(key):
    """Recent servers' KV key check (protocols.md 1: version-dependent). None when valid."""
    if key.startswith("/"):
        return "key must not begin with a '/'"
    for i, ch in enumerate(key):
        if not ((ch.isascii() and ch.isalnum()) or ch in ",-_./"):
            return ("key contains invalid character '%s' at position %d. Only alphanumeric "
                    "characters and ,-_./ are allowed" % (ch, len(key[:i].encode("utf-8"))))
    if "../" in key:
        return "key contains path traversal sequence"
    low = key.lower()
    for ext in _KEY_BAD_EXT:
        if low.endswith(ext):
            return "key contains suspicious file extension '%s' that may be cached by proxies" % ext
    return None


def _node_uuid(name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "consul-double-node/" + name))


def _accessor(secret):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "consul-double-token/" + secret))


def _sorted_map(m):
    return None if m is None else {k: m[k] for k in sorted(m)}


# --------------------------------------------------------------------------------------------
# State: one _DC per datacenter (each DC is its own Raft cluster with its own indexes)


class _HTTPError(Exception):
    def __init__(self, status, text, headers=None):
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or {}


class _Entry:
    __slots__ = ("key", "value", "flags", "create", "modify", "lock")

    def __init__(self, key, value, flags, create, modify, lock=0):
        self.key, self.value, self.flags = key, value, flags
        self.create, self.modify, self.lock = create, modify, lock

    def to_json(self):
        return {"LockIndex": self.lock, "Key": self.key, "Flags": self.flags,
                "Value": base64.b64encode(self.value).decode("ascii") if self.value else None,
                "CreateIndex": self.create, "ModifyIndex": self.modify}


class _Node:
    __slots__ = ("name", "id", "address", "tagged", "meta", "create", "modify")

    def __init__(self, name, id_, address, tagged, meta):
        self.name, self.id, self.address, self.tagged, self.meta = name, id_, address, tagged, meta
        self.create = self.modify = 0

    def same(self, o):
        return (self.id, self.address, self.tagged, self.meta) == (o.id, o.address, o.tagged, o.meta)


class _Svc:
    __slots__ = ("node", "id", "name", "tags", "address", "tagged", "meta", "port", "weights",
                 "eto", "kind", "create", "modify")

    def __init__(self, node, id_, name, tags=(), address="", tagged=None, meta=None, port=0,
                 weights=None, eto=False, kind=""):
        self.node, self.id, self.name = node, id_, name
        self.tags = list(tags or [])
        self.address, self.tagged, self.meta, self.port = address or "", tagged or None, meta or {}, port
        self.weights = weights or {"Passing": 1, "Warning": 1}
        self.eto, self.kind = bool(eto), kind or ""
        self.create = self.modify = 0

    _CMP = ("node", "id", "name", "tags", "address", "tagged", "meta", "port", "weights", "eto",
            "kind")

    def same(self, o):
        return all(getattr(self, a) == getattr(o, a) for a in self._CMP)


class _Chk:
    __slots__ = ("node", "id", "name", "status", "notes", "output", "service_id", "type",
                 "interval", "timeout", "ttl", "deadline", "create", "modify")

    def __init__(self, node, id_, name, status="critical", notes="", output="", service_id="",
                 type_="", interval="", timeout="", ttl=None):
        self.node, self.id, self.name, self.status = node, id_, name, status
        self.notes, self.output, self.service_id, self.type = notes, output, service_id, type_
        self.interval, self.timeout, self.ttl, self.deadline = interval, timeout, ttl, None
        self.create = self.modify = 0

    _CMP = ("node", "id", "name", "status", "notes", "output", "service_id", "type", "interval",
            "timeout")

    def same(self, o):
        return all(getattr(self, a) == getattr(o, a) for a in self._CMP)

    def copy(self):
        c = _Chk(self.node, self.id, self.name, self.status, self.notes, self.output,
                 self.service_id, self.type, self.interval, self.timeout, self.ttl)
        c.deadline, c.create, c.modify = self.deadline, self.create, self.modify
        return c


class _Op:
    """One Raft apply: every change it makes gets the same index, allocated on first use."""

    def __init__(self, dc):
        self.dc, self.idx = dc, None

    def index(self):
        if self.idx is None:
            self.idx = self.dc.next_index()
        return self.idx

    def finish(self):  # a Raft apply consumes an index even when it changed nothing
        self.index()


class _DC:
    TABLES = ("kvs", "tombstones", "nodes", "services", "checks")

    def __init__(self, name):
        self.name = name
        self.raft = 0
        self.kv = {}
        self.tombs = {}
        self.tables = dict.fromkeys(self.TABLES, 0)
        self.nodes = {}
        self.svcs = {}      # (node, service id) -> _Svc
        self.chks = {}      # (node, check id) -> _Chk
        self.svc_index = {}  # service name -> last index that changed its result
        self.extinction = 0  # index at which the last instance of some service went away
        self.generation = 0  # bumped when the state store is "abandoned" (index reset)

    def next_index(self):
        self.raft += 1
        return self.raft

    # -- KV ---------------------------------------------------------------------------------
    def kv_max(self):
        return max(self.tables["kvs"], self.tables["tombstones"])

    def kv_set(self, key, value, flags, cas=None):
        """-> (result, changed). Identical writes keep ModifyIndex (kvsSetTxn skips them)."""
        idx = self.next_index()
        ex = self.kv.get(key)
        if cas is not None:
            if cas == 0 and ex is not None:
                return False, False
            if cas > 0 and (ex is None or ex.modify != cas):
                return False, False
        if ex is not None and ex.value == value and ex.flags == flags:
            return True, False
        self.kv[key] = _Entry(key, value, flags, ex.create if ex else idx, idx, ex.lock if ex else 0)
        self.tables["kvs"] = idx
        return True, True

    def kv_delete(self, key, cas=None):
        idx = self.next_index()
        ex = self.kv.get(key)
        if ex is None:
            return True, False
        if cas is not None and ex.modify != cas:
            return False, False
        del self.kv[key]
        self.tombs[key] = idx
        self.tables["kvs"] = self.tables["tombstones"] = idx
        return True, True

    def kv_delete_tree(self, prefix):
        idx = self.next_index()
        keys = [k for k in self.kv if k.startswith(prefix)]
        if not keys:
            return True, False
        for k in keys:
            del self.kv[k]
            self.tombs[k] = idx
        self.tables["kvs"] = self.tables["tombstones"] = idx
        return True, True

    def kv_get(self, key):
        ent = self.kv.get(key)
        return (ent.modify if ent else self.kv_max()), ent

    def kv_list(self, prefix):
        """kvsListTxn: the prefix's highest index, tombstones included; else the table index."""
        ents = sorted((e for k, e in self.kv.items() if k.startswith(prefix)), key=lambda e: e.key)
        idx = self.kv_max()
        if prefix:
            lidx = max([e.modify for e in ents] +
                       [i for k, i in self.tombs.items() if k.startswith(prefix)] + [0])
        else:
            lidx = idx
        return (lidx or idx), ents

    def reap_tombstones(self):
        self.next_index()
        self.tombs.clear()

    # -- catalog ----------------------------------------------------------------------------
    def _touch_service(self, op, name):
        self.svc_index[name] = op.index()

    def ensure_node(self, op, node):
        ex = self.nodes.get(node.name)
        if ex is not None and ex.same(node):
            return False
        node.create = ex.create if ex else op.index()
        node.modify = op.index()
        self.nodes[node.name] = node
        self.tables["nodes"] = op.index()
        if ex is not None:
            for s in self.svcs.values():
                if s.node == node.name:
                    self._touch_service(op, s.name)
        return True

    def ensure_service(self, op, svc):
        ex = self.svcs.get((svc.node, svc.id))
        if ex is not None and ex.same(svc):
            return False
        svc.create = ex.create if ex else op.index()
        svc.modify = op.index()
        self.svcs[(svc.node, svc.id)] = svc
        self.tables["services"] = op.index()
        self._touch_service(op, svc.name)
        if ex is not None and ex.name != svc.name:
            self._service_gone(op, ex.name)
        return True

    def _service_gone(self, op, name):
        if any(s.name == name for s in self.svcs.values()):
            self._touch_service(op, name)
        else:
            self.svc_index.pop(name, None)
            self.extinction = op.index()

    def delete_service(self, op, node, sid):
        ex = self.svcs.pop((node, sid), None)
        if ex is None:
            return False
        self.tables["services"] = op.index()
        for key in [k for k, c in self.chks.items() if c.node == node and c.service_id == sid]:
            del self.chks[key]
            self.tables["checks"] = op.index()
        self._service_gone(op, ex.name)
        return True

    def ensure_check(self, op, chk):
        ex = self.chks.get((chk.node, chk.id))
        if ex is not None and ex.same(chk):
            return False
        chk = chk.copy()
        chk.create = ex.create if ex else op.index()
        chk.modify = op.index()
        self.chks[(chk.node, chk.id)] = chk
        self.tables["checks"] = op.index()
        if ex is None or ex.status != chk.status or ex.service_id != chk.service_id:
            self._touch_check_targets(op, chk)
            if ex is not None and ex.service_id != chk.service_id:
                self._touch_check_targets(op, ex)
        return True

    def _touch_check_targets(self, op, chk):
        for s in self.svcs.values():
            if s.node == chk.node and (chk.service_id == "" or s.id == chk.service_id):
                self._touch_service(op, s.name)

    def delete_check(self, op, node, cid):
        ex = self.chks.pop((node, cid), None)
        if ex is None:
            return False
        self.tables["checks"] = op.index()
        self._touch_check_targets(op, ex)
        return True

    def delete_node(self, op, name):
        if name not in self.nodes:
            return False
        for (n, sid) in [k for k in self.svcs if k[0] == name]:
            self.delete_service(op, n, sid)
        for key in [k for k in self.chks if k[0] == name]:
            del self.chks[key]
            self.tables["checks"] = op.index()
        del self.nodes[name]
        self.tables["nodes"] = op.index()
        return True

    def service_index(self, name, checks):
        if name in self.svc_index:
            return self.svc_index[name]
        if self.extinction:
            return self.extinction
        t = self.tables
        return max(t["nodes"], t["services"], t["checks"] if checks else 0)

    def service_instances(self, name):
        return [self.svcs[k] for k in sorted(self.svcs) if self.svcs[k].name == name]

    def checks_for(self, svc):
        return [self.chks[k] for k in sorted(self.chks)
                if k[0] == svc.node and self.chks[k].service_id in ("", svc.id)]

    def rebase(self, delta):
        """An index reset (restore into a fresh cluster): every index moves down by delta."""
        def down(i):
            return max(1, i - delta) if i else 0
        for e in self.kv.values():
            e.create, e.modify = down(e.create), down(e.modify)
        self.tombs.clear()
        for coll in (self.nodes.values(), self.svcs.values(), self.chks.values()):
            for o in coll:
                o.create, o.modify = down(o.create), down(o.modify)
        for name in list(self.svc_index):
            self.svc_index[name] = down(self.svc_index[name])
        self.extinction = down(self.extinction)
        for t in self.tables:
            self.tables[t] = down(self.tables[t])
        self.tables["tombstones"] = 0
        self.raft = max([down(self.raft)] + list(self.tables.values()))
        self.generation += 1


# --------------------------------------------------------------------------------------------
# ACLs


_LEVELS = {"deny": 0, "read": 1, "list": 1, "write": 2}


class _Authz:
    """A resolved token. policy: "write" | "read" | "deny" (every resource) or a dict
    {"key_prefix": {"gloo/": "write"}, "service_prefix": {"": "read"}, "node_prefix": {...},
     "key": {exact: level}, ..., "default": level}; longest prefix wins, else the default."""

    def __init__(self, accessor, anonymous, policy, default):
        self.accessor, self.anonymous, self.policy, self.default = accessor, anonymous, policy, default

    def level(self, resource, name):
        p = self.policy
        if p is None:
            return _LEVELS[self.default]
        if isinstance(p, str):
            return _LEVELS[p]
        exact = (p.get(resource) or {}).get(name)
        if exact is not None:
            return _LEVELS[exact]
        best = None
        for pref, lvl in (p.get(resource + "_prefix") or {}).items():
            if name.startswith(pref) and (best is None or len(pref) > len(best[0])):
                best = (pref, lvl)
        if best is not None:
            return _LEVELS[best[1]]
        return _LEVELS[p.get("default", self.default)]

    def can(self, resource, name, access):
        return self.level(resource, name) >= _LEVELS[access]

    def denied(self, resource, access, name):
        """acl.PermissionDeniedError text (acl/errors.go)."""
        msg = "Permission denied"
        msg += ": anonymous token" if self.anonymous else ": token with AccessorID '%s'" % self.accessor
        msg += " lacks permission '%s:%s'" % (resource, access)
        if name != "":
            msg += ' on "%s"' % name
        if self.anonymous:
            msg += ". The anonymous token is used implicitly when a request does not specify a token."
        return msg

    def need(self, resource, name, access):
        if not self.can(resource, name, access):
            raise _HTTPError(403, self.denied(resource, access, name))


# --------------------------------------------------------------------------------------------
# HTTP plumbing


def _client_gone(conn):
    if conn is None:
        return False
    try:
        r, _, _ = select.select([conn], [], [], 0)
        if not r:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _Ctx:
    """What wrap()/parse() derived from one /v1 request."""

    def __init__(self, double, req, query, headers):
        self.double, self.req, self.q, self.headers = double, req, query, headers
        self.dc = double.local_dc
        self.token = ""
        self.stale = self.consistent = self.cached = False
        self.index, self.wait = 0, 0.0
        self.pretty = "pretty" in query or double.dev_mode

    def qget(self, name):
        v = self.q.get(name)
        return v[0] if v else ""

    def consistency(self):
        return "consistent" if self.consistent else ("stale" if self.stale else "leader")


# --------------------------------------------------------------------------------------------
# The double


class ConsulDouble(DoubleBase):
    """A Consul agent (server mode, one node per datacenter) speaking the HTTP API.

    datacenters       first is the local one (the agent's); others are reachable with ?dc=
    acl_tokens        None: ACLs disabled. Else {secret: policy} (see _Authz); a missing token is
                      the anonymous token with anonymous_policy (default: acl_default_policy).
    strict_keys       apply the recent servers' KV key validation (protocols.md 1)
    go_extras         also emit what current Consul adds beyond protocols.md's example
                      (Vary: Accept-Encoding, X-Consul-Query-Backend, gzip for large bodies)
    dev_mode          pretty-print every JSON body, as `consul agent -dev` does
    """

    NAME = "consul-double"
    REASONS = _REASONS
    UNSUPPORTED_TE_BODY = "Unsupported transfer encoding"
    FAULT_KINDS = ("down", "slow", "error", "forbidden", "leader_loss", "index_zero", "dc_unreachable")
    _FAULT_LISTS = ("paths", "dcs")

    def __init__(self, host="127.0.0.1", port=0, datacenters=("dc1",), node_name="consul-double",
                 node_address="127.0.0.1", acl_tokens=None, acl_default_policy="deny",
                 anonymous_policy=None, strict_keys=True, go_extras=False, dev_mode=False,
                 jitter=True, kv_max_value_size=KV_MAX_VALUE_SIZE, control_port=None,
                 record_requests=True):
        if not datacenters:
            raise ValueError("at least one datacenter")
        self.host = host
        self.datacenters = list(datacenters)
        self.local_dc = self.datacenters[0]
        self.node_name, self.node_address = node_name, node_address
        self.acl_tokens = None if acl_tokens is None else dict(acl_tokens)
        self.acl_default_policy = acl_default_policy
        self.anonymous_policy = anonymous_policy
        self.strict_keys, self.go_extras, self.dev_mode = strict_keys, go_extras, dev_mode
        self.jitter = jitter
        self.kv_max_value_size = kv_max_value_size
        self.record_requests = record_requests
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._faults = _Faults(self.FAULT_KINDS)
        self._conns = {}  # socket -> _Listener
        self._conns_lock = threading.Lock()
        self._requests = []
        self._listener = _Listener(self, host, port, False)
        self._control = _Listener(self, host, control_port, True) if control_port is not None else None
        self._ticker = None
        self._started = False
        self.blocking_queries = 0  # in flight now (Consul's rpc.queries_blocking gauge)
        self._changes = 0          # bumped with every wake-up of blocked queries (_notify)
        self._blocked = {}         # request path -> blocking queries waiting on it now
        self._block_returns = {}   # request path -> blocking queries that returned (any reason)
        self._init_state()

    # -- lifecycle ---------------------------------------------------------------------------
    def _init_state(self):
        with self._lock:
            self._dcs = {}
            for i, name in enumerate(self.datacenters):
                dc = _DC(name)
                self._dcs[name] = dc
                dc.next_index()  # the first Raft write is the cluster's own configuration
                node = self.node_name if i == 0 else "%s-%s" % (self.node_name, name)
                addr = self.node_address if i == 0 else "127.0.%d.1" % (i + 1)
                op = _Op(dc)
                dc.ensure_node(op, _Node(node, _node_uuid(name + "/" + node), addr,
                                         {"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr},
                                         {"consul-network-segment": "", "consul-version": VERSION}))
                op = _Op(dc)
                dc.ensure_service(op, _Svc(node, "consul", "consul", [], "", None,
                                           {"raft_version": "3", "serf_protocol_current": "2",
                                            "serf_protocol_max": "5", "serf_protocol_min": "1",
                                            "version": VERSION}, 8300))
                op = _Op(dc)
                dc.ensure_check(op, _Chk(node, "serfHealth", "Serf Health Status", "passing",
                                         output="Agent alive and reachable"))
            self._agent_svcs = {}   # service id -> _Svc (node = agent node)
            self._agent_chks = {}   # check id -> _Chk
            self._requests = []
            self._notify()

    def _notify(self):
        """Wake the blocked queries: something they may watch changed (caller holds the lock).
        A blocked query re-evaluates its result only after such a wake-up, so thousands of
        them cost nothing while nothing changes."""
        self._changes += 1
        self._cond.notify_all()

    def blocked_now(self, path_prefix=""):
        """{request path: blocking queries waiting on it now} for paths under path_prefix (a
        test's view of which watches a client holds open; Consul itself has only the total,
        the rpc.queries_blocking gauge)."""
        with self._lock:
            return {p: n for p, n in self._blocked.items() if n and p.startswith(path_prefix)}

    def blocking_returns(self, path_prefix=""):
        """{request path: blocking queries on it that have returned} (woken by a change,
        timed out, or cut), under path_prefix."""
        with self._lock:
            return {p: n for p, n in self._block_returns.items() if p.startswith(path_prefix)}

    def _on_stop(self):
        with self._cond:
            self._notify()

    def reset(self):
        """Forget every key, service and fault; indexes start over."""
        self.clear_fault()
        self._init_state()

    # -- Python API: data ----------------------------------------------------------------------
    def _dc(self, dc):
        d = self._dcs.get(dc or self.local_dc)
        if d is None:
            raise KeyError("unknown datacenter %r" % dc)
        return d

    def raft_index(self, dc=None):
        with self._lock:
            return self._dc(dc).raft

    def kv_put(self, key, value, flags=0, dc=None):
        """Write directly (no ACL, no faults). Returns the entry's ModifyIndex."""
        if isinstance(value, str):
            value = value.encode("utf-8")
        with self._cond:
            d = self._dc(dc)
            _, changed = d.kv_set(key, bytes(value), flags)
            if changed:
                self._notify()
            return d.kv[key].modify

    def kv_get(self, key, dc=None):
        with self._lock:
            e = self._dc(dc).kv.get(key)
            if e is None:
                return None
            return {"Key": e.key, "Value": e.value, "Flags": e.flags, "CreateIndex": e.create,
                    "ModifyIndex": e.modify, "LockIndex": e.lock}

    def kv_delete(self, key, recurse=False, dc=None):
        with self._cond:
            d = self._dc(dc)
            _, changed = d.kv_delete_tree(key) if recurse else d.kv_delete(key)
            if changed:
                self._notify()
            return changed

    def kv_index(self, prefix, dc=None):
        """The X-Consul-Index a ?recurse read of prefix would carry now."""
        with self._lock:
            return max(1, self._dc(dc).kv_list(prefix)[0])

    def register_node(self, node, address, dc=None, meta=None, tagged=None):
        with self._cond:
            d = self._dc(dc)
            op = _Op(d)
            d.ensure_node(op, _Node(node, _node_uuid(d.name + "/" + node), address, tagged, meta))
            op.finish()
            self._notify()
            return op.idx

    def deregister_node(self, node, dc=None):
        with self._cond:
            d = self._dc(dc)
            op = _Op(d)
            d.delete_node(op, node)
            op.finish()
            self._notify()

    def register_service(self, name, service_id=None, address="", port=0, tags=(), meta=None,
                         node=None, node_address=None, dc=None, health=None, weights=None):
        """Register an instance. Without node (local dc): through the local agent, like
        PUT /v1/agent/service/register. With node: catalog-level, on that node (created with
        node_address when new). health: None (no service check) or the status of a check
        "service:<id>" attached to it. Returns the service id."""
        sid = service_id or name
        with self._cond:
            d = self._dc(dc)
            if node is None and d.name == self.local_dc:
                svc = _Svc(self.node_name, sid, name, tags, address, None, meta, port, weights)
                _default_tagged(svc)
                self._agent_svcs[sid] = svc
                if health is not None:
                    self._agent_chks["service:" + sid] = _Chk(
                        self.node_name, "service:" + sid, "Service '%s' check" % name, health,
                        service_id=sid)
                self._sync_agent()
                return sid
            node = node or ("%s-%s" % (self.node_name, d.name))
            op = _Op(d)
            if node not in d.nodes:
                if node_address is None:
                    raise ValueError("new node %r needs node_address" % node)
                d.ensure_node(op, _Node(node, _node_uuid(d.name + "/" + node), node_address, None, None))
            d.ensure_service(op, _Svc(node, sid, name, tags, address, None, meta, port, weights))
            if health is not None:
                d.ensure_check(op, _Chk(node, "service:" + sid, "Service '%s' check" % name, health,
                                        service_id=sid))
            op.finish()
            self._notify()
            return sid

    def deregister_service(self, service_id, node=None, dc=None):
        with self._cond:
            d = self._dc(dc)
            if node is None and d.name == self.local_dc and service_id in self._agent_svcs:
                del self._agent_svcs[service_id]
                for cid in [c for c, k in self._agent_chks.items() if k.service_id == service_id]:
                    del self._agent_chks[cid]
                self._sync_agent()
                return
            node = node or ("%s-%s" % (self.node_name, d.name))
            op = _Op(d)
            d.delete_service(op, node, service_id)
            op.finish()
            self._notify()

    def set_check_status(self, check_id, status, node=None, dc=None, output=""):
        """Flip a check (any type; agent TTL checks too). node defaults to the agent's node."""
        if status not in HEALTH_STATES:
            raise ValueError("bad status %r" % status)
        with self._cond:
            d = self._dc(dc)
            if node is None and d.name == self.local_dc and check_id in self._agent_chks:
                c = self._agent_chks[check_id]
                c.status, c.output = status, output
                if c.ttl:
                    c.deadline = time.monotonic() + c.ttl
                self._sync_agent()
                return
            if node is None:
                node = self.node_name if d.name == self.local_dc else "%s-%s" % (self.node_name, d.name)
            ex = d.chks.get((node, check_id))
            if ex is None:
                raise KeyError("no check %r on node %r in %s" % (check_id, node, d.name))
            c = ex.copy()
            c.status, c.output = status, output
            op = _Op(d)
            d.ensure_check(op, c)
            op.finish()
            self._notify()

    def set_node_health(self, status, node=None, dc=None):
        """The node's serfHealth check (counts for every service on the node)."""
        self.set_check_status("serfHealth", status, node=node or None, dc=dc,
                              output="Agent alive and reachable" if status == "passing" else "Agent not live or unreachable")

    # -- Python API: faults ----------------------------------------------------------------------
    def _validate_fault(self, kind, params):
        if kind == "dc_unreachable" and not params.get("dc"):
            raise ValueError("dc_unreachable needs dc=NAME")

    def _faults_changed(self):
        with self._cond:
            self._notify()

    def _after_clear(self, kind):
        DoubleBase._after_clear(self, kind)  # down: listening again, hung connections dropped
        if kind == "leader_loss":
            with self._cond:
                self._sync_agent()

    def fault_down(self, mode="refuse", duration_ms=None):
        self.fault("down", mode=mode, duration_ms=duration_ms)

    def fault_slow(self, ms, **kw):
        self.fault("slow", ms=ms, **kw)

    def fault_error(self, status=500, body="No known Consul servers", **kw):
        self.fault("error", status=status, body=body, **kw)

    def fault_forbidden(self, body="ACL not found", **kw):
        self.fault("forbidden", status=403, body=body, **kw)

    def fault_leader_loss(self, dcs=None, **kw):
        self.fault("leader_loss", dcs=dcs, **kw)

    def fault_index_zero(self, **kw):
        self.fault("index_zero", **kw)

    def fault_dc_unreachable(self, dc, **kw):
        self.fault("dc_unreachable", dc=dc, **kw)

    def index_reset(self, dc=None, delta=None):
        """Every index of the datacenter moves backwards by delta (default: half the Raft index);
        blocked queries return at once with the lower index. Returns the new Raft index."""
        with self._cond:
            d = self._dc(dc)
            d.rebase(delta if delta is not None else max(1, d.raft // 2))
            self._notify()
            return d.raft

    def reap_tombstones(self, dc=None):
        with self._cond:
            self._dc(dc).reap_tombstones()
            self._notify()

    # -- housekeeping --------------------------------------------------------------------------------
    def _tick(self):
        with self._cond:
            now = time.monotonic()
            changed = False
            for c in self._agent_chks.values():
                if c.ttl and c.deadline is not None and now >= c.deadline:
                    c.deadline = None
                    if c.status != "critical" or c.output != "TTL expired":
                        c.status, c.output = "critical", "TTL expired"
                        changed = True
            if changed:
                self._sync_agent()

    def _leader_lost(self, dcname):
        p = self._faults.peek("leader_loss")
        if p is None:
            return None
        dcs = p.get("dcs")
        if dcs and dcname not in dcs:
            return None
        return p

    def _sync_agent(self):
        """Anti-entropy: make the catalog match the agent's local services and checks (held
        back while the local datacenter has no leader, applied when it is back)."""
        if self._leader_lost(self.local_dc):
            return
        d = self._dcs[self.local_dc]
        node = self.node_name
        changed = False
        for sid, svc in sorted(self._agent_svcs.items()):
            op = _Op(d)
            if d.ensure_service(op, _clone_svc(svc)):
                changed = True
            for cid, c in sorted(self._agent_chks.items()):
                if c.service_id == sid and d.ensure_check(op, c):
                    changed = True
        for (n, sid) in [k for k in d.svcs if k[0] == node]:
            if sid != "consul" and sid not in self._agent_svcs:
                d.delete_service(_Op(d), n, sid)
                changed = True
        for (n, cid) in [k for k in d.chks if k[0] == node]:
            c = d.chks[(n, cid)]
            if cid != "serfHealth" and cid not in self._agent_chks and c.service_id != "consul":
                d.delete_check(_Op(d), n, cid)
                changed = True
        for cid, c in sorted(self._agent_chks.items()):
            if c.service_id == "" and d.ensure_check(_Op(d), c):
                changed = True
        if changed:
            self._notify()

    # -- connections ---------------------------------------------------------------------------------
    @staticmethod
    def _unescape_path(raw_path):
        return go_unescape(raw_path, False)

    @staticmethod
    def _query_dict(raw_query):
        return go_parse_query(raw_query)[0]

    def _prepare_body(self, req, resp, hdrs):
        body = resp.body
        if (self.go_extras and "Content-Encoding" not in hdrs and len(body) >= GZIP_MIN_SIZE
                and "gzip" in req.header("Accept-Encoding").lower()):
            if "Content-Type" not in hdrs:  # sniffed before compressing
                hdrs["Content-Type"] = "text/plain; charset=utf-8"
            body = gzip.compress(body)
            hdrs["Content-Encoding"] = "gzip"
            hdrs.pop("Content-Length", None)
        return body

    # -- routing -------------------------------------------------------------------------------------
    _EXACT = {
        "/v1/catalog/services": (("GET",), "_ep_catalog_services"),
        "/v1/catalog/datacenters": (("GET",), "_ep_datacenters"),
        "/v1/catalog/register": (("PUT",), "_ep_catalog_register"),
        "/v1/catalog/deregister": (("PUT",), "_ep_catalog_deregister"),
        "/v1/agent/service/register": (("PUT",), "_ep_agent_register"),
        "/v1/agent/services": (("GET",), "_ep_agent_services"),
        "/v1/agent/checks": (("GET",), "_ep_agent_checks"),
        "/v1/status/leader": (("GET",), "_ep_status_leader"),
    }
    _SUBTREE = {
        "/v1/kv/": (("GET", "PUT", "DELETE"), "_ep_kv"),
        "/v1/catalog/service/": (("GET",), "_ep_catalog_service"),
        "/v1/health/service/": (("GET",), "_ep_health_service"),
        "/v1/agent/service/deregister/": (("PUT",), "_ep_agent_deregister"),
        "/v1/agent/check/pass/": (("PUT",), "_ep_check_pass"),
        "/v1/agent/check/warn/": (("PUT",), "_ep_check_warn"),
        "/v1/agent/check/fail/": (("PUT",), "_ep_check_fail"),
        "/v1/agent/check/update/": (("PUT",), "_ep_check_update"),
    }

    def _route(self, path):
        if path in self._EXACT:
            return self._EXACT[path]
        best = None
        for pat in self._SUBTREE:
            if path.startswith(pat) and (best is None or len(pat) > len(best)):
                best = pat
        if best is not None:
            return self._SUBTREE[best]
        if path + "/" in self._SUBTREE:
            return "redirect"
        return None

    def _handle(self, req, listener):
        self._record(req)
        path = req.path
        if path.startswith("/_double/"):
            return self._control_request(req)
        if listener.control_only:
            return _Resp(404, b"consul double control port: only /_double/ paths\n")
        if not all(ch.isprintable() for ch in path):
            return _Resp(400)  # cleanhttp.PrintablePathCheckHandler
        clean = go_clean_path(path)
        if clean != path:
            return self._redirect(req, clean)
        route = self._route(path)
        if route == "redirect":
            return self._redirect(req, path + "/")
        if route is None:
            if path == "/":
                return _Resp(200, b"Consul Agent: UI disabled. To enable, set ui_config.enabled=true "
                                  b"in the agent configuration and restart.")
            if "/v1/" in path:
                return _Resp(404, b"Invalid URL path: not a recognized HTTP API endpoint\n")
            return _Resp(404, b"Invalid URL path: if attempting to use the HTTP API, ensure the "
                              b"path starts with '/v1/'\n")
        methods, fname = route
        slow = self._faults.get("slow", path)
        if slow is not None:
            self._stopping.wait(float(slow.get("ms", 0)) / 1000.0)
        base = {}
        if self.go_extras:
            base["Vary"] = "Accept-Encoding"
        base["X-Consul-Default-Acl-Policy"] = "allow" if self.acl_tokens is None else self.acl_default_policy
        query, qerr = go_parse_query(req.raw_query)
        if qerr:
            return _Resp(500, b"", base)
        allow = ",".join(("OPTIONS",) + methods)
        if req.method == "OPTIONS":
            base["Allow"] = allow
            return _Resp(200, b"", base)
        if req.method not in methods:
            base["Allow"] = allow
            return _Resp(405, ("method %s not allowed" % req.method).encode(), base)
        for kind in ("error", "forbidden"):
            f = self._faults.get(kind, path)
            if f is not None:
                st = int(f.get("status", 500 if kind == "error" else 403))
                body = f.get("body", "No known Consul servers" if kind == "error" else "ACL not found")
                return _Resp(st, (body or "").encode("utf-8"), base)
        ctx = _Ctx(self, req, query, base)
        try:
            return getattr(self, fname)(ctx)
        except _HTTPError as e:
            base.update(e.headers)
            return _Resp(e.status, e.text.encode("utf-8"), base)

    # -- shared endpoint pieces ------------------------------------------------------------------------
    def _parse(self, ctx):
        """agent/http.go parse(): dc, token, consistency, Cache-Control, wait and index."""
        q = ctx.q
        if ctx.qget("dc"):
            ctx.dc = ctx.qget("dc")
        ctx.token = self._token(ctx)
        defaults = True
        if "stale" in q:
            ctx.stale, defaults = True, False
        if "consistent" in q:
            ctx.consistent, defaults = True, False
        if "leader" in q:
            defaults = False
        if "cached" in q:
            ctx.cached = True
        ms = ctx.qget("max_stale")
        if ms:
            try:
                dur = parse_go_duration(ms)
            except ValueError:
                raise _HTTPError(400, "Invalid max_stale value %s" % go_quote(ms))
            if dur > 0:
                ctx.stale = True
        if ctx.stale and ctx.consistent:
            raise _HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        if ctx.cached and ctx.consistent:
            raise _HTTPError(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
        cc = ctx.req.header("Cache-Control").lower()
        for d in (x.strip() for x in cc.split(",") if cc):
            for pre in ("max-age=", "stale-if-error="):
                if d.startswith(pre):
                    v = d[len(pre):]
                    if not re.fullmatch(r"[+-]?[0-9]+", v):
                        raise _HTTPError(400, "Invalid Cache-Control header.")
        w = ctx.qget("wait")
        if w:
            try:
                ctx.wait = parse_go_duration(w)
            except ValueError:
                raise _HTTPError(400, "Invalid wait time")
        i = ctx.qget("index")
        if i:
            try:
                ctx.index = go_parse_uint(i)
            except ValueError:
                raise _HTTPError(400, "Invalid index")

    @staticmethod
    def _token(ctx):
        t = ctx.qget("token")
        if t:
            return t
        t = ctx.req.header("X-Consul-Token")
        if t:
            return t
        a = ctx.req.header("Authorization")
        parts = a.split(" ")
        if len(parts) > 1 and parts[0].lower() == "bearer":
            return " ".join(parts[1:]).strip().split(" ")[0].strip()
        return ""

    def _ent_meta(self, ctx):
        """Consul CE: namespaces and partitions are Enterprise features."""
        if ctx.req.header("X-Consul-Namespace"):
            raise _HTTPError(400, 'Invalid header: "X-Consul-Namespace" - Namespaces are a Consul Enterprise feature')
        if ctx.qget("ns"):
            raise _HTTPError(400, 'Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature')
        if ctx.req.header("X-Consul-Partition"):
            raise _HTTPError(400, 'Invalid header: "X-Consul-Partition" - Partitions are a Consul Enterprise feature')
        if ctx.qget("partition"):
            raise _HTTPError(400, 'Invalid query parameter: "partition" - Partitions are a Consul Enterprise feature')

    def _no_filter(self, ctx):
        if "filter" in ctx.q:
            raise _HTTPError(500, "consul double: ?filter is not implemented")

    def _target(self, ctx, need_leader):
        """RPC forwarding: the datacenter, then the leader (writes, default/consistent reads)."""
        f = self._faults.peek("dc_unreachable")
        if ctx.dc not in self._dcs or (f is not None and f.get("dc") == ctx.dc):
            raise _HTTPError(500, "No path to datacenter")
        d = self._dcs[ctx.dc]
        if need_leader and self._leader_lost(d.name):
            raise _HTTPError(500, "No cluster leader")
        return d

    def _authz(self, ctx):
        if self.acl_tokens is None:
            return None
        if ctx.token == "":
            pol = self.anonymous_policy
            return _Authz(ANONYMOUS_ACCESSOR, True, pol, "deny" if self.acl_default_policy == "deny" else "write")
        if ctx.token not in self.acl_tokens:
            raise _HTTPError(403, "ACL not found")
        return _Authz(_accessor(ctx.token), False, self.acl_tokens[ctx.token],
                      "deny" if self.acl_default_policy == "deny" else "write")

    def _blocking(self, ctx, d, compute, peek=None):
        """Server.blockingQuery: compute() -> (index, result, not_found, filtered). peek(), when
        given, is compute()'s index alone, cheap: a wake-up whose peek() is still at or below
        the query's index does not compute the result (what a change elsewhere costs a
        blocked query is then one dictionary lookup)."""
        min_idx = ctx.index
        index0 = self._faults.peek("index_zero") is not None
        idx, res, nf, filt = compute()
        if index0:
            idx = 0
        if min_idx == 0:
            return idx, res, filt
        timeout = ctx.wait if ctx.wait > 0 else DEFAULT_QUERY_TIME
        timeout = min(timeout, MAX_QUERY_TIME)
        if self.jitter:
            timeout += random.uniform(0, timeout / JITTER_FRACTION)
        deadline = time.monotonic() + timeout
        gen = d.generation
        notfound = nf
        seen = self._changes
        path = ctx.req.path
        self.blocking_queries += 1
        self._blocked[path] = self._blocked.get(path, 0) + 1
        try:
            while idx <= min_idx:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    break
                # a slice, to notice a client that went away; longer when thousands wait
                self._cond.wait(min(remaining, 0.25 if self.blocking_queries <= 64 else 1.0))
                if _client_gone(ctx.req.conn):
                    raise _ClientGone()
                if not ctx.stale and self._leader_lost(d.name):
                    raise _HTTPError(500, "No cluster leader")
                if self._changes == seen:
                    continue    # nothing was written: the answer cannot have changed
                seen = self._changes
                if (peek is not None and d.generation == gen
                        and self._faults.peek("index_zero") is None and peek() <= min_idx):
                    continue
                idx, res, nf, filt = compute()
                if self._faults.peek("index_zero") is not None:
                    idx = 0
                if d.generation != gen:
                    break  # state store abandoned (index reset): answer now, whatever the index
                if nf:
                    if notfound:
                        min_idx = max(min_idx, idx)
                    notfound = True
        finally:
            self.blocking_queries -= 1
            self._blocked[path] -= 1
            self._block_returns[path] = self._block_returns.get(path, 0) + 1
        return idx, res, filt

    def _meta(self, ctx, d, idx, filtered=False, consistency=True):
        """setMeta(): X-Consul-Index (0 clamped to 1 unless the index_zero fault is on),
        X-Consul-Knownleader, X-Consul-Lastcontact, X-Consul-Effective-Consistency."""
        h = ctx.headers
        if self._faults.peek("index_zero") is None:
            idx = max(idx, 1)
        lost = self._leader_lost(d.name)
        h["X-Consul-Lastcontact"] = str(int((time.monotonic() - lost["since"]) * 1000)) if lost else "0"
        h["X-Consul-Index"] = str(idx)
        h["X-Consul-Knownleader"] = "false" if lost else "true"
        if consistency:
            h["X-Consul-Effective-Consistency"] = ctx.consistency()
        if self.go_extras:
            h["X-Consul-Query-Backend"] = "blocking-query"
        if filtered:
            h["X-Consul-Results-Filtered-By-Acls"] = "true"

    def _json(self, ctx, obj, status=200):
        ctx.headers["Content-Type"] = "application/json"
        return _Resp(status, go_json(obj, ctx.pretty), ctx.headers)

    @staticmethod
    def _decode_body(ctx):
        raw = ctx.req.body
        if not raw.strip():
            raise _HTTPError(400, "Request decode failed: EOF")
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise _HTTPError(400, "Request decode failed: %s" % e)

    # -- KV ----------------------------------------------------------------------------------------------
    def _ep_kv(self, ctx):
        self._parse(ctx)
        path = ctx.req.path
        if self.strict_keys and ("../" in path or "..\\" in path):
            raise _HTTPError(400, "URL path contains invalid traversal sequence")
        key = path[len("/v1/kv/"):]
        if key and self.strict_keys:
            err = validate_kv_key(key)
            if err:
                raise _HTTPError(400, err)
        m = ctx.req.method
        if m == "GET":
            return self._kv_keys(ctx, key) if "keys" in ctx.q else self._kv_get(ctx, key)
        if m == "PUT":
            return self._kv_put(ctx, key)
        return self._kv_delete(ctx, key)

    def _kv_get(self, ctx, key):
        recurse = "recurse" in ctx.q
        if not recurse and key == "":
            raise _HTTPError(400, "Missing key name")
        self._ent_meta(ctx)
        with self._cond:
            d = self._target(ctx, need_leader=not ctx.stale)
            authz = self._authz(ctx)

            def compute():
                if recurse:
                    idx, ents = d.kv_list(key)
                    total = len(ents)
                    if authz is not None:
                        ents = [e for e in ents if authz.can("key", e.key, "read")]
                    return idx, [e.to_json() for e in ents], False, total != len(ents)
                idx, ent = d.kv_get(key)
                if authz is not None:
                    authz.need("key", key, "read")
                if ent is None:
                    return idx, [], True, False
                return ent.modify, [ent.to_json()], False, False

            idx, res, filt = self._blocking(ctx, d, compute)
            self._meta(ctx, d, idx, filt)
            if not res:
                return _Resp(404, b"", ctx.headers)
            if "raw" in ctx.q and not recurse:
                v = base64.b64decode(res[0]["Value"]) if res[0]["Value"] else b""
                ctx.headers.update({"Content-Length": str(len(v)), "Content-Type": "text/plain",
                                    "X-Content-Type-Options": "nosniff",
                                    "Content-Security-Policy": "sandbox"})
                return _Resp(200, v, ctx.headers)
            return self._json(ctx, res)

    def _kv_keys(self, ctx, prefix):
        self._ent_meta(ctx)
        sep = ""
        if "seperator" in ctx.q:  # the historic spelling is still honoured
            sep = ctx.qget("seperator")
        if "separator" in ctx.q:
            sep = ctx.qget("separator")
        with self._cond:
            d = self._target(ctx, need_leader=not ctx.stale)
            authz = self._authz(ctx)

            def compute():
                idx, ents = d.kv_list(prefix)
                total = len(ents)
                if authz is not None:
                    ents = [e for e in ents if authz.can("key", e.key, "read")]
                keys, seen = [], set()
                for e in ents:
                    if not sep:
                        keys.append(e.key)
                        continue
                    after = e.key[len(prefix):]
                    i = after.find(sep)
                    if i >= 0:
                        k = e.key[:len(prefix) + i + len(sep)]
                        if k not in seen:
                            seen.add(k)
                            keys.append(k)
                    else:
                        keys.append(e.key)
                return idx, keys, False, total != len(ents)

            idx, keys, filt = self._blocking(ctx, d, compute)
            self._meta(ctx, d, idx, filt)
            if not keys and prefix != "":
                return _Resp(404, b"", ctx.headers)
            return self._json(ctx, keys)

    def _conflicting(self, ctx, *flags):
        found = [f for f in flags if f in ctx.q]
        if len(found) > 1:
            raise _HTTPError(400, "Conflicting flags: %s\n" % go_query_encode(ctx.q))

    def _kv_put(self, ctx, key):
        self._ent_meta(ctx)
        if key == "":
            raise _HTTPError(400, "Missing key name")
        self._conflicting(ctx, "cas", "acquire", "release")
        flags, cas = 0, None
        try:
            if "flags" in ctx.q:
                flags = go_parse_uint(ctx.qget("flags"))
            if "cas" in ctx.q:
                cas = go_parse_uint(ctx.qget("cas"))
        except ValueError as e:
            raise _HTTPError(500, str(e))
        if "acquire" in ctx.q or "release" in ctx.q:
            raise _HTTPError(500, "consul double: KV sessions (?acquire, ?release) are not implemented")
        body = ctx.req.body
        if len(body) > self.kv_max_value_size:
            raise _HTTPError(413, "Request body(%d bytes) too large, max size: %d bytes. See %s." % (
                len(body), self.kv_max_value_size,
                "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size"))
        with self._cond:
            d = self._target(ctx, need_leader=True)
            authz = self._authz(ctx)
            if authz is not None:
                authz.need("key", key, "write")
            ok, changed = d.kv_set(key, body, flags, cas)
            if changed:
                self._notify()
        return self._json(ctx, ok if cas is not None else True)

    def _kv_delete(self, ctx, key):
        self._ent_meta(ctx)
        self._conflicting(ctx, "recurse", "cas")
        recurse = "recurse" in ctx.q
        if not recurse and key == "":
            raise _HTTPError(400, "Missing key name")
        cas = None
        if "cas" in ctx.q:
            try:
                cas = go_parse_uint(ctx.qget("cas"))
            except ValueError as e:
                raise _HTTPError(500, str(e))
        with self._cond:
            d = self._target(ctx, need_leader=True)
            authz = self._authz(ctx)
            if authz is not None:
                authz.need("key", key, "write")
            if recurse:
                ok, changed = d.kv_delete_tree(key)
            else:
                ok, changed = d.kv_delete(key, cas)
            if changed:
                self._notify()
        return self._json(ctx, ok if cas is not None else True)

    # -- catalog and health ------------------------------------------------------------------------------
    def _node_meta_filter(self, ctx):
        out = {}
        for f in ctx.q.get("node-meta", []):
            k, _, v = f.partition(":")
            out[k] = v
        return out

    @staticmethod
    def _node_matches(node, filt):
        return all((node.meta or {}).get(k) == v for k, v in filt.items())

    def _ep_datacenters(self, ctx):
        return self._json(ctx, [self.local_dc] + sorted(x for x in self.datacenters if x != self.local_dc))

    def _ep_status_leader(self, ctx):
        self._parse(ctx)
        d = self._target(ctx, need_leader=False)
        return self._json(ctx, "" if self._leader_lost(d.name) else "%s:8300" % (
            self.node_address if d.name == self.local_dc else d.nodes[self._server_node(d)].address))

    def _server_node(self, d):
        return self.node_name if d.name == self.local_dc else "%s-%s" % (self.node_name, d.name)

    def _ep_catalog_services(self, ctx):
        self._parse(ctx)
        self._ent_meta(ctx)
        self._no_filter(ctx)
        nm = self._node_meta_filter(ctx)
        with self._cond:
            d = self._target(ctx, need_leader=not ctx.stale)
            authz = self._authz(ctx)

            def compute():
                idx = d.tables["services"]
                out, filtered = {}, False
                for key in sorted(d.svcs):
                    s = d.svcs[key]
                    if nm and not self._node_matches(d.nodes[s.node], nm):
                        continue
                    if authz is not None and not (authz.can("service", s.name, "read")
                                                  and authz.can("node", s.node, "read")):
                        filtered = True
                        continue
                    tags = out.setdefault(s.name, [])
                    for t in s.tags:
                        if t not in tags:
                            tags.append(t)
                return idx, _sorted_map(out), False, filtered

            idx, res, filt = self._blocking(ctx, d, compute, lambda: d.tables["services"])
            self._meta(ctx, d, idx, filt)
            if ctx.cached:
                ctx.headers["X-Cache"] = "MISS"
            return self._json(ctx, res)

    def _instances(self, ctx, d, name, authz, nm, tags, checks):
        idx = d.service_index(name, checks)
        out, filtered = [], False
        want = [t.lower() for t in tags]
        for s in d.service_instances(name):
            node = d.nodes[s.node]
            if nm and not self._node_matches(node, nm):
                continue
            if want and not all(w in [t.lower() for t in s.tags] for w in want):
                continue
            if authz is not None and not (authz.can("service", s.name, "read")
                                          and authz.can("node", s.node, "read")):
                filtered = True
                continue
            out.append((s, node))
        return idx, out, filtered

    def _ep_catalog_service(self, ctx):
        self._parse(ctx)
        self._ent_meta(ctx)
        self._no_filter(ctx)
        tags = ctx.q.get("tag", [])
        name = ctx.req.path[len("/v1/catalog/service/"):]
        if name == "":
            raise _HTTPError(400, "Missing service name")
        nm = self._node_meta_filter(ctx)
        with self._cond:
            d = self._target(ctx, need_leader=not ctx.stale)
            authz = self._authz(ctx)

            def compute():
                idx, pairs, filt = self._instances(ctx, d, name, authz, nm, tags, False)
                return idx, [self._catalog_entry(d, s, n) for s, n in pairs], False, filt

            idx, res, filt = self._blocking(ctx, d, compute, lambda: d.service_index(name, False))
            self._meta(ctx, d, idx, filt)
            if ctx.cached:
                ctx.headers["X-Cache"] = "MISS"
            return self._json(ctx, res)

    def _ep_health_service(self, ctx):
        self._parse(ctx)
        self._ent_meta(ctx)
        self._no_filter(ctx)
        tags = ctx.q.get("tag", [])
        name = ctx.req.path[len("/v1/health/service/"):]
        if name == "":
            raise _HTTPError(400, "Missing service name")
        nm = self._node_meta_filter(ctx)
        with self._cond:
            d = self._target(ctx, need_leader=not ctx.stale)
            authz = self._authz(ctx)

            def compute():
                idx, pairs, filt = self._instances(ctx, d, name, authz, nm, tags, True)
                return idx, [self._health_entry(d, s, n) for s, n in pairs], False, filt

            idx, res, filt = self._blocking(ctx, d, compute, lambda: d.service_index(name, True))
            self._meta(ctx, d, idx, filt)
            if ctx.cached:
                ctx.headers["X-Cache"] = "MISS"
        if "passing" in ctx.q:
            v = ctx.qget("passing")
            try:
                passing = True if v == "" else go_parse_bool(v)
            except ValueError:
                raise _HTTPError(400, "Invalid value for ?passing")
            if passing:
                res = [e for e in res if all(c["Status"] == "passing" for c in e["Checks"])]
        return self._json(ctx, res)

    def _catalog_entry(self, d, s, n):
        e = {"ID": n.id, "Node": n.name, "Address": n.address, "Datacenter": d.name,
             "TaggedAddresses": _sorted_map(n.tagged), "NodeMeta": _sorted_map(n.meta),
             "ServiceKind": s.kind, "ServiceID": s.id, "ServiceName": s.name,
             "ServiceTags": list(s.tags), "ServiceAddress": s.address}
        if s.tagged:
            e["ServiceTaggedAddresses"] = _sorted_map(s.tagged)
        e.update({"ServiceWeights": dict(s.weights), "ServiceMeta": _sorted_map(s.meta),
                  "ServicePort": s.port, "ServiceSocketPath": "", "ServiceEnableTagOverride": s.eto,
                  "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                  "ServiceConnect": {}, "CreateIndex": s.create, "ModifyIndex": s.modify})
        return e

    def _health_entry(self, d, s, n):
        node = {"ID": n.id, "Node": n.name, "Address": n.address, "Datacenter": d.name,
                "TaggedAddresses": _sorted_map(n.tagged), "Meta": _sorted_map(n.meta),
                "CreateIndex": n.create, "ModifyIndex": n.modify}
        svc = {"ID": s.id, "Service": s.name, "Tags": list(s.tags), "Address": s.address}
        if s.tagged:
            svc["TaggedAddresses"] = _sorted_map(s.tagged)
        svc.update({"Meta": _sorted_map(s.meta), "Port": s.port, "Weights": dict(s.weights),
                    "EnableTagOverride": s.eto,
                    "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "Connect": {},
                    "CreateIndex": s.create, "ModifyIndex": s.modify})
        checks = [self._check_json(d, c) for c in d.checks_for(s)]
        return {"Node": node, "Service": svc, "Checks": checks}

    def _check_json(self, d, c, with_index=True):
        svc = d.svcs.get((c.node, c.service_id)) if c.service_id else None
        return {"Node": c.node, "CheckID": c.id, "Name": c.name, "Status": c.status,
                "Notes": c.notes, "Output": c.output, "ServiceID": c.service_id,
                "ServiceName": svc.name if svc else "", "ServiceTags": list(svc.tags) if svc else [],
                "Type": c.type, "Interval": c.interval, "Timeout": c.timeout, "ExposedPort": 0,
                "Definition": {}, "CreateIndex": c.create if with_index else 0,
                "ModifyIndex": c.modify if with_index else 0}

    # -- catalog register / deregister -------------------------------------------------------------------
    def _ep_catalog_register(self, ctx):
        self._parse(ctx)
        body = self._decode_body(ctx)
        if not isinstance(body, dict):
            raise _HTTPError(400, "Request decode failed: json: cannot unmarshal %s into Go value of "
                                  "type structs.RegisterRequest" % _json_kind(body))
        b = _ci(body)
        if b.get("datacenter"):
            ctx.dc = b["datacenter"]
        node = b.get("node") or ""
        with self._cond:
            d = self._target(ctx, need_leader=True)
            authz = self._authz(ctx)
            if node == "":
                raise _HTTPError(500, "Must provide node")
            svc = _ci(b["service"]) if isinstance(b.get("service"), dict) else None
            skip_node = bool(b.get("skipnodeupdate"))
            if not b.get("address") and not skip_node:
                raise _HTTPError(500, "Must provide address if SkipNodeUpdate is not set")
            if svc is not None and not svc.get("service"):
                raise _HTTPError(500, "Must provide service name (Service.Service) with ID (Service.ID)"
                                 if svc.get("id") else "Must provide service name with ID")
            if authz is not None:
                authz.need("node", node, "write")
                if svc is not None:
                    authz.need("service", svc["service"], "write")
            op = _Op(d)
            if not skip_node or node not in d.nodes:
                ex = d.nodes.get(node)
                d.ensure_node(op, _Node(node, b.get("id") or (ex.id if ex else _node_uuid(d.name + "/" + node)),
                                        b.get("address") or (ex.address if ex else ""),
                                        _sorted_map(b.get("taggedaddresses")), _sorted_map(b.get("nodemeta"))))
            if svc is not None:
                s = _svc_from(svc, node, "service")
                d.ensure_service(op, s)
            checks = []
            if isinstance(b.get("check"), dict):
                checks.append(_ci(b["check"]))
            for c in b.get("checks") or []:
                if isinstance(c, dict):
                    checks.append(_ci(c))
            for c in checks:
                st = c.get("status") or "critical"
                sid = c.get("serviceid") or ""
                d.ensure_check(op, _Chk(node, c.get("checkid") or c.get("name") or "", c.get("name") or "",
                                        st, c.get("notes") or "", c.get("output") or "", sid))
            op.finish()
            self._notify()
        return self._json(ctx, True)

    def _ep_catalog_deregister(self, ctx):
        self._parse(ctx)
        body = self._decode_body(ctx)
        b = _ci(body) if isinstance(body, dict) else {}
        if b.get("datacenter"):
            ctx.dc = b["datacenter"]
        node = b.get("node") or ""
        with self._cond:
            d = self._target(ctx, need_leader=True)
            authz = self._authz(ctx)
            if node == "":
                raise _HTTPError(500, "Must provide node")
            if authz is not None:
                authz.need("node", node, "write")
            op = _Op(d)
            if b.get("serviceid"):
                d.delete_service(op, node, b["serviceid"])
            elif b.get("checkid"):
                d.delete_check(op, node, b["checkid"])
            else:
                d.delete_node(op, node)
            op.finish()
            self._notify()
        return self._json(ctx, True)

    # -- agent ------------------------------------------------------------------------------------------
    def _ep_agent_register(self, ctx):
        self._parse(ctx)
        body = self._decode_body(ctx)
        if not isinstance(body, dict):
            raise _HTTPError(400, "Request decode failed: json: cannot unmarshal %s into Go value of "
                                  "type structs.ServiceDefinition" % _json_kind(body))
        b = _ci(body)
        for fld, typ, gotype in (("port", int, "int"), ("name", str, "string"), ("id", str, "string"),
                                 ("address", str, "string")):
            v = b.get(fld)
            if v is not None and (not isinstance(v, typ) or isinstance(v, bool)):
                raise _HTTPError(400, "Request decode failed: json: cannot unmarshal %s into Go struct "
                                      "field ServiceDefinition.%s of type %s"
                                 % (_json_kind(v), fld.capitalize() if fld != "id" else "ID", gotype))
        if not b.get("name"):
            raise _HTTPError(400, "Missing service name")
        svc = _svc_from(b, self.node_name, "name")
        _default_tagged(svc)
        checks = []
        if isinstance(b.get("check"), dict):
            checks.append(_ci(b["check"]))
        for c in b.get("checks") or []:
            if isinstance(c, dict):
                checks.append(_ci(c))
        chks = []
        for i, c in enumerate(checks):
            cid = c.get("checkid") or c.get("id") or (
                "service:%s" % svc.id if len(checks) == 1 else "service:%s:%d" % (svc.id, i + 1))
            ttl = None
            if c.get("ttl"):
                try:
                    ttl = parse_go_duration(str(c["ttl"]))
                except ValueError as e:
                    raise _HTTPError(400, "Request decode failed: time: %s" % e)
            typ = "ttl" if ttl else ("http" if c.get("http") else "tcp" if c.get("tcp") else
                                     "grpc" if c.get("grpc") else "script" if (c.get("args") or c.get("scriptargs")) else "")
            chks.append(_Chk(self.node_name, cid, c.get("name") or "Service '%s' check" % svc.name,
                             c.get("status") or "critical", c.get("notes") or "", "", svc.id, typ,
                             str(c.get("interval") or ""), str(c.get("timeout") or ""), ttl))
        replace = ctx.qget("replace-existing-checks")
        with self._cond:
            authz = self._authz(ctx)
            if authz is not None:
                authz.need("service", svc.name, "write")
            old = self._agent_svcs.get(svc.id)
            if old is not None and old.name != svc.name and authz is not None:
                authz.need("service", old.name, "write")
            self._agent_svcs[svc.id] = svc
            keep = {c.id for c in chks}
            if replace and replace.lower() in ("1", "true", "t"):
                for cid in [k for k, c in self._agent_chks.items() if c.service_id == svc.id and k not in keep]:
                    del self._agent_chks[cid]
            now = time.monotonic()
            for c in chks:
                ex = self._agent_chks.get(c.id)
                if ex is not None:  # a re-registration keeps the check's current state
                    c.status, c.output = ex.status, ex.output
                if c.ttl:
                    c.deadline = now + c.ttl
                self._agent_chks[c.id] = c
            self._sync_agent()
        return _Resp(200, b"", ctx.headers)

    def _ep_agent_deregister(self, ctx):
        self._parse(ctx)
        sid = ctx.req.path[len("/v1/agent/service/deregister/"):]
        with self._cond:
            authz = self._authz(ctx)
            svc = self._agent_svcs.get(sid)
            if svc is None:
                raise _HTTPError(404, "Unknown service ID %s. Ensure that the service ID is passed, "
                                      "not the service name." % go_quote(sid))
            if authz is not None:
                authz.need("service", svc.name, "write")
            del self._agent_svcs[sid]
            for cid in [k for k, c in self._agent_chks.items() if c.service_id == sid]:
                del self._agent_chks[cid]
            self._sync_agent()
        return _Resp(200, b"", ctx.headers)

    def _agent_check(self, ctx, prefix, status, output):
        self._parse(ctx)
        cid = ctx.req.path[len(prefix):]
        with self._cond:
            authz = self._authz(ctx)
            c = self._agent_chks.get(cid)
            if c is None:
                raise _HTTPError(404, "Unknown check ID %s. Ensure that the check ID is passed, not "
                                      "the check name." % go_quote(cid))
            if authz is not None:
                svc = self._agent_svcs.get(c.service_id)
                if svc is not None:
                    authz.need("service", svc.name, "write")
                else:
                    authz.need("node", self.node_name, "write")
            if not c.ttl:
                raise _HTTPError(500, "CheckID %s does not have associated TTL" % go_quote(cid))
            c.status, c.output = status, output
            c.deadline = time.monotonic() + c.ttl
            self._sync_agent()
        return _Resp(200, b"", ctx.headers)

    def _ep_check_pass(self, ctx):
        return self._agent_check(ctx, "/v1/agent/check/pass/", "passing", ctx.qget("note"))

    def _ep_check_warn(self, ctx):
        return self._agent_check(ctx, "/v1/agent/check/warn/", "warning", ctx.qget("note"))

    def _ep_check_fail(self, ctx):
        return self._agent_check(ctx, "/v1/agent/check/fail/", "critical", ctx.qget("note"))

    def _ep_check_update(self, ctx):
        body = self._decode_body(ctx)
        b = _ci(body) if isinstance(body, dict) else {}
        st = b.get("status") or ""
        if st not in ("passing", "warning", "critical"):
            raise _HTTPError(400, "Invalid check status: '%s'" % st)
        return self._agent_check(ctx, "/v1/agent/check/update/", st, b.get("output") or "")

    def _ep_agent_services(self, ctx):
        self._parse(ctx)
        with self._lock:
            authz = self._authz(ctx)
            out = {}
            for sid in sorted(self._agent_svcs):
                s = self._agent_svcs[sid]
                if authz is not None and not authz.can("service", s.name, "read"):
                    continue
                e = {"ID": s.id, "Service": s.name, "Tags": list(s.tags), "Meta": _sorted_map(s.meta),
                     "Port": s.port, "Address": s.address}
                if s.tagged:
                    e["TaggedAddresses"] = _sorted_map(s.tagged)
                e.update({"Weights": dict(s.weights), "EnableTagOverride": s.eto,
                          "Datacenter": self.local_dc})
                out[sid] = e
        return self._json(ctx, out)

    def _ep_agent_checks(self, ctx):
        self._parse(ctx)
        with self._lock:
            authz = self._authz(ctx)
            d = self._dcs[self.local_dc]
            out = {}
            for cid in sorted(self._agent_chks):
                c = self._agent_chks[cid]
                svc = self._agent_svcs.get(c.service_id)
                if authz is not None and svc is not None and not authz.can("service", svc.name, "read"):
                    continue
                j = self._check_json(d, c, with_index=False)
                if svc is not None:
                    j["ServiceName"], j["ServiceTags"] = svc.name, list(svc.tags)
                out[cid] = j
        return self._json(ctx, out)

    # -- control endpoint (a path a real Consul never serves) ---------------------------------------------
    @staticmethod
    def _control_json(obj):
        return go_json(obj)

    def _control_state(self):
        return {"datacenters": self.datacenters, "local_dc": self.local_dc,
                "faults": self.faults(),
                "raft_index": {n: d.raft for n, d in self._dcs.items()},
                "port": self.port}

    def _control_extra(self, path, m, body, ok):
        if path == "/_double/index-reset" and m in ("PUT", "POST"):
            return ok({"raft_index": self.index_reset(body.get("dc"), int(body["delta"]) if body.get("delta") else None)})
        if path == "/_double/reap-tombstones" and m in ("PUT", "POST"):
            self.reap_tombstones(body.get("dc"))
            return ok()
        if path.startswith("/_double/check/") and m in ("PUT", "POST"):
            self.set_check_status(path[len("/_double/check/"):], body.get("status", ""),
                                  node=body.get("node"), dc=body.get("dc"), output=body.get("output", ""))
            return ok()
        return None


# --------------------------------------------------------------------------------------------
# small helpers


def _ci(d):
    """Go's case-insensitive JSON field matching plus Consul's snake_case aliases."""
    return {str(k).replace("_", "").lower(): v for k, v in d.items()}


def _json_kind(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if v is None:
        return "null"
    return "object"


def _svc_from(b, node, name_field):
    """A _Svc from a (case-folded) service definition."""
    name = b.get(name_field) or ""
    tagged = None
    if isinstance(b.get("taggedaddresses"), dict):
        tagged = {}
        for k, v in b["taggedaddresses"].items():
            v = _ci(v) if isinstance(v, dict) else {}
            tagged[k] = {"Address": v.get("address", ""), "Port": v.get("port", 0)}
    w = b.get("weights")
    weights = None
    if isinstance(w, dict):
        w = _ci(w)
        weights = {"Passing": int(w.get("passing", 1)), "Warning": int(w.get("warning", 1))}
    return _Svc(node, b.get("id") or name, name, b.get("tags") or [], b.get("address") or "", tagged,
                b.get("meta") or {}, int(b.get("port") or 0), weights, b.get("enabletagoverride"),
                b.get("kind") or "")


def _default_tagged(svc):
    """The agent adds lan_ipv4/wan_ipv4 (or _ipv6) tagged addresses for an IP service address."""
    try:
        socket.inet_pton(socket.AF_INET, svc.address)
        fam = 4
    except OSError:
        try:
            socket.inet_pton(socket.AF_INET6, svc.address)
            fam = 6
        except OSError:
            return
    t = dict(svc.tagged or {})
    for k in ("lan_ipv%d" % fam, "wan_ipv%d" % fam):
        t.setdefault(k, {"Address": svc.address, "Port": svc.port})
    svc.tagged = t


def _clone_svc(s):
    c = _Svc(s.node, s.id, s.name, s.tags, s.address, s.tagged, s.meta, s.port, s.weights, s.eto, s.kind)
    return c


# --------------------------------------------------------------------------------------------
# process entry point


def _add_arguments(ap):
    ap.add_argument("--dc", action="append", default=None, help="datacenter (repeat; first is local)")
    ap.add_argument("--node-name", default="consul-double")
    ap.add_argument("--acl-token", action="append", default=None, metavar="SECRET=POLICY",
                    help="enable ACLs; POLICY is write, read or deny")
    ap.add_argument("--acl-default-policy", default="deny", choices=("allow", "deny"))
    ap.add_argument("--no-strict-keys", action="store_true")
    ap.add_argument("--go-extras", action="store_true")
    ap.add_argument("--dev-mode", action="store_true")
    ap.add_argument("--kv", action="append", default=[], metavar="KEY=VALUE", help="seed a key")


def main(argv=None):
    a = parse_args(argv, "Consul HTTP API test double", 8500, _add_arguments)
    tokens = None
    if a.acl_token:
        tokens = {}
        for t in a.acl_token:
            s, _, p = t.partition("=")
            tokens[s] = p or "write"
    d = ConsulDouble(host=a.host, port=a.port, datacenters=a.dc or ["dc1"], node_name=a.node_name,
                     acl_tokens=tokens, acl_default_policy=a.acl_default_policy,
                     strict_keys=not a.no_strict_keys, go_extras=a.go_extras, dev_mode=a.dev_mode,
                     control_port=a.control_port)
    for kv in a.kv:
        k, _, v = kv.partition("=")
        d.kv_put(k, v.encode())
    return serve(d, a)

if __name__ == "__main__":
    sys.exit(main())
