#!/usr/bin/env python3
"""Vault HTTP API test double (Python 3 standard library only).

Follows /work/shared/reference/protocols.md section 3 (and gloo-edge-api.md 1.5 for where Gloo keeps
its secrets); what is implemented, where each behaviour comes from and what protocols.md leaves
open is in doc/internals/vault-double.md.

In-process:
    from doubles.vault import VaultDouble, gloo_tls
    with VaultDouble() as vault:                       # root token "root", KV v2 at secret/
        vault.seed_gloo_secret("gloo-system", "tls", gloo_tls(cert_pem, key_pem))
        role_id, secret_id = vault.add_approle("rivet", policies=["gloo"])
        ... talk HTTP to vault.url ...
        vault.fault("sealed")                          # every /v1 call: 503 "Vault is sealed"
        vault.advance(3600)                            # the double's clock: TTLs run out
As a process (prints "vault-double listening on http://127.0.0.1:PORT" once ready):
    /usr/bin/python3 tests/doubles/vault.py --port 0 [--control-port N] [--root-token root]
                     [--kv-mount secret=2 --kv-mount kv=1] [--approle NAME=POLICY,...]
                     [--gloo-secret NS/NAME=@file.json] [--namespace ns1/]

Faults (Python: fault(kind, **params); HTTP: PUT /_double/fault {"kind": ..., ...}, a path that a
real Vault never serves; DELETE /_double/fault clears):
    down           mode=refuse (ECONNREFUSED) | hang (accepts, never answers) | reset (RST)
    slow           ms=N: every /v1 request is answered N ms late
    error          status=500, message="internal error": every /v1 call answers
                   {"errors":[message]} with that status (message=None: {"errors":[]})
    sealed         the server is sealed: /v1 calls 503 {"errors":["Vault is sealed"]},
                   sys/health 503 with "sealed":true, sys/seal-status 200 with "sealed":true
    standby        sys/health answers as a standby node (429, or 200 with ?standbyok)
    token_revoked  token=T (default: every token, root included): the token is refused as a
    token_expired  revoked/expired one is (403); clearing the fault makes it valid again
  common params: duration_ms (auto-clear), count (only the next N requests), paths (prefixes).
Permanent state changes: seal(), unseal(), revoke_token(t), expire_token(t), advance(seconds).
"""

import copy
import json
import math
import random
import re
import string
import sys
import threading
import time
import uuid
from decimal import Decimal
from urllib.parse import parse_qsl

try:
    from ._common import (CHUNK_THRESHOLD, MAX_HEADER_BYTES, canonical_header_key, go_clean_path,  # noqa: F401
                          _unhex, DoubleBase, _Faults, _Listener, _Resp, parse_args, serve)
except ImportError:  # run as a script: python3 tests/doubles/vault.py
    from _common import (CHUNK_THRESHOLD, MAX_HEADER_BYTES, canonical_header_key, go_clean_path,  # noqa: F401
                         _unhex, DoubleBase, _Faults, _Listener, _Resp, parse_args, serve)

__all__ = ["VaultDouble", "gloo_tls", "gloo_aws", "gloo_secret_document", "gloo_secret_key",
           "gloo_secret_api_path", "main"]

VERSION = "1.17.6"                   # reported by sys/health and sys/seal-status
KV_PLUGIN_VERSION = "v0.19.0+builtin"
SYSTEM_MAX_TTL = 768 * 3600          # 2764800 s: default_lease_ttl = max_lease_ttl of a -dev server
MAX_REQUEST_SIZE = 32 * 1024 * 1024  # DefaultMaxRequestSize
KV2_DEFAULT_MAX_VERSIONS = 10
GLOO_GROUP_VERSION = "gloo.solo.io/v1"

_REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 301: "Moved Permanently",
    307: "Temporary Redirect", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 412: "Precondition Failed", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

# --------------------------------------------------------------------------------------------
# Go behaviours the wire shows: JSON (struct order vs sorted maps, HTML-safe escapes, float64
# formatting, json.Number), durations, times, header canonicalisation, path cleaning


class GoStruct(dict):
    """A Go struct: its fields are marshalled in declaration (insertion) order. A plain dict is a
    Go map and is marshalled with its keys sorted."""


class GoNumber:
    """A JSON number kept as its literal text (encoding/json's UseNumber, as Vault decodes
    request bodies)."""
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def value(self):
        t = self.text
        if re.fullmatch(r"-?[0-9]+", t):
            return int(t)
        return float(t)

    def __eq__(self, other):
        if isinstance(other, GoNumber):
            return self.text == other.text
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return self.value() == other
        return NotImplemented

    def __hash__(self):
        return hash(self.text)

    def __repr__(self):
        return "GoNumber(%s)" % self.text


_ESC = re.compile("[\"\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]")
_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _esc(m):
    ch = m.group(0)
    if ch in _SHORT:
        return _SHORT[ch]
    o = ord(ch)
    if 0xD800 <= o <= 0xDFFF:
        return "\ufffd"  # a lone surrogate is not UTF-8: Go writes U+FFFD
    return "\\u%04x" % o


def go_string(s):
    return '"' + _ESC.sub(_esc, s) + '"'


def go_float(x):
    """encoding/json's float64 format: the shortest representation, plain between 1e-6 and
    1e21, else exponent form with a short negative exponent (1e-07 -> 1e-7, 1e+21 stays)."""
    x = float(x)
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    r = repr(x)
    if abs(x) < 1e-6 or abs(x) >= 1e21:
        mant, _, exp = r.partition("e")  # repr uses the exponent form in these ranges
        if exp.startswith("-0") and len(exp) == 3:
            exp = "-" + exp[2]
        return mant + "e" + exp
    s = format(Decimal(r), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def _enc(obj, out, floats):
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, GoNumber):
        out.append(go_float(float(obj.text)) if floats else obj.text)
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, float):
        out.append(go_float(obj))
    elif isinstance(obj, str):
        out.append(go_string(obj))
    elif isinstance(obj, GoStruct):
        out.append("{")
        first = True
        for k, v in obj.items():
            if not first:
                out.append(",")
            first = False
            out.append(go_string(k) + ":")
            _enc(v, out, floats)
        out.append("}")
    elif isinstance(obj, dict):
        out.append("{")
        first = True
        for k in sorted(obj):
            if not first:
                out.append(",")
            first = False
            out.append(go_string(k) + ":")
            _enc(obj[k], out, floats)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _enc(v, out, floats)
        out.append("]")
    else:
        raise TypeError("cannot marshal %r" % (obj,))


def go_json(obj, floats=False, newline=True):
    """json.NewEncoder(w).Encode(obj) (newline=True) or json.Marshal(obj) (newline=False).
    floats=True: GoNumber values are float64s (what json.Unmarshal into interface{} gives)."""
    out = []
    _enc(obj, out, floats)
    s = "".join(out)
    return (s + "\n" if newline else s).encode("utf-8")


def _reject_constant(name):
    raise ValueError("invalid character %r" % name)


def go_decode_object(body):
    """jsonutil.DecodeJSONFromReader into map[string]interface{} with UseNumber: the first JSON
    value only (trailing bytes ignored), numbers kept literal. -> (dict | None, error | None)."""
    text = body.decode("utf-8", "replace").lstrip(" \t\r\n")
    if text == "":
        return None, None  # io.EOF: no data
    try:
        obj, _ = json.JSONDecoder(parse_int=GoNumber, parse_float=GoNumber,
                                  parse_constant=_reject_constant).raw_decode(text)
    except ValueError as e:
        return None, str(e)
    if obj is None:
        return None, None
    if not isinstance(obj, dict):
        return None, "json: cannot unmarshal %s into Go value of type map[string]interface {}" % (
            "array" if isinstance(obj, list) else "string" if isinstance(obj, str) else
            "bool" if isinstance(obj, bool) else "number")
    return obj, None


def plain(obj):
    """GoNumber -> int/float, recursively (what the Python API hands back)."""
    if isinstance(obj, GoNumber):
        return obj.value()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def as_float64(obj):
    """What json.Marshal then json.Unmarshal into interface{} does to data: numbers become
    float64 (ints beyond 2^53 lose precision)."""
    if isinstance(obj, GoNumber):
        return float(obj.text)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, float)):
        return float(obj)
    if isinstance(obj, dict):
        return {k: as_float64(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_float64(v) for v in obj]
    return obj


def go_path_unescape(s):
    out, i, b = bytearray(), 0, s.encode("utf-8", "surrogateescape")
    while i < len(b):
        if b[i] == 0x25:
            if i + 2 >= len(b) or _unhex(chr(b[i + 1])) is None or _unhex(chr(b[i + 2])) is None:
                raise ValueError("invalid URL escape")
            out.append(_unhex(chr(b[i + 1])) * 16 + _unhex(chr(b[i + 2])))
            i += 3
        else:
            out.append(b[i])
            i += 1
    return out.decode("utf-8", "replace")


def go_parse_query(raw):
    """url.ParseQuery -> {name: [values]} (bad pairs skipped)."""
    q = {}
    for part in raw.split("&"):
        if part == "" or ";" in part:
            continue
        k, _, v = part.partition("=")
        try:
            k = go_path_unescape(k.replace("+", " "))
            v = go_path_unescape(v.replace("+", " "))
        except ValueError:
            continue
        q.setdefault(k, []).append(v)
    return q


def go_parse_bool(v):
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(v)


_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
              "m": 60.0, "h": 3600.0}


def parse_go_duration(s):
    """time.ParseDuration -> seconds; ValueError on what Go refuses."""
    orig, neg = s, False
    if s[:1] in "+-":
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if s == "":
        raise ValueError('time: invalid duration "%s"' % orig)
    total = 0.0
    while s:
        m = re.match(r"([0-9]*)(\.([0-9]*))?", s)
        if m.group(1) == "" and not m.group(3):
            raise ValueError('time: invalid duration "%s"' % orig)
        s = s[m.end():]
        u = re.match(r"[^0-9.]*", s).group(0)
        if u == "":
            raise ValueError('time: missing unit in duration "%s"' % orig)
        if u not in _DUR_UNITS:
            raise ValueError('time: unknown unit "%s" in duration "%s"' % (u, orig))
        s = s[len(u):]
        total += (int(m.group(1) or "0") + (float("0." + m.group(3)) if m.group(3) else 0.0)) * _DUR_UNITS[u]
    return -total if neg else total


def parse_duration_second(v):
    """parseutil.ParseDurationSecond: a number of seconds, "90", "10m", "1h30m", "2d" -> int s."""
    if v is None or v == "":
        return 0
    if isinstance(v, GoNumber):
        v = v.value()
    if isinstance(v, bool):
        raise ValueError("could not parse duration from bool")
    if isinstance(v, (int, float)):
        return int(v)
    if not isinstance(v, str):
        raise ValueError("could not parse duration from input")
    s = v.strip()
    if s.endswith("d") and re.fullmatch(r"-?[0-9]+d", s):
        return int(s[:-1]) * 86400
    if re.fullmatch(r"-?[0-9]+", s):
        return int(s)
    return int(parse_go_duration(s))


