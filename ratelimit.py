"""Rate limits: how many requests a caller may send, per class of route, in memory or on Redis.

Every route has a class in the route table (routes.py), and RATE_LIMITS gives each class a
quota per window. As shipped:

    policy           quota           counted per        for
    auth             10 per 60 s     client address     login, register, refresh, session login
    write            60 per 60 s     caller             every other POST, PATCH and DELETE
    default          300 per 60 s    caller             everything else: GET, HEAD, OPTIONS
    login_failures   5 per 900 s     account (email)    wrong passwords, from whatever address
    bad_credentials  30 per 60 s     client address     tokens and API keys that are refused

The caller is the user, or the API key, when the request is authenticated; otherwise the
client address (`client_address`: the socket's peer, or the last address a trusted proxy
saw). /health and /ready have no class: an orchestrator refused its probe would restart a
healthy process.

The algorithm: GCRA, a token bucket kept as one number
-------------------------------------------------------
A token bucket holds up to `quota` tokens and gains one every `window / quota` seconds (the
emission interval); each request takes one, and with none left it is refused. Kept as
tokens, it needs two numbers (tokens, and when they were counted) updated together. GCRA
(the Generic Cell Rate Algorithm of ATM networks) keeps one: the *debt*, how much time the
spent tokens need to come back. Each request adds one interval to the debt, time pays it
off, and a request that would take it past `quota` intervals is refused. What is stored is
the moment the debt will be paid off: now + debt.

    10 per 60 s: an interval of 6 s, a debt of at most 60 s
    t=0    debt 0 -> 6      allowed, 9 left
    t=0    nine more        debt 60, 0 left
    t=0    60 + 6 > 60      refused; Retry-After: 6 (once the debt is down to 54)
    t=30   30 -> 36         allowed, 4 left: five tokens came back in 30 s

So a client may send `quota` requests at once, then one per interval: `quota` per window on
average. Times are whole microseconds, so both backends compute the very same answers.

On the wire (draft-ietf-httpapi-ratelimit-headers-10, whose field syntax -09 shares)
-------------------------------------------------------------------------------------
Every answer of a limited route carries the policy and where the caller stands in it:

    RateLimit-Policy: "auth";q=10;w=60     the policy: a quota of 10 in a 60 s window
    RateLimit: "auth";r=4;t=2              4 left now; one more comes back in 2 s

A refused request gets a 429 (RFC 6585 §4) with `Retry-After` in whole seconds (at least
1, and the same as `t`), and the problem type the draft registers, with the policies it
broke: {"type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
"title": "Quota Exceeded", "status": 429, ..., "violated-policies": ["auth"]}.

Memory or Redis
---------------
Without REDIS_URL the buckets live in the process's memory: a dict in least-recently-used
order, at most MAX_BUCKETS of them, behind one lock. With it, every process shares them on
Redis, where one Lua script (GCRA_SCRIPT) reads and writes a bucket in one atomic round
trip, and the key expires when its debt is paid. When Redis does not answer, the process's
memory buckets take over (redisconn.RedisLink.run): requests are served, never refused for
it, and a warning is logged at most every 10 s.

Failed logins per account
-------------------------
The auth quota counts per address, so a guesser with many addresses would not be slowed by
it. The login_failures policy counts per account: a login takes a try from the account's
bucket before the password is hashed (`login_try`), and gives it back when the password is
right. Five wrong passwords lock the account's password logins, whatever address they come
from; the try that empties the bucket logs one warning ("login locked") naming the account
by a keyed hash, never the email.

Refused credentials per address
-------------------------------
Checking an API key reads the database, so a client sending made-up keys would make us
read it on every request, with no budget of its own spent: the budgets of the route
classes count it only once it is authenticated, and it never is. So a request whose token
or API key is refused takes a try from its address's bad_credentials bucket
(`credentials_failed`); the try that finds the bucket empty is a 429, and from then on
this process refuses that address's requests that carry credentials before checking them
(`shut_out`), until a try comes back. Other processes on the same Redis learn it the same
way, at the cost of one more check each. A good credential from that address (a user
behind the same NAT) waits too, at most Retry-After: the price of keeping the database out
of a guesser's reach.
"""

