"""Demo data: `python server.py seed --items N` fills the catalogue with N believable items.

The items come from a seeded random generator, so every run makes the same catalogue:
a README example that shows item 1 shows the same item on every machine.

    >>> demo_items(2)[0]["name"]
    'Handmade Bamboo Pen'
"""

import random

import db
import sql_items

DEFAULT_SEED_ITEMS = 30
MAX_SEED_ITEMS = 1_000_000
BATCH_SIZE = 1000
RANDOM_SEED = 2026

ADJECTIVES = ["Sturdy", "Handmade", "Classic", "Tiny", "Organic", "Vintage", "Bright", "Quiet",
              "Smart", "Cosy", "Rustic", "Modern", "Golden", "Recycled", "Travel"]
MATERIALS = ["Linen", "Oak", "Ceramic", "Copper", "Wool", "Bamboo", "Glass", "Leather",
             "Cotton", "Steel", "Walnut", "Stone"]
THINGS = ["Apron", "Mug", "Teapot", "Notebook", "Lamp", "Backpack", "Bowl", "Scarf", "Pen",
          "Candle", "Blanket", "Clock", "Kettle", "Tray", "Wallet"]


def demo_items(count):
    """`count` item dicts (name, description, price_cents, stock), the same on every run."""
    generator = random.Random(RANDOM_SEED)  # noqa: S311 - demo data, the same on every run; no secret
    items = []
    for number in range(1, count + 1):
        name = f"{generator.choice(ADJECTIVES)} {generator.choice(MATERIALS)} {generator.choice(THINGS)}"
        items.append({
            "name": name,
            "description": f"Demo item number {number}: a {name.lower()}.",
            "price_cents": generator.randrange(99, 20_000),
            # About one item in ten is sold out, so in_stock=false has something to show.
            "stock": 0 if generator.random() < 0.1 else generator.randrange(1, 200),
        })
    return items


def seed_items(database, count):
    """Insert `count` demo items in batches, each batch one transaction. Returns the new total."""
    now = db.utc_now()
    items = demo_items(count)
    for start in range(0, count, BATCH_SIZE):
        with database.transaction() as connection:
            sql_items.insert_items(connection, items[start:start + BATCH_SIZE], now)
    with database.connection() as connection:
        return sql_items.count_items(connection)
