"""Tests for mailer.py: the order emails, built safely, written to the outbox or sent to a
real SMTP server (aiosmtpd), enqueued in the order's own transaction, and not at all when the
order rolls back."""

import dataclasses
import email
import email.policy
import shutil
import smtplib
import ssl
import subprocess
from email.utils import parsedate_to_datetime

import pytest
from conftest import SMTPRecorder, count_rows, free_port, json_headers, running_worker, unavailable, wait_for_jobs

import jobs
import mailer
import orders
from worker import JobContext

ORDER = {"id": 2, "user_id": 1, "status": "paid", "total_cents": 4400,
         "lines": [{"item_id": 31, "name": "Walnut Desk Tidy", "quantity": 2, "unit_price_cents": 2200}]}
SENDER = "orders@shop.example"


def build(order=ORDER, event="paid", recipient="ada@example.com"):
    return mailer.build_order_message(order, event, recipient=recipient, sender=SENDER,
                                      message_id=mailer.message_id(f"order-{order['id']}-{event}", 4, SENDER))


def parsed(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


# -- the message --------------------------------------------------------------------------------

def test_an_order_email_has_the_headers_of_a_well_formed_automatic_email():
    message = parsed(bytes(build()))
    assert message["From"] == SENDER and message["To"] == "ada@example.com"
    assert message["Subject"] == "Your order 2 is paid"
    assert message["Message-ID"] == "<order-2-paid.job-4@shop.example>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "text/plain" and message.get_content_charset() == "utf-8"
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    body = message.get_content()
    assert "Your payment for order 2 has arrived." in body
    assert "  2 x Walnut Desk Tidy" in body and body.splitlines()[-3].endswith("44.00")


@pytest.mark.parametrize("event, subject", [
    ("created", "Your order 2 is placed"), ("paid", "Your order 2 is paid"),
    ("shipped", "Your order 2 has shipped"), ("cancelled", "Your order 2 is cancelled"),
])
def test_each_event_has_its_subject(event, subject):
    assert build(event=event)["Subject"] == subject


@pytest.mark.parametrize("recipient", [
    "ada@example.com\r\nBcc: eve@example.com",
    "ada@example.com\nBcc: eve@example.com",
    "ada@example.com, eve@example.com",
    "not an address",
])
def test_an_address_cannot_add_a_header_or_a_recipient(recipient):
    with pytest.raises(ValueError):
        build(recipient=recipient)


def test_text_from_the_catalogue_stays_in_the_body():
    order = dict(ORDER, lines=[dict(ORDER["lines"][0], name="Teapot\r\nBcc: eve@example.com\r\n\r\nFree!")])
    raw = bytes(build(order))
    head = raw.split(b"\n\n", 1)[0]
    assert b"Bcc" not in head and b"eve@" not in head
    assert parsed(raw)["Bcc"] is None


def test_non_ascii_item_names_arrive_intact():
    order = dict(ORDER, lines=[dict(ORDER["lines"][0], name="Théière en fonte 鉄瓶")])
    assert "Théière en fonte 鉄瓶" in parsed(bytes(build(order))).get_content()


# -- delivery ---------------------------------------------------------------------------------

def test_without_smtp_the_email_is_an_eml_file_in_the_outbox_and_a_rerun_replaces_it(tmp_path):
    outbox = tmp_path / "outbox"
    assert mailer.write_to_outbox(build(), outbox, "order-2-paid.eml") == str(outbox / "order-2-paid.eml")
    assert parsed(outbox.joinpath("order-2-paid.eml").read_bytes())["Message-ID"] == "<order-2-paid.job-4@shop.example>"
    mailer.write_to_outbox(build(), outbox, "order-2-paid.eml")  # the job ran again
    assert [file.name for file in outbox.iterdir()] == ["order-2-paid.eml"]  # one file, no temporary left


def test_with_smtp_the_email_reaches_a_real_server(smtp_server):
    url, received = smtp_server
    mailer.send_smtp(build(), url)
    [message] = received.wait_for(1)
    assert received.envelopes == [(SENDER, ["ada@example.com"])]
    assert message["Message-ID"] == "<order-2-paid.job-4@shop.example>"
    assert "Walnut Desk Tidy" in message.get_content()


def test_a_password_is_never_sent_to_a_server_without_starttls(smtp_server):
    url, received = smtp_server
    with pytest.raises(smtplib.SMTPNotSupportedError):
        mailer.send_smtp(build(), url.replace("smtp://", "smtp://mailer:secret@"))
    assert received.messages == []


# -- enqueued with the order ------------------------------------------------------------------------

def email_jobs(database):
    with database.connection() as connection:
        rows = connection.fetch_all("SELECT payload, unique_key FROM jobs WHERE kind = 'email.order' ORDER BY id")
    return [row["unique_key"] for row in rows]


def test_placing_and_moving_an_order_enqueue_one_email_each(seeded, users):
    user = users.create()
    order = orders.place_order(seeded, user["id"], [{"item_id": 1, "quantity": 1}])
    orders.change_status(seeded, order["id"], "paid")
    orders.change_status(seeded, order["id"], "shipped")
    key = f"email.order:{order['id']}"
    assert email_jobs(seeded) == [f"{key}:created", f"{key}:paid", f"{key}:shipped"]


def test_a_refused_order_leaves_no_job(seeded, users):
    user = users.create()
    with pytest.raises(orders.OutOfStock):
        orders.place_order(seeded, user["id"], [{"item_id": 1, "quantity": 1000}])
    placed = orders.place_order(seeded, user["id"], [{"item_id": 2, "quantity": 1}])
    with pytest.raises(orders.InvalidTransition):
        orders.change_status(seeded, placed["id"], "shipped")  # not paid yet
    assert email_jobs(seeded) == [f"email.order:{placed['id']}:created"]


def test_an_order_rolled_back_after_its_email_was_enqueued_leaves_no_job(seeded, users):
    """before_commit runs after the order and its job are written; refusing rolls back both."""
    user = users.create()
    with pytest.raises(orders.LostClaim):
        orders.place_order(seeded, user["id"], [{"item_id": 1, "quantity": 1}],
                           before_commit=lambda connection, order: False)
    assert (count_rows(seeded, "orders"), count_rows(seeded, "jobs")) == (0, 0)


def test_the_job_handler_writes_the_owners_email(seeded, users, settings):
    user = users.create("ada@example.com")
    order = orders.place_order(seeded, user["id"], [{"item_id": 1, "quantity": 2}])
    [job] = jobs.claim(seeded, "worker-a", 1, lease_seconds=30)
    mailer.send_order_email(JobContext(settings, seeded, None), job)
    message = parsed((settings.mail_outbox_dir / f"order-{order['id']}-created.eml").read_bytes())
    assert message["To"] == "ada@example.com"
    assert message["Message-ID"] == f"<order-{order['id']}-created.job-{job.id}@localhost>"
    assert "2 x Handmade Bamboo Pen" in message.get_content()


def test_an_order_that_no_longer_exists_is_nothing_to_send(seeded, settings):
    job = jobs.Job(1, mailer.ORDER_EMAIL, {"order_id": 999, "event": "paid"}, 1, 10, None)
    mailer.send_order_email(JobContext(settings, seeded, None), job)
    assert not settings.mail_outbox_dir.exists()


# -- the whole way: an order over HTTP, a worker, the email --------------------------------------

def place_order_over_http(client, headers, lines):
    response = client.post("/v1/orders", json={"lines": lines}, headers=json_headers(headers))
    assert response.status in (201, 409), response
    return response


def test_an_order_placed_over_http_lands_in_the_outbox(client, alice, database, settings):
    _, headers = alice
    with running_worker(database, settings):
        order_id = place_order_over_http(client, headers, [{"item_id": 3, "quantity": 1}]).json()["id"]
        assert place_order_over_http(client, headers, [{"item_id": 3, "quantity": 1000}]).status == 409
        wait_for_jobs(database, "status = 'done'")
    assert [path.name for path in settings.mail_outbox_dir.iterdir()] == [f"order-{order_id}-created.eml"]
    assert count_rows(database, "jobs") == 1  # the refused order left none


def test_an_order_placed_over_http_reaches_the_smtp_server(client, alice, database, settings, smtp_server):
    url, received = smtp_server
    _, headers = alice
    with running_worker(database, dataclasses.replace(settings, smtp_url=url)):
        order_id = place_order_over_http(client, headers, [{"item_id": 3, "quantity": 1}]).json()["id"]
        [message] = received.wait_for(1)
    assert message["Subject"] == f"Your order {order_id} is placed"
    assert received.envelopes[0][1] == ["user1@example.com"]
    assert not settings.mail_outbox_dir.exists()


def test_with_a_user_name_the_client_starts_tls_checks_the_certificate_and_then_logs_in(tmp_path):
    """A server that accepts a login only over TLS (as a real submission port does)."""
    if shutil.which("openssl") is None:
        unavailable("openssl is needed to make the test server's certificate")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((session.ssl is not None, auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"p@ss:word")

    recorder, port = SMTPRecorder(), free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, tls_context=server_context,
                            require_starttls=True, authenticator=authenticator, auth_required=True)
    controller.start()
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        # The password is percent-encoded in the URL, as any URL's user information is.
        mailer.send_smtp(build(), f"smtp://mailer:p%40ss%3Aword@127.0.0.1:{port}", ssl_context=trusting)
        [message] = recorder.wait_for(1)
        with pytest.raises(ssl.SSLCertVerificationError):  # a certificate nobody vouches for: refused
            mailer.send_smtp(build(), f"smtp://mailer:p%40ss%3Aword@127.0.0.1:{port}")
    finally:
        controller.stop()
    assert logins == [(True, b"mailer", b"p@ss:word")]  # one login, after STARTTLS; none in clear
    assert message["Subject"] == "Your order 2 is paid"