import contextlib
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import signing

DEFAULT_RATE_LIMITS = "auth=10/60,write=60/60,default=300/60,login_failures=5/900,bad_credentials=30/60"
ROUTE_CLASSES = ("auth", "write", "default")
LOGIN_FAILURES = "login_failures"
BAD_CREDENTIALS = "bad_credentials"
POLICY_NAMES = (*ROUTE_CLASSES, LOGIN_FAILURES, BAD_CREDENTIALS)
MICROSECONDS = 1_000_000      # in a second: every time here is a whole number of them
MAX_WINDOW_SECONDS = 86_400   # a day; longer windows belong to billing, not to rate limits
# Buckets one process keeps in memory, about 260 bytes each (13 MB in all). A flood of new
# addresses pushes out the buckets used least recently: those of callers long gone, whose
# debt is most likely paid anyway, before the callers of the last moments.
MAX_BUCKETS = 50_000
# An IPv6 client has at least a whole /64 to itself (every IPv6 subnet is one, RFC 4291
# §2.5.4) and may send from any address in it: counted one by one, it would never run out.
# So IPv6 addresses count per /64, the least a home or an office holds (RFC 6177: often more).
IPV6_PREFIX_BITS = 64
QUOTA_EXCEEDED_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"
QUOTA_EXCEEDED_TITLE = "Quota Exceeded"  # the title of that type in IANA's registry
ACCOUNT_PURPOSE = "login-failures"        # the MAC purpose of account keys (signing.mac)
# Addresses one process refuses outright for refused credentials (`shut_out`), the oldest
# dropped first: a dropped one is found out again at the cost of one more check.
MAX_SHUT_OUT = 10_000
MAX_TRUSTED_PROXIES = 100  # networks in TRUSTED_PROXIES: each request's address is compared with them

# GCRA on one key, in one atomic step: Redis runs a script alone, so two processes cannot
# both read the same debt and both take the last token. KEYS[1] is the bucket; the
# arguments are now, the interval and the capacity (quota x interval) in microseconds, and
# the cost: 1 to take a token, -1 to give one back. Returns {1, debt after} when allowed,
# {0, debt now} when refused. string.format('%d') writes the time with all its digits
# (Lua's own number-to-text keeps 14, and a time in microseconds has 16).
GCRA_SCRIPT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local paid_at = tonumber(redis.call('GET', KEYS[1]) or now)
local debt = math.max(paid_at - now, 0)
if cost > 0 and debt + interval > capacity then
  return {0, debt}
end
debt = debt + cost * interval
if debt <= 0 then
  redis.call('DEL', KEYS[1])
  return {1, 0}