def go_duration(seconds):
    """time.Duration.String() for a whole or fractional number of seconds."""
    ns = int(round(seconds * 1e9))
    if ns == 0:
        return "0s"
    neg, ns = ns < 0, abs(ns)
    if ns < 1000:
        out = "%dns" % ns
    elif ns < 10 ** 6:
        out = _trim(ns / 1e3) + "\u00b5s"
    elif ns < 10 ** 9:
        out = _trim(ns / 1e6) + "ms"
    else:
        h, rem = divmod(ns, 3600 * 10 ** 9)
        m, rem = divmod(rem, 60 * 10 ** 9)
        out = ""
        if h:
            out += "%dh" % h
        if h or m:
            out += "%dm" % m
        sec, frac = divmod(rem, 10 ** 9)
        out += str(sec) + (("." + ("%09d" % frac).rstrip("0")) if frac else "") + "s"
    return ("-" if neg else "") + out


def _trim(x):
    s = ("%.9f" % x).rstrip("0").rstrip(".")
    return s


def rfc3339nano(ns):
    """time.Time.Format(time.RFC3339Nano) of a UTC instant given in nanoseconds."""
    sec, frac = divmod(int(ns), 10 ** 9)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if frac:
        base += "." + ("%09d" % frac).rstrip("0")
    return base + "Z"


_B62 = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------------
# State


class _HTTPError(Exception):
    """An error answer: {"errors": msgs} (msgs None: {"errors":[]})."""

    def __init__(self, status, msg=None, headers=None):
        super().__init__(msg or "")
        self.status, self.msg, self.headers = status, msg, headers or {}


def multierror(*msgs):
    """go-multierror's text, as Vault wraps backend and routing errors in it."""
    n = len(msgs)
    return "%d error%s occurred:\n%s\n" % (n, "" if n == 1 else "s",
                                             "".join("\t* %s\n" % m for m in msgs))


class _Version:
    __slots__ = ("data", "created", "deletion", "destroyed")

    def __init__(self, data, created, deletion=None):
        self.data, self.created, self.deletion, self.destroyed = data, created, deletion, False


class _KV2Key:
    """KeyMetadata of the KV v2 plugin."""

    def __init__(self, now):
        self.versions = {}          # int -> _Version
        self.current = 0
        self.oldest = 0
        self.created = now
        self.updated = now
        self.max_versions = 0
        self.cas_required = False
        self.delete_version_after = 0   # seconds
        self.custom_metadata = None     # dict or None


class _Mount:
    def __init__(self, path, mtype, version, options, description, rng, config=None):
        self.path, self.type, self.version, self.options = path, mtype, version, options
        self.description = description
        self.accessor = "%s_%08x" % ("kv" if mtype == "kv" else mtype, rng.getrandbits(32))
        self.uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.kv1 = {}               # key -> data (dict with GoNumber values)
        self.kv2 = {}               # key -> _KV2Key
        cfg = config or {}
        self.max_versions = int(cfg.get("max_versions", 0))
        self.cas_required = bool(cfg.get("cas_required", False))
        self.delete_version_after = int(cfg.get("delete_version_after", 0))
        self.roles = {}             # approle: name -> _Role


class _Role:
    def __init__(self, name, rng):
        self.name = name
        self.role_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.bind_secret_id = True
        self.policies = []
        self.token_ttl = 0
        self.token_max_ttl = 0
        self.period = 0
        self.token_num_uses = 0
        self.secret_id_num_uses = 0
        self.secret_id_ttl = 0
        self.secret_ids = {}        # secret_id -> {"accessor", "uses_left", "expires_ns"}
        self.entity_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _Token:
    def __init__(self):
        self.id = ""
        self.accessor = ""
        self.policies = []
        self.path = ""
        self.display_name = ""
        self.meta = None
        self.num_uses = 0
        self.orphan = True
        self.creation_ns = 0
        self.issue_ns = 0
        self.ttl = 0                # base TTL (seconds) the token was created with
        self.expire_ns = None       # None: never expires (root)
        self.explicit_max_ttl = 0
        self.period = 0
        self.renewable = False
        self.last_renewal_ns = None
        self.entity_id = ""
        self.namespace = ""
        self.max_ttl = SYSTEM_MAX_TTL  # the auth method's max TTL (role token_max_ttl or system)
        self.root = False
        self.parent = None          # id of the parent token (None: orphan)


class _Namespace:
    def __init__(self, path):
        self.path = path
        self.mounts = {}            # "secret/" -> _Mount (secret engines)
        self.auth = {}              # "auth/approle/" -> _Mount (type approle or token)


# --------------------------------------------------------------------------------------------
# ACL policies (JSON or the usual HCL subset)


_CAPS = ("create", "read", "update", "patch", "delete", "list", "sudo", "deny", "subscribe",
         "recover")

DEFAULT_POLICY = {
    "auth/token/lookup-self": ["read"],
    "auth/token/renew-self": ["update"],
    "auth/token/revoke-self": ["update"],
    "sys/capabilities-self": ["update"],
    "sys/internal/ui/resultant-acl": ["read"],
    "sys/renew": ["update"],
    "sys/leases/renew": ["update"],
    "sys/leases/lookup": ["update"],
    "cubbyhole/*": ["create", "read", "update", "delete", "list"],
    "sys/wrapping/wrap": ["update"],
    "sys/wrapping/lookup": ["update"],
    "sys/wrapping/unwrap": ["update"],
    "sys/tools/hash": ["update"],
    "sys/tools/hash/*": ["update"],
    "sys/control-group/request": ["update"],
}


def parse_policy(text):
    """-> {path pattern: [capabilities]}. JSON ({"path": {P: {"capabilities": [...]}}}) or HCL
    `path "P" { capabilities = [...] }` blocks; other policy parameters are ignored."""
    t = text.strip()
    rules = {}
    if t.startswith("{"):
        try:
            obj = json.loads(t)
        except ValueError as e:
            raise ValueError("failed to parse policy: %s" % e)
        paths = obj.get("path") if isinstance(obj, dict) else None
        if isinstance(paths, list):  # [{"P": {...}}, ...] form
            merged = {}
            for item in paths:
                merged.update(item)
            paths = merged
        if not isinstance(paths, dict):
            raise ValueError("failed to parse policy: no path blocks")
        for p, body in paths.items():
            if isinstance(body, list):
                body = body[0] if body else {}
            caps = body.get("capabilities", []) if isinstance(body, dict) else []
            rules[p] = _check_caps(caps)
        return rules
    stripped = re.sub(r'(?m)(#|//).*$', "", t)
    pos = 0
    for m in re.finditer(r'path\s+"([^"]*)"\s*\{([^{}]*)\}', stripped):
        if stripped[pos:m.start()].strip():
            raise ValueError("failed to parse policy: unexpected %r" % stripped[pos:m.start()].strip()[:40])
        pos = m.end()
        c = re.search(r'capabilities\s*=\s*\[([^\]]*)\]', m.group(2))
        caps = re.findall(r'"([^"]*)"', c.group(1)) if c else []
        rules[m.group(1)] = _check_caps(caps)
    if stripped[pos:].strip():
        raise ValueError("failed to parse policy: unexpected %r" % stripped[pos:].strip()[:40])
    return rules


def _check_caps(caps):
    out = []
    for c in caps:
        c = str(c).lower()
        if c not in _CAPS:
            raise ValueError('failed to parse policy: path has invalid capability "%s"' % c)
        out.append(c)
    return out


def _pattern_matches(pattern, path):
    glob = pattern.endswith("*")
    base = pattern[:-1] if glob else pattern
    rx = "/".join("[^/]*" if seg == "+" else re.escape(seg) for seg in base.split("/"))
    return re.match(rx + (".*" if glob else "") + r"\Z", path, re.S) is not None


def _pattern_priority(p):
    """Vault's priority matching: a later first wildcard, no trailing glob, fewer '+' segments,
    a longer pattern, a lexicographically larger one win."""
    first = min([i for i, ch in enumerate(p) if ch in "+*"] or [len(p) + 1])
    return (first, not p.endswith("*"), -p.split("/").count("+"), len(p), p)


def acl_capabilities(rulesets, path):
    """Merged capabilities of the best-matching pattern (deny wins within a pattern)."""
    merged = {}
    for rules in rulesets:
        for pat, caps in rules.items():
            merged.setdefault(pat, set()).update(caps)
    best = None
    for pat in merged:
        if _pattern_matches(pat, path) and (best is None or _pattern_priority(pat) > _pattern_priority(best)):
            best = pat
    if best is None:
        return set()
    caps = merged[best]
    return {"deny"} if "deny" in caps else caps


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _Ctx:
    """One logical request: namespace, path relative to it, operation, data, token."""

    def __init__(self, req):
        self.req = req
        self.ns = None
        self.path = ""
        self.op = ""               # read list create update patch delete header
        self.data = None
        self.query = {}
        self.token = None          # _Token once checked
        self.request_id = ""


# --------------------------------------------------------------------------------------------
# Gloo secrets (gloo-edge-api.md 1.5)


def gloo_secret_key(namespace, name, root_key="gloo"):
    """The KV key (below the mount) of a Gloo Secret: <rootKey>/gloo.solo.io/v1/Secret/<ns>/<name>."""
    return "%s/%s/Secret/%s/%s" % (root_key, GLOO_GROUP_VERSION, namespace, name)


def gloo_secret_api_path(namespace, name, root_key="gloo", path_prefix="secret", kind="data"):
    """The HTTP path Gloo reads: /v1/<pathPrefix>/data/<rootKey>/gloo.solo.io/v1/Secret/<ns>/<name>
    (kind="metadata" for the list/delete form)."""
    return "/v1/%s/%s/%s" % (path_prefix, kind, gloo_secret_key(namespace, name, root_key))


def gloo_secret_document(namespace, name, kind_fields, labels=None, annotations=None,
                         resource_version=None):
    """The proto-JSON map Gloo stores as the KV v2 `data`: metadata{name, namespace[, labels,
    annotations, resourceVersion]} plus the oneof kind, e.g. {"tls": {...}}."""
    meta = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if resource_version is not None:
        meta["resourceVersion"] = str(resource_version)
    doc = {"metadata": meta}
    doc.update(copy.deepcopy(kind_fields))
    return doc


def gloo_tls(cert_chain, private_key, root_ca=None, ocsp_staple=None):
    tls = {"certChain": cert_chain, "privateKey": private_key}
    if root_ca:
        tls["rootCa"] = root_ca
    if ocsp_staple:
        tls["ocspStaple"] = ocsp_staple
    return {"tls": tls}


def gloo_aws(access_key, secret_key, session_token=None):
    aws = {"accessKey": access_key, "secretKey": secret_key}
    if session_token:
        aws["sessionToken"] = session_token
    return {"aws": aws}


# --------------------------------------------------------------------------------------------
# The double


