"""Tests for config.py: load_settings reads the environment once, checks it, and freezes it.

Every test passes its own environ dict; none reads os.environ. The development secret file
is redirected into the test's tmp_path, so the real var/ is never touched.
"""

import dataclasses
import ipaddress
import os
import stat
import threading
import time

import pytest

import config
import passwords
import ratelimit
from config import ConfigError, load_settings

SECRET_KEY = "a-secret-key-of-at-least-32-bytes-for-tests"
OLD_KEY = "an-older-key-still-verifying-32-bytes"
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 - a HOST value read back from the settings; nothing binds here


@pytest.fixture(autouse=True)
def dev_secret_file(tmp_path, monkeypatch):
    """Where the development key goes during a test: tmp_path/var/secret_key."""
    var_dir = tmp_path / "var"
    monkeypatch.setattr(config, "VAR_DIR", var_dir)
    monkeypatch.setattr(config, "DEV_SECRET_FILE", var_dir / "secret_key")
    return var_dir / "secret_key"


def settings_with(**environ):
    return load_settings({"SECRET_KEY": SECRET_KEY, **environ})


def refusal(**environ):
    """The ConfigError message for an environ that must be refused."""
    with pytest.raises(ConfigError) as refused:
        load_settings({"SECRET_KEY": SECRET_KEY, **environ})
    return str(refused.value)


# -- defaults ---------------------------------------------------------------------------------

def test_defaults():
    settings = load_settings({"SECRET_KEY": SECRET_KEY})
    assert settings.app_env == "development"
    assert settings.database_url == "sqlite:///var/app.db"
    assert settings.host == "127.0.0.1"
    assert settings.port == config.DEFAULT_PORT == 8000
    assert settings.threads is None  # the server picks by engine (server.SQLITE_THREADS, ...)
    assert settings.access_log is True
    assert settings.database_timeout_seconds == config.DEFAULT_DATABASE_TIMEOUT_SECONDS
    assert type(settings.database_timeout_seconds) is float
    assert settings.secret_keys == (SECRET_KEY.encode(),)
    assert settings.secret_key == SECRET_KEY.encode()


def test_empty_values_mean_the_default():
    settings = settings_with(DATABASE_URL="", PORT="", THREADS="", DATABASE_TIMEOUT_SECONDS="")
    assert (settings.database_url, settings.port, settings.threads) == ("sqlite:///var/app.db", 8000, None)


def test_values_from_the_environment():
    settings = settings_with(
        APP_ENV="test", DATABASE_URL="postgresql://shop@db:5432/shop", HOST=EVERY_INTERFACE, PORT="9000",
        THREADS="8", ACCESS_LOG="0", DATABASE_TIMEOUT_SECONDS="10",
    )
    assert settings.app_env == "test"
    assert settings.database_url == "postgresql://shop@db:5432/shop"
    assert (settings.host, settings.port, settings.threads) == (EVERY_INTERFACE, 9000, 8)
    assert settings.access_log is False
    assert settings.database_timeout_seconds == 10.0


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings_with().port = 1


# -- APP_ENV and the numbers ------------------------------------------------------------------

@pytest.mark.parametrize("app_env", ["development", "test", "production"])
def test_app_env_accepts_the_three_environments(app_env):
    assert settings_with(APP_ENV=app_env).app_env == app_env


@pytest.mark.parametrize("app_env", ["", "prod", "Production", "staging", "development "])
def test_app_env_refuses_anything_else(app_env):
    assert refusal(APP_ENV=app_env) == "APP_ENV must be one of development, test, production"


@pytest.mark.parametrize("name, value, expected", [
    ("PORT", "0", 0),
    ("PORT", "65535", 65535),
    ("THREADS", "1", 1),
    ("THREADS", "1024", 1024),
    ("DATABASE_TIMEOUT_SECONDS", "1", 1.0),
    ("DATABASE_TIMEOUT_SECONDS", "60", 60.0),
    ("PBKDF2_ITERATIONS", "1000", 1000),
    ("PBKDF2_ITERATIONS", "10000000", 10_000_000),
    ("PASSWORD_HASH_THREADS", "1", 1),
    ("PASSWORD_HASH_THREADS", "64", 64),
])
def test_numbers_accept_their_bounds(name, value, expected):
    field = {"PORT": "port", "THREADS": "threads", "DATABASE_TIMEOUT_SECONDS": "database_timeout_seconds",
             "PBKDF2_ITERATIONS": "pbkdf2_iterations", "PASSWORD_HASH_THREADS": "password_hash_threads"}[name]
    assert getattr(settings_with(**{name: value}), field) == expected


