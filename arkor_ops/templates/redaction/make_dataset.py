"""Write the ``redaction`` template's dataset: ``data/train.jsonl`` and the held-out
``data/test.jsonl``.

Deterministic (fixed seed): running it again rewrites the same files. Each row is a chat
conversation in OpenAI ``messages`` form: the system prompt, a customer's message that may hold
personal data, and the assistant's answer as one JSON object: ``redactedText`` (the message with
each piece of personal data replaced by its placeholder, ``[NAME]``, ``[EMAIL]``, ...),
``redactedCount`` (how many were replaced) and ``tags`` (the kinds replaced, sorted, each once).
Order numbers, products, amounts and days are not personal data and stay. The messages were
written for this project from varied templates, filled with made-up people, addresses, phone
numbers in several formats, test card numbers, IBANs and dates of birth.

    python -m arkor_ops.templates.redaction.make_dataset [--train 360] [--test 40]
"""

from __future__ import annotations

import argparse
import json
import random
import string
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent

SYSTEM = (
    "Redact the personal data in this message. Reply with JSON: redactedText, redactedCount, tags."
)

#: The kinds of personal data, by the slot names that hold them, with their placeholders.
KINDS = {
    "name": "[NAME]",
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "address": "[ADDRESS]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "birthdate": "[BIRTHDATE]",
}

# Slots: {name}, {name2}, {email}, ... are personal data (the kind is the name without a
# trailing digit); {order}, {product}, {device}, {amount}, {days}, {weekday} are not.
TEMPLATES = [
    "Hi, this is {name}. Please change the email on my account to {email}.",
    "My card {card} was charged twice for order #{order}. You can reach me at {phone}.",
    "Please ship the replacement {product} to {address}. The parcel is for {name}.",
    "Hello, I am {name}, born {birthdate}. I need to verify my identity for the account.",
    "Refund the {amount} dollars to IBAN {iban} please, account holder {name}.",
    "The app crashes every time I open the settings page on my {device}.",
    "Call me back at {phone} or write to {email}, whichever is faster.",
    "My neighbour {name} received my package #{order} by mistake. My address is {address}.",
    "Can you tell me when order #{order} will arrive? It has been {days} days.",
    "I'm writing on behalf of {name} ({email}), who cannot log in since {weekday}.",
    "Update my billing address to {address} and charge the card {card} from now on.",
    "Please remove {name} and {name2} from our team workspace.",
    "The date of birth on file is wrong: it should be {birthdate}, not {birthdate2}.",
    "Contact for the delivery of order #{order}: {name}, {phone}, {address}.",
    "Why was I charged {amount} dollars this month? Nothing changed on our plan.",
    "Send the invoice for order #{order} to {email} and put {name} as the contact person.",
    "Hi, {name} here. My phone number changed to {phone}; the old one no longer works.",
    "The courier called {phone} on {weekday} but nobody at {address} was home.",
    "Please pay the commission to {iban}. Reference: invoice #{order}.",
    "Feature request: a dark mode for the {product} app on my {device}, please!",
    "My email {email} got a login code I did not ask for. Is my account safe?",
    "I am {name}, my card {card} expired, and the {product} subscription failed on {weekday}.",
    "Our new office manager is {name}, you can reach them at {phone} or {email}.",
    "The {product} I returned {days} days ago has not been refunded yet.",
]