class VaultDouble(DoubleBase):
    """A Vault server (one node, `vault server -dev`-like) speaking the HTTP API.

    root_token       the dev root token's id ("root" as in gloo's docker-compose)
    kv_mounts        {"secret/": 2, "kv/": 1}: KV secret engines (2 = v2, 1 = v1 with
                     options.version "1", None = v1 mounted without options)
    approle_mount    auth path of the AppRole method enabled at start ("approle/"; None: none)
    namespaces       None: Vault CE (X-Vault-Namespace ignored). A list such as ["ns1/",
                     "ns1/team/"]: Enterprise namespaces, each with its own mounts (the
                     kv_mounts are mounted in every namespace) and its own AppRole
    error_style      "plain": every permission error is "permission denied" (protocols.md);
                     "multierror": recent servers' texts ("1 error occurred:\\n\\t* permission
                     denied\\n\\n" for an ACL denial, "... * invalid token" for a bad token)
    mount_type_field False: omit "mount_type" from the envelope (openbao, older Vault)
    old_server       True: sys/internal/ui/mounts/ does not exist (404), as before Vault 0.10
    seed             make token ids, accessors, request ids and UUIDs reproducible
    """

    NAME = "vault-double"
    REASONS = _REASONS
    BODYLESS_STATUS = True
    FAULT_KINDS = ("down", "slow", "error", "sealed", "standby", "token_revoked", "token_expired")
    _REDIRECT_HEADERS = {"Cache-Control": "no-store"}

    def __init__(self, host="127.0.0.1", port=0, root_token="root", kv_mounts=None,
                 approle_mount="approle/", namespaces=None, error_style="plain",
                 mount_type_field=True, old_server=False, seed=None, control_port=None,
                 record_requests=True, max_request_size=MAX_REQUEST_SIZE, unseal_key=None,
                 cluster_name="vault-cluster-double"):
        if error_style not in ("plain", "multierror"):
            raise ValueError("error_style must be plain or multierror")
        self.host = host
        self.root_token = root_token
        self.kv_mounts = dict(kv_mounts) if kv_mounts is not None else {"secret/": 2}
        self.approle_mount = approle_mount
        self.namespaces = None if namespaces is None else [_ns_norm(n) for n in namespaces]
        self.error_style = error_style
        self.mount_type_field = mount_type_field
        self.old_server = old_server
        self.record_requests = record_requests
        self.max_request_size = max_request_size
        self.cluster_name = cluster_name
        self._rng = random.Random(seed)
        self.unseal_key = unseal_key or "".join(self._rng.choice(_B62) for _ in range(44))
        self.cluster_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._faults = _Faults(self.FAULT_KINDS, lazy_expiry=True, count_any_path=True)
        self._conns = {}
        self._conns_lock = threading.Lock()
        self._requests = []
        self._offset_ns = 0
        self._listener = _Listener(self, host, port, False)
        self._control = _Listener(self, host, control_port, True) if control_port is not None else None
        self._ticker = None
        self._started = False
        self._init_state()

    # -- lifecycle ---------------------------------------------------------------------------
    def _init_state(self):
        with self._lock:
            self.sealed = False
            self._tokens = {}
            self._policies = {"default": dict((k, list(v)) for k, v in DEFAULT_POLICY.items())}
            self._policy_text = {"default": "(built-in default policy)"}
            self._ns = {"": _Namespace("")}
            for n in self.namespaces or []:
                self._ns[n] = _Namespace(n)
            for ns in self._ns.values():
                for path, ver in self.kv_mounts.items():
                    self._mount_kv(ns, path, ver)
                ns.auth["auth/token/"] = _Mount("auth/token/", "token", None, None,
                                                "token based credentials", self._rng)
                if self.approle_mount:
                    ap = "auth/" + _mount_norm(self.approle_mount)
                    ns.auth[ap] = _Mount(ap, "approle", None, None, "", self._rng)
            if self.root_token:
                t = _Token()
                t.id, t.accessor = self.root_token, self._b62(24)
                t.policies, t.path, t.display_name = ["root"], "auth/token/root", "root"
                t.creation_ns = t.issue_ns = self.now_ns()
                t.root = True
                self._tokens[t.id] = t
            self._requests = []

    def _mount_kv(self, ns, path, version, config=None, description=None):
        path = _mount_norm(path)
        if version is None:
            options = None
        else:
            options = {"version": str(int(version))}
        m = _Mount(path, "kv", int(version or 1), options,
                   description if description is not None else
                   ("key/value secret storage" if path == "secret/" else ""), self._rng, config)
        ns.mounts[path] = m
        return m

    def reset(self):
        """Forget every secret, token, policy and fault; the clock is real time again."""
        self.clear_fault()
        with self._lock:
            self._offset_ns = 0
            self._init_state()

    # -- clock, ids ----------------------------------------------------------------------------
    def now_ns(self):
        return time.time_ns() + self._offset_ns

    def advance(self, seconds):
        """Move the double's clock forward (TTLs, created_time, deletion times all follow)."""
        with self._lock:
            self._offset_ns += int(seconds * 1e9)

    def _b62(self, n):
        return "".join(self._rng.choice(_B62) for _ in range(n))

    def _uuid(self):
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- Python API: secrets -------------------------------------------------------------------
    def _nsobj(self, namespace):
        ns = self._ns.get(_ns_norm(namespace or ""))
        if ns is None:
            raise KeyError("unknown namespace %r" % namespace)
        return ns

    def _kvmount(self, mount, namespace=""):
        m = self._nsobj(namespace).mounts.get(_mount_norm(mount))
        if m is None or m.type != "kv":
            raise KeyError("no KV mount %r" % mount)
        return m

    def mount(self, path, version=2, namespace="", max_versions=0, cas_required=False,
              delete_version_after=0, description=None):
        """Mount a KV engine (version 1, 2, or None: v1 without options)."""
        with self._lock:
            ns = self._nsobj(namespace)
            return self._mount_kv(ns, path, version, {"max_versions": max_versions,
                                                      "cas_required": cas_required,
                                                      "delete_version_after": delete_version_after},
                                  description).path

    def unmount(self, path, namespace=""):
        with self._lock:
            self._nsobj(namespace).mounts.pop(_mount_norm(path), None)

    def kv_put(self, key, data, mount="secret", namespace="", cas=None):
        """Write a secret (no token, no ACL, no faults). KV v2: a new version, returned; v1: 0."""
        data = _to_go(data)
        with self._lock:
            m = self._kvmount(mount, namespace)
            if m.version == 2:
                return self._kv2_write(m, key, data, cas)[0].current
            m.kv1[key] = data
            return 0

    def kv_get(self, key, mount="secret", namespace="", version=None):
        """The live data of a secret (KV v2: current or given version; None when absent,
        deleted or destroyed), numbers as Python ints/floats."""
        with self._lock:
            m = self._kvmount(mount, namespace)
            if m.version != 2:
                d = m.kv1.get(key)
                return None if d is None else plain(copy.deepcopy(d))
            k = m.kv2.get(key)
            if k is None:
                return None
            v = k.versions.get(version or k.current)
            if v is None or v.destroyed or (v.deletion is not None and v.deletion <= self.now_ns()):
                return None
            return plain(as_float64(v.data))

    def kv_metadata(self, key, mount="secret", namespace=""):
        """KV v2 key metadata as the metadata endpoint shows it (None when absent)."""
        with self._lock:
            m = self._kvmount(mount, namespace)
            k = m.kv2.get(key)
            return None if k is None else self._kv2_metadata_json(k)

    def kv_delete(self, key, mount="secret", namespace="", versions=None):
        """KV v2 soft delete (latest version, or the given ones); v1: remove."""
        with self._lock:
            m = self._kvmount(mount, namespace)
            if m.version != 2:
                m.kv1.pop(key, None)
                return
            k = m.kv2.get(key)
            if k is not None:
                self._kv2_soft_delete(k, versions if versions else [k.current])

    def kv_undelete(self, key, versions, mount="secret", namespace=""):
        with self._lock:
            k = self._kvmount(mount, namespace).kv2.get(key)
            if k is not None:
                self._kv2_undelete(self._kvmount(mount, namespace), k, versions)

    def kv_destroy(self, key, versions, mount="secret", namespace=""):
        with self._lock:
            k = self._kvmount(mount, namespace).kv2.get(key)
            if k is not None:
                for n in versions:
                    v = k.versions.get(int(n))
                    if v is not None:
                        v.destroyed = True
                        v.data = None

    def kv_delete_metadata(self, key, mount="secret", namespace=""):
        with self._lock:
            self._kvmount(mount, namespace).kv2.pop(key, None)

    def seed_gloo_secret(self, namespace, name, kind_fields, root_key="gloo", path_prefix="secret",
                         labels=None, annotations=None, vault_namespace=""):
        """Store a Gloo Secret where and how Gloo keeps it (gloo-edge-api.md 1.5): KV v2 at
        <pathPrefix>/data/<rootKey>/gloo.solo.io/v1/Secret/<ns>/<name>, data = the proto-JSON
        Secret map. Mounts pathPrefix (KV v2) if it is not mounted. Returns the version."""
        with self._lock:
            ns = self._nsobj(vault_namespace)
            if _mount_norm(path_prefix) not in ns.mounts:
                self._mount_kv(ns, path_prefix, 2)
            doc = gloo_secret_document(namespace, name, kind_fields, labels, annotations)
            return self.kv_put(gloo_secret_key(namespace, name, root_key), doc, mount=path_prefix,
                               namespace=vault_namespace)

    def gloo_secret(self, namespace, name, root_key="gloo", path_prefix="secret", vault_namespace=""):
        return self.kv_get(gloo_secret_key(namespace, name, root_key), mount=path_prefix,
                           namespace=vault_namespace)

    # -- Python API: auth ---------------------------------------------------------------------------
    def set_policy(self, name, rules):
        """rules: {path pattern: [capabilities]} or policy text (JSON or HCL subset)."""
        with self._lock:
            if isinstance(rules, str):
                self._policy_text[name] = rules
                rules = parse_policy(rules)
            else:
                self._policy_text[name] = json.dumps({"path": {p: {"capabilities": c} for p, c in rules.items()}})
            self._policies[name.lower()] = {p: list(c) for p, c in rules.items()}

    def create_token(self, policies=("default",), ttl=SYSTEM_MAX_TTL, renewable=True,
                     explicit_max_ttl=0, period=0, num_uses=0, token_id=None, namespace="",
                     display_name="token", meta=None, orphan=True):
        """A service token as auth/token/create makes it; returns its id."""
        with self._lock:
            t = self._new_token(_sanitize_policies(policies, add_default=False), ttl, renewable,
                                explicit_max_ttl, period, num_uses, token_id, _ns_norm(namespace),
                                "auth/token/create", display_name, meta, orphan)
            return t.id

    def add_approle(self, name, policies=(), token_ttl=1200, token_max_ttl=0, period=0,
                    secret_id_num_uses=0, secret_id_ttl=0, bind_secret_id=True, role_id=None,
                    secret_id=None, mount=None, namespace=""):
        """Create (or replace) an AppRole role and one secret ID: -> (role_id, secret_id)."""
        with self._lock:
            m = self._approle_mount(mount, namespace)
            r = _Role(name, self._rng)
            if role_id:
                r.role_id = role_id
            r.policies = _sanitize_policies(policies, add_default=False)
            r.token_ttl, r.token_max_ttl, r.period = int(token_ttl), int(token_max_ttl), int(period)
            r.secret_id_num_uses, r.secret_id_ttl = int(secret_id_num_uses), int(secret_id_ttl)
            r.bind_secret_id = bool(bind_secret_id)
            m.roles[name] = r
            sid = self._new_secret_id(r, secret_id) if bind_secret_id else ""
            return r.role_id, sid

    def new_secret_id(self, role, mount=None, namespace=""):
        with self._lock:
            return self._new_secret_id(self._approle_mount(mount, namespace).roles[role])

    def _approle_mount(self, mount, namespace):
        ns = self._nsobj(namespace)
        path = "auth/" + _mount_norm(mount or self.approle_mount or "approle/")
        m = ns.auth.get(path)
        if m is None:
            m = ns.auth[path] = _Mount(path, "approle", None, None, "", self._rng)
        return m

    def _new_secret_id(self, role, value=None):
        sid = value or self._uuid()
        role.secret_ids[sid] = {"accessor": self._uuid(),
                                "uses_left": role.secret_id_num_uses or None,
                                "expires_ns": (self.now_ns() + role.secret_id_ttl * 10 ** 9)
                                if role.secret_id_ttl else None}
        return sid

    def token_info(self, token):
        """The token's lookup-self data (None when it is not valid now)."""
        with self._lock:
            t = self._valid_token(token)
            return None if t is None else plain(self._lookup_data(t))

    def revoke_token(self, token):
        with self._lock:
            self._tokens.pop(token, None)

    def expire_token(self, token):
        """The token's TTL runs out now (Vault revokes it at expiry)."""
        with self._lock:
            t = self._tokens.get(token)
            if t is not None:
                t.expire_ns = self.now_ns()

    def seal(self):
        with self._lock:
            self.sealed = True

    def unseal(self):
        with self._lock:
            self.sealed = False

    # -- Python API: faults ----------------------------------------------------------------------
    def _validate_fault(self, kind, params):
        if kind == "error" and "status" in params and not 100 <= int(params["status"]) <= 599:
            raise ValueError("status must be an HTTP status")

    # -- connections ---------------------------------------------------------------------------------
    @staticmethod
    def _unescape_path(raw_path):
        return go_path_unescape(raw_path)

    @staticmethod
    def _query_dict(raw_query):
        return go_parse_query(raw_query)

    def _date(self):
        return self.now_ns() / 1e9

    # -- response helpers ----------------------------------------------------------------------------
    @staticmethod
    def _json(status, obj, headers=None, newline=True):
        h = {"Cache-Control": "no-store", "Content-Type": "application/json"}
        h.update(headers or {})
        return _Resp(status, go_json(obj, newline=newline), h)

    def _error(self, status, msg=None, headers=None):
        errs = [] if msg is None else (list(msg) if isinstance(msg, (list, tuple)) else [msg])
        return self._json(status, GoStruct(errors=errs), headers)

    def _envelope(self, ctx, data=None, auth=None, warnings=None, mount_type="", lease_duration=0,
                  renewable=False, request_id=None):
        env = GoStruct()
        env["request_id"] = ctx.request_id if request_id is None else request_id
        env["lease_id"] = ""
        env["renewable"] = renewable
        env["lease_duration"] = lease_duration
        env["data"] = data
        env["wrap_info"] = None
        env["warnings"] = warnings
        env["auth"] = auth
        if self.mount_type_field:
            env["mount_type"] = mount_type
        return env

    def _ok(self, ctx, data=None, mount_type="", **kw):
        return self._json(200, self._envelope(ctx, data=data, mount_type=mount_type, **kw))

    def _denied_msg(self):
        return multierror("permission denied") if self.error_style == "multierror" else "permission denied"

    def _invalid_token_msg(self):
        if self.error_style == "multierror":
            return multierror("permission denied", "invalid token")
        return "permission denied"

    # -- request handling ------------------------------------------------------------------------------
    def _handle(self, req, listener):
        self._record(req)
        path = req.path
        if path.startswith("/_double/") or path == "/_double":
            return self._control_request(req)
        if listener.control_only:
            return _Resp(404, b"vault double control port: only /_double/ paths\n")
        slow = self._faults.get("slow", path)
        if slow is not None:
            self._stopping.wait(float(slow.get("ms", 0)) / 1000.0)
        if not path.startswith("/v1/"):
            if path == "/" or path.startswith("/ui"):
                # the UI is not built in: ServeMux's NotFound
                return _Resp(404, b"404 page not found\n", {"Cache-Control": "no-store",
                                                              "Content-Type": "text/plain; charset=utf-8",
                                                              "X-Content-Type-Options": "nosniff"})
            return self._error(404)
        clean = go_clean_path(path)
        if clean != path:
            return self._redirect(req, clean)
        f = self._faults.get("error", path)
        if f is not None:
            msg = f.get("message", "internal error")
            return self._error(int(f.get("status", 500)), msg)
        rel = path[len("/v1/"):]
        try:
            with self._lock:
                if rel in ("sys/health", "sys/seal-status", "sys/seal", "sys/unseal", "sys/leader"):
                    return self._mux_sys(req, rel)
                return self._logical(req, rel)
        except _HTTPError as e:
            return self._error(e.status, e.msg, e.headers)

    def _is_sealed(self):
        return self.sealed or self._faults.peek("sealed") is not None

    # -- sys handlers registered on the mux (no token, work while sealed) --------------------------------
    def _mux_sys(self, req, rel):
        q = go_parse_query(req.raw_query)
        if rel == "sys/health":
            if req.method not in ("GET", "HEAD"):
                return self._error(405)
            code, body = self._health(q)
            if body is None:
                return self._error(code)
            if req.method == "HEAD":
                return _Resp(code, b"", {"Cache-Control": "no-store", "Content-Type": "application/json"})
            return self._json(code, body)
        if rel == "sys/seal-status":
            if req.method != "GET":
                return self._error(405)
            return self._json(200, self._seal_status())
        if rel == "sys/leader":
            if req.method != "GET":
                return self._error(405)
            if self._is_sealed():
                return self._error(503, "Vault is sealed")
            return self._json(200, GoStruct(ha_enabled=False, is_self=False, active_time="0001-01-01T00:00:00Z",
                                            leader_address="", leader_cluster_address="",
                                            performance_standby=False,
                                            performance_standby_last_remote_wal=0))
        if rel == "sys/unseal":
            if req.method not in ("PUT", "POST"):
                return self._error(405)
            body, err = go_decode_object(req.body)
            if err:
                return self._error(400, "failed to parse JSON input: %s" % err)
            body = body or {}
            if body.get("reset"):
                return self._json(200, self._seal_status())
            key = body.get("key")
            if not key:
                return self._error(400, "'key' must be specified in request body as JSON, or 'reset' set to true")
            if key != self.unseal_key:
                return self._error(400, "'key' must be a valid hex or base64 string")
            self.sealed = False
            return self._json(200, self._seal_status())
        # sys/seal
        if req.method not in ("PUT", "POST"):
            return self._error(405)
        if self._is_sealed():
            return self._error(503, "Vault is sealed")
        t = self._valid_token(self._request_token(req))
        if t is None or not t.root:
            return self._error(403, self._denied_msg())
        self.sealed = True
        return _Resp(204, b"", {"Cache-Control": "no-store"})

    def _health(self, q):
        def code_of(name, default):
            v = q.get(name)
            if v is None:
                return default, True
            try:
                return int(v[0]), True
            except ValueError:
                return 400, False
        codes = {}
        for name, default in (("uninitcode", 501), ("sealedcode", 503), ("standbycode", 429),
                              ("drsecondarycode", 472), ("performancestandbycode", 473),
                              ("activecode", 200)):
            c, ok = code_of(name, default)
            if not ok:
                return 400, None
            codes[name] = c
        sealed = self._is_sealed()
        standby = self._faults.peek("standby") is not None and not sealed
        code = codes["activecode"]
        if sealed:
            code = codes["sealedcode"]
        elif standby and "standbyok" not in q:
            code = codes["standbycode"]
        body = GoStruct()
        body["initialized"] = True
        body["sealed"] = sealed
        body["standby"] = standby
        body["performance_standby"] = False
        body["replication_performance_mode"] = "disabled"
        body["replication_dr_mode"] = "disabled"
        body["server_time_utc"] = self.now_ns() // 10 ** 9
        body["version"] = VERSION
        body["enterprise"] = self.namespaces is not None
        if not sealed:
            body["cluster_name"] = self.cluster_name
            body["cluster_id"] = self.cluster_id
        body["echo_duration_ms"] = 0
        body["clock_skew_ms"] = 0
        body["replication_primary_canary_age_ms"] = 0
        return code, body

    def _seal_status(self):
        sealed = self._is_sealed()
        s = GoStruct()
        s["type"] = "shamir"
        s["initialized"] = True
        s["sealed"] = sealed
        s["t"] = 1
        s["n"] = 1
        s["progress"] = 0
        s["nonce"] = ""
        s["version"] = VERSION
        s["build_date"] = "2024-09-27T14:15:42Z"
        s["migration"] = False
        if not sealed:
            s["cluster_name"] = self.cluster_name
            s["cluster_id"] = self.cluster_id
        s["recovery_seal"] = False
        s["storage_type"] = "inmem"
        return s

    # -- logical requests ---------------------------------------------------------------------------------
    def _logical(self, req, rel):
        ctx = _Ctx(req)
        q = go_parse_query(req.raw_query)
        m = req.method
        if m == "GET":
            ctx.op = "read"
            if "list" in q and q["list"][0] != "":
                try:
                    lst = go_parse_bool(q["list"][0])
                except ValueError:
                    return self._error(400)
                if lst:
                    ctx.op = "list"
                    del q["list"]
                    if not rel.endswith("/"):
                        rel += "/"
            ctx.data = _query_data(q)
        elif m == "LIST":
            ctx.op = "list"
            if not rel.endswith("/"):
                rel += "/"
            ctx.data = _query_data(q)
        elif m == "DELETE":
            ctx.op = "delete"
            ctx.data = _query_data(q)
        elif m in ("POST", "PUT", "PATCH"):
            if m == "PATCH":
                ctype = req.header("Content-Type").split(";")[0].strip().lower()
                if ctype != "application/merge-patch+json":
                    return self._error(415, "PATCH requires Content-Type of application/merge-patch+json, "
                                            "provided %s" % ctype)
            if len(req.body) > self.max_request_size:
                return self._error(413, "error parsing JSON")
            ctx.op = "patch" if m == "PATCH" else "update"
            ctype = req.header("Content-Type").split(";")[0].strip().lower()
            if m != "PATCH" and _is_form(req.body, ctype):
                ctx.data = {}
                for k, v in parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True):
                    if k in ctx.data:
                        prev = ctx.data[k]
                        ctx.data[k] = (prev if isinstance(prev, list) else [prev]) + [v]
                    else:
                        ctx.data[k] = v
            else:
                data, err = go_decode_object(req.body)
                if err:
                    return self._error(400, "error parsing JSON")
                ctx.data = data
        elif m == "HEAD":
            ctx.op = "header"
            ctx.data = _query_data(q)
        else:
            return self._error(405)
        ctx.query = q
        if req.header("X-Vault-Wrap-TTL"):
            return self._error(400, "vault double: response wrapping (X-Vault-Wrap-TTL) is not implemented")
        ctx.request_id = self._uuid()
        # namespace (Enterprise): header, then a path prefix naming a child namespace
        ns_path = ""
        if self.namespaces is not None:
            hdr = _ns_norm(req.header("X-Vault-Namespace"))
            full = hdr + rel
            best = ""
            for n in self._ns:
                if n and full.startswith(n) and len(n) > len(best):
                    best = n
            if hdr and hdr not in self._ns:
                return self._error(403, self._denied_msg())
            ns_path, rel = best, full[len(best):]
        ctx.ns = self._ns[ns_path]
        ctx.path = rel
        if self._is_sealed():
            return self._error(503, "Vault is sealed")
        # unauthenticated paths
        if rel == "sys/internal/ui/mounts" or rel.startswith("sys/internal/ui/mounts/"):
            return self._ui_mounts(ctx)
        auth_mount = self._match(ctx.ns.auth, rel)
        if auth_mount is not None and auth_mount.type == "approle" and rel == auth_mount.path + "login":
            return self._approle_login(ctx, auth_mount)
        # everything else needs a valid token allowed to do this
        token = self._request_token(req)
        if not token:
            return self._error(403, "permission denied")
        t = self._valid_token(token)
        if t is None or not _ns_contains(t.namespace, ns_path):
            return self._error(403, self._invalid_token_msg() if t is None else self._denied_msg())
        mount = auth_mount or self._match(ctx.ns.mounts, rel)
        if rel.startswith("sys/"):
            mount = "sys"
        if not t.root:
            cap = self._capability_for(ctx, mount)
            caps = acl_capabilities(self._rulesets(t), rel)
            if "deny" in caps or cap not in caps:
                return self._error(403, self._denied_msg())
        ctx.token = t
        self._use_token(t)
        try:
            if mount is None:
                return self._error(404, 'no handler for route "%s". route entry not found.' % (ns_path + rel))
            if mount == "sys":
                return self._sys(ctx)
            if mount.type == "token":
                return self._token_backend(ctx, mount)
            if mount.type == "approle":
                return self._approle_backend(ctx, mount)
            if mount.version == 2:
                return self._kv2(ctx, mount)
            return self._kv1(ctx, mount)
        finally:
            self._finish_token_use(t)

    @staticmethod
    def _match(mounts, rel):
        best = None
        for p, m in mounts.items():
            if (rel.startswith(p) or rel + "/" == p) and (best is None or len(p) > len(best.path)):
                best = m
        return best

    @staticmethod
    def _request_token(req):
        v = req.header("X-Vault-Token")
        if v:
            return v
        a = req.header("Authorization")
        if a.startswith("Bearer "):
            return a[7:].strip()
        return ""

    def _valid_token(self, token):
        t = self._tokens.get(token)
        if t is None:
            return None
        if t.expire_ns is not None and t.expire_ns <= self.now_ns():
            del self._tokens[token]  # the expiration manager revokes it at expiry
            return None
        for kind in ("token_revoked", "token_expired"):
            f = self._faults.peek(kind)
            if f is not None and f.get("token") in (None, "", token):
                return None
        return t

    @staticmethod
    def _use_token(t):
        if t.num_uses > 0:
            t.num_uses -= 1
            if t.num_uses == 0:
                t.num_uses = -1  # tokenRevocationPending: this request is its last

    def _finish_token_use(self, t):
        if t is not None and t.num_uses == -1:
            self._tokens.pop(t.id, None)

    def _rulesets(self, t):
        return [self._policies[p] for p in t.policies if p in self._policies]

    def _capability_for(self, ctx, mount):
        """The ACL capability this request needs (create vs update by existence check)."""
        op = ctx.op
        if op in ("read", "list", "delete", "patch"):
            return op
        if op == "header":
            return "read"
        exists = None
        if isinstance(mount, _Mount):
            rest = ctx.path[len(mount.path):]
            if mount.type == "kv" and mount.version == 2:
                for pre in ("data/", "metadata/"):
                    if rest.startswith(pre):
                        exists = rest[len(pre):] in mount.kv2
            elif mount.type == "kv":
                exists = rest in mount.kv1
            elif mount.type == "approle" and rest.startswith("role/"):
                exists = rest[len("role/"):] in mount.roles
        if exists is False:
            return "create"
        return "update"

    # -- sys backend (logical part) ---------------------------------------------------------------------
    def _sys(self, ctx):
        p, op = ctx.path[len("sys/"):], ctx.op
        if p == "mounts" and op == "read":
            data = {m.path: self._mount_info(m, ctx.ns) for m in ctx.ns.mounts.values()}
            return self._injected(ctx, data)
        if p.startswith("mounts/"):
            path = _mount_norm(p[len("mounts/"):])
            if op == "update":
                return self._sys_mount(ctx, path)
            if op == "delete":
                ctx.ns.mounts.pop(path, None)
                return self._no_content()
            if op == "read":
                m = ctx.ns.mounts.get(path)
                if m is None:
                    return self._error(400, "No secret engine mount at %s" % path)
                return self._injected(ctx, self._mount_info(m, ctx.ns))
        if p == "auth" and op == "read":
            data = {m.path[len("auth/"):]: self._mount_info(m, ctx.ns) for m in ctx.ns.auth.values()}
            return self._injected(ctx, data)
        if p.startswith("auth/"):
            path = "auth/" + _mount_norm(p[len("auth/"):])
            if op == "update":
                d = ctx.data or {}
                typ = d.get("type")
                if not typ:
                    return self._error(400, "backend type must be specified as a string")
                if path in ctx.ns.auth:
                    return self._error(400, "path is already in use at %s" % path[len("auth/"):])
                if typ != "approle":
                    return self._error(400, "vault double: auth method %r is not implemented" % typ)
                ctx.ns.auth[path] = _Mount(path, "approle", None, None, str(d.get("description") or ""), self._rng)
                return self._no_content()
            if op == "delete":
                if path != "auth/token/":
                    ctx.ns.auth.pop(path, None)
                return self._no_content()
        if p == "policies/acl/" and op == "list":
            return self._ok(ctx, {"keys": sorted(set(self._policies) | {"root"})}, "system")
        if p.startswith("policies/acl/") and p != "policies/acl/":
            name = p[len("policies/acl/"):].lower()
            if op == "read":
                if name == "root":
                    return self._ok(ctx, {"name": "root", "policy": ""}, "system")
                if name not in self._policies:
                    return self._error(404)
                return self._ok(ctx, {"name": name, "policy": self._policy_text.get(name, "")}, "system")
            if op == "update":
                text = (ctx.data or {}).get("policy")
                if not isinstance(text, str) or not text:
                    return self._error(400, "'policy' parameter not supplied or empty")
                if name == "root":
                    return self._error(400, 'cannot update "root" policy')
                try:
                    rules = parse_policy(text)
                except ValueError as e:
                    return self._error(400, str(e))
                self._policies[name] = rules
                self._policy_text[name] = text
                return self._no_content()
            if op == "delete":
                if name in ("root", "default"):
                    return self._error(400, 'cannot delete "%s" policy' % name)
                self._policies.pop(name, None)
                self._policy_text.pop(name, None)
                return self._no_content()
        if ctx.op in ("read", "list", "update", "delete", "patch"):
            return self._error(404, multierror("unsupported path"))
        return self._error(405, multierror("unsupported operation"))

    def _sys_mount(self, ctx, path):
        d = ctx.data or {}
        typ = d.get("type")
        if not typ:
            return self._error(400, "backend type must be specified as a string")
        if path in ctx.ns.mounts or path.startswith("sys/") or path.startswith("auth/"):
            return self._error(400, "path is already in use at %s" % path)
        opts = d.get("options") if isinstance(d.get("options"), dict) else None
        version = None
        if typ == "kv-v2":
            version = 2
        elif typ in ("kv", "kv-v1", "generic"):
            v = (opts or {}).get("version")
            version = int(v) if v not in (None, "") else (1 if typ == "kv-v1" else None)
        else:
            return self._error(400, "vault double: secrets engine %r is not implemented" % typ)
        self._mount_kv(ctx.ns, path, version, None, str(d.get("description") or ""))
        if version is None and opts:
            ctx.ns.mounts[path].options = {k: str(v) for k, v in opts.items()}
        return self._no_content()

    def _mount_info(self, m, ns):
        cfg = {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0}
        info = {"accessor": m.accessor, "config": cfg, "description": m.description,
                "external_entropy_access": False, "local": False, "options": m.options,
                "plugin_version": "", "running_plugin_version": KV_PLUGIN_VERSION if m.type == "kv"
                else "v" + VERSION + "+builtin.vault", "running_sha256": "", "seal_wrap": False,
                "type": m.type, "uuid": m.uuid}
        return info

    def _injected(self, ctx, data):
        """HTTPSysInjector: the data's keys at the top level too, then the usual envelope
        (MarshalJSON writes `"k": v, `; the Encoder compacts that to `"k":v,`)."""
        env = self._envelope(ctx, data=data, mount_type="system")
        inner = go_json(env, newline=False).decode("utf-8")
        parts = []
        for k in sorted(data):
            parts.append("%s:%s," % (go_string(k), go_json(data[k], newline=False).decode("utf-8")))
        body = ("{" + "".join(parts) + inner[1:] + "\n").encode("utf-8")
        return _Resp(200, body, {"Cache-Control": "no-store", "Content-Type": "application/json"})

    @staticmethod
    def _no_content():
        return _Resp(204, b"", {"Cache-Control": "no-store", "Content-Type": "application/json"})

    @staticmethod
    def _raw_404():
        """RespondWithStatusCode(nil, req, 404): a raw response with no body."""
        return _Resp(404, b"", {"Cache-Control": "no-store", "Content-Type": "application/json"})

    def _ui_mounts(self, ctx):
        if self.old_server:
            return self._error(404, multierror("unsupported path"))
        if ctx.op != "read":
            return self._error(405, multierror("unsupported operation"))
        token = self._valid_token(self._request_token(ctx.req))
        rest = ctx.path[len("sys/internal/ui/mounts"):].lstrip("/")
        if rest == "":
            out = {"auth": {}, "secret": {}}
            if token is not None:
                for m in ctx.ns.mounts.values():
                    if self._has_mount_access(token, m.path):
                        out["secret"][m.path] = self._mount_info(m, ctx.ns)
                for m in ctx.ns.auth.values():
                    if self._has_mount_access(token, m.path):
                        out["auth"][m.path[len("auth/"):]] = self._mount_info(m, ctx.ns)
            return self._ok(ctx, out, "system")
        path = rest if rest.endswith("/") else rest + "/"
        preflight = ('preflight capability check returned 403, please ensure client\'s policies grant '
                     'access to path "%s"' % path)
        m = self._match(ctx.ns.mounts, path) or self._match(ctx.ns.auth, path)
        if m is None:
            return self._error(403, preflight)
        if token is None:
            return self._error(403, multierror("permission denied"))
        if not self._has_mount_access(token, m.path):
            return self._error(403, preflight)
        info = self._mount_info(m, ctx.ns)
        info["path"] = ctx.ns.path + m.path
        return self._ok(ctx, info, "system")

    def _has_mount_access(self, t, mount_path):
        if t.root:
            return True
        for rules in self._rulesets(t):
            for pat, caps in rules.items():
                if "deny" in caps or not caps:
                    continue
                base = pat.rstrip("*")
                if base.startswith(mount_path) or mount_path.startswith(base):
                    return True
        return False

    # -- token backend -------------------------------------------------------------------------------------
    def _token_backend(self, ctx, mount):
        rest, op, d = ctx.path[len("auth/token/"):], ctx.op, ctx.data or {}
        t = ctx.token
        if rest == "lookup-self" and op in ("read", "update"):
            return self._ok(ctx, self._lookup_data(t), "token")
        if rest == "lookup" and op == "update":
            other = self._valid_token(str(d.get("token") or ""))
            if not d.get("token"):
                return self._error(400, "missing token ID")
            if other is None:
                return self._error(403, "bad token")
            return self._ok(ctx, self._lookup_data(other), "token")
        if rest in ("renew-self", "renew") and op == "update":
            target = t if rest == "renew-self" else self._valid_token(str(d.get("token") or ""))
            if rest == "renew" and not d.get("token"):
                return self._error(400, "missing token ID")
            if target is None:
                return self._error(400, "token not found")
            try:
                inc = parse_duration_second(d.get("increment"))
            except ValueError as e:
                return self._error(400, str(e))
            return self._renew(ctx, target, inc)
        if rest in ("revoke-self",) and op == "update":
            self._revoke_tree(t.id)
            return self._no_content()
        if rest == "revoke" and op == "update":
            if not d.get("token"):
                return self._error(400, "missing token ID")
            self._revoke_tree(str(d["token"]))
            return self._no_content()
        if rest in ("create", "create-orphan") and op == "update":
            return self._token_create(ctx, d, orphan=(rest == "create-orphan" or bool(d.get("no_parent"))))
        if op in ("read", "list", "update", "delete"):
            return self._error(404, multierror("unsupported path"))
        return self._error(405, multierror("unsupported operation"))

    def _revoke_tree(self, tid):
        t = self._tokens.pop(tid, None)
        if t is None:
            return
        for child in [k for k, c in self._tokens.items() if c.parent == tid]:
            self._revoke_tree(child)

    def _token_create(self, ctx, d, orphan):
        parent = ctx.token
        try:
            ttl = parse_duration_second(d.get("ttl") or d.get("lease"))
            emax = parse_duration_second(d.get("explicit_max_ttl"))
            period = parse_duration_second(d.get("period"))
        except ValueError as e:
            return self._error(400, str(e))
        pols = d.get("policies")
        if isinstance(pols, str):
            pols = [p for p in pols.split(",") if p.strip()]
        if pols is None:
            pols = [p for p in parent.policies if p != "root"] if not parent.root else ["root"]
        pols = [str(p).strip().lower() for p in pols]
        if not parent.root:
            if "root" in pols or not set(pols) - {"default"} <= set(parent.policies):
                return self._error(400, "child policies must be subset of parent")
        if "root" in pols:
            pols = ["root"]
        else:
            pols = _sanitize_policies(pols, add_default=not _truthy(d.get("no_default_policy")))
        renewable = True if d.get("renewable") is None else _truthy(d.get("renewable"))
        try:
            num_uses = int(plain(d.get("num_uses") or 0))
        except (TypeError, ValueError):
            return self._error(400, "num_uses must be an integer")
        if num_uses < 0:
            return self._error(400, "number of uses cannot be negative")
        dn = str(d.get("display_name") or "")
        display = "token" if not dn else "token-" + re.sub(r"[^a-zA-Z0-9-]", "-", dn)
        meta = d.get("meta") if isinstance(d.get("meta"), dict) else None
        # handleCreateCommon: an explicit max TTL bounds (or, with no TTL, is) the TTL
        warnings = None
        if emax > SYSTEM_MAX_TTL and not period:
            warnings = ["Explicit max TTL of %d seconds is greater than system/mount allowed value; value is "
                        "being capped to %d seconds" % (emax, SYSTEM_MAX_TTL)]
            emax = SYSTEM_MAX_TTL
        ttl_eff = ttl
        if emax:
            if ttl_eff == 0:
                ttl_eff = emax
            elif ttl_eff > emax:
                warnings = (warnings or []) + ["Requested TTL of %d seconds higher than explicit max TTL; value "
                                               "being capped to %d seconds" % (ttl_eff, emax)]
                ttl_eff = emax
        if pols != ["root"] and not ttl_eff:
            ttl_eff = period or SYSTEM_MAX_TTL
        t = self._new_token(pols, ttl_eff, renewable, emax, period, num_uses,
                            str(d.get("id")) if d.get("id") else None, ctx.ns.path,
                            "auth/token/create" + ("-orphan" if orphan and not d.get("no_parent") else ""),
                            display, {k: str(plain(v)) for k, v in meta.items()} if meta else None, orphan)
        if not orphan:
            t.parent = parent.id
        if pols == ["root"] and not ttl:
            t.expire_ns = None
        return self._ok(ctx, None, "token", auth=self._auth_block(t), warnings=warnings)

    def _new_token(self, policies, ttl, renewable, explicit_max_ttl, period, num_uses, token_id,
                   namespace, path, display_name, meta, orphan):
        t = _Token()
        t.id = token_id or "hvs." + self._b62(24)
        t.accessor = self._b62(24)
        t.policies = list(policies)
        t.path, t.display_name, t.meta = path, display_name, meta
        t.num_uses = int(num_uses)
        t.orphan = bool(orphan)
        t.creation_ns = t.issue_ns = self.now_ns()
        t.explicit_max_ttl, t.period = int(explicit_max_ttl), int(period)
        t.ttl = int(period or ttl)
        t.expire_ns = t.issue_ns + t.ttl * 10 ** 9 if t.ttl else None
        t.renewable = bool(renewable) and t.ttl > 0
        t.namespace = namespace
        self._tokens[t.id] = t
        return t

    def _auth_block(self, t, lease_duration=None):
        """HTTPAuth; lease_duration is the TTL just granted (int(TTL.Seconds()))."""
        if lease_duration is None:
            lease_duration = t.ttl if t.expire_ns is not None else 0
        a = GoStruct()
        a["client_token"] = t.id
        a["accessor"] = t.accessor
        a["policies"] = list(t.policies)
        a["token_policies"] = list(t.policies)
        a["metadata"] = t.meta
        a["lease_duration"] = lease_duration
        a["renewable"] = t.renewable
        a["entity_id"] = t.entity_id
        a["token_type"] = "service"
        a["orphan"] = t.orphan
        a["mfa_requirement"] = None
        a["num_uses"] = max(t.num_uses, 0)
        return a

    def _ttl_left(self, t):
        now = self.now_ns()
        rounded = (now + 5 * 10 ** 8) // 10 ** 9 * 10 ** 9  # time.Now().Round(time.Second)
        return int((t.expire_ns - rounded) / 1e9)

    def _lookup_data(self, t):
        d = {"accessor": t.accessor, "creation_time": t.creation_ns // 10 ** 9,
             "creation_ttl": t.ttl, "display_name": t.display_name, "entity_id": t.entity_id,
             "expire_time": None, "explicit_max_ttl": t.explicit_max_ttl, "id": t.id,
             "meta": t.meta, "num_uses": max(t.num_uses, 0), "orphan": t.orphan, "path": t.path,
             "policies": list(t.policies), "ttl": 0, "type": "service"}
        if t.period:
            d["period"] = t.period
        if t.namespace:
            d["namespace_path"] = t.namespace
        if not t.root:  # root tokens have no lease: no renewal/expiry/issue fields
            if t.last_renewal_ns is not None:
                d["last_renewal_time"] = t.last_renewal_ns // 10 ** 9
                d["last_renewal"] = rfc3339nano(t.last_renewal_ns)
            if t.expire_ns is not None:
                d["expire_time"] = rfc3339nano(t.expire_ns)
                d["ttl"] = self._ttl_left(t)
            d["renewable"] = t.renewable
            d["issue_time"] = rfc3339nano(t.issue_ns)
        return d

    def _renew(self, ctx, t, increment):
        if t.root or t.expire_ns is None:
            return self._error(400, "lease not found or lease is not renewable")
        if not t.renewable:
            return self._error(400, "lease is not renewable")
        now = self.now_ns()
        warnings = None
        if t.period:
            ttl = increment if 0 < increment < t.period else t.period
        else:
            ttl = increment if increment > 0 else t.ttl
            max_ttl = t.explicit_max_ttl or t.max_ttl
            max_at = t.issue_ns + max_ttl * 10 ** 9
            if max_at <= now:
                return self._error(400, "past the max TTL, cannot renew")
            if now + ttl * 10 ** 9 > max_at:
                left = (max_at - now) // 10 ** 9  # Duration.Truncate(time.Second)
                warnings = ['TTL of "%s" exceeded the effective max_ttl of "%s"; TTL value is capped '
                            'accordingly' % (go_duration(ttl), go_duration(left))]
                t.expire_ns, t.last_renewal_ns = max_at, now
                return self._ok(ctx, None, "token", auth=self._auth_block(t, left), warnings=warnings)
        t.expire_ns = now + ttl * 10 ** 9
        t.last_renewal_ns = now
        return self._ok(ctx, None, "token", auth=self._auth_block(t, ttl), warnings=warnings)

    # -- AppRole --------------------------------------------------------------------------------------------
    def _approle_login(self, ctx, mount):
        if ctx.op != "update":
            return self._error(405, multierror("unsupported operation"))
        d = ctx.data or {}
        role_id = d.get("role_id")
        if not role_id:
            return self._error(400, "missing role_id")
        role = None
        for r in mount.roles.values():
            if r.role_id == str(role_id):
                role = r
        if role is None:
            return self._error(400, "invalid role or secret ID")
        if role.bind_secret_id:
            sid = d.get("secret_id")
            if not sid:
                return self._error(400, "missing secret_id")
            ent = role.secret_ids.get(str(sid))
            if ent is None or (ent["expires_ns"] is not None and ent["expires_ns"] <= self.now_ns()):
                role.secret_ids.pop(str(sid), None)
                return self._error(400, "invalid role or secret ID")
            if ent["uses_left"] is not None:
                ent["uses_left"] -= 1
                if ent["uses_left"] <= 0:
                    del role.secret_ids[str(sid)]
        max_ttl = role.token_max_ttl or SYSTEM_MAX_TTL
        ttl = role.token_ttl or SYSTEM_MAX_TTL
        ttl = min(ttl, max_ttl) if not role.period else role.period
        t = self._new_token(_sanitize_policies(role.policies, add_default=True), ttl, True, 0,
                            role.period, role.token_num_uses, None, ctx.ns.path, mount.path + "login",
                            mount.path[len("auth/"):].rstrip("/").replace("/", "-"),
                            {"role_name": role.name}, True)
        t.max_ttl, t.entity_id = max_ttl, role.entity_id
        return self._ok(ctx, None, "approle", auth=self._auth_block(t))

    def _approle_backend(self, ctx, mount):
        rest, op, d = ctx.path[len(mount.path):], ctx.op, ctx.data or {}
        if rest == "role/" and op == "list":
            if not mount.roles:
                return self._error(404)
            return self._ok(ctx, {"keys": sorted(mount.roles)}, "approle")
        parts = rest.split("/")
        if len(parts) >= 2 and parts[0] == "role" and parts[1]:
            name = parts[1]
            sub = "/".join(parts[2:])
            role = mount.roles.get(name)
            if sub == "":
                if op == "update":
                    if role is None:
                        role = _Role(name, self._rng)
                    try:
                        if "token_policies" in d or "policies" in d:
                            pols = d.get("token_policies", d.get("policies"))
                            if isinstance(pols, str):
                                pols = [p for p in pols.split(",") if p.strip()]
                            role.policies = _sanitize_policies(pols or [], add_default=False)
                        for f, attr in (("token_ttl", "token_ttl"), ("token_max_ttl", "token_max_ttl"),
                                        ("token_period", "period"), ("period", "period"),
                                        ("secret_id_ttl", "secret_id_ttl")):
                            if f in d:
                                setattr(role, attr, parse_duration_second(d[f]))
                        for f, attr in (("secret_id_num_uses", "secret_id_num_uses"),
                                        ("token_num_uses", "token_num_uses")):
                            if f in d:
                                setattr(role, attr, int(plain(d[f])))
                        if "bind_secret_id" in d:
                            role.bind_secret_id = _truthy(d["bind_secret_id"])
                    except (ValueError, TypeError) as e:
                        return self._error(400, str(e))
                    if role.token_max_ttl and role.token_ttl > role.token_max_ttl:
                        return self._error(400, "\"token_ttl\" value must be less than \"token_max_ttl\" value")
                    mount.roles[name] = role
                    return self._no_content()
                if role is None:
                    return self._error(404)
                if op == "read":
                    return self._ok(ctx, {"bind_secret_id": role.bind_secret_id,
                                          "secret_id_num_uses": role.secret_id_num_uses,
                                          "secret_id_ttl": role.secret_id_ttl,
                                          "token_max_ttl": role.token_max_ttl,
                                          "token_num_uses": role.token_num_uses,
                                          "token_period": role.period,
                                          "token_policies": list(role.policies),
                                          "policies": list(role.policies),
                                          "token_ttl": role.token_ttl, "token_type": "default",
                                          "period": role.period}, "approle")
                if op == "delete":
                    del mount.roles[name]
                    return self._no_content()
            if role is None:
                return self._error(400, 'role "%s" does not exist' % name) if op == "update" else self._error(404)
            if sub == "role-id":
                if op == "read":
                    return self._ok(ctx, {"role_id": role.role_id}, "approle")
                if op == "update":
                    if not d.get("role_id"):
                        return self._error(400, "missing role_id")
                    role.role_id = str(d["role_id"])
                    return self._no_content()
            if sub == "secret-id" and op == "update":
                sid = self._new_secret_id(role, str(d["secret_id"]) if d.get("secret_id") else None)
                ent = role.secret_ids[sid]
                return self._ok(ctx, {"secret_id": sid, "secret_id_accessor": ent["accessor"],
                                      "secret_id_num_uses": role.secret_id_num_uses,
                                      "secret_id_ttl": role.secret_id_ttl}, "approle")
        if op in ("read", "list", "update", "delete"):
            return self._error(404, multierror("unsupported path"))
        return self._error(405, multierror("unsupported operation"))

    # -- KV v1 --------------------------------------------------------------------------------------------------
    def _kv1(self, ctx, m):
        key, op, d = ctx.path[len(m.path):], ctx.op, ctx.data
        if op == "read":
            data = m.kv1.get(key)
            if data is None:
                return self._error(404)
            ttl = SYSTEM_MAX_TTL
            raw = data.get("ttl", data.get("lease"))
            if raw is not None:
                try:
                    ttl = parse_duration_second(raw)
                except ValueError:
                    pass
            return self._ok(ctx, copy.deepcopy(data), "kv", lease_duration=ttl)
        if op == "list":
            prefix = key
            keys = _list_keys(m.kv1, prefix)
            if not keys:
                return self._error(404)
            return self._ok(ctx, {"keys": keys}, "kv")
        if op == "update":
            if key == "":
                return self._error(400, "missing path")
            if not d:
                return self._error(400, "missing data fields")
            m.kv1[key] = _to_go(d)
            return self._no_content()
        if op == "delete":
            m.kv1.pop(key, None)
            return self._no_content()
        return self._error(405, multierror("unsupported operation"))

    # -- KV v2 --------------------------------------------------------------------------------------------------
    def _kv2(self, ctx, m):
        rest, op = ctx.path[len(m.path):], ctx.op
        if rest == "config":
            return self._kv2_config(ctx, m)
        for pre, fn in (("data/", self._kv2_data), ("metadata/", self._kv2_meta),
                        ("delete/", self._kv2_delete_ep), ("undelete/", self._kv2_undelete_ep),
                        ("destroy/", self._kv2_destroy_ep)):
            if rest.startswith(pre):
                key = rest[len(pre):]
                if pre != "metadata/" and (key == "" or key.endswith("/")):
                    break  # the path patterns need a key not ending in "/"
                return fn(ctx, m, key)
        if op in ("read", "list", "update", "delete", "patch"):
            return self._error(404, multierror("unsupported path"))
        return self._error(405, multierror("unsupported operation"))

    def _kv2_config(self, ctx, m):
        if ctx.op == "read":
            return self._ok(ctx, {"cas_required": m.cas_required,
                                  "delete_version_after": go_duration(m.delete_version_after),
                                  "max_versions": m.max_versions}, "kv")
        if ctx.op == "update":
            d = ctx.data or {}
            try:
                if "max_versions" in d:
                    m.max_versions = int(plain(d["max_versions"]))
                if "cas_required" in d:
                    m.cas_required = _truthy(d["cas_required"])
                if "delete_version_after" in d:
                    m.delete_version_after = parse_duration_second(d["delete_version_after"])
            except (ValueError, TypeError) as e:
                return self._error(400, str(e))
            return self._no_content()
        return self._error(405, multierror("unsupported operation"))

    def _unknown_params(self, d, known):
        extra = sorted(k for k in (d or {}) if k not in known)
        if not extra:
            return None
        return ["Endpoint ignored these unrecognized parameters: [%s]" % " ".join(extra)]

    def _kv2_version_meta(self, k, n, v):
        return {"created_time": rfc3339nano(v.created),
                "custom_metadata": None if k.custom_metadata is None else dict(k.custom_metadata),
                "deletion_time": "" if v.deletion is None else rfc3339nano(v.deletion),
                "destroyed": v.destroyed, "version": n}

    def _kv2_data(self, ctx, m, key):
        op, d = ctx.op, ctx.data
        if op == "read":
            k = m.kv2.get(key)
            if k is None:
                return self._error(404)
            try:
                ver = int(plain(d.get("version") or 0)) if d else 0
            except (TypeError, ValueError):
                return self._error(400, 'error converting input %s for field "version": strconv.ParseInt: '
                                        'parsing %s: invalid syntax' % (d.get("version"), json.dumps(d.get("version"))))
            n = ver if ver > 0 else k.current
            v = k.versions.get(n)
            if v is None:
                return self._error(404)
            meta = self._kv2_version_meta(k, n, v)
            if v.destroyed or (v.deletion is not None and v.deletion <= self.now_ns()):
                # RespondWithStatusCode(resp, req, 404): the envelope, json.Marshal'd (no newline),
                # without the mount type the router only sets afterwards
                env = self._envelope(ctx, data={"data": None, "metadata": meta}, mount_type="")
                return self._json(404, env, newline=False)
            return self._json(200, self._envelope(ctx, data={"data": as_float64(v.data), "metadata": meta},
                                                  mount_type="kv"))
        if op == "update":
            if key == "":
                return self._error(400, "missing path")
            d = d or {}
            raw = d.get("data")
            if raw is None:
                return self._error(400, "no data provided")
            if not isinstance(raw, dict):
                return self._error(400, multierror("'data' expected to be a map, got %s" % _go_type(raw)))
            opts = d.get("options")
            if opts is not None and not isinstance(opts, dict):
                return self._error(400, multierror("'options' expected to be a map, got %s" % _go_type(opts)))
            cas = None
            if opts is not None and "cas" in opts:
                cas = opts["cas"]
            k, err = self._kv2_write(m, key, _to_go(raw), cas, cas_given=opts is not None and "cas" in opts)
            if err:
                return self._error(400, err)
            v = k.versions[k.current]
            return self._ok(ctx, self._kv2_version_meta(k, k.current, v), "kv",
                            warnings=self._unknown_params(d, ("data", "options", "version", "path")))
        if op == "patch":
            d = d or {}
            raw = d.get("data")
            if raw is None:
                return self._error(400, "no data provided")
            k = m.kv2.get(key)
            if k is None or k.current not in k.versions:
                return self._raw_404()
            err = self._kv2_cas_check(m, k, (d.get("options") or {}).get("cas") if isinstance(d.get("options"), dict) else None,
                                      isinstance(d.get("options"), dict) and "cas" in d["options"])
            if err:
                return self._error(400, err)
            v = k.versions[k.current]
            if v.destroyed or (v.deletion is not None and v.deletion <= self.now_ns()):
                env = self._envelope(ctx, data=self._kv2_version_meta(k, k.current, v), mount_type="")
                return self._json(404, env, newline=False)
            merged = _merge_patch(copy.deepcopy(v.data), _to_go(raw)) if isinstance(raw, dict) else v.data
            k2, _ = self._kv2_write(m, key, merged, None)
            return self._ok(ctx, self._kv2_version_meta(k2, k2.current, k2.versions[k2.current]), "kv")
        if op == "delete":
            k = m.kv2.get(key)
            if k is not None:
                self._kv2_soft_delete(k, [k.current])
            return self._no_content()
        if op == "list":
            return self._error(404, multierror("unsupported path"))
        return self._error(405, multierror("unsupported operation"))

    def _kv2_cas_check(self, m, k, cas, cas_given):
        if cas_given:
            try:
                c = int(plain(cas)) if not isinstance(cas, str) else int(cas)
            except (TypeError, ValueError):
                return "error parsing check-and-set parameter"
            if c % (1 << 64) != k.current:
                return "check-and-set parameter did not match the current version"
        elif m.cas_required or k.cas_required:
            return "check-and-set parameter required for this call"
        return None

    def _kv2_write(self, m, key, data, cas, cas_given=None):
        """pathDataWrite: -> (key metadata, error text)."""
        if cas_given is None:
            cas_given = cas is not None
        now = self.now_ns()
        k = m.kv2.get(key)
        new = k is None
        if new:
            k = _KV2Key(now)
        err = self._kv2_cas_check(m, k, cas, cas_given)
        if err:
            return k, err
        dva = k.delete_version_after or m.delete_version_after
        v = _Version(data, now, now + dva * 10 ** 9 if dva > 0 else None)
        k.current += 1
        k.versions[k.current] = v
        k.updated = now
        maxv = max(k.max_versions, m.max_versions) or KV2_DEFAULT_MAX_VERSIONS
        if k.current - k.oldest >= maxv:
            to_delete = k.current - maxv
            for i in range(k.oldest, to_delete + 1):
                k.versions.pop(i, None)
            k.oldest = to_delete + 1
        m.kv2[key] = k
        return k, None

    def _kv2_soft_delete(self, k, versions):
        now = self.now_ns()
        for n in versions:
            v = k.versions.get(int(n))
            if v is None or v.destroyed:
                continue
            if v.deletion is not None and v.deletion <= now:
                continue
            v.deletion = now

    def _kv2_undelete(self, m, k, versions):
        now = self.now_ns()
        for n in versions:
            v = k.versions.get(int(n))
            if v is None or v.destroyed:
                continue
            dva = k.delete_version_after or m.delete_version_after
            v.deletion = now + dva * 10 ** 9 if dva > 0 else None

    def _versions_param(self, d):
        raw = (d or {}).get("versions")
        if raw is None:
            return []
        if isinstance(raw, str):
            raw = [x for x in raw.split(",") if x.strip()]
        if not isinstance(raw, list):
            raw = [raw]
        out = []
        for x in raw:
            try:
                out.append(int(plain(x)) if not isinstance(x, str) else int(x.strip()))
            except (TypeError, ValueError):
                raise _HTTPError(400, multierror("error converting input %s for field \"versions\"" % plain(x)))
        return out

    def _kv2_delete_ep(self, ctx, m, key):
        if ctx.op != "update":
            return self._error(405, multierror("unsupported operation"))
        vs = self._versions_param(ctx.data)
        if not vs:
            return self._error(400, "No version number provided")
        k = m.kv2.get(key)
        if k is not None:
            self._kv2_soft_delete(k, vs)
        return self._no_content()

    def _kv2_undelete_ep(self, ctx, m, key):
        if ctx.op != "update":
            return self._error(405, multierror("unsupported operation"))
        vs = self._versions_param(ctx.data)
        if not vs:
            return self._error(400, "No version number provided")
        k = m.kv2.get(key)
        if k is not None:
            self._kv2_undelete(m, k, vs)
        return self._no_content()

    def _kv2_destroy_ep(self, ctx, m, key):
        if ctx.op != "update":
            return self._error(405, multierror("unsupported operation"))
        vs = self._versions_param(ctx.data)
        if not vs:
            return self._error(400, "no version number provided")
        k = m.kv2.get(key)
        if k is not None:
            for n in vs:
                v = k.versions.get(n)
                if v is not None and not v.destroyed:
                    v.destroyed = True
                    v.data = None
        return self._no_content()

    def _kv2_metadata_json(self, k):
        versions = {}
        for n, v in k.versions.items():
            versions[str(n)] = {"created_time": rfc3339nano(v.created),
                                "deletion_time": "" if v.deletion is None else rfc3339nano(v.deletion),
                                "destroyed": v.destroyed}
        return {"cas_required": k.cas_required, "created_time": rfc3339nano(k.created),
                "current_version": k.current,
                "custom_metadata": None if k.custom_metadata is None else dict(k.custom_metadata),
                "delete_version_after": go_duration(k.delete_version_after),
                "max_versions": k.max_versions, "oldest_version": k.oldest,
                "updated_time": rfc3339nano(k.updated), "versions": versions}

    def _kv2_meta(self, ctx, m, key):
        op, d = ctx.op, ctx.data or {}
        if op == "list":
            keys = _list_keys(m.kv2, key)
            if not keys:
                return self._error(404)
            return self._ok(ctx, {"keys": keys}, "kv")
        if key == "" or key.endswith("/"):
            if op in ("read", "update", "delete", "patch"):
                return self._error(404, multierror("unsupported path"))
        if op == "read":
            k = m.kv2.get(key)
            if k is None:
                return self._error(404)
            return self._ok(ctx, self._kv2_metadata_json(k), "kv")
        if op == "delete":
            m.kv2.pop(key, None)
            return self._no_content()
        if op in ("update", "patch"):
            k = m.kv2.get(key)
            if op == "patch" and k is None:
                return self._raw_404()
            fields = ("max_versions", "cas_required", "delete_version_after", "custom_metadata")
            if not any(f in d for f in fields):
                return self._no_content()
            cm = None
            if "custom_metadata" in d:
                raw = d["custom_metadata"]
                if raw is not None and not isinstance(raw, dict):
                    return self._error(400, multierror("'custom_metadata' expected to be a map"))
                cm = {}
                for ck, cv in (raw or {}).items():
                    if cv is None and op == "patch":
                        continue
                    cm[ck] = "" if cv is None else (cv if isinstance(cv, str) else str(plain(cv)).lower()
                                                    if isinstance(cv, bool) else str(plain(cv)))
                errs = []
                if len(cm) > 64:
                    errs.append("custom_metadata validation failed: payload must contain at most 64 keys, "
                                "provided %d" % len(cm))
                if errs:
                    return self._error(400, multierror(*errs))
            warnings = None
            if "cas_required" in d and m.cas_required and not _truthy(d["cas_required"]):
                warnings = ['"cas_required" set to false, but is mandated by backend config. '
                            'This value will be ignored.']
            if k is None:
                k = _KV2Key(self.now_ns())
                m.kv2[key] = k
            try:
                if "max_versions" in d:
                    k.max_versions = int(plain(d["max_versions"]))
                if "cas_required" in d:
                    k.cas_required = _truthy(d["cas_required"])
                if "delete_version_after" in d:
                    dva = parse_duration_second(d["delete_version_after"])
                    if dva < 0:
                        return self._error(400, "delete_version_after cannot be negative")
                    k.delete_version_after = dva
            except (ValueError, TypeError) as e:
                return self._error(400, str(e))
            if cm is not None:
                if op == "patch" and k.custom_metadata:
                    merged = dict(k.custom_metadata)
                    for ck, cv in (d["custom_metadata"] or {}).items():
                        if cv is None:
                            merged.pop(ck, None)
                        else:
                            merged[ck] = cm[ck]
                    cm = merged
                k.custom_metadata = cm
            k.updated = self.now_ns()
            if warnings:
                return self._ok(ctx, None, "kv", warnings=warnings)
            return self._no_content()
        return self._error(405, multierror("unsupported operation"))

    # -- control endpoint (a path a real Vault never serves) --------------------------------------------
    @staticmethod
    def _control_json(obj):
        return (json.dumps(obj) + "\n").encode()

    def _control_state(self):
        return {"faults": self.faults(), "sealed": self.sealed, "port": self.port,
                "root_token": self.root_token, "unseal_key": self.unseal_key,
                "clock_offset_s": self._offset_ns / 1e9,
                "namespaces": sorted(self._ns), "tokens": len(self._tokens)}

    @staticmethod
    def _control_error(e):
        return "%s: %s" % (type(e).__name__, e)

    def _control_extra(self, path, m, body, ok):
        if path == "/_double/advance" and m in ("PUT", "POST"):
            self.advance(float(body.get("seconds", 0)))
            return ok()
        if path == "/_double/seal" and m in ("PUT", "POST"):
            self.seal()
            return ok()
        if path == "/_double/unseal" and m in ("PUT", "POST"):
            self.unseal()
            return ok()
        if path == "/_double/token" and m in ("PUT", "POST"):
            kw = {k: body[k] for k in ("policies", "ttl", "renewable", "explicit_max_ttl", "period",
                                       "num_uses", "token_id", "namespace") if k in body}
            for k in ("ttl", "explicit_max_ttl", "period"):
                if k in kw:
                    kw[k] = parse_duration_second(kw[k])
            return ok({"token": self.create_token(**kw)})
        if path == "/_double/revoke-token" and m in ("PUT", "POST"):
            self.revoke_token(body["token"])
            return ok()
        if path == "/_double/expire-token" and m in ("PUT", "POST"):
            self.expire_token(body["token"])
            return ok()
        if path == "/_double/approle" and m in ("PUT", "POST"):
            kw = {k: body[k] for k in ("policies", "token_ttl", "token_max_ttl", "period",
                                       "secret_id_num_uses", "secret_id_ttl", "bind_secret_id",
                                       "role_id", "secret_id", "mount", "namespace") if k in body}
            rid, sid = self.add_approle(body["name"], **kw)
            return ok({"role_id": rid, "secret_id": sid})
        if path == "/_double/policy" and m in ("PUT", "POST"):
            self.set_policy(body["name"], body["rules"])
            return ok()
        if path == "/_double/gloo-secret" and m in ("PUT", "POST"):
            kw = {k: body[k] for k in ("root_key", "path_prefix", "labels", "annotations",
                                       "vault_namespace") if k in body}
            v = self.seed_gloo_secret(body["namespace"], body["name"], body["secret"], **kw)
            return ok({"version": v})
        if path == "/_double/kv" and m in ("PUT", "POST"):
            v = self.kv_put(body["key"], body["data"], mount=body.get("mount", "secret"),
                            namespace=body.get("namespace", ""))
            return ok({"version": v})
        return None