@pytest.mark.parametrize("name, value, message", [
    ("PORT", "-1", "PORT must be between 0 and 65535"),
    ("PORT", "65536", "PORT must be between 0 and 65535"),
    ("PORT", "http", "PORT must be a whole number"),
    ("PORT", "80.5", "PORT must be a whole number"),
    ("PORT", "9" * 5000, "PORT must be a whole number"),
    ("THREADS", "0", "THREADS must be between 1 and 1024"),
    ("THREADS", "1025", "THREADS must be between 1 and 1024"),
    ("THREADS", "many", "THREADS must be a whole number"),
    ("DATABASE_TIMEOUT_SECONDS", "0", "DATABASE_TIMEOUT_SECONDS must be between 1 and 60"),
    ("DATABASE_TIMEOUT_SECONDS", "61", "DATABASE_TIMEOUT_SECONDS must be between 1 and 60"),
    ("DATABASE_TIMEOUT_SECONDS", "2.5", "DATABASE_TIMEOUT_SECONDS must be a whole number"),
    ("DATABASE_TIMEOUT_SECONDS", "soon", "DATABASE_TIMEOUT_SECONDS must be a whole number"),
    ("PBKDF2_ITERATIONS", "999", "PBKDF2_ITERATIONS must be between 1000 and 10000000"),
    ("PBKDF2_ITERATIONS", "10000001", "PBKDF2_ITERATIONS must be between 1000 and 10000000"),
    ("PBKDF2_ITERATIONS", "6e5", "PBKDF2_ITERATIONS must be a whole number"),
    ("PASSWORD_HASH_THREADS", "0", "PASSWORD_HASH_THREADS must be between 1 and 64"),
    ("PASSWORD_HASH_THREADS", "65", "PASSWORD_HASH_THREADS must be between 1 and 64"),
    ("PASSWORD_HASH_THREADS", "two", "PASSWORD_HASH_THREADS must be a whole number"),
], ids=lambda value: value[:12] if isinstance(value, str) else None)
def test_numbers_out_of_bounds_or_not_numbers_name_the_variable(name, value, message):
    assert refusal(**{name: value}) == message


def test_the_default_pbkdf2_iterations_follow_owasp():
    assert config.DEFAULT_PBKDF2_ITERATIONS == 600_000
    assert settings_with().pbkdf2_iterations == 600_000


def test_the_pbkdf2_ceiling_is_the_one_passwords_enforces():
    # One number in one place: a setting passwords.py would refuse to hash with is refused at start.
    ceiling = passwords.MAX_PBKDF2_ITERATIONS
    assert settings_with(PBKDF2_ITERATIONS=str(ceiling)).pbkdf2_iterations == ceiling
    assert refusal(PBKDF2_ITERATIONS=str(ceiling + 1)) == f"PBKDF2_ITERATIONS must be between 1000 and {ceiling}"
    with pytest.raises(ValueError):
        passwords.hash_password("a plum for every tuesday", ceiling + 1)


def test_password_hashing_runs_one_hash_per_core_by_default():
    # The default is passwords.py's (the number of cores, at most 64): one number in one place.
    assert settings_with().password_hash_threads == passwords.DEFAULT_HASH_THREADS
    assert settings_with(PASSWORD_HASH_THREADS="").password_hash_threads == passwords.DEFAULT_HASH_THREADS


@pytest.mark.parametrize("access_log, enabled", [("0", False), ("1", True), ("", True)])
def test_access_log_is_turned_off_only_by_zero(access_log, enabled):
    assert settings_with(ACCESS_LOG=access_log).access_log is enabled


# -- secret keys ------------------------------------------------------------------------------

SHORT_KEY_MESSAGE = "SECRET_KEY and its fallbacks must be at least 32 bytes"