end
redis.call('SET', KEYS[1], string.format('%d', now + debt), 'PX', math.ceil(debt / 1000))
return {1, debt}
"""


@dataclass(frozen=True)
class Policy:
    """A quota of requests per window: Policy("auth", 10, 60) is 10 per 60 s, one back every 6 s."""

    name: str
    quota: int
    window_seconds: int
    interval: int = field(init=False, repr=False)  # microseconds for one token to come back
    capacity: int = field(init=False, repr=False)  # the largest debt: `quota` tokens spent at once
    field_value: str = field(init=False, repr=False)  # for RateLimit-Policy: "auth";q=10;w=60

    def __post_init__(self):
        # Worked out once, not on every request. (A frozen dataclass sets its fields this way.)
        object.__setattr__(self, "interval", self.window_seconds * MICROSECONDS // self.quota)
        object.__setattr__(self, "capacity", self.interval * self.quota)
        object.__setattr__(self, "field_value", f'"{self.name}";q={self.quota};w={self.window_seconds}')


class Decision(NamedTuple):
    """The answer to one request: allowed or not, and where its caller now stands."""

    allowed: bool
    policy: Policy
    remaining: int      # requests left right now (the draft's r)
    reset_seconds: int  # until one more comes back (t), at least 1; a refusal's Retry-After


class QuotaExceeded(Exception):
    """A try refused by a policy; `decision` says which, and for how long (the 429)."""

    def __init__(self, decision):
        super().__init__(decision.policy.name)
        self.decision = decision


def parse_rate_limits(text):
    """RATE_LIMITS as {policy name: Policy}, or None when it is "off".

    Each policy named replaces its default and the others keep theirs; the empty text
    means the defaults. Raises ValueError saying what is wrong.

    >>> parse_rate_limits("auth=20/60")["auth"]
    Policy(name='auth', quota=20, window_seconds=60)
    >>> parse_rate_limits("")["login_failures"]
    Policy(name='login_failures', quota=5, window_seconds=900)
    >>> parse_rate_limits("off") is None
    True
    """
    if text.strip().lower() == "off":
        return None
    return _read_policies(text, dict(DEFAULT_POLICIES))


def parse_trusted_proxies(text):
    """TRUSTED_PROXIES (comma-separated) as a tuple of networks: "10.0.0.5" is 10.0.0.5/32,
    "10.0.0.0/8" a range. Raises ValueError for an entry that is neither, or too many.

    A CIDR with host bits set (10.0.0.5/8) is refused rather than widened: it is a typo for
    either the address or the range, and guessing the range would trust millions of hosts.
    """
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or a CIDR range such as 10.0.0.0/8") from None
    if len(networks) > MAX_TRUSTED_PROXIES:
        raise ValueError(f"at most {MAX_TRUSTED_PROXIES} addresses or ranges may be listed")
    return tuple(networks)


def client_address(peer, forwarded_for, trusted_proxies):
    """The address a request came from: the socket's peer, or, when the peer is a trusted
    proxy, the right-most address of X-Forwarded-For that is not a trusted proxy.

    Each proxy appends the address it got the request from, so the right-most entries are
    the ones trusted proxies wrote; whatever lies to their left, the client wrote itself,
    and could have written anything. `trusted_proxies` are ipaddress networks.

        peer 10.0.0.2 (trusted), X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.0.0.1
        -> 10.0.0.1 is trusted too, 203.0.113.7 is not: the client (6.6.6.6 may be a lie)

    An entry that is not an address stops the walk at the last hop believed so far.

    >>> proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    >>> client_address("10.0.0.2", "6.6.6.6, 203.0.113.7, 10.0.0.1", proxies)
    '203.0.113.7'
    >>> client_address("203.0.113.7", "6.6.6.6", proxies)
    '203.0.113.7'
    """
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    believed = peer
    for entry in reversed((forwarded_for or "").split(",")):
        address = _address(entry.strip())
        if address is None:
            break
        believed = str(address)
        if not any(address in network for network in trusted_proxies):
            break
    return believed


def address_caller(address):
    """The caller an address counts as: itself, or for IPv6, its /64.

    >>> address_caller("203.0.113.7")
    'ip:203.0.113.7'
    >>> address_caller("2001:db8:7:1:a:b:c:d")
    'ip:2001:db8:7:1::/64'
    """
    if ":" in address:
        parsed = _address(address)
        if isinstance(parsed, ipaddress.IPv6Address):
            address = str(ipaddress.ip_network(f"{parsed}/{IPV6_PREFIX_BITS}", strict=False))
        elif parsed is not None:  # an IPv4 address written as IPv6 (::ffff:203.0.113.7)
            address = str(parsed)
    return "ip:" + address


def headers(decision):
    """The draft's two fields for a decision, as (name, value) pairs."""
    policy = decision.policy
    return [("RateLimit-Policy", policy.field_value),
            ("RateLimit", f'"{policy.name}";r={decision.remaining};t={decision.reset_seconds}')]


