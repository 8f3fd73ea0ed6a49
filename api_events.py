"""GET /v1/orders/events: order status changes as they happen, as server-sent events.

Server-sent events (the HTML standard, "Server-sent events") are one long HTTP response of
`text/event-stream`: the server writes an event whenever one happens, and the client reads
them as they come. A browser's `EventSource` does all of it, reconnection included; curl
shows the wire:

    $ curl -N http://127.0.0.1:8000/v1/orders/events -H "Authorization: Bearer $TOKEN"
    retry: 3000                                      reconnect 3 s after a lost connection

    id: 4                                            the event's id: sent back on reconnection
    event: order.paid                                its type (EventSource: addEventListener)
    data: {"order_id":2,"user_id":2,"status":"paid","total_cents":2200,"created_at":"..."}

    : keep-alive                                     a comment, every EVENT_HEARTBEAT_SECONDS

Each event ends with an empty line. A client that reconnects sends `Last-Event-ID: 4`, and
gets every event after 4 that it may see and that is still kept (EVENT_RETENTION_SECONDS),
then the new ones; without the header it gets only the new ones. `Last-Event-ID: 0` asks for
every event kept. The header is the only way to say it (EventSource sends it by itself).

Who sees what: a user their own orders' events, an admin everyone's (events.py filters).
The response is streamed: no Content-Length, so HTTP/1.1 frames it in chunks, and each
event goes out as it is written (httpworkers.py). `X-Accel-Buffering: no` asks nginx not to
hold it back in a buffer. A stream holds a thread of its own lane (server.py), never one of
the few that serve every other request. The access log writes its line when the stream
starts: its `duration_ms` is the time to the first byte, not the stream's life.
"""

import re

import db
import events
import ratelimit
from schemas import describe
from web import BadRequest, Response, ServiceUnavailable, TooManyRequests

EVENT_STREAM_TYPE = "text/event-stream"
RETRY_MILLISECONDS = 3000  # the `retry:` field: how long EventSource waits before reconnecting
HEARTBEAT = b": keep-alive\n\n"
# An event id as this server makes them: a whole number, without a sign or leading zeros.
EVENT_ID = re.compile(r"0|[1-9][0-9]{0,17}")
STREAM_HEADERS = (("Content-Type", EVENT_STREAM_TYPE), ("Cache-Control", "no-store"), ("X-Accel-Buffering", "no"))
# A process with every stream open, or shutting down: come back after this many seconds.
BUSY_RETRY_AFTER_SECONDS = 5


# One event of the stream, as OpenAPI 3.1 describes a text/event-stream: the schema is each
# event's (OpenAPI 3.2 names it `itemSchema`), its fields as an EventSource reads them.
EVENT_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "one server-sent event: `id:`, `event:` and `data:` lines, then an empty line",
    "properties": {
        "id": {"type": "string", "pattern": "^(?:" + EVENT_ID.pattern + ")$"},
        "event": {"enum": sorted(set(events.EVENT_TYPES.values()))},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "the order: order_id, user_id, status, total_cents, created_at"},
        "retry": {"type": "integer", "minimum": 0, "description": "milliseconds before reconnecting"},
    },
}


@describe(response=EVENT_SCHEMA, media_type=EVENT_STREAM_TYPE, headers=("Last-Event-ID",), errors=(400, 429))
def stream_order_events(request):
    """GET /v1/orders/events: 200 and a stream of the caller's order events (an admin: all).
    400 for a Last-Event-ID that is not an event id; 429 when the caller has
    EVENT_STREAMS_PER_USER streams open already, or its address EVENT_STREAMS_PER_ADDRESS;
    503 when the process has all it can hold."""
    if request.query:
        raise BadRequest("this endpoint takes no query parameters (resume with the Last-Event-ID header)")
    last_event_id = parse_last_event_id(request.header("Last-Event-ID"))
    if request.method == "HEAD":  # the headers of a stream, and no stream
        return Response(b"", 200, list(STREAM_HEADERS))
    services, user = request.services, request.user
    try:
        # An IPv6 client holds its whole /64: counted as one address, as the rate limits count it.
        stream = services.order_events.open_stream(user["id"], admin=user["role"] == "admin",
                                                   client=ratelimit.address_caller(request.client),
                                                   last_event_id=last_event_id)
    except events.TooManyStreams as refused:
        if refused.per_caller:
            raise TooManyRequests(f"{refused}: close one first") from None
        raise ServiceUnavailable(f"{refused}; try again shortly",
                                 headers=[("Retry-After", str(BUSY_RETRY_AFTER_SECONDS))]) from None
    except events.Closed:
        raise ServiceUnavailable("the server is shutting down; reconnect shortly",
                                 headers=[("Retry-After", str(BUSY_RETRY_AFTER_SECONDS))]) from None
    body = EventStreamBody(stream, services.settings.event_heartbeat_seconds,
                           still_allowed=lambda: caller_unchanged(services, user))
    return Response(body, 200, list(STREAM_HEADERS))


def caller_unchanged(services, user):
    """True while the caller's account exists and has the role its stream was opened with.

    A stream decides once, when it opens, whether its caller sees every order (an admin) or
    their own: an admin made a plain user (or deleted) would otherwise go on receiving every
    customer's events until STREAM_MAX_SECONDS. The role is the one middleware.authenticate
    trusts (accounts.UserStates: at most USER_STATE_TTL_SECONDS old), so this costs a
    dictionary lookup on most batches, and a query at most once a second.
    """
    state = services.user_states.get(services.database, user["id"])
    return state is not None and state["role"] == user["role"]


def parse_last_event_id(value):
    """The Last-Event-ID header as an int, or None when absent. A 400 when it is not an id.

    >>> parse_last_event_id("42"), parse_last_event_id(None)
    (42, None)
    """
    if value is None:
        return None
    value = value.strip()
    if EVENT_ID.fullmatch(value) is None:
        raise BadRequest("Last-Event-ID must be the id of an event this server sent (a whole number)")
    return int(value)


def format_event(event):
    """One event in the text/event-stream format: id, event type and data, then an empty line.

    >>> format_event({"id": 4, "type": "order.paid", "data": '{"order_id":2}'})
    b'id: 4\\nevent: order.paid\\ndata: {"order_id":2}\\n\\n'
    """
    # The data is compact JSON, so it holds no line break that would end the field early.
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {event['data']}\n\n".encode()


class EventStreamBody:
    """The response body: an iterable of bytes that ends when the stream does, and a close()
    that the server calls when the response is over, however it ended (PEP 3333). A class
    rather than a bare generator: a generator closed before it started would never run its
    `finally`, and the stream would stay subscribed."""

    def __init__(self, stream, heartbeat_seconds, still_allowed=lambda: True):
        self.stream, self.heartbeat_seconds = stream, heartbeat_seconds
        self.still_allowed = still_allowed  # asked before each batch or heartbeat is sent

    def __iter__(self):
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        while True:
            try:
                batch = self.stream.next_events(self.heartbeat_seconds)
                # Asked before anything is sent: the batch was chosen for the caller's role
                # at the stream's start. Ended, the client reconnects and is judged anew.
                if batch is None or not self.still_allowed():
                    return
            except db.DatabaseUnavailable:
                return  # the client reconnects (after `retry`) and resumes from its last id
            yield b"".join(format_event(event) for event in batch) if batch else HEARTBEAT

    def close(self):
        self.stream.close()