@pytest.mark.parametrize("environ", [
    {"SECRET_KEY": "short-secret-key-31-bytes-long!"},
    {"SECRET_KEY": "é" * 15 + "a"},  # 16 characters, 31 bytes: the rule counts bytes
    {"SECRET_KEY": SECRET_KEY, "SECRET_KEY_FALLBACKS": "short-fallback-key"},
    {"SECRET_KEY": SECRET_KEY, "SECRET_KEY_FALLBACKS": f"{OLD_KEY},short-fallback-key"},
], ids=["short", "short-in-bytes", "short-fallback", "second-fallback-short"])
def test_a_short_key_is_refused_without_echoing_it(environ):
    with pytest.raises(ConfigError) as refused:
        load_settings(environ)
    assert str(refused.value) == SHORT_KEY_MESSAGE
    keys = [environ["SECRET_KEY"], *environ.get("SECRET_KEY_FALLBACKS", "").split(",")]
    assert not any(key[:8] in str(refused.value) for key in keys if key)


def test_a_key_of_32_bytes_is_enough():
    assert load_settings({"SECRET_KEY": "é" * 16}).secret_key == ("é" * 16).encode()


@pytest.mark.parametrize("secret_key", [None, ""])
def test_production_requires_a_secret_key(dev_secret_file, secret_key):
    environ = {"APP_ENV": "production"} if secret_key is None else {"APP_ENV": "production", "SECRET_KEY": ""}
    with pytest.raises(ConfigError) as refused:
        load_settings(environ)
    assert str(refused.value) == "SECRET_KEY is required when APP_ENV=production"
    assert not dev_secret_file.exists()


@pytest.mark.parametrize("fallbacks, expected", [
    ("", (SECRET_KEY,)),
    (OLD_KEY, (SECRET_KEY, OLD_KEY)),
    (f"{OLD_KEY},{'z' * 40}", (SECRET_KEY, OLD_KEY, "z" * 40)),
    (f",{OLD_KEY},,", (SECRET_KEY, OLD_KEY)),
])
def test_fallback_keys_follow_the_signing_key(fallbacks, expected):
    settings = settings_with(SECRET_KEY_FALLBACKS=fallbacks)
    assert settings.secret_keys == tuple(key.encode() for key in expected)
    assert settings.secret_key == SECRET_KEY.encode()


# -- the development key ----------------------------------------------------------------------

def test_development_key_is_generated_once_and_reused(dev_secret_file):
    first = load_settings({"APP_ENV": "development"})
    second = load_settings({"APP_ENV": "test"})
    assert first.secret_key == second.secret_key == dev_secret_file.read_bytes()
    assert len(first.secret_key) >= config.MIN_SECRET_KEY_BYTES
    assert stat.S_IMODE(dev_secret_file.stat().st_mode) == 0o600
    assert sorted(path.name for path in dev_secret_file.parent.iterdir()) == ["secret_key"]


def test_an_existing_development_key_is_read_without_its_newline(dev_secret_file):
    dev_secret_file.parent.mkdir()
    dev_secret_file.write_text(SECRET_KEY + "\n")
    assert load_settings({}).secret_key == SECRET_KEY.encode()


def test_a_configured_key_does_not_create_the_development_file(dev_secret_file):
    settings_with()
    assert not dev_secret_file.exists()


def generate_at_once(thread_count):
    """Load settings from `thread_count` threads released together; (keys, errors)."""
    barrier = threading.Barrier(thread_count)
    keys, errors = [], []

    def load():
        barrier.wait()
        try:
            keys.append(load_settings({}).secret_key)
        except Exception as error:  # every failure is the finding
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return keys, errors


def test_concurrent_generation_yields_one_key(dev_secret_file, monkeypatch):
    thread_count = 8
    at_link = threading.Barrier(thread_count, timeout=1)
    real_link = os.link

    def link_together(source, target):
        # Hold each thread at link() until all have written their temporary file: the
        # interleaving that a busy machine produces now and then, made certain.
        try:
            at_link.wait()
        except threading.BrokenBarrierError:
            pass  # a version that serialises the threads never gathers them all here
        real_link(source, target)

    monkeypatch.setattr(config.os, "link", link_together)
    keys, errors = generate_at_once(thread_count)
    assert errors == []
    assert len(keys) == thread_count
    assert set(keys) == {dev_secret_file.read_bytes()}


# -- refresh-token and session lifetimes, and the test clock ----------------------------------