class RateLimiter:
    """Buckets per (policy, caller): on Redis when a RedisLink is given, else in memory.

        limiter = RateLimiter(parse_rate_limits(""), clock=time.time)
        decision = limiter.take("auth", "ip:203.0.113.7")    # Decision(allowed=True, ..., remaining=9, ...)

    `clock` gives Unix time in seconds (settings.clock: the tests move it); several
    processes on Redis compare their times, so it must be the wall clock, kept in step by
    NTP. With no policies (RATE_LIMITS=off) only `login_try` is used, and does nothing.
    """

    def __init__(self, policies, *, redis=None, clock=time.time, logger=None, secret_key=b"",
                 max_buckets=MAX_BUCKETS):
        self.policies = policies
        self.redis = redis
        self.clock = clock
        self.logger = logger
        self.secret_key = secret_key  # for account keys: the email never leaves the process
        self.memory = MemoryBuckets(max_buckets)
        self._script = redis.client.register_script(GCRA_SCRIPT) if redis is not None else None
        self._shut_out = OrderedDict()  # caller -> until when (Unix seconds) it is refused outright
        self._shut_out_lock = threading.Lock()

    def take(self, policy_name, caller):
        """Take one token from the caller's bucket of that policy; the Decision."""
        policy = self.policies[policy_name]
        allowed, debt = self._spend(policy, caller, 1)
        return _decision(policy, allowed, debt)

    def give_back(self, policy_name, caller):
        """Return a token taken by `take`, as if that request had not counted."""
        self._spend(self.policies[policy_name], caller, -1)

    @contextlib.contextmanager
    def login_try(self, email):
        """One try at the account's password, from its login_failures bucket.

            with limiter.login_try(email) as attempt:    # raises QuotaExceeded when locked
                user = accounts.check_password(...)
                attempt.failed = user is None

        The try is taken before the `with` block runs, so a locked account costs no hash,
        and fifty logins at once can take no more tries than the bucket holds. It is given
        back unless the block marked it failed: a right password, a full hashing gate or a
        database error does not count as a failure.
        """
        attempt = LoginTry()
        if LOGIN_FAILURES not in self.policies:
            yield attempt
            return
        account = self.account_key(email)
        decision = self.take(LOGIN_FAILURES, account)
        if not decision.allowed:
            raise QuotaExceeded(decision)
        try:
            yield attempt
        finally:
            if not attempt.failed:
                self.give_back(LOGIN_FAILURES, account)
            elif decision.remaining == 0 and self.logger is not None:
                # The failure that spent the last try: one line per lock, for the operator.
                self.logger.warning("login locked", account=account, retry_after_seconds=decision.reset_seconds)

    def shut_out(self, caller):
        """The 429 Decision standing against `caller` (an address) for refused credentials,
        or None: then its credentials may be checked."""
        if BAD_CREDENTIALS not in self.policies:
            return None
        now = self.clock()
        with self._shut_out_lock:
            until = self._shut_out.get(caller)
            if until is None:
                return None
            if now >= until:
                del self._shut_out[caller]
                return None
        policy = self.policies[BAD_CREDENTIALS]
        return Decision(False, policy, 0, max(1, math.ceil(until - now)))

    def credentials_failed(self, caller):
        """A token or API key from `caller` (an address) was refused: take a try from its
        bad_credentials bucket. Returns the Decision; when it is a refusal, the caller is
        shut out of credential checks in this process until a try comes back."""
        if BAD_CREDENTIALS not in self.policies:
            return None
        decision = self.take(BAD_CREDENTIALS, caller)
        if not decision.allowed:
            with self._shut_out_lock:
                self._shut_out[caller] = self.clock() + decision.reset_seconds
                self._shut_out.move_to_end(caller)
                if len(self._shut_out) > MAX_SHUT_OUT:
                    self._shut_out.popitem(last=False)
            if self.logger is not None:  # one line each time an address is shut out, for the operator
                self.logger.warning("credentials shut out", client=caller, retry_after_seconds=decision.reset_seconds)
        return decision

    def account_key(self, email):
        """The account an email names, as a keyed hash: the bucket's name on Redis and in
        the log. Without the secret key nobody can tell which email it is, nor check a guess."""
        return "account:" + signing.mac(self.secret_key, ACCOUNT_PURPOSE, email.encode()).hex()[:32]

    def _spend(self, policy, caller, cost):
        now = int(self.clock() * MICROSECONDS)
        key = (policy.name, caller)
        if self.redis is None:
            return self.memory.spend(key, policy, now, cost)

        def on_redis(client):
            bucket = self.redis.key("ratelimit", policy.name, caller)
            allowed, debt = self._script(keys=[bucket], args=[now, policy.interval, policy.capacity, cost],
                                         client=client)
            return bool(allowed), int(debt)

        return self.redis.run(on_redis, fallback=lambda: self.memory.spend(key, policy, now, cost))