# --------------------------------------------------------------------------------------------
# small helpers


def _ns_norm(ns):
    ns = (ns or "").strip().strip("/")
    if ns in ("", "root"):
        return ""
    return ns + "/"


def _ns_contains(parent, child):
    return child.startswith(parent)


def _mount_norm(path):
    p = path.strip().strip("/")
    return p + "/"


def _truthy(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, GoNumber):
        return v.value() != 0
    if isinstance(v, str):
        try:
            return go_parse_bool(v)
        except ValueError:
            return False
    return bool(v)


def _sanitize_policies(pols, add_default):
    out = []
    for p in pols:
        p = str(p).strip().lower()
        if p and p not in out:
            out.append(p)
    if "root" in out:
        return ["root"]
    if add_default and "default" not in out:
        out.append("default")
    return sorted(out)


def _query_data(q):
    return {k: (v[0] if len(v) == 1 else list(v)) for k, v in q.items()}


def _is_form(body, ctype):
    if ctype != "application/x-www-form-urlencoded":
        return False
    for c in body[:512]:
        if c in b" \t\r\n":
            continue
        return c not in b"[{"
    return True


def _to_go(obj):
    """Python values -> what Vault keeps (ints/floats as GoNumber literals)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, GoNumber)):
        return obj
    if isinstance(obj, int):
        return GoNumber(str(obj))
    if isinstance(obj, float):
        return GoNumber(go_float(obj))
    if isinstance(obj, dict):
        return {str(k): _to_go(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_go(v) for v in obj]
    raise TypeError("cannot store %r" % (obj,))


def _go_type(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (GoNumber, int, float)):
        return "json.Number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    return "map[string]interface {}"


def _merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = _merge_patch(target.get(k), v)
    return target


def _list_keys(store, prefix):
    """Storage List: the entries directly below prefix, folders with a trailing '/', sorted."""
    out = set()
    for k in store:
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix):]
        if rest == "":
            continue
        i = rest.find("/")
        out.add(rest if i < 0 else rest[:i + 1])
    return sorted(out)


# --------------------------------------------------------------------------------------------
# process entry point


def _add_arguments(ap):
    ap.add_argument("--root-token", default="root")
    ap.add_argument("--kv-mount", action="append", default=None, metavar="PATH=VERSION",
                    help="KV engine (repeat); default secret=2")
    ap.add_argument("--approle", action="append", default=[], metavar="NAME=POLICY,...",
                    help="create an AppRole role and print its role_id and secret_id")
    ap.add_argument("--policy", action="append", default=[], metavar="NAME=@FILE|TEXT")
    ap.add_argument("--gloo-secret", action="append", default=[], metavar="NS/NAME=@FILE|JSON",
                    help="seed a Gloo Secret (JSON object with the kind, e.g. {\"tls\": {...}})")
    ap.add_argument("--namespace", action="append", default=None, help="Enterprise namespace (repeat)")
    ap.add_argument("--error-style", default="plain", choices=("plain", "multierror"))
    ap.add_argument("--seed", type=int, default=None)


def main(argv=None):
    a = parse_args(argv, "Vault HTTP API test double", 8200, _add_arguments)
    mounts = None
    if a.kv_mount:
        mounts = {}
        for spec in a.kv_mount:
            p, _, v = spec.partition("=")
            mounts[p] = None if v in ("", "none") else int(v)
    d = VaultDouble(host=a.host, port=a.port, root_token=a.root_token, kv_mounts=mounts,
                    namespaces=a.namespace, error_style=a.error_style, seed=a.seed,
                    control_port=a.control_port)

    def text_of(v):
        if v.startswith("@"):
            with open(v[1:]) as f:
                return f.read()
        return v

    for spec in a.policy:
        name, _, v = spec.partition("=")
        d.set_policy(name, text_of(v))
    for spec in a.gloo_secret:
        ref, _, v = spec.partition("=")
        ns, _, name = ref.partition("/")
        d.seed_gloo_secret(ns, name, json.loads(text_of(v)))
    roles = []
    for spec in a.approle:
        name, _, pols = spec.partition("=")
        rid, sid = d.add_approle(name, policies=[p for p in pols.split(",") if p])
        roles.append((name, rid, sid))
    return serve(d, a, ["approle %s role_id=%s secret_id=%s" % r for r in roles])


if __name__ == "__main__":
    sys.exit(main())