def test_lifetime_defaults():
    settings = settings_with()
    assert settings.refresh_reuse_seconds == config.DEFAULT_REFRESH_REUSE_SECONDS == 10
    assert settings.refresh_family_max_seconds == config.DEFAULT_REFRESH_FAMILY_MAX_SECONDS == 90 * 24 * 3600
    assert settings.session_ttl_seconds == config.DEFAULT_SESSION_TTL_SECONDS == 7 * 24 * 3600
    assert settings.session_idle_seconds == config.DEFAULT_SESSION_IDLE_SECONDS == 30 * 60
    assert settings.clock is time.time


@pytest.mark.parametrize("name, value, field", [
    ("REFRESH_REUSE_SECONDS", "0", "refresh_reuse_seconds"),
    ("REFRESH_REUSE_SECONDS", "60", "refresh_reuse_seconds"),
    ("REFRESH_FAMILY_MAX_SECONDS", "3600", "refresh_family_max_seconds"),
    ("REFRESH_FAMILY_MAX_SECONDS", str(365 * 24 * 3600), "refresh_family_max_seconds"),
    ("SESSION_TTL_SECONDS", str(90 * 24 * 3600), "session_ttl_seconds"),
    ("SESSION_IDLE_SECONDS", "120", "session_idle_seconds"),
])
def test_lifetimes_accept_their_bounds(name, value, field):
    assert getattr(settings_with(**{name: value}), field) == int(value)


@pytest.mark.parametrize("environ, message", [
    ({"REFRESH_REUSE_SECONDS": "-1"}, "REFRESH_REUSE_SECONDS must be between 0 and 60"),
    ({"REFRESH_REUSE_SECONDS": "61"}, "REFRESH_REUSE_SECONDS must be between 0 and 60"),
    ({"REFRESH_REUSE_SECONDS": "2.5"}, "REFRESH_REUSE_SECONDS must be a whole number"),
    ({"REFRESH_FAMILY_MAX_SECONDS": "3599"}, "REFRESH_FAMILY_MAX_SECONDS must be between 3600 and 31536000"),
    ({"REFRESH_FAMILY_MAX_SECONDS": "31536001"}, "REFRESH_FAMILY_MAX_SECONDS must be between 3600 and 31536000"),
    ({"SESSION_TTL_SECONDS": "119"}, "SESSION_TTL_SECONDS must be between 120 and 7776000"),
    ({"SESSION_TTL_SECONDS": "7776001"}, "SESSION_TTL_SECONDS must be between 120 and 7776000"),
    ({"SESSION_IDLE_SECONDS": "119"}, "SESSION_IDLE_SECONDS must be between 120 and 604800"),
    # An idle timeout longer than the absolute one would never apply.
    ({"SESSION_TTL_SECONDS": "3600", "SESSION_IDLE_SECONDS": "3601"},
     "SESSION_IDLE_SECONDS must be between 120 and 3600"),
    ({"APP_ENV": "test", "TEST_CLOCK_OFFSET_SECONDS": "soon"}, "TEST_CLOCK_OFFSET_SECONDS must be a whole number"),
])
def test_lifetimes_out_of_bounds_name_the_variable(environ, message):
    assert refusal(**environ) == message


def test_a_short_absolute_session_lifetime_shortens_the_default_idle_one():
    settings = settings_with(SESSION_TTL_SECONDS="600")
    assert (settings.session_ttl_seconds, settings.session_idle_seconds) == (600, 600)


def test_the_test_clock_moves_only_when_told():
    settings = settings_with(APP_ENV="test", TEST_CLOCK_OFFSET_SECONDS="3600")
    assert isinstance(settings.clock, config.MovableClock)
    assert settings.clock() == pytest.approx(time.time() + 3600, abs=5)
    settings.clock.advance(-7200)
    assert settings.clock() == pytest.approx(time.time() - 3600, abs=5)


@pytest.mark.parametrize("app_env", ["production", "development"])
def test_the_test_clock_is_refused_outside_tests(app_env):
    refused = refusal(APP_ENV=app_env, TEST_CLOCK_OFFSET_SECONDS="0")
    assert refused == "TEST_CLOCK_OFFSET_SECONDS is for APP_ENV=test only"


def test_no_copy_of_production_settings_can_carry_a_test_clock():
    production = settings_with(APP_ENV="production")
    with pytest.raises(ConfigError, match="a test clock cannot run with APP_ENV=production"):
        dataclasses.replace(production, clock=config.MovableClock(0))
    testing = settings_with(APP_ENV="test", TEST_CLOCK_OFFSET_SECONDS="0")
    with pytest.raises(ConfigError, match="a test clock cannot run with APP_ENV=production"):
        dataclasses.replace(testing, app_env="production")


