"""Trace context: one trace id from a request to the jobs it causes and the webhooks they send.

W3C Trace Context (https://www.w3.org/TR/trace-context/, Level 1) defines two request
headers that tracing systems of any vendor understand. A caller that traces its work sends

    traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
                 |  |                                |                |
                 |  trace-id: the whole trace        parent-id: the   trace-flags: 01 = the
                 version      (16 bytes, hex)        caller's span    caller may have recorded it
                                                     (8 bytes, hex)
    tracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7      (optional: each vendor's own data)

and the server that takes part in the trace keeps the trace id, gives its own work a new
span id, and passes `trace-id` + its span id on to everything it calls in turn:

    client  --traceparent 00-4bf9...-00f0...-01-->  shop: request span  a1b2...
                                                     |  jobs.enqueue stores 00-4bf9...-a1b2...-01
                                                     v
                                                    worker: job span c3d4... (child of a1b2...)
                                                     |  webhooks.deliver sends 00-4bf9...-e5f6...-01
                                                     v
                                                    the receiver of the webhook

The trace id appears in every log line written while the request is handled or the job
runs (observe.py adds it from `current()`), so one `grep 4bf92f35...` finds the request,
its jobs and their deliveries in the logs of every process.

What the shop does NOT do: record spans or export them anywhere. It propagates the
context, and logs the trace id; a tracing backend (OpenTelemetry, the README says how)
would record the spans these ids name.

The rules, from the specification, each applied where it is implemented below:
- a `traceparent` that is not exactly right (length, lowercase hex, version ff, an all-zero
  id) is ignored and a new trace starts; a higher version than 00 is read for its first
  four fields, if they are there and well formed, and passed on as version 00;
- `tracestate` is read only with a valid `traceparent`; a list that breaks its grammar is
  dropped whole, and a long one is cut to 512 characters, whole members at a time;
- the sampled flag is passed on as received (the shop defers the decision to whoever
  records), and is 0 on a trace the shop starts itself; the other flag bits are sent as 0.

Ids come from `random.getrandbits`, not `os.urandom`: they need to be unique, not secret
(they travel in clear to the client and the webhook receivers), and the request path is
benchmarked; the module's `random` is reseeded in every forked process (gunicorn workers).
"""

import contextvars
import random
import re
from typing import NamedTuple

VERSION = "00"  # the version this module writes; the one it knows best
FORBIDDEN_VERSION = "ff"
SAMPLED = 0x01  # trace-flags: the only flag of version 00; others are sent as 0
# tracestate: at most 32 members; the shop passes on at most 512 characters of them (what
# the specification asks every participant to carry at least), and drops whole members,
# those over 128 characters first, to get there. A header longer than the longest valid
# list (32 members of a 256-character key, "=", a 256-character value, and 31 commas) is
# refused before it is parsed.
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_CHARS = 512
LONG_TRACESTATE_MEMBER_CHARS = 128
MAX_TRACESTATE_INPUT_CHARS = MAX_TRACESTATE_MEMBERS * (256 + 1 + 256) + MAX_TRACESTATE_MEMBERS - 1

# version "-" trace-id "-" parent-id "-" trace-flags, lowercase hex only ([0-9a-f], never \d,
# which matches other scripts' digits too). A future version may add fields after a dash.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.ASCII | re.DOTALL)
_ALL_ZERO_TRACE_ID = "0" * 32
_ALL_ZERO_SPAN_ID = "0" * 16
# A tracestate list member (Level 1): a simple key, or a multi-tenant "tenant@system" key; a
# value of printable ASCII without "," and "=", not ending in a space.
_KEY_CHARS = r"[a-z0-9_\-*/]"
_TRACESTATE_MEMBER = re.compile(
    rf"(?:[a-z]{_KEY_CHARS}{{0,255}}|[a-z0-9]{_KEY_CHARS}{{0,240}}@[a-z]{_KEY_CHARS}{{0,13}})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]",
    re.ASCII,
)


class TraceContext(NamedTuple):
    """The trace a piece of work belongs to, and that work's own span.

    `trace_id` (32 hex) names the whole trace; `span_id` (16 hex) this operation (a request,
    a job's run); `parent_id` the caller's span, None when the trace started here; `flags`
    the trace-flags to pass on; `tracestate` the validated list to pass on, or None.

    A NamedTuple, immutable like a frozen dataclass and a quarter of its cost to make (a
    frozen dataclass sets each field through object.__setattr__): one is made per request.
    """

    trace_id: str
    span_id: str
    parent_id: str | None = None
    flags: int = 0
    tracestate: str | None = None

    @property
    def traceparent(self):
        """This operation as the parent of what it calls: the `traceparent` to send on.

        >>> TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "a1b2c3d4e5f60718", flags=1).traceparent
        '00-4bf92f3577b34da6a3ce929d0e0e4736-a1b2c3d4e5f60718-01'
        """
        return f"{VERSION}-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def child(self):
        """A new span of the same trace, this one its parent: the context of a call made now."""
        return TraceContext(self.trace_id, new_span_id(), self.span_id, self.flags, self.tracestate)