FIRST = [
    "Maria", "John", "Aiko", "Oluwaseun", "Priya", "Lukas", "Chloe", "Mateo", "Fatima",
    "Wei", "Sara", "Daniel", "Ingrid", "Tomasz", "Amara", "Kenji", "Elena", "Omar",
]  # fmt: skip
LAST = [
    "Lopez", "Carter", "Tanaka", "Adeyemi", "Sharma", "Becker", "Martin", "Rossi", "Haddad",
    "Chen", "Nilsson", "Novak", "Okafor", "Kowalski", "Dubois", "Silva", "Murphy", "Ito",
]  # fmt: skip
DOMAINS = ["example.com", "mail.example", "inbox.example.org", "post.example.net"]
STREETS = ["Maple Street", "Harbour Road", "Linden Avenue", "Station Lane", "Park Way", "Elm Row"]
CITIES = ["Springfield", "Riverton", "Oakham", "Lakeside", "Brookfield", "Northgate"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
PRODUCTS = ["Lumen Hub", "Lumen Cam 2", "Lumen Buds", "Lumen Watch S", "Lumen Router X"]
DEVICES = ["iPhone", "Android phone", "iPad", "Windows laptop", "Chromebook", "Mac"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _name(rng: random.Random) -> str:
    first = rng.choice(FIRST)
    return first if rng.random() < 0.3 else f"{first} {rng.choice(LAST)}"


def _email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower()
    user = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{_digits(rng, 2)}"])
    return f"{user}@{rng.choice(DOMAINS)}"


def _phone(rng: random.Random) -> str:
    return rng.choice(
        [
            f"+1 {_digits(rng, 3)} 555 {_digits(rng, 4)}",
            f"({_digits(rng, 3)}) 555-{_digits(rng, 4)}",
            f"+44 20 7946 {_digits(rng, 4)}",
            f"+49 30 {_digits(rng, 7)}",
            f"0{_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 3)}",
        ]
    )


def _address(rng: random.Random) -> str:
    return f"{rng.randint(1, 240)} {rng.choice(STREETS)}, {rng.choice(CITIES)}"


def _card(rng: random.Random) -> str:
    first = rng.choice(["4", "5"]) + _digits(rng, 3)
    return " ".join([first, _digits(rng, 4), _digits(rng, 4), _digits(rng, 4)])


def _iban(rng: random.Random) -> str:
    country = rng.choice(["DE", "FR", "NL", "ES", "IT"])
    return f"{country}{_digits(rng, 2)} " + " ".join(_digits(rng, 4) for _ in range(4))


def _birthdate(rng: random.Random) -> str:
    year, month, day = rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice(
        [
            f"{day} {MONTHS[month - 1]} {year}",
            f"{year}-{month:02d}-{day:02d}",
            f"{month}/{day}/{year}",
        ]
    )


PERSONAL: dict[str, Callable[[random.Random], str]] = {
    "name": _name,
    "email": _email,
    "phone": _phone,
    "address": _address,
    "card": _card,
    "iban": _iban,
    "birthdate": _birthdate,
}


def _other(rng: random.Random) -> dict[str, str]:
    return {
        "order": _digits(rng, 5),
        "product": rng.choice(PRODUCTS),
        "device": rng.choice(DEVICES),
        "amount": str(rng.choice([12, 29, 45, 99, 120, 310])),
        "days": str(rng.randint(3, 30)),
        "weekday": rng.choice(WEEKDAYS),
    }


def make_row(rng: random.Random, template: str) -> dict[str, object]:
    """One conversation from ``template`` with made-up values in its slots."""
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    values, redacted = _other(rng), _other(rng)
    redacted.update(values)
    kinds: list[str] = []
    for field in fields:
        kind = field.rstrip(string.digits)
        if kind in PERSONAL:
            values[field] = PERSONAL[kind](rng)
            redacted[field] = KINDS[kind]
            kinds.append(kind)
    answer = {
        "redactedText": template.format(**redacted),
        "redactedCount": len(kinds),
        "tags": sorted(set(kinds)),
    }
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": template.format(**values)},
            {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
        ]
    }


def build(
    train: int, test: int, seed: int = 13
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Train and test rows from the templates in turn; no message is in both."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible dataset, not secrets
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for attempt in range(100 * (train + test)):
        if len(rows) == train + test:
            break
        row = make_row(rng, TEMPLATES[attempt % len(TEMPLATES)])
        text = row["messages"][1]["content"]  # type: ignore[index]
        if text in seen:
            continue
        seen.add(text)
        rows.append(row)
    rng.shuffle(rows)
    return rows[:train], rows[train:]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    """Write one JSON object per line."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def main() -> None:
    """Write data/train.jsonl and data/test.jsonl next to this file."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--train", type=int, default=360)
    parser.add_argument("--test", type=int, default=40)
    args = parser.parse_args()
    train, test = build(args.train, args.test)
    (HERE / "data").mkdir(exist_ok=True)
    write_jsonl(HERE / "data" / "train.jsonl", train)
    write_jsonl(HERE / "data" / "test.jsonl", test)
    print(f"wrote {len(train)} train and {len(test)} test rows to {HERE / 'data'}")


if __name__ == "__main__":
    main()