# -- CORS_ORIGINS ---------------------------------------------------------------------------

def test_cors_origins_default_to_none():
    assert settings_with().cors_origins == ()
    assert settings_with(CORS_ORIGINS="").cors_origins == ()
    assert settings_with(CORS_ORIGINS=" , ").cors_origins == ()


def test_cors_origins_are_read_in_order_each_once():
    settings = settings_with(CORS_ORIGINS=" https://shop.example, http://localhost:5173,,https://shop.example")
    assert settings.cors_origins == ("https://shop.example", "http://localhost:5173")


@pytest.mark.parametrize("origin", [
    "https://shop.example",
    "http://localhost:5173",
    "http://127.0.0.1:8080",
    "https://[::1]:8443",
    "https://xn--bcher-kva.example",   # an internationalised name, as browsers send it
    "https://shop.example:65535",
])
def test_cors_origins_accept_origins_as_browsers_send_them(origin):
    assert settings_with(CORS_ORIGINS=origin).cors_origins == (origin,)


NOT_AN_ORIGIN = ("is not an origin as browsers send it: scheme://host[:port] (http or https), lowercase,"
                 " with no path, not even a trailing /")


@pytest.mark.parametrize("origin, reason", [
    ("null", "is never allowed: sandboxed frames and local files send Origin: null, and any page can be one"),
    ("*", "is a wildcard: list each origin exactly (credentials are never allowed with *)"),
    ("https://*.shop.example", "is a wildcard: list each origin exactly (credentials are never allowed with *)"),
    ("https://shop.example/", NOT_AN_ORIGIN),
    ("https://shop.example/app", NOT_AN_ORIGIN),
    ("https://shop.example?x=1", NOT_AN_ORIGIN),
    ("https://shop.example#top", NOT_AN_ORIGIN),
    ("https://user@shop.example", NOT_AN_ORIGIN),
    ("HTTPS://shop.example", NOT_AN_ORIGIN),
    ("https://Shop.example", NOT_AN_ORIGIN),
    ("ftp://shop.example", NOT_AN_ORIGIN),
    ("shop.example", NOT_AN_ORIGIN),
    ("https://", NOT_AN_ORIGIN),
    ("https://shop.example:0", NOT_AN_ORIGIN),
    ("https://shop.example:080", NOT_AN_ORIGIN),
    ("https://shop example", NOT_AN_ORIGIN),
    ("https://shop.example:443", "names the default port: browsers send it without :443"),
    ("http://shop.example:80", "names the default port: browsers send it without :80"),
    ("https://shop.example:65536", "has a port outside 1-65535"),
])
def test_cors_origins_refuse_what_no_browser_sends_or_everyone_could(origin, reason):
    assert refusal(CORS_ORIGINS=f"https://fine.example,{origin}") == f"CORS_ORIGINS: {origin!r} {reason}"


# -- RATE_LIMITS and TRUSTED_PROXIES ----------------------------------------------------------

def test_rate_limits_default_to_the_shipped_quotas_and_off_turns_them_off():
    assert {name: (policy.quota, policy.window_seconds) for name, policy in settings_with().rate_limits.items()} == {
        "auth": (10, 60), "write": (60, 60), "default": (300, 60), "login_failures": (5, 900),
        "bad_credentials": (30, 60)}
    assert settings_with(RATE_LIMITS=" OFF ").rate_limits is None


def test_rate_limits_replace_only_the_policies_they_name():
    rate_limits = settings_with(RATE_LIMITS=" default=600/60 , login_failures=3/600,").rate_limits
    assert rate_limits["default"] == ratelimit.Policy("default", 600, 60)
    assert rate_limits["login_failures"] == ratelimit.Policy("login_failures", 3, 600)
    assert rate_limits["auth"] == ratelimit.Policy("auth", 10, 60)


POLICIES = "the policies are auth, write, default, login_failures, bad_credentials"


