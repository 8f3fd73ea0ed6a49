"""The shop's emails: an order's confirmation and each change of its status, sent by a job.

Placing an order (or moving it) enqueues an "email.order" job in the order's own transaction
(orders.py); a worker runs `send_order_email`, which builds the message and delivers it:

    SMTP_URL unset      var/outbox/order-2-paid.eml, a file any mail program opens
    smtp://host:25      plain SMTP, e.g. a relay on the same machine or network
    smtp://u:p@host:587 STARTTLS (the certificate checked), then login: never a password in clear
    smtps://u:p@host:465  TLS from the first byte, then login

    From: shop@localhost
    To: ada@example.com
    Subject: Your order 2 is paid
    Message-ID: <order-2-paid.job-4@localhost>
    Auto-Submitted: auto-generated
    Content-Type: text/plain; charset="utf-8"

Messages are built with `email.message.EmailMessage` under the default policy, which refuses
a line break in any header value: data that came from a user (the address, item names) can
never add a header of its own (header injection), and item names appear only in the body.

Idempotent, as every job must be (a worker may die after sending and before recording it):
the job's unique key is the order and the event, so each is enqueued once; a rerun writes
the same outbox file again, or sends a message with the same Message-ID, which mail
programs recognise as a copy of the one before (RFC 5322 §3.6.4).
"""

import os
import smtplib
import ssl
import threading
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit

import jobs
import sql_orders
import sql_users

ORDER_EMAIL = "email.order"  # the job kind
# Ten attempts: with the default backoff (base 5 s, cap 1 h), nine waits of up to 5, 10, ...,
# 1,280 s between them, about 43 minutes at most: time for a mail server that is down to come back.
ORDER_EMAIL_ATTEMPTS = 10
SMTP_TIMEOUT_SECONDS = 10  # each connect and each reply; well inside the job's lease
SUBJECTS = {
    "created": "Your order {order_id} is placed",
    "paid": "Your order {order_id} is paid",
    "shipped": "Your order {order_id} has shipped",
    "cancelled": "Your order {order_id} is cancelled",
}
OPENINGS = {
    "created": "Thank you: your order {order_id} is placed.\nWe will write again when it is paid and shipped.",
    "paid": "Your payment for order {order_id} has arrived. We are packing it.",
    "shipped": "Your order {order_id} is on its way.",
    "cancelled": "Your order {order_id} is cancelled. Nothing more will be charged or sent.",
}


def enqueue_order_email(connection, order_id, event):
    """Enqueue the email for `event` of an order (created, paid, shipped, cancelled) in the
    caller's transaction; once per order and event (the unique key)."""
    return jobs.enqueue(connection, ORDER_EMAIL, {"order_id": order_id, "event": event},
                        unique_key=f"{ORDER_EMAIL}:{order_id}:{event}", max_attempts=ORDER_EMAIL_ATTEMPTS)


def send_order_email(context, job):
    """The "email.order" job: the order's email for the event in the payload, to its owner.

    The order and the address are read now, not when the job was enqueued: an address the
    customer changed meanwhile gets the email. An order that no longer exists is nothing to
    tell anyone about; the job is done.
    """
    order_id, event = job.payload["order_id"], job.payload["event"]
    with context.database.connection() as connection:
        order = sql_orders.get_order(connection, order_id)
        if order is None:
            return
        order["lines"] = sql_orders.lines_of_orders(connection, [order_id])
        owner = sql_users.get_user(connection, order["user_id"])
    if owner is None:
        return
    sender = context.settings.mail_from
    message = build_order_message(order, event, recipient=owner["email"], sender=sender,
                                  message_id=message_id(f"order-{order_id}-{event}", job.id, sender))
    deliver(message, context.settings, file_name=f"order-{order_id}-{event}.eml")


def build_order_message(order, event, *, recipient, sender, message_id, date=None):
    """The plain-text email for `event` of `order` (with its lines). Raises ValueError when
    a header value would hold a line break (header injection) or an address is not one."""
    message = EmailMessage()  # the default policy: headers are checked as they are set
    message["From"] = Address(addr_spec=sender)
    message["To"] = Address(addr_spec=recipient)
    message["Subject"] = SUBJECTS[event].format(order_id=order["id"])
    message["Date"] = format_datetime(date or _now())
    message["Message-ID"] = message_id
    # RFC 3834: sent by a program, so that autoresponders ("I am on holiday") do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(order_text(order, event))
    return message


def order_text(order, event):
    """The body: what happened, the lines, the total. Amounts are cents, shown as units.

    >>> print(order_text({"id": 2, "total_cents": 4400, "lines": [
    ...     {"name": "Walnut Desk Tidy", "quantity": 2, "unit_price_cents": 2200}]}, "paid"))
    Your payment for order 2 has arrived. We are packing it.
    <BLANKLINE>
      2 x Walnut Desk Tidy                           22.00
    Total                                            44.00
    <BLANKLINE>
    The shop
    """
    lines = [OPENINGS[event].format(order_id=order["id"]), ""]
    for line in order["lines"]:
        lines.append(f"{line['quantity']:>3} x {line['name'][:40]:<40}{_money(line['unit_price_cents']):>8}")
    lines += [f"{'Total':<46}{_money(order['total_cents']):>8}", "", "The shop"]
    return "\n".join(lines)


def message_id(name, job_id, sender):
    """A Message-ID made from the job, so that a resent email carries the same one.

    >>> message_id("order-2-paid", 4, "shop@example.com")
    '<order-2-paid.job-4@example.com>'
    """
    return f"<{name}.job-{job_id}@{Address(addr_spec=sender).domain}>"


def deliver(message, settings, *, file_name):
    """Send `message` through SMTP_URL, or, without one, write it as `file_name` in the
    outbox. Raises OSError or smtplib.SMTPException when it could not be delivered."""
    if settings.smtp_url:
        send_smtp(message, settings.smtp_url)
    else:
        write_to_outbox(message, settings.mail_outbox_dir, file_name)


def send_smtp(message, smtp_url, *, ssl_context=None):
    """Send through the server SMTP_URL names (see the module docstring for the three forms).
    `ssl_context` is for tests, whose server has a certificate of their own making."""
    parts = urlsplit(smtp_url)
    context = ssl_context or ssl.create_default_context()  # checks the certificate and the host name
    if parts.scheme == "smtps":
        client = smtplib.SMTP_SSL(parts.hostname, parts.port or 465, timeout=SMTP_TIMEOUT_SECONDS, context=context)
    else:
        client = smtplib.SMTP(parts.hostname, parts.port or 25, timeout=SMTP_TIMEOUT_SECONDS)
    with client:
        if parts.username is not None:
            if parts.scheme == "smtp":
                client.starttls(context=context)  # raises unless the server offers STARTTLS
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)


def write_to_outbox(message, outbox_dir, file_name):
    """Write the message as an .eml file: to a temporary name first, then renamed, so that a
    reader never sees half a message and a rerun replaces the file whole."""
    os.makedirs(outbox_dir, exist_ok=True)
    path = os.path.join(outbox_dir, file_name)
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temporary, "wb") as eml:
        eml.write(bytes(message))
    os.replace(temporary, path)
    return path


def _money(cents):
    return f"{cents // 100}.{cents % 100:02d}"


def _now():
    return datetime.now(UTC)