def parse_traceparent(value):
    """(trace_id, parent_id, flags) from a `traceparent` header, or None when it is not valid.

    >>> parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    ('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 1)
    >>> parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01") is None  # uppercase
    True
    >>> parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-future")  # a later version
    ('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 1)
    """
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == FORBIDDEN_VERSION:
        return None
    # Version 00 is exactly 55 characters: "...-01.", or "...-01-more", is not version 00.
    # A later version may append fields ("-" first); we read the four we know and no more.
    if version == VERSION and rest is not None:
        return None
    if trace_id == _ALL_ZERO_TRACE_ID or parent_id == _ALL_ZERO_SPAN_ID:
        return None
    # Only the flags this version defines are kept: the spec says other bits are sent as 0,
    # and a later version's flags mean nothing we know.
    return trace_id, parent_id, int(flags, 16) & SAMPLED


def parse_tracestate(value):
    """The `tracestate` list to pass on, or None: whitespace around members and empty members
    dropped, at most MAX_TRACESTATE_CHARS long. A list with a malformed member, a key twice,
    or more than MAX_TRACESTATE_MEMBERS members is dropped whole (None), as the
    specification's test suite expects: a partly understood list is not passed on.

    >>> parse_tracestate(" rojo=00f067aa0ba902b7 ,, congo=t61rcWkgMzE")
    'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE'
    >>> parse_tracestate("foo=1,foo=2") is None, parse_tracestate("Foo=1") is None
    (True, True)
    """
    if not value or len(value) > MAX_TRACESTATE_INPUT_CHARS:
        return None
    members, keys = [], set()
    for part in value.split(","):
        member = part.strip(" \t")  # optional whitespace (RFC 9110's OWS) around each member
        if not member:
            continue
        if len(members) == MAX_TRACESTATE_MEMBERS or not _TRACESTATE_MEMBER.fullmatch(member):
            return None  # (a 33rd member: refused before the rest of a long header is parsed)
        key = member.partition("=")[0]
        if key in keys:
            return None
        keys.add(key)
        members.append(member)
    return _truncated(members) or None


def continue_trace(traceparent, tracestate):
    """The context of work that was handed these values (either may be None): a request's
    headers, or a job's columns. The trace they name, continued with a new span, when
    `traceparent` is valid; else a new trace, and `tracestate` is not even read (the
    specification says so)."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return start_trace()
    trace_id, parent_id, flags = parsed
    return TraceContext(trace_id, new_span_id(), parent_id, flags, parse_tracestate(tracestate))


def start_trace():
    """A new trace, started here: no parent, and not sampled (the spec's default for a
    trace a participant starts while it leaves recording to others)."""
    return TraceContext(new_trace_id(), new_span_id())


def new_trace_id():
    """32 lowercase hex digits, never all zeros (which means "no trace"). (bytes.hex() is
    about four times as fast as formatting the number with "032x".)"""
    return (random.getrandbits(128) or 1).to_bytes(16, "big").hex()


def new_span_id():
    """16 lowercase hex digits, never all zeros."""
    return (random.getrandbits(64) or 1).to_bytes(8, "big").hex()


# -- the context of the work in hand -------------------------------------------------------------
#
# A ContextVar holds the context of what this thread is doing now (a request, a job), so that
# code far below the middleware, jobs.enqueue and the logger, finds it without every function
# in between passing it along. Each thread has its own value; whoever sets it resets it when
# the work ends (`attach`, then `detach` in a finally), so a thread reused for the next
# request never carries the last one's trace. This is how OpenTelemetry keeps its context.

_current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("trace_context", default=None)


def current():
    """The context of the work in hand (a request, a job), or None outside any."""
    return _current.get()


def attach(context):
    """Make `context` current; returns the token that `detach` needs to restore the one before."""
    return _current.set(context)


def detach(token):
    _current.reset(token)


def outgoing_headers():
    """The headers for a call made now (a webhook): `traceparent` with a new span of the
    current trace (a new trace outside any), and `tracestate` when there is one."""
    context = current() or start_trace()
    call = context.child()
    headers = {"traceparent": call.traceparent}
    if call.tracestate:
        headers["tracestate"] = call.tracestate
    return headers


def _truncated(members):
    """The list joined, cut to MAX_TRACESTATE_CHARS by whole members: first those over
    LONG_TRACESTATE_MEMBER_CHARS, then from the end (the oldest entries: each system adds
    its own on the left)."""
    text = ",".join(members)
    if len(text) <= MAX_TRACESTATE_CHARS:
        return text
    members = [member for member in members if len(member) <= LONG_TRACESTATE_MEMBER_CHARS]
    while members and len(",".join(members)) > MAX_TRACESTATE_CHARS:
        members.pop()
    return ",".join(members)