@pytest.mark.parametrize("value, message", [
    ("reads=10/60", f"'reads' is not a policy; {POLICIES}"),
    ("auth=10", "'auth=10' is not NAME=QUOTA/SECONDS, such as auth=10/60"),
    ("auth:10/60", f"'auth:10/60' is not a policy; {POLICIES}"),
    ("auth=ten/60", "'auth=ten/60' is not NAME=QUOTA/SECONDS, such as auth=10/60"),
    ("auth=-1/60", "'auth=-1/60' is not NAME=QUOTA/SECONDS, such as auth=10/60"),
    ("auth=0/60", "'auth=0/60': the quota must be 1 to 1,000,000 a second"),
    ("auth=2000001/2", "'auth=2000001/2': the quota must be 1 to 1,000,000 a second"),
    ("auth=10/0", "'auth=10/0': the window must be 1 to 86400 seconds"),
    ("auth=10/86401", "'auth=10/86401': the window must be 1 to 86400 seconds"),
])
def test_rate_limits_refuse_what_they_cannot_read(value, message):
    assert refusal(RATE_LIMITS=value) == f"RATE_LIMITS: {message}"


def test_trusted_proxies_are_addresses_and_ranges():
    assert settings_with().trusted_proxies == ()
    assert settings_with(TRUSTED_PROXIES=" 127.0.0.1, 10.0.0.0/8,,::1 ").trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize("value", ["10.0.0.5/8", "proxy.internal", "10.0.0.0/33", "*"])
def test_trusted_proxies_refuse_what_is_not_an_address_or_a_range(value):
    assert refusal(TRUSTED_PROXIES=value) == (
        f"TRUSTED_PROXIES: {value!r} is not an address or a CIDR range such as 10.0.0.0/8")


def test_trusted_proxies_are_bounded():
    many = ",".join(f"10.0.{n // 256}.{n % 256}" for n in range(ratelimit.MAX_TRUSTED_PROXIES + 1))
    assert refusal(TRUSTED_PROXIES=many) == "TRUSTED_PROXIES: at most 100 addresses or ranges may be listed"

# -- the job queue and its emails ---------------------------------------------------------------

def test_job_and_mail_defaults():
    settings = settings_with()
    assert settings.worker_in_process is True
    assert (settings.worker_threads, settings.worker_poll_seconds, settings.job_lease_seconds) == (4, 1.0, 30)
    assert (settings.job_backoff_base_seconds, settings.job_backoff_cap_seconds) == (5.0, 3600.0)
    assert settings.job_retention_seconds == 7 * 24 * 3600
    assert (settings.smtp_url, settings.mail_from) == (None, "shop@localhost")
    assert settings.mail_outbox_dir == config.PROJECT_DIR / "var" / "outbox"


def test_job_and_mail_values_from_the_environment(tmp_path):
    settings = settings_with(WORKER="off", WORKER_THREADS="8", WORKER_POLL_SECONDS="0.1", JOB_LEASE_SECONDS="2",
                             JOB_BACKOFF_BASE_SECONDS="0.5", JOB_BACKOFF_CAP_SECONDS="10", JOB_RETENTION_SECONDS="60",
                             SMTP_URL="smtp://mailer:secret@mail.example:587", MAIL_FROM="orders@shop.example",
                             MAIL_OUTBOX_DIR=str(tmp_path))
    assert settings.worker_in_process is False
    assert (settings.worker_threads, settings.worker_poll_seconds, settings.job_lease_seconds) == (8, 0.1, 2)
    assert (settings.job_backoff_base_seconds, settings.job_backoff_cap_seconds) == (0.5, 10.0)
    assert settings.job_retention_seconds == 60
    assert settings.smtp_url == "smtp://mailer:secret@mail.example:587"
    assert (settings.mail_from, settings.mail_outbox_dir) == ("orders@shop.example", tmp_path)


