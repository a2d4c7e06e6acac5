"""`python -m service fulltext on|off|status`: full-text search (`_text`, `_content`) switched for the whole
database, as service/store/fulltext.py does it."""

from __future__ import annotations

from service.console import StatusLine
from service.db import open_database
from service.settings import Settings
from service.store.fulltext import FullText, state, switch_off, switch_on

EXPLAINED = {
    FullText.ON: "on: resources are indexed for _text and _content as they are written",
    FullText.OFF: "off: _text and _content are refused (400), and writes skip the full-text index",
    FullText.BUILDING: "being switched on: a `fulltext on` stopped part way; run it again to finish",
}


async def fulltext_command(settings: Settings, action: str, status: StatusLine) -> int:
    async with open_database(settings) as database:
        if action == "off":
            await switch_off(database.pool)
        elif action == "on":
            filled = await switch_on(database.pool, lambda done, last: status.show(
                f"  indexing for full text: resource {done:,} of {last:,}"))
            status.finish()
            print(f"Indexed {filled:,} resources for full text.")
        async with database.pool.acquire() as conn:
            print(f"Full-text search is {EXPLAINED[await state(conn)]}.")
    return 0