class LoginTry:
    """What the `with` block of RateLimiter.login_try says about its try."""

    __slots__ = ("failed",)

    def __init__(self):
        self.failed = False


class MemoryBuckets:
    """One process's buckets: {key: when its debt is paid}, at most `max_buckets` of them,
    the least recently used dropped first; one lock makes each spend atomic."""

    def __init__(self, max_buckets=MAX_BUCKETS):
        self.max_buckets = max_buckets
        self._paid_at = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._paid_at)

    def spend(self, key, policy, now, cost):
        """GCRA_SCRIPT's step, in memory: (allowed, debt after it; or debt now when refused)."""
        with self._lock:
            paid_at = self._paid_at.get(key, now)
            debt = max(paid_at - now, 0)
            if cost > 0 and debt + policy.interval > policy.capacity:
                self._paid_at.move_to_end(key)  # a caller being refused is not one long gone
                return False, debt
            debt += cost * policy.interval
            if debt <= 0:
                self._paid_at.pop(key, None)
                return True, 0
            self._paid_at[key] = now + debt
            self._paid_at.move_to_end(key)
            if len(self._paid_at) > self.max_buckets:
                self._paid_at.popitem(last=False)
            return True, debt


def _read_policies(text, policies):
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        name, equals, rate = part.partition("=")
        quota, slash, window = rate.partition("/")
        name = name.strip()
        if name not in POLICY_NAMES:
            raise ValueError(f"{name!r} is not a policy; the policies are {', '.join(POLICY_NAMES)}")
        if not (equals and slash and _is_whole(quota) and _is_whole(window)):
            raise ValueError(f"{part!r} is not NAME=QUOTA/SECONDS, such as auth=10/60")
        quota, window = int(quota), int(window)
        if not 1 <= window <= MAX_WINDOW_SECONDS:
            raise ValueError(f"{part!r}: the window must be 1 to {MAX_WINDOW_SECONDS} seconds")
        # At most one token a microsecond: the unit every time here is counted in.
        if not 1 <= quota <= window * MICROSECONDS:
            raise ValueError(f"{part!r}: the quota must be 1 to {MICROSECONDS:,} a second")
        policies[name] = Policy(name, quota, window)
    return policies


def _decision(policy, allowed, debt):
    """The Decision for a bucket's debt after an allowed request, or before a refused one."""
    if allowed:
        room = policy.capacity - debt
        remaining = room // policy.interval
        until_next = policy.interval - room % policy.interval
    else:
        remaining = 0
        until_next = debt + policy.interval - policy.capacity
    return Decision(allowed, policy, remaining, max(1, -(-until_next // MICROSECONDS)))  # rounded up


def _is_whole(text):
    text = text.strip()
    return text.isascii() and text.isdigit() and len(text) <= 12


def _address(text):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(peer, trusted_proxies):
    address = _address(peer)
    return address is not None and any(address in network for network in trusted_proxies)


# The shipped policies, read once; RATE_LIMITS names the ones it changes.
DEFAULT_POLICIES = _read_policies(DEFAULT_RATE_LIMITS, {})