@pytest.mark.parametrize("environ, message", [
    ({"WORKER_THREADS": "0"}, "WORKER_THREADS must be between 1 and 64"),
    ({"WORKER_POLL_SECONDS": "0.01"}, "WORKER_POLL_SECONDS must be between 0.05 and 60"),
    ({"WORKER_POLL_SECONDS": "nan"}, "WORKER_POLL_SECONDS must be between 0.05 and 60"),
    ({"WORKER_POLL_SECONDS": "soon"}, "WORKER_POLL_SECONDS must be a number of seconds"),
    ({"JOB_LEASE_SECONDS": "1"}, "JOB_LEASE_SECONDS must be between 2 and 3600"),
    ({"JOB_BACKOFF_BASE_SECONDS": "10", "JOB_BACKOFF_CAP_SECONDS": "5"},
     "JOB_BACKOFF_CAP_SECONDS must be between 10 and 604800"),
    ({"JOB_RETENTION_SECONDS": "59"}, "JOB_RETENTION_SECONDS must be between 60 and 31536000"),
    ({"SMTP_URL": "http://mail.example"}, "SMTP_URL must look like smtp://host:25 or smtp://user:password@host:587"),
    ({"SMTP_URL": "smtp://"}, "SMTP_URL must look like smtp://host:25 or smtp://user:password@host:587"),
    ({"SMTP_URL": "smtp://mail.example:99999"}, "SMTP_URL must look like smtp://host:25 or smtp://user:password@host:587"),
    ({"SMTP_URL": "smtp://mailer@mail.example"}, "SMTP_URL must give both a user name and a password, or neither"),
    ({"MAIL_FROM": "shop"}, "MAIL_FROM must be a plain email address, such as shop@example.com"),
    ({"MAIL_FROM": "Shop <shop@example.com>"}, "MAIL_FROM must be a plain email address, such as shop@example.com"),
    ({"MAIL_FROM": "shop@example.com\r\nBcc: everyone@example.com"},
     "MAIL_FROM must be a plain email address, such as shop@example.com"),
])
def test_job_and_mail_settings_are_checked(environ, message):
    assert refusal(**environ) == message


def test_the_default_cap_is_never_below_the_base():
    assert settings_with(JOB_BACKOFF_BASE_SECONDS="3600").job_backoff_cap_seconds == 3600.0
    assert settings_with(JOB_BACKOFF_BASE_SECONDS="3599").job_backoff_cap_seconds == 3600.0


# -- TLS ----------------------------------------------------------------------------------------

def test_tls_is_off_by_default_and_takes_both_files(tmp_path):
    assert (settings_with().tls_cert_file, settings_with().tls_key_file) == (None, None)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("certificate")
    key.write_text("key")
    settings = settings_with(TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key))
    assert (settings.tls_cert_file, settings.tls_key_file) == (cert, key)


@pytest.mark.parametrize("given", ["TLS_CERT_FILE", "TLS_KEY_FILE"])
def test_one_tls_file_without_the_other_is_refused(tmp_path, given):
    (tmp_path / "file.pem").write_text("pem")
    assert refusal(**{given: str(tmp_path / "file.pem")}) == (
        "TLS_CERT_FILE and TLS_KEY_FILE go together: set both to serve HTTPS, or neither")


def test_a_tls_file_that_cannot_be_read_is_named(tmp_path):
    (tmp_path / "cert.pem").write_text("pem")
    assert refusal(TLS_CERT_FILE=str(tmp_path / "cert.pem"), TLS_KEY_FILE=str(tmp_path / "missing.pem")) == (
        f"TLS_KEY_FILE: cannot read {tmp_path / 'missing.pem'}: No such file or directory")
    assert refusal(TLS_CERT_FILE=str(tmp_path), TLS_KEY_FILE=str(tmp_path / "cert.pem")) == (
        f"TLS_CERT_FILE: cannot read {tmp_path}: Is a directory")


# -- webhooks ---------------------------------------------------------------------------------

def test_webhooks_go_only_to_public_addresses_by_default():
    settings = settings_with()
    assert (settings.webhook_allow_private, settings.webhook_timeout_seconds) == (False, 5.0)
    assert settings_with(WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_TIMEOUT_SECONDS="0.5").webhook_allow_private is True


def test_private_webhook_addresses_are_refused_in_production():
    assert refusal(APP_ENV="production", WEBHOOK_ALLOW_PRIVATE="1") == (
        "WEBHOOK_ALLOW_PRIVATE is for tests and development; it is refused with APP_ENV=production")
    assert settings_with(APP_ENV="production", WEBHOOK_ALLOW_PRIVATE="0").webhook_allow_private is False


@pytest.mark.parametrize("value, message", [
    ("0", "WEBHOOK_TIMEOUT_SECONDS must be between 0.1 and 30"),
    ("31", "WEBHOOK_TIMEOUT_SECONDS must be between 0.1 and 30"),
    ("nan", "WEBHOOK_TIMEOUT_SECONDS must be between 0.1 and 30"),
    ("soon", "WEBHOOK_TIMEOUT_SECONDS must be a number of seconds"),
])
def test_the_webhook_timeout_is_bounded(value, message):
    assert refusal(WEBHOOK_TIMEOUT_SECONDS=value) == message
