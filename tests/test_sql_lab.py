"""The SQL lab (docs/sql-lab.md): each query returns, on both engines, what the lab shows.

The lab is 20 sections headed `## N. Title`. Each opens with what the query teaches, gives
the SQL in a ```sql block (or one ```sql sqlite and one ```sql postgresql block where the
dialects differ; statements end with `;`), and then what it returns, in exactly one block:

    ```result                          ```plan
    id | name                          sqlite: SCAN order_items
    6 | Tea strainer                   postgresql: Seq Scan on order_items
    ```                                ```

For each query and engine, a fresh migrated database (conftest's `database`) gets the rows
of docs/sql-lab-data.sql, the section's statements run on one connection, and the rows of
the last statement are compared with the block:

- result: the column names and every row, in order, each value written the way the lab
  writes it (integers as digits, None as NULL, text as it is). One wrong value, a missing
  or extra row, or rows in another order fail the test.
- plan: every `engine: text` line for the engine under test must occur in the plan. Plan
  formats differ by engine and version, so only their telling part is pinned.
"""

import re
from dataclasses import dataclass

import pytest
from conftest import PROJECT_DIR

import migrate

LAB = PROJECT_DIR / "docs" / "sql-lab.md"
LAB_DATA = PROJECT_DIR / "docs" / "sql-lab-data.sql"
QUERY_COUNT = 20
ENGINES = ("sqlite", "postgresql")
COLUMN_SEPARATOR = " | "

SECTION_HEADING = re.compile(r"^## (\d+)\. (.+)$", flags=re.M)
ANY_HEADING = re.compile(r"^## ", flags=re.M)
# A fence at the start of a line, its info string ("sql", "sql sqlite", "result", ...), its text.
FENCED_BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```$", flags=re.M | re.S)
# At least one sentence: words ending with a full stop.
SENTENCE = re.compile(r"\w[^.]*\.(\s|$)")


@dataclass
class Section:
    number: int
    title: str
    teaches: str  # the prose between the heading and the first block
    blocks: list  # (info string, text) in the order they appear


def read_sections(text):
    """The numbered sections of the lab, in the order they appear."""
    sections = []
    for heading in SECTION_HEADING.finditer(text):
        following = ANY_HEADING.search(text, heading.end())
        body = text[heading.end():following.start() if following else len(text)]
        first_block = FENCED_BLOCK.search(body)
        sections.append(Section(
            number=int(heading.group(1)),
            title=heading.group(2),
            teaches=body[:first_block.start() if first_block else len(body)].strip(),
            blocks=[(info.strip(), block) for info, block in FENCED_BLOCK.findall(body)],
        ))
    return sections


SECTIONS = {section.number: section for section in read_sections(LAB.read_text())}


def query_for(section, engine):
    """The SQL the lab gives for `engine`: the shared ```sql block, or that engine's own."""
    shared = [text for info, text in section.blocks if info == "sql"]
    own = {engine_name: [text for info, text in section.blocks if info == f"sql {engine_name}"]
           for engine_name in ENGINES}
    if shared:
        assert len(shared) == 1 and not any(own.values()), \
            f"query {section.number}: one ```sql block, or one ```sql <engine> block per engine"
        return shared[0]
    assert all(len(texts) == 1 for texts in own.values()), \
        f"query {section.number}: needs one ```sql sqlite and one ```sql postgresql block"
    return own[engine][0]


def expected_for(section):
    """("result" or "plan", the block's text): the section must have exactly one of them."""
    answers = [(info, text) for info, text in section.blocks if info in ("result", "plan")]
    assert len(answers) == 1, f"query {section.number}: needs exactly one ```result or ```plan block"
    unknown = [info for info, _ in section.blocks if info not in ("result", "plan", "sql")
               and info not in {f"sql {engine}" for engine in ENGINES}]
    assert not unknown, f"query {section.number}: unknown block kinds {unknown}"
    return answers[0]


def render_value(value):
    """A value as the lab writes it.

    >>> from decimal import Decimal
    >>> [render_value(value) for value in (42, Decimal("13000"), None, "Mug")]
    ['42', '13000', 'NULL', 'Mug']
    """
    if value is None:
        return "NULL"
    # The engines print floats and booleans differently (1.0/1.00, 1/true), so the lab's
    # queries must not return them; failing here says which query to fix.
    if isinstance(value, (bool, float)):
        raise TypeError(f"{value!r}: the lab's queries return only integers, text and NULL")
    return str(value)


def render_rows(rows):
    """The header line and one line per row, as in a ```result block."""
    lines = [COLUMN_SEPARATOR.join(rows[0].keys())]
    lines += [COLUMN_SEPARATOR.join(render_value(value) for value in row.values()) for row in rows]
    return lines


def run_block(database, sql):
    """Run a block's statements in order on one connection; return the rows of the last."""
    *preparations, last = migrate.split_statements(sql)
    with database.connection() as connection:
        for statement in preparations:
            connection.execute(statement)
        return connection.fetch_all(last)


@pytest.fixture
def lab_database(database):
    """The `database` fixture (one per engine) holding the lab's data."""
    with database.transaction() as connection:
        for statement in migrate.split_statements(LAB_DATA.read_text()):
            connection.execute(statement)
    return database


def test_the_lab_has_twenty_queries_each_saying_what_it_teaches():
    assert sorted(SECTIONS) == list(range(1, QUERY_COUNT + 1))
    assert len(read_sections(LAB.read_text())) == QUERY_COUNT  # no number used twice
    for section in SECTIONS.values():
        assert SENTENCE.search(section.teaches), f"query {section.number}: say what it teaches"
        for engine in ENGINES:
            assert query_for(section, engine).strip()
        kind, text = expected_for(section)
        if kind == "plan":
            engines_pinned = {line.split(":", 1)[0] for line in text.splitlines()}
            assert engines_pinned == set(ENGINES), f"query {section.number}: pin both plans"


# `engine` is conftest's fixture, parametrized here again only so that the test ids read
# query first: test_sql_lab_query[7-postgresql].
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("number", range(1, QUERY_COUNT + 1), ids=str)
def test_sql_lab_query(number, engine, lab_database):
    section = SECTIONS.get(number)
    assert section is not None, f"docs/sql-lab.md has no section `## {number}. ...`"
    rows = run_block(lab_database, query_for(section, engine))
    assert rows, "every lab query returns rows"
    kind, expected = expected_for(section)
    if kind == "result":
        assert render_rows(rows) == expected.splitlines()
    else:
        plan = "\n".join(" ".join(render_value(value) for value in row.values()) for row in rows)
        for line in expected.splitlines():
            plan_engine, fragment = (part.strip() for part in line.split(":", 1))
            if plan_engine == engine:
                assert fragment in plan, f"{fragment!r} is not in the {engine} plan:\n{plan}"


def test_the_lab_data_keeps_each_order_total_equal_to_its_lines(lab_database):
    with lab_database.connection() as connection:
        mismatched = connection.fetch_all(
            "SELECT o.id FROM orders o JOIN order_items oi ON oi.order_id = o.id"
            " GROUP BY o.id, o.total_cents"
            " HAVING o.total_cents <> SUM(oi.quantity * oi.unit_price_cents)"
        )
    assert mismatched == []
