"""Corpora generated offline, deterministically from a seed, from libraries others maintain.

`names`: first and last names by locale from Faker (`label<TAB>name`, for `--condition label`).

`dates`: a date written in one of several formats and languages, paired with its ISO 8601 form
(`source<TAB>target` lines for `--condition source --model seq2seq`). The words (month and weekday
names, their cases and abbreviations) come from the Unicode CLDR through Babel's locale data, not
from tables written here. Only formats that name the month are used: a numeric "07/03/2021" is
July 3rd in one locale and March 7th in another, which no model can resolve.
"""

from __future__ import annotations

import datetime
import random

from gentext.errors import GentextError

DATE_LOCALES = ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "pl", "cs", "da", "fi")
DATE_FORMATS = ("medium", "long", "full", "d MMM y", "d MMMM y", "EEEE d MMMM y", "MMMM d, y", "EEE, d MMM y")
DATE_PAIRS = 20_000


def dates(pairs: int = DATE_PAIRS, seed: int = 0) -> str:
    try:
        from babel.dates import format_date
    except ImportError:
        raise GentextError("the dates corpus needs Babel: pip install 'gentext[corpora]'") from None
    rng = random.Random(seed)
    first, span = datetime.date(1900, 1, 1).toordinal(), 200 * 365
    lines = []
    for _ in range(pairs):
        day = datetime.date.fromordinal(first + rng.randrange(span))
        written = ""
        while not any(c.isalpha() for c in written):  # some locales' medium format is all digits
            written = format_date(day, rng.choice(DATE_FORMATS), locale=rng.choice(DATE_LOCALES))
        lines.append(f"{written}\t{day.isoformat()}\n")
    return "".join(lines)


NAME_LOCALES = ("en_US", "fr_FR", "de_DE", "es_ES", "it_IT", "pl_PL", "cs_CZ", "nl_NL", "pt_BR", "tr_TR", "fi_FI")
NAMES = 20_000


def names(count: int = NAMES, seed: int = 0) -> str:
    """`locale<TAB>first last` lines: people's names by language, from Faker's locale data (the
    PyTorch names-by-language task with labels, all in Latin script so the script gives nothing away),
    for `--condition label`."""
    try:
        from faker import Faker
    except ImportError:
        raise GentextError("the names corpus needs Faker: pip install 'gentext[corpora]'") from None
    rng = random.Random(seed)
    fakers = {}
    for locale in NAME_LOCALES:
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(seed)
    lines = []
    for _ in range(count):
        locale = rng.choice(NAME_LOCALES)
        fake = fakers[locale]
        lines.append(f"{locale}\t{fake.first_name()} {fake.last_name()}\n")
    return "".join(lines)
